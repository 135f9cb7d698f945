//! Revocation endpoints: one token (JSON and RFC 7009), a subject, a session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::{RevocationId, Seq, UnixMillis, UnixSeconds, VerifiedToken, VerifyError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{self, True};
use super::{TokenForm, blocking, check_id, check_reason};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{FormBody, JsonBody};
use crate::limit::{Limited, Revocations};
use crate::refresh;
use crate::store::{
    Logged, RefreshRevocation, RevokeRefresh, RevokeSession, RevokeSubject, RevokeToken,
    SessionRevoked, SubjectRevoked,
};

/// `POST /v1/revoke`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// The token to revoke: a genuine, unexpired token of this authority.
    token: String,
    /// Why, for the record (at most 1024 bytes).
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

/// `POST /v1/revoke`'s answer, the same for the first revocation and a repeated one.
#[derive(Serialize, ToSchema)]
pub struct RevokeTokenAnswer {
    #[schema(inline)]
    revoked: True,
    /// Whether the token had been revoked before; then `seq` and `revoked_at` are the first
    /// revocation's, and nothing was written.
    already_revoked: bool,
    #[schema(value_type = openapi::shared::RevocationId)]
    rid: RevocationId,
    /// The token's subject.
    sub: String,
    /// The token's expiry, Unix seconds: its revocation is kept until then.
    exp: i64,
    #[schema(value_type = openapi::shared::UnixTime)]
    revoked_at: UnixMillis,
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
}

/// Revoke one exact token (by its `rid`), durably, before answering.
#[utoipa::path(
    post,
    path = "/v1/revoke",
    tag = "revocation",
    operation_id = "revoke_token",
    request_body = RevokeTokenRequest,
    responses(
        (status = OK, description = "Revoked, now or before.", body = RevokeTokenAnswer),
        (status = BAD_REQUEST, body = ErrorBody, description = "`token_expired`: the token \
            has expired and needs no revocation; `invalid_token`: not a genuine token of this \
            authority; `invalid_request`: a malformed body or a reason too long."),
        openapi::LimitedBodyErrors,
    ),
    security(("admin" = [])),
)]
pub async fn token(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeTokenRequest>,
) -> Result<Json<RevokeTokenAnswer>, ApiError> {
    check_reason(req.reason.as_deref())?;
    let r = revoke_token(&app, req.token, req.reason).await?;
    let rid = r.token.rid();
    let claims = r.token.into_claims();
    Ok(Json(RevokeTokenAnswer {
        revoked: True,
        already_revoked: r.already,
        rid,
        sub: claims.sub,
        exp: claims.exp,
        revoked_at: r.at,
        seq: r.seq,
    }))
}

/// RFC 7009: a refresh token (with or without `token_type_hint`) revokes its whole session —
/// every refresh token of the family and, on the stream, every access token of the session.
/// `200` whether or not the token was valid — the client's goal (the token is unusable)
/// holds either way. Storage failures still answer 503, as §2.2.1 allows, so nothing is
/// reported revoked that is not.
#[utoipa::path(
    post,
    path = "/oauth2/revoke",
    tag = "oauth",
    operation_id = "oauth_revoke",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = OK, description = "The token is unusable: revoked now, before, or never a \
            valid token of this authority (for a refresh token: its session is revoked). No \
            body."),
        (status = BAD_REQUEST, body = ErrorBody,
            description = "`invalid_request`: a malformed form or no `token`."),
        openapi::LimitedBodyErrors,
    ),
    security(("admin" = [])),
)]
pub async fn oauth(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    FormBody(req): FormBody<TokenForm>,
) -> Result<StatusCode, ApiError> {
    if refresh::is_refresh_token(&req.token) {
        let revoked = app
            .ledger
            .submit(RevokeRefresh {
                hash: refresh::hash(&req.token),
                until: covering_until(&app),
            })
            .await?;
        if let RefreshRevocation::Revoked(s) = revoked {
            tracing::info!(sid = %s.sid, seq = %s.seq, "refresh token revoked: session revoked");
        }
        return Ok(StatusCode::OK);
    }
    match revoke_token(&app, req.token, None).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(e) if e.status() == StatusCode::BAD_REQUEST => Ok(StatusCode::OK),
        Err(e) => Err(e),
    }
}

