//! `POST /v1/tokens`: issue a signed access token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::token::{Audience, RESERVED_CLAIMS, issue as sign};
use revocast_shared::{Claims, KeyId, RevocationId, UnixSeconds};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{blocking, check_id, ensure_current, openapi};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::limit::{Limited, Tokens};
use crate::view::IssueRefusal;

/// `POST /v1/tokens`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The subject: 1 to 512 bytes, no control characters.
    #[schema(min_length = 1)]
    sub: String,
    /// Lifetime in seconds, at most the authority's `max_ttl`; the configured default
    /// (3600 s unless changed) when absent.
    #[schema(minimum = 1)]
    ttl: Option<i64>,
    /// Audience: one, or a list of 1 to 16; each 1 to 512 bytes, no control characters.
    #[schema(value_type = Option<openapi::shared::Audience>)]
    aud: Option<Audience>,
    /// Session id (1 to 512 bytes, no control characters); refused while that session is
    /// revoked.
    #[schema(min_length = 1)]
    sid: Option<String>,
    /// Custom claims, added to the token's; the registered names (`iss`, `sub`, `aud`, `exp`,
    /// `nbf`, `iat`, `jti`, `sid`, `gen`, `rid`) are refused.
    #[schema(value_type = Option<Object>)]
    claims: Option<Map<String, Value>>,
}

/// `POST /v1/tokens`'s answer.
#[derive(Serialize, ToSchema)]
pub struct IssueAnswer {
    /// The signed access token (JWS compact serialization).
    token: String,
    #[schema(value_type = openapi::shared::RevocationId)]
    rid: RevocationId,
    #[schema(value_type = openapi::shared::KeyId)]
    kid: KeyId,
    /// The token's `jti`.
    jti: String,
    /// The token's `iat`, Unix seconds.
    iat: i64,
    /// The token's `exp`, Unix seconds.
    exp: i64,
}

/// Most audiences one token may name.
const MAX_AUDIENCES: usize = 16;

/// Issue a signed access token.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "issue_token",
    request_body = IssueRequest,
    responses(
        (status = CREATED, description = "The token.", body = IssueAnswer),
        (status = BAD_REQUEST, body = ErrorBody, description = "`invalid_request`: a malformed \
            body, an invalid `sub`, `sid` or `aud`, a `ttl` out of range, a reserved custom \
            claim, claims too large, or a revoked session."),
        openapi::LimitedBodyErrors,
    ),
    security(("admin" = [])),
)]
pub async fn issue(
    _: Authorized<Admin>,
    _: Limited<Tokens>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<IssueRequest>,
) -> Result<(StatusCode, Json<IssueAnswer>), ApiError> {
    let ttl = check(&req, &app.config)?;
    // The subject's generation and the session's revocation come from the view.
    ensure_current(&app)?;
    let now = UnixSeconds::now();
    let (key, r#gen) = app
        .view
        .issuing(&req.sub, req.sid.as_deref(), now)
        .map_err(|refusal| match refusal {
            IssueRefusal::SessionRevoked => {
                ApiError::bad_request("session is revoked; no new tokens are issued for it")
            }
            IssueRefusal::NoSigningKey => ApiError::unavailable("no active signing key"),
        })?;
    let kid = key.kid();
    let claims = Claims {
        iss: app.config.issuer.clone(),
        sub: req.sub,
        iat: now.get(),
        exp: now.get() + ttl,
        nbf: None,
        aud: req.aud,
        jti: Claims::random_jti().map_err(|e| ApiError::internal(&e))?,
        sid: req.sid,
        r#gen,
        custom: req.claims.unwrap_or_default(),
    };
    let (issued, claims) = blocking(move || sign(&claims, &key).map(|t| (t, claims)))
        .await?
        .map_err(|e| match e {
            revocast_shared::Error::TokenTooLarge { max } => ApiError::bad_request(format!(
                "claims too large: the token would exceed {max} bytes"
            )),
            other => ApiError::internal(&other),
        })?;
    app.metrics.tokens_issued.inc();
    Ok((
        StatusCode::CREATED,
        Json(IssueAnswer {
            token: issued.token,
            rid: issued.rid,
            kid,
            jti: claims.jti,
            iat: claims.iat,
            exp: claims.exp,
        }),
    ))
}

/// Check the request against the contract and the configuration; answer the token's `ttl`.
fn check(req: &IssueRequest, config: &Config) -> Result<i64, ApiError> {
    check_id("sub", &req.sub)?;
    if let Some(sid) = &req.sid {
        check_id("sid", sid)?;
    }
    match &req.aud {
        Some(Audience::One(a)) => check_id("aud", a)?,
        Some(Audience::Many(all)) => {
            if all.is_empty() || all.len() > MAX_AUDIENCES {
                return Err(ApiError::bad_request(format!(
                    "aud must list 1 to {MAX_AUDIENCES} audiences"
                )));
            }
            for a in all {
                check_id("aud", a)?;
            }
        }
        None => {}
    }
    let ttl = req.ttl.unwrap_or(config.default_ttl_secs);
    if !(1..=config.max_ttl_secs).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttl must be between 1 and max_ttl ({} s)",
            config.max_ttl_secs
        )));
    }
    let reserved = req
        .claims
        .iter()
        .flat_map(Map::keys)
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()));
    if let Some(name) = reserved {
        return Err(ApiError::bad_request(format!(
            "claims must not set the reserved claim {name:?}"
        )));
    }
    Ok(ttl)
}
