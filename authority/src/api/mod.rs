//! The HTTP API, one module per group of routes. Handlers validate input, call the
//! [`View`](crate::view::View) or the [`Ledger`](crate::ledger::Ledger), and shape the answer.
//! Each handler also describes itself for the OpenAPI document ([`openapi()`]); the router and
//! the document are built from one list of handlers, so neither has a route the other lacks.

mod api_keys;
mod console;
mod fleet;
mod keys;
mod log;
mod meta;
mod oauth;
mod openapi;
mod revoke;
mod stream;
mod tokens;
mod verify;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::{Extension, Router};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::app::{App, AppState};
use crate::error::ApiError;
use crate::tail;

/// Longest `sub`, `sid`, audience or reason accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 512;
pub(crate) const MAX_REASON_LEN: usize = 1024;

/// Every route, each with its description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(tokens::issue))
        .routes(routes!(verify::verify))
        .routes(routes!(revoke::token))
        .routes(routes!(revoke::subject))
        .routes(routes!(revoke::session))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::revoke))
        .routes(routes!(log::rotate))
        .routes(routes!(log::checkpoint))
        .routes(routes!(log::inclusion))
        .routes(routes!(log::consistency))
        .routes(routes!(api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(revoke::oauth))
        .routes(routes!(oauth::token))
        .routes(routes!(verify::introspect))
        .routes(routes!(meta::jwks))
        .routes(routes!(meta::metadata))
        // Snapshots can be large (a million entries is ~150 MB of JSON): gzip them for
        // clients that ask, at the fastest level so the CPU keeps up with the network.
        .routes(
            routes!(stream::snapshot).layer(
                CompressionLayer::new()
                    .gzip(true)
                    .quality(CompressionLevel::Fastest),
            ),
        )
        .routes(routes!(stream::events))
        .routes(routes!(stream::websocket))
        .routes(routes!(fleet::ack))
        // The fleet of 10,000 subscribers is ~3 MB of JSON, polled by the console every
        // second or so: gzip it for clients that ask.
        .routes(
            routes!(fleet::list).layer(
                CompressionLayer::new()
                    .gzip(true)
                    .quality(CompressionLevel::Fastest),
            ),
        )
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
        .routes(routes!(openapi::document))
        .routes(routes!(console::page))
        .routes(routes!(console::script))
        .routes(routes!(console::style))
}

/// The OpenAPI 3.1 document of every route [`Authority::router`](crate::Authority::router)
/// serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

pub fn router(app: AppState) -> Router {
    let body_limit = app.config.max_body_bytes;
    let (routes, document) = routes().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Document(Arc::new(document))))
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

/// The form of RFC 7009 revocation and RFC 7662 introspection.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// The token.
    token: String,
    /// `access_token` or `refresh_token`. Ignored, as both RFCs allow: the two kinds are told
    /// apart by their form (a refresh token starts with `rvr_`), and a server must look beyond
    /// the hint anyway. Its value is skipped unread.
    #[serde(rename = "token_type_hint", default)]
    #[schema(value_type = Option<String>)]
    _token_type_hint: Option<IgnoredAny>,
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

/// 503 unless this process read the shared log recently (see
/// [`LogTail::is_current`](crate::tail::LogTail::is_current)): a replica cut off from the
/// database must not vouch for a token or issue one from a view that may miss revocations.
pub(crate) fn ensure_current(app: &App) -> Result<(), ApiError> {
    if app.tail.is_current(tail::current_within(&app.config)) {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            "this replica cannot read the shared revocation log right now, so its view may be \
             behind; retry later or ask another replica",
        ))
    }
}

/// Run CPU-heavy crypto (ML-DSA sign or verify, ~0.1–1 ms) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))
}
