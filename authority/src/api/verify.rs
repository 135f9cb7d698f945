//! Remote verification: `POST /v1/verify` (JSON) and RFC 7662 `POST /oauth2/introspect`.

use axum::Json;
use axum::extract::State;
use revocast_shared::{Claims, RevocationId, UnixSeconds, VerifiedToken, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::openapi::{self, False, True};
use super::{TokenForm, blocking, ensure_current};
use crate::app::AppState;
use crate::auth::{Authorized, Introspect};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{FormBody, JsonBody};
use crate::refresh;

/// `POST /v1/verify`'s body.
#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// The token to verify.
    token: String,
}

/// Verify off the async workers and count the result; 503 while this replica's view may be
/// behind the shared log.
async fn check(
    app: &AppState,
    token: String,
) -> Result<Result<VerifiedToken, VerifyError>, ApiError> {
    ensure_current(app)?;
    let worker = AppState::clone(app);
    let verdict = blocking(move || {
        worker
            .view
            .verify(&token, &worker.validation, UnixSeconds::now())
    })
    .await?;
    app.metrics.count_verification(
        verdict
            .as_ref()
            .map(|_| "valid")
            .unwrap_or_else(|e| e.code()),
    );
    Ok(verdict)
}

/// `POST /v1/verify`'s answer: valid with the claims, or not valid and why.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Verdict {
    Valid {
        #[schema(inline)]
        valid: True,
        #[schema(value_type = openapi::shared::Claims)]
        claims: Box<Claims>,
        #[schema(value_type = openapi::shared::RevocationId)]
        rid: RevocationId,
    },
    Invalid {
        #[schema(inline)]
        valid: False,
        #[schema(value_type = openapi::shared::VerifyErrorCode)]
        error: &'static str,
    },
}

/// Verify a token as an agent would: signature, claims, revocations.
#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "tokens",
    operation_id = "verify_token",
    request_body = TokenRequest,
    responses(
        (status = OK, description = "The verdict; a token that is not valid is not an error.",
            body = Verdict),
        (status = BAD_REQUEST, body = ErrorBody,
            description = "`invalid_request`: a malformed body."),
        openapi::BodyErrors,
    ),
    security(("introspect" = []), ("admin" = [])),
)]
pub async fn verify(
    _: Authorized<Introspect>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<Verdict>, ApiError> {
    Ok(Json(match check(&app, req.token).await? {
        Ok(token) => Verdict::Valid {
            valid: True,
            rid: token.rid(),
            claims: Box::new(token.into_claims()),
        },
        Err(e) => Verdict::Invalid {
            valid: False,
            error: e.code(),
        },
    }))
}

/// RFC 7662 §2.2's answer: the token's claims, or for any token that is not valid exactly
/// `{"active": false}`, which reveals nothing more.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Introspection {
    Active {
        #[schema(inline)]
        active: True,
        /// Always `Bearer`.
        #[schema(value_type = String, pattern = "^Bearer$")]
        token_type: &'static str,
        /// The claims, less any custom claim named `active` or `token_type`.
        #[serde(flatten)]
        #[schema(value_type = openapi::shared::Claims)]
        claims: Map<String, Value>,
    },
    /// An active refresh token: live (not used), its session neither revoked nor over.
    Refresh {
        #[schema(inline)]
        active: True,
        /// Always `refresh_token`.
        #[schema(value_type = String, pattern = "^refresh_token$")]
        token_type: &'static str,
        sub: String,
        sid: String,
        /// When it was issued, Unix seconds.
        iat: i64,
        /// When it expires, Unix seconds.
        exp: i64,
    },
    Inactive {
        #[schema(inline)]
        active: False,
    },
}

/// RFC 7662 token introspection, of access tokens and refresh tokens (`token_type` says
/// which).
#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    tag = "oauth",
    operation_id = "introspect_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = OK, description = "Whether the token is active, and if so its claims.",
            body = Introspection),
        (status = BAD_REQUEST, body = ErrorBody,
            description = "`invalid_request`: a malformed form or no `token`."),
        openapi::BodyErrors,
    ),
    security(("introspect" = []), ("admin" = [])),
)]
pub async fn introspect(
    _: Authorized<Introspect>,
    State(app): State<AppState>,
    FormBody(req): FormBody<TokenForm>,
) -> Result<Json<Introspection>, ApiError> {
    if refresh::is_refresh_token(&req.token) {
        // The store holds refresh tokens (the view does not): it answers as committed.
        let now = UnixSeconds::now();
        return Ok(Json(
            match app.store.refresh_token(&refresh::hash(&req.token)).await? {
                Some(t) if t.is_active(now) => Introspection::Refresh {
                    active: True,
                    token_type: "refresh_token",
                    sub: t.sub,
                    sid: t.sid,
                    iat: t.issued_at.get(),
                    exp: t.expires_at.min(t.session_expires_at).get(),
                },
                _ => Introspection::Inactive { active: False },
            },
        ));
    }
    Ok(Json(match check(&app, req.token).await? {
        Ok(token) => Introspection::Active {
            active: True,
            token_type: "Bearer",
            claims: introspected_claims(token.claims()).map_err(|e| ApiError::internal(&e))?,
        },
        Err(_) => Introspection::Inactive { active: False },
    }))
}

/// The claims as introspection members. `active` and `token_type` belong to the answer, so a
/// custom claim of either name is left out rather than shadowing them.
fn introspected_claims(claims: &Claims) -> Result<Map<String, Value>, serde_json::Error> {
    let mut members = match serde_json::to_value(claims)? {
        Value::Object(members) => members,
        other => {
            return Err(serde::ser::Error::custom(format!(
                "claims serialised to {other}, not an object"
            )));
        }
    };
    members.remove("active");
    members.remove("token_type");
    Ok(members)
}
