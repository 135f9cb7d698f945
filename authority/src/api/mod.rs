//! The HTTP API of DESIGN.md, one module per group of routes. Handlers validate input, call the
//! [`View`](crate::view::View) or the [`Ledger`](crate::ledger::Ledger), and shape the answer.

mod keys;
mod meta;
mod revoke;
mod stream;
mod tokens;
mod verify;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::ApiError;

/// Longest `sub`, `sid`, audience or reason accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 512;
pub(crate) const MAX_REASON_LEN: usize = 1024;

pub fn router(app: AppState) -> Router {
    let body_limit = app.config.max_body_bytes;
    Router::new()
        .route("/v1/tokens", post(tokens::issue))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/revoke", post(revoke::token))
        .route("/v1/revoke/subject", post(revoke::subject))
        .route("/v1/revoke/session", post(revoke::session))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/keys/{kid}/revoke", post(keys::revoke))
        .route("/oauth2/revoke", post(revoke::oauth))
        .route("/oauth2/introspect", post(verify::introspect))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(meta::metadata),
        )
        // Snapshots can be large (a million entries is ~150 MB of JSON): gzip them for
        // clients that ask, at the fastest level so the CPU keeps up with the network.
        .route(
            "/v1/snapshot",
            get(stream::snapshot).layer(
                CompressionLayer::new()
                    .gzip(true)
                    .quality(CompressionLevel::Fastest),
            ),
        )
        .route("/v1/events", get(stream::events))
        .route("/v1/stream", get(stream::websocket))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Logs method, path and status; never headers or bodies, where keys and tokens travel.
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Check an identifier-like string field: non-empty, bounded, no control characters.
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_reason(reason: Option<&str>) -> Result<(), ApiError> {
    if reason.is_some_and(|r| r.len() > MAX_REASON_LEN) {
        return Err(ApiError::bad_request(format!(
            "reason must be at most {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(())
}

/// Run CPU-heavy crypto (ML-DSA sign or verify, ~0.1–1 ms) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))
}
