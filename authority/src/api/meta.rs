//! Unauthenticated endpoints: JWKS, RFC 8414 metadata, health, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use revocast_shared::{Epoch, Seq, UnixSeconds};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi;
use crate::app::AppState;
use crate::error::ApiError;

/// The signing keys that verify tokens still in circulation.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    operation_id = "jwks",
    responses(
        (status = OK, description = "The public keys (RFC 7517 JWK Set of `AKP` keys).",
            body = openapi::shared::JwkSet,
            headers(("Cache-Control" = String, description = "`public, max-age=60`."))),
    ),
)]
pub async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    let mut set = app.view.jwks(UnixSeconds::now());
    // The log keys beside the token keys, told apart by `use` (never the same key).
    set.keys.extend(
        app.checkpointer
            .keys()
            .jwks(revocast_shared::UnixMillis::now()),
    );
    // Short caching: agents refetch on an unknown `kid` anyway, and revoked keys must leave.
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(set))
}

/// RFC 8414 authorization server metadata.
#[derive(Serialize, ToSchema)]
pub struct Metadata {
    /// The issuer, as in every token's `iss`.
    issuer: String,
    jwks_uri: String,
    /// `POST /oauth2/token`, for the refresh-token grant.
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    /// Empty: tokens are minted by `POST /v1/tokens` for trusted callers, with no
    /// authorization endpoint.
    response_types_supported: [&'static str; 0],
    /// `refresh_token`: sessions start at `POST /v1/tokens` with `"refresh": true`.
    grant_types_supported: [&'static str; 1],
    /// `none`: the refresh token is the credential.
    token_endpoint_auth_methods_supported: [&'static str; 1],
    revocation_endpoint_auth_methods_supported: [&'static str; 1],
    introspection_endpoint_auth_methods_supported: [&'static str; 1],
    token_endpoint_auth_signing_alg_values_supported: [&'static str; 1],
}

/// RFC 8414 metadata: where the JWKS, token, revocation and introspection endpoints are.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "oauth",
    operation_id = "metadata",
    responses((status = OK, description = "The metadata.", body = Metadata)),
)]
pub async fn metadata(State(app): State<AppState>) -> Json<Metadata> {
    let iss = &app.config.issuer;
    Json(Metadata {
        issuer: iss.clone(),
        jwks_uri: format!("{iss}/.well-known/jwks.json"),
        token_endpoint: format!("{iss}/oauth2/token"),
        revocation_endpoint: format!("{iss}/oauth2/revoke"),
        introspection_endpoint: format!("{iss}/oauth2/introspect"),
        response_types_supported: [],
        grant_types_supported: ["refresh_token"],
        token_endpoint_auth_methods_supported: ["none"],
        revocation_endpoint_auth_methods_supported: ["bearer"],
        introspection_endpoint_auth_methods_supported: ["bearer"],
        token_endpoint_auth_signing_alg_values_supported: ["ML-DSA-65"],
    })
}

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = OK, description = "The process serves HTTP.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(value_type = String, pattern = "^ready$")]
    status: &'static str,
    #[schema(value_type = openapi::shared::Epoch)]
    epoch: Epoch,
    /// The head of the log: the last `seq` this authority has applied.
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
}

/// Readiness: the store answers and, on a replica, its view of the shared log is current (so
/// a load balancer sends verification and issuance elsewhere meanwhile). Also reports the
/// log's epoch and head `seq`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = OK, description = "The store answers, and this replica has read the shared \
            log recently.", body = Readiness),
        (status = SERVICE_UNAVAILABLE, response = openapi::Unavailable),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    super::ensure_current(&app)?;
    app.store.ping().await?;
    Ok(Json(Readiness {
        status: "ready",
        epoch: app.view.epoch().clone(),
        seq: app.tail.head(),
    }))
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = OK, description = "The metrics, in the OpenMetrics text format.", body = String,
            content_type = OPENMETRICS),
    ),
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OPENMETRICS)],
        app.metrics.render(),
    )
}
