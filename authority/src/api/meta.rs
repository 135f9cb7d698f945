//! Unauthenticated endpoints: JWKS, RFC 8414 metadata, health, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use revocast_shared::UnixSeconds;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

pub async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    let set = app.view.jwks(UnixSeconds::now());
    // Short caching: agents refetch on an unknown `kid` anyway, and revoked keys must leave.
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(set))
}

pub async fn metadata(State(app): State<AppState>) -> Json<Value> {
    let iss = &app.config.issuer;
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        // No authorization endpoint: tokens are minted by `POST /v1/tokens` for trusted callers.
        "response_types_supported": [],
        "grant_types_supported": [],
        "revocation_endpoint_auth_methods_supported": ["bearer"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_signing_alg_values_supported": ["ML-DSA-65"],
    }))
}

/// Liveness: the process serves HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers. Also reports the log's epoch and head `seq`.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.store.ping().await?;
    Ok(Json(
        json!({ "status": "ready", "epoch": app.view.epoch(), "seq": app.tail.head() }),
    ))
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
