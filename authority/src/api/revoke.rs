//! Revocation endpoints: one token (JSON and RFC 7009), a subject, a session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::{UnixMillis, UnixSeconds, VerifiedToken, VerifyError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{blocking, check_id, check_reason};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::extract::{FormBody, JsonBody};
use crate::limit::{Limited, Revocations};
use crate::store::{
    Logged, RevokeSession, RevokeSubject, RevokeToken, SessionRevoked, SubjectRevoked,
};

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
            .authenticate(&token, &worker.validation, UnixSeconds::now())
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
    let revocation = app
        .ledger
        .submit(RevokeToken {
            rid: verified.rid(),
            sub: claims.sub.clone(),
            exp: UnixSeconds::new(claims.exp),
            reason,
        })
        .await?;
    let Logged { seq, at } = revocation.logged();
    Ok(TokenRevoked {
        token: verified,
        already: revocation.is_already_revoked(),
        seq,
        at,
    })
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
    let until = UnixSeconds::now().saturating_add_secs(app.config.max_ttl_secs);
    let SubjectRevoked {
        sub,
        r#gen,
        seq,
        at,
        ..
    } = app
        .ledger
        .submit(RevokeSubject {
            sub: req.sub,
            until,
            reason: req.reason,
        })
        .await?;
    Ok(Json(
        json!({ "sub": sub, "gen": r#gen, "revoked_at": at, "seq": seq }),
    ))
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
    let until = UnixSeconds::now().saturating_add_secs(app.config.max_ttl_secs);
    let SessionRevoked { sid, seq, at, .. } = app
        .ledger
        .submit(RevokeSession {
            sid: req.sid,
            until,
            reason: req.reason,
        })
        .await?;
    Ok(Json(json!({ "sid": sid, "revoked_at": at, "seq": seq })))
}
