//! `POST /oauth2/token`: the refresh-token grant (RFC 6749 §6), with rotation and reuse
//! detection (RFC 9700 §4.14.2).
//!
//! No API key: the refresh token is the credential. Each use rotates it — the presented token
//! becomes used and a new one is answered with a new access token of the same session — in one
//! ledger commit ([`Rotate`]), so two requests racing with one token cannot both succeed. A
//! used token presented again is reuse: someone copied it, and the commit that finds it
//! revokes the whole session — its refresh tokens and, through the stream, its access tokens
//! at every agent.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use revocast_shared::UnixSeconds;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{ensure_current, openapi, tokens};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::limit::RefreshLimited;
use crate::refresh::{self, Grant, Pair};
use crate::store::{NewRefreshToken, RefreshRefusal, Rotate, Rotation, SessionRevoked};
use crate::view::IssueRefusal;

/// The form of `POST /oauth2/token` (RFC 6749 §6). Other parameters (`scope`, `client_id`)
/// are ignored: every access token of a session carries what its start granted.
#[derive(Deserialize, ToSchema)]
pub struct TokenGrantForm {
    /// `refresh_token`, the one grant supported.
    grant_type: Option<String>,
    /// The refresh token.
    refresh_token: Option<String>,
}

/// RFC 6749 §5.1's answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenAnswer {
    /// A new access token of the same session (JWS compact serialization).
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: i64,
    /// The new refresh token; the one presented is used now, and presenting it again ends
    /// the session.
    refresh_token: String,
}

/// An RFC 6749 §5.2 error: always 400 (this endpoint authenticates no client, so never
/// `invalid_client`).
fn oauth_error(code: &'static str, description: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, description)
}

fn invalid_request(description: &'static str) -> ApiError {
    oauth_error("invalid_request", description)
}

fn invalid_grant(description: &'static str) -> ApiError {
    oauth_error("invalid_grant", description)
}

fn refused(refusal: RefreshRefusal) -> ApiError {
    invalid_grant(match refusal {
        RefreshRefusal::Unknown => "unknown refresh token",
        RefreshRefusal::SessionRevoked => "the session of this refresh token is revoked",
        RefreshRefusal::SubjectRevoked => "the subject of this refresh token was revoked",
        RefreshRefusal::Expired => "the refresh token or its session has expired",
    })
}

/// The form body: `application/x-www-form-urlencoded` (RFC 6749 §3.2), within the body
/// limit. Anything else is `invalid_request` in §5.2's shape — a body too large included,
/// where other endpoints answer 413.
pub struct GrantForm(TokenGrantForm);

impl FromRequest<AppState> for GrantForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = Bytes::from_request(req, app).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                invalid_request("the body is too large")
            } else {
                invalid_request("cannot read the body")
            }
        })?;
        // Repeated parameters are refused (RFC 6749 §3.2), as serde refuses duplicate fields.
        serde_urlencoded::from_bytes(&bytes)
            .map(GrantForm)
            .map_err(|_| invalid_request("malformed form body, or a repeated parameter"))
    }
}

/// The answer with RFC 6749 §5.1's headers: tokens are never cached.
pub struct NoStore(Json<TokenAnswer>);

impl IntoResponse for NoStore {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

/// Exchange a refresh token for a new access token and a new refresh token (rotation).
#[utoipa::path(
    post,
    path = "/oauth2/token",
    tag = "oauth",
    operation_id = "oauth_token",
    request_body(content = TokenGrantForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = OK, description = "A new pair; the presented refresh token is used now.",
            body = TokenAnswer,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = BAD_REQUEST, body = ErrorBody, description = "RFC 6749 §5.2: \
            `invalid_request` (no or a repeated parameter, not a form, a body too large), \
            `unsupported_grant_type` (anything but `refresh_token`), `invalid_grant` (a \
            malformed, unknown, expired or revoked refresh token — or a used one: reuse, which \
            has just revoked the whole session)."),
        (status = TOO_MANY_REQUESTS, response = openapi::RateLimited),
        (status = SERVICE_UNAVAILABLE, response = openapi::Unavailable),
    ),
)]
pub async fn token(
    _: RefreshLimited,
    State(app): State<AppState>,
    GrantForm(form): GrantForm,
) -> Result<NoStore, ApiError> {
    let presented = Zeroizing::new(form.refresh_token.unwrap_or_default());
    match form.grant_type.as_deref() {
        None | Some("") => return Err(invalid_request("grant_type is required")),
        Some("refresh_token") => {}
        Some(_) => {
            return Err(oauth_error(
                "unsupported_grant_type",
                "the only grant_type supported is refresh_token",
            ));
        }
    }
    if presented.is_empty() {
        return Err(invalid_request("refresh_token is required"));
    }
    let answer = rotate(&app, &presented).await;
    let outcome = match &answer {
        Ok((_, Rotation::Retried { .. })) => "retried",
        Ok(_) => "rotated",
        Err(Refusal::Reused) => "reused",
        Err(Refusal::Other(_)) => "refused",
    };
    app.metrics
        .refreshes
        .get_or_create(&vec![("outcome", outcome)])
        .inc();
    match answer {
        Ok((pair, _)) => Ok(NoStore(Json(TokenAnswer {
            access_token: pair.access_token,
            token_type: "Bearer".into(),
            expires_in: pair.exp.saturating_sub(UnixSeconds::now().get()).max(0),
            refresh_token: pair.refresh_token,
        }))),
        Err(Refusal::Reused) => Err(invalid_grant(
            "this refresh token was used already: it was copied, so its session is revoked",
        )),
        Err(Refusal::Other(e)) => Err(e),
    }
}

