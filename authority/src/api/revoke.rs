//! Revocation endpoints: one token (JSON and RFC 7009), a subject, a session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::event::Revocation;
use revocast_shared::{UnixMillis, VerifiedToken, VerifyError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{blocking, check_id, check_reason};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::extract::{FormBody, JsonBody};
use crate::limit::{Limited, Revocations};
use crate::store::{Mutation, Outcome};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    token: String,
    reason: Option<String>,
}

/// The answer to a token revocation, fresh or repeated.
struct TokenRevoked {
    token: VerifiedToken,
    already: bool,
    seq: revocast_shared::Seq,
    at: UnixMillis,
}

/// Check the token is ours and alive, then revoke it (idempotently).
async fn revoke_token(
    app: &AppState,
    token: String,
    reason: Option<String>,
) -> Result<TokenRevoked, ApiError> {
    let worker = AppState::clone(app);
    let verified = blocking(move || {
        worker
            .view
            .authenticate(&token, &worker.validation, UnixMillis::now().as_secs())
    })
    .await?
    .map_err(|e| match e {
        VerifyError::Expired => {
            ApiError::bad_request("the token has expired; it needs no revocation")
                .with_code("token_expired")
        }
        other => ApiError::bad_request(format!("not a genuine token of this authority ({other})"))
            .with_code("invalid_token"),
    })?;
    let claims = verified.claims();
    let mutation = Mutation::RevokeToken {
        rid: verified.rid(),
        sub: claims.sub.clone(),
        exp: claims.exp,
        reason,
    };
    match app.ledger.submit(mutation).await? {
        Outcome::Appended { event, .. } => Ok(TokenRevoked {
            token: verified,
            already: false,
            seq: event.seq,
            at: event.at,
        }),
        Outcome::AlreadyRevoked { seq, at } => Ok(TokenRevoked {
            token: verified,
            already: true,
            seq,
            at,
        }),
        other => Err(ApiError::internal(&unexpected(other))),
    }
}

fn unexpected(outcome: Outcome) -> std::io::Error {
    std::io::Error::other(format!("unexpected ledger outcome {outcome:?}"))
}

pub async fn token(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeTokenRequest>,
) -> Result<Json<Value>, ApiError> {
    check_reason(req.reason.as_deref())?;
    let r = revoke_token(&app, req.token, req.reason).await?;
    let claims = r.token.claims();
    Ok(Json(json!({
        "revoked": true,
        "already_revoked": r.already,
        "rid": r.token.rid(),
        "sub": claims.sub,
        "exp": claims.exp,
        "revoked_at": r.at,
        "seq": r.seq,
    })))
}

#[derive(Deserialize)]
pub struct OauthRevokeRequest {
    token: String,
    #[allow(dead_code)] // RFC 7009 allows it; one token type exists, so it changes nothing.
    token_type_hint: Option<String>,
}

/// RFC 7009: `200` whether or not the token was valid — the client's goal (the token is unusable)
/// holds either way. Storage failures still answer 503, as §2.2.1 allows, so nothing is
/// reported revoked that is not.
pub async fn oauth(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    FormBody(req): FormBody<OauthRevokeRequest>,
) -> Result<StatusCode, ApiError> {
    match revoke_token(&app, req.token, None).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(e) if e.status() == StatusCode::BAD_REQUEST => Ok(StatusCode::OK),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeSubjectRequest {
    sub: String,
    reason: Option<String>,
}

pub async fn subject(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeSubjectRequest>,
) -> Result<Json<Value>, ApiError> {
    check_id("sub", &req.sub)?;
    check_reason(req.reason.as_deref())?;
    let until = UnixMillis::now().as_secs() + app.config.max_ttl_secs;
    let mutation = Mutation::RevokeSubject {
        sub: req.sub,
        until,
        reason: req.reason,
    };
    match app.ledger.submit(mutation).await? {
        Outcome::Appended { event, .. } => match event.revocation {
            Revocation::Subject { sub, r#gen, .. } => Ok(Json(
                json!({ "sub": sub, "gen": r#gen, "revoked_at": event.at, "seq": event.seq }),
            )),
            other => Err(ApiError::internal(&std::io::Error::other(format!(
                "unexpected event {other:?}"
            )))),
        },
        other => Err(ApiError::internal(&unexpected(other))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeSessionRequest {
    sid: String,
    reason: Option<String>,
}

pub async fn session(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeSessionRequest>,
) -> Result<Json<Value>, ApiError> {
    check_id("sid", &req.sid)?;
    check_reason(req.reason.as_deref())?;
    let until = UnixMillis::now().as_secs() + app.config.max_ttl_secs;
    let sid = req.sid.clone();
    match app
        .ledger
        .submit(Mutation::RevokeSession {
            sid: req.sid,
            until,
            reason: req.reason,
        })
        .await?
    {
        Outcome::Appended { event, .. } => Ok(Json(
            json!({ "sid": sid, "revoked_at": event.at, "seq": event.seq }),
        )),
        other => Err(ApiError::internal(&unexpected(other))),
    }
}
