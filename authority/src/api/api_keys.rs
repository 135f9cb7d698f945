//! API keys: list them and revoke one. Creating one stays a command of the binary
//! (`revocast-authority keys create`), so that a secret never travels over HTTP.

use axum::extract::State;
use axum::{Extension, Json};
use revocast_shared::UnixSeconds;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi;
use crate::apikeys::{self, ApiKeyInfo, KeyDigest};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathParams;

/// `GET /v1/api-keys`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Every API key, revoked ones included, oldest first.
    keys: Vec<ApiKeyInfo>,
}

/// Every API key by its id (the hash of the key) and label, with scope and times: never a
/// secret, which is not stored.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    operation_id = "list_api_keys",
    responses(
        (status = OK, description = "Every API key, revoked ones included.", body = ApiKeyList),
        openapi::KeyedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn list(
    _: Authorized<Admin>,
    State(app): State<AppState>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = app.api_keys.list().await?;
    Ok(Json(ApiKeyList {
        keys: keys.iter().map(ApiKeyInfo::from).collect(),
    }))
}

/// The key stops working at once on this replica and within one second on every other; its
/// entry stays in the list with `revoked_at`. Revoking the last admin key is allowed (a key
/// may leak, and nothing must delay its revocation): `revocast-authority keys create --scope
/// admin` on the authority's host makes a new one.
#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/revoke",
    tag = "api-keys",
    operation_id = "revoke_api_key",
    params(("id" = String, Path, description = "The key's id, as `GET /v1/api-keys` lists it.")),
    responses(
        (status = OK, body = ApiKeyInfo,
            description = "Revoked, now or before: `revoked_at` is the first revocation's time."),
        (status = NOT_FOUND, body = ErrorBody,
            description = "`unknown_api_key`: no API key has this id."),
        (status = BAD_REQUEST, body = ErrorBody,
            description = "`invalid_request`: the path is not valid percent-encoded UTF-8."),
        openapi::KeyedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn revoke(
    _: Authorized<Admin>,
    Extension(KeyDigest(by)): Extension<KeyDigest>,
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    let unknown = || ApiError::not_found("no such API key").with_code("unknown_api_key");
    let digest = apikeys::parse_id(&id).ok_or_else(unknown)?;
    let revoked = app
        .api_keys
        .revoke(&digest, UnixSeconds::now())
        .await?
        .ok_or_else(unknown)?;
    let info = ApiKeyInfo::from(&revoked);
    tracing::warn!(
        id = %info.id,
        scope = info.scope.as_str(),
        label = info.label.as_deref().unwrap_or(""),
        by = %apikeys::id_of(&by),
        "API key revoked"
    );
    if info.scope == crate::config::Scope::Admin {
        // A hint for the operator, never a refusal.
        if let Ok(keys) = app.api_keys.list().await
            && apikeys::active_admin_keys(&keys) == 0
        {
            tracing::warn!(
                "no admin API key is left in force: create one with `revocast-authority keys create --scope admin`"
            );
        }
    }
    Ok(Json(info))
}