enum Refusal {
    Reused,
    Other(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Other(e)
    }
}

/// Rotate `presented`: the new pair, or why not.
async fn rotate(app: &AppState, presented: &str) -> Result<(Pair, Rotation), Refusal> {
    if !refresh::is_refresh_token(presented) {
        return Err(refused(RefreshRefusal::Unknown).into());
    }
    // Issuing needs a current view (the signing key, the session's state), as `/v1/tokens`.
    ensure_current(app)?;
    let hash = refresh::hash(presented);
    let now = UnixSeconds::now();
    // A first read, outside the commit, for what the new access token carries; the commit
    // decides again on what it finds.
    let token = app
        .store
        .refresh_token(&hash)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| refused(RefreshRefusal::Unknown))?;
    if let Some(refusal) = token.refusal(now) {
        return Err(refused(refusal).into());
    }
    let reuse_interval_ms =
        i64::try_from(app.config.refresh_reuse_interval.as_millis()).unwrap_or(i64::MAX);
    if token.used_at.is_some() && reuse_interval_ms == 0 {
        // Used, and no retry is allowed: whatever the commit finds, this is reuse (a used
        // token never becomes unused). Revoke at once, without signing a token no one gets:
        // the theft costs one commit, not an ML-DSA signature first.
        let (_, next_hash) = refresh::generate().map_err(|e| ApiError::internal(&e))?;
        let rotation = app
            .ledger
            .submit(Rotate {
                hash,
                next: NewRefreshToken {
                    hash: next_hash,
                    expires_at: now,
                },
                r#gen: token.session_gen,
                sealed: None,
                reuse_interval_ms,
                until: UnixSeconds::now().saturating_add_secs(app.view.max_ttl()),
            })
            .await
            .map_err(ApiError::from)?;
        return match rotation {
            Rotation::Reused { sub, revoked } => Err(reused(app, &sub, &revoked)),
            Rotation::Refused(refusal) => Err(refused(refusal).into()),
            Rotation::Rotated | Rotation::Retried { .. } => Err(ApiError::internal(
                &std::io::Error::other("the store rotated a used refresh token"),
            )
            .into()),
        };
    }
    let grant: Grant = serde_json::from_str(&token.grant).map_err(|e| ApiError::internal(&e))?;
    let key = match app.view.issuing(&token.sub, Some(&token.sid), now) {
        Ok((key, _)) => key,
        Err(IssueRefusal::SessionRevoked) => {
            return Err(refused(RefreshRefusal::SessionRevoked).into());
        }
        Err(IssueRefusal::NoSigningKey) => {
            return Err(ApiError::unavailable("no active signing key").into());
        }
    };
    // The session's generation, which the commit checks is still the subject's.
    let r#gen = token.session_gen;
    let ttl = grant.ttl.min(app.config.max_ttl_secs);
    let access = tokens::sign_access(
        app,
        key,
        &token.sub,
        Some(token.sid.clone()),
        r#gen,
        &grant,
        ttl,
        now,
    )
    .await?;
    let (next, next_hash) = refresh::generate().map_err(|e| ApiError::internal(&e))?;
    let pair = Pair {
        access_token: access.issued.token,
        refresh_token: next.to_string(),
        exp: access.claims.exp,
    };
    let sealed = (reuse_interval_ms > 0)
        .then(|| refresh::seal(presented, &pair))
        .transpose()
        .map_err(|e| ApiError::internal(&e))?;
    let rotation = app
        .ledger
        .submit(Rotate {
            hash,
            next: NewRefreshToken {
                hash: next_hash,
                expires_at: now
                    .saturating_add_secs(app.config.refresh_ttl_secs)
                    .min(token.session_expires_at),
            },
            r#gen,
            sealed,
            reuse_interval_ms,
            until: UnixSeconds::now().saturating_add_secs(app.view.max_ttl()),
        })
        .await
        .map_err(ApiError::from)?;
    match rotation {
        Rotation::Rotated => Ok((pair, Rotation::Rotated)),
        Rotation::Retried { sealed } => {
            let earlier =
                refresh::unseal(presented, &sealed).map_err(|e| ApiError::internal(&e))?;
            Ok((earlier, Rotation::Retried { sealed }))
        }
        Rotation::Reused { sub, revoked } => Err(reused(app, &sub, &revoked)),
        Rotation::Refused(refusal) => Err(refused(refusal).into()),
    }
}

/// Record a detected reuse (the commit already revoked the session) and answer it.
fn reused(app: &AppState, sub: &str, revoked: &SessionRevoked) -> Refusal {
    app.metrics.refresh_reuse.inc();
    tracing::warn!(
        sid = %revoked.sid,
        sub = %sub,
        seq = %revoked.seq,
        "a used refresh token was presented again: the session is revoked"
    );
    Refusal::Reused
}