/// Until when a subject or session revoked now must stay revoked: until every token it covers
/// has expired, i.e. for the longest lifetime the store records. The commit raises it further
/// if another replica raised that lifetime since this one last read it.
fn covering_until(app: &AppState) -> UnixSeconds {
    UnixSeconds::now().saturating_add_secs(app.view.max_ttl())
}

/// `POST /v1/revoke/subject`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSubjectRequest {
    /// The subject (1 to 512 bytes, no control characters).
    #[schema(min_length = 1)]
    sub: String,
    /// Why, for the record (at most 1024 bytes).
    reason: Option<String>,
}

/// `POST /v1/revoke/subject`'s answer.
#[derive(Serialize, ToSchema)]
pub struct RevokeSubjectAnswer {
    sub: String,
    /// The subject's new generation: tokens issued from now on carry it, every older one is
    /// rejected.
    r#gen: u64,
    #[schema(value_type = openapi::shared::UnixTime)]
    revoked_at: UnixMillis,
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
}

/// Revoke every token of a subject issued before this call; tokens issued after it answers
/// are valid.
#[utoipa::path(
    post,
    path = "/v1/revoke/subject",
    tag = "revocation",
    operation_id = "revoke_subject",
    request_body = RevokeSubjectRequest,
    responses(
        (status = OK, description = "Revoked.", body = RevokeSubjectAnswer),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: a malformed \
            body, an invalid `sub`, or a reason too long."),
        openapi::LimitedBodyErrors,
    ),
    security(("admin" = [])),
)]
pub async fn subject(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeSubjectRequest>,
) -> Result<Json<RevokeSubjectAnswer>, ApiError> {
    check_id("sub", &req.sub)?;
    check_reason(req.reason.as_deref())?;
    let until = covering_until(&app);
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
    Ok(Json(RevokeSubjectAnswer {
        sub,
        r#gen,
        revoked_at: at,
        seq,
    }))
}

/// `POST /v1/revoke/session`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSessionRequest {
    /// The session id (1 to 512 bytes, no control characters).
    #[schema(min_length = 1)]
    sid: String,
    /// Why, for the record (at most 1024 bytes).
    reason: Option<String>,
}

/// `POST /v1/revoke/session`'s answer.
#[derive(Serialize, ToSchema)]
pub struct RevokeSessionAnswer {
    sid: String,
    #[schema(value_type = openapi::shared::UnixTime)]
    revoked_at: UnixMillis,
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
}

/// Revoke every token carrying a session id; no new token is issued for it.
#[utoipa::path(
    post,
    path = "/v1/revoke/session",
    tag = "revocation",
    operation_id = "revoke_session",
    request_body = RevokeSessionRequest,
    responses(
        (status = OK, description = "Revoked.", body = RevokeSessionAnswer),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: a malformed \
            body, an invalid `sid`, or a reason too long."),
        openapi::LimitedBodyErrors,
    ),
    security(("admin" = [])),
)]
pub async fn session(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<RevokeSessionRequest>,
) -> Result<Json<RevokeSessionAnswer>, ApiError> {
    check_id("sid", &req.sid)?;
    check_reason(req.reason.as_deref())?;
    let until = covering_until(&app);
    let SessionRevoked { sid, seq, at, .. } = app
        .ledger
        .submit(RevokeSession {
            sid: req.sid,
            until,
            reason: req.reason,
        })
        .await?;
    Ok(Json(RevokeSessionAnswer {
        sid,
        revoked_at: at,
        seq,
    }))
}
