//! Remote verification: `POST /v1/verify` (JSON) and RFC 7662 `POST /oauth2/introspect`.

use axum::Json;
use axum::extract::State;
use revocast_shared::{UnixSeconds, VerifiedToken, VerifyError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::blocking;
use crate::app::AppState;
use crate::auth::{Authorized, Introspect};
use crate::error::ApiError;
use crate::extract::{FormBody, JsonBody};

#[derive(Deserialize)]
pub struct TokenRequest {
    token: String,
}

/// Verify off the async workers and count the result.
async fn check(
    app: &AppState,
    token: String,
) -> Result<Result<VerifiedToken, VerifyError>, ApiError> {
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

pub async fn verify(
    _: Authorized<Introspect>,
    State(app): State<AppState>,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match check(&app, req.token).await? {
        Ok(token) => json!({ "valid": true, "claims": token.claims(), "rid": token.rid() }),
        Err(e) => json!({ "valid": false, "error": e.code() }),
    }))
}

#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: String,
    #[allow(dead_code)] // RFC 7662 allows it; one token type exists, so it changes nothing.
    token_type_hint: Option<String>,
}

pub async fn introspect(
    _: Authorized<Introspect>,
    State(app): State<AppState>,
    FormBody(req): FormBody<IntrospectRequest>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match check(&app, req.token).await? {
        Ok(token) => {
            let mut body = match serde_json::to_value(token.claims()) {
                Ok(Value::Object(map)) => map,
                _ => return Err(ApiError::internal(&VerifyError::Malformed)),
            };
            // Set last so that no custom claim can shadow it.
            body.insert("active".into(), Value::Bool(true));
            body.insert("token_type".into(), Value::from("Bearer"));
            Value::Object(body)
        }
        // RFC 7662 §2.2: an inactive token reveals nothing more.
        Err(_) => json!({ "active": false }),
    }))
}
