//! `POST /v1/tokens`: issue a signed access token, and with `"refresh": true` start a session
//! with refresh tokens (see [`super::oauth`] for their rotation).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use revocast_shared::token::{Audience, IssuedToken as Issued, RESERVED_CLAIMS, issue as sign};
use revocast_shared::{Claims, KeyId, RevocationId, SigningKey, UnixSeconds};
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
use crate::refresh::{self, Grant};
use crate::store::{NewRefreshToken, SessionStart, StartSession};
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
    /// Start a session with refresh tokens: the answer adds `refresh_token` and
    /// `refresh_expires_in`, and the token's `sid` is a new session id (or `sid`, which then
    /// must not have refresh tokens already nor have been revoked). Rotations through
    /// `POST /oauth2/token` issue access tokens with the same `sub`, `sid`, `aud`, `claims`
    /// and `ttl`.
    #[serde(default)]
    refresh: bool,
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
    /// With `"refresh": true`: the session's first refresh token (opaque; for
    /// `POST /oauth2/token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// With `"refresh": true`: seconds until the refresh token expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_in: Option<i64>,
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
            claim, claims too large, a revoked session, or (with `refresh`) a `sid` that has \
            refresh tokens already."),
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
    let sid = match (req.refresh, req.sid) {
        // A session of its own: 128 random bits, like a `jti`.
        (true, None) => Some(Claims::random_jti().map_err(|e| ApiError::internal(&e))?),
        (_, sid) => sid,
    };
    let grant = Grant {
        aud: req.aud,
        claims: req.claims.unwrap_or_default(),
        ttl,
    };
    let access = sign_access(&app, key, &req.sub, sid.clone(), r#gen, &grant, ttl, now).await?;
    let (refresh_token, refresh_expires_in) = match sid {
        Some(sid) if req.refresh => {
            let (token, expires_in) = start_session(&app, sid, req.sub, r#gen, &grant, now).await?;
            (Some(token), Some(expires_in))
        }
        _ => (None, None),
    };
    Ok((
        StatusCode::CREATED,
        Json(IssueAnswer {
            token: access.issued.token,
            rid: access.issued.rid,
            kid: access.kid,
            jti: access.claims.jti,
            iat: access.claims.iat,
            exp: access.claims.exp,
            refresh_token,
            refresh_expires_in,
        }),
    ))
}

/// A signed access token, its claims and its key id.
pub(super) struct Access {
    pub issued: Issued,
    pub claims: Claims,
    pub kid: KeyId,
}

/// Sign an access token for `sub` (in session `sid`, at generation `gen`) with `key`, as
/// `grant` says, living `ttl` seconds from `now`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sign_access(
    app: &AppState,
    key: std::sync::Arc<SigningKey>,
    sub: &str,
    sid: Option<String>,
    r#gen: u64,
    grant: &Grant,
    ttl: i64,
    now: UnixSeconds,
) -> Result<Access, ApiError> {
    let kid = key.kid();
    let claims = Claims {
        iss: app.config.issuer.clone(),
        sub: sub.to_owned(),
        iat: now.get(),
        exp: now.get() + ttl,
        nbf: None,
        aud: grant.aud.clone(),
        jti: Claims::random_jti().map_err(|e| ApiError::internal(&e))?,
        sid,
        r#gen,
        custom: grant.claims.clone(),
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
    Ok(Access {
        issued,
        claims,
        kid,
    })
}

/// Store a new session with its first refresh token; answer the token and its lifetime.
async fn start_session(
    app: &AppState,
    sid: String,
    sub: String,
    r#gen: u64,
    grant: &Grant,
    now: UnixSeconds,
) -> Result<(String, i64), ApiError> {
    let (token, hash) = refresh::generate().map_err(|e| ApiError::internal(&e))?;
    let config = &app.config;
    let expires_in = config
        .refresh_ttl_secs
        .min(config.session_max_lifetime_secs);
    let started = app
        .ledger
        .submit(StartSession {
            sid,
            sub,
            r#gen,
            grant: serde_json::to_string(grant).map_err(|e| ApiError::internal(&e))?,
            expires_at: now.saturating_add_secs(config.session_max_lifetime_secs),
            token: NewRefreshToken {
                hash,
                expires_at: now.saturating_add_secs(expires_in),
            },
        })
        .await?;
    match started {
        SessionStart::Started => Ok((token.to_string(), expires_in)),
        SessionStart::Taken => Err(ApiError::bad_request(
            "this sid has refresh tokens already, or was revoked: a session with refresh \
             tokens needs a new sid",
        )),
    }
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
