//! The sidecar's HTTP surface: `/verify` and `/verify/*` (any method) for nginx `auth_request`,
//! Envoy `ext_authz` (HTTP mode) and Traefik ForwardAuth — exactly `200` with
//! `X-Auth-Subject` and `X-Auth-Token-Id` when the token is valid, `401` with
//! `WWW-Authenticate` when it is not, `503` when stale and failing closed — plus `/healthz` and
//! `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

use crate::agent::Agent;
use crate::layer::{bearer_token, missing_token, rejection_response};

const SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
const TOKEN_ID: HeaderName = HeaderName::from_static("x-auth-token-id");

pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/verify", any(verify))
        // `/verify` + the original URI of a request to `/` is `/verify/`.
        .route("/verify/", any(verify))
        .route("/verify/{*rest}", any(verify))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(agent)
}

async fn verify(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    let Some(token) = bearer_token(&headers) else {
        return missing_token();
    };
    match agent.verify_or_refresh_keys(token).await {
        Ok(verified) => {
            let claims = verified.claims();
            let mut resp = StatusCode::OK.into_response();
            // `sub` and `jti` never hold control characters (the authority refuses them), so
            // they are valid header values; if one somehow is not, it is left out rather than
            // failing the request.
            for (name, value) in [(SUBJECT, &claims.sub), (TOKEN_ID, &claims.jti)] {
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    resp.headers_mut().insert(name, value);
                }
            }
            resp
        }
        Err(rejection) => rejection_response(rejection),
    }
}

/// `200` only when synced and fresh. Says how fresh, by arrival (`staleness_seconds`) and by
/// the authority's clock (`authority_age_seconds`, against `max_staleness_seconds` +
/// `max_clock_skew_seconds`), and whether the authority's clock runs ahead of ours.
async fn healthz(State(agent): State<Agent>) -> Response {
    let s = agent.status();
    let body = axum::Json(json!({
        "status": if s.fresh { "ok" } else if s.synced { "stale" } else { "syncing" },
        "synced": s.synced,
        "fresh": s.fresh,
        "staleness_seconds": s.staleness.map(|d| d.as_secs_f64()),
        "max_staleness_seconds": s.max_staleness.as_secs_f64(),
        "authority_age_seconds": s.authority_age_ms.map(|ms| ms as f64 / 1000.0),
        "authority_clock_offset_seconds": s.clock_offset_ms.map(|ms| ms as f64 / 1000.0),
        "authority_clock_ahead": s.clock_ahead,
        "max_clock_skew_seconds": s.max_clock_skew.as_secs_f64(),
        "epoch": s.epoch,
        "applied_seq": s.applied,
        "head_seq": s.head,
        "entries": s.entries,
        "authority": s.authority,
    }));
    let status = if s.fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(agent): State<Agent>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        agent.render_metrics(),
    )
        .into_response()
}
