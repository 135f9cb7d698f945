//! Signing key management: rotate, and revoke a key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use revocast_shared::{KeyId, Seq, SigningKey};
use serde::Serialize;
use utoipa::ToSchema;

use super::{blocking, openapi};
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathParams;
use crate::limit::{Limited, Revocations};
use crate::store::{AddKey, KeyRevocation, Logged, RevokeKey};

async fn new_key() -> Result<Arc<SigningKey>, ApiError> {
    blocking(SigningKey::generate)
        .await?
        .map(Arc::new)
        .map_err(|e| ApiError::internal(&e))
}

/// `POST /v1/keys/rotate`'s answer.
#[derive(Serialize, ToSchema)]
pub struct RotateKeyAnswer {
    /// The new signing key.
    #[schema(value_type = openapi::shared::KeyId)]
    kid: KeyId,
}

/// A new signing key becomes active; older keys keep verifying (and stay in the JWKS) until
/// every token they signed has expired.
#[utoipa::path(
    post,
    path = "/v1/keys/rotate",
    tag = "keys",
    operation_id = "rotate_key",
    responses(
        (status = OK, description = "The new key signs from now on.", body = RotateKeyAnswer),
        openapi::KeyedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn rotate(
    _: Authorized<Admin>,
    State(app): State<AppState>,
) -> Result<Json<RotateKeyAnswer>, ApiError> {
    let key = new_key().await?;
    let kid = key.kid();
    app.ledger.submit(AddKey { key }).await?;
    tracing::info!(%kid, "signing key rotated");
    Ok(Json(RotateKeyAnswer { kid }))
}

/// `POST /v1/keys/{kid}/revoke`'s answer, the same for a repeated revocation.
#[derive(Serialize, ToSchema)]
pub struct RevokeKeyAnswer {
    #[schema(value_type = openapi::shared::KeyId)]
    kid: KeyId,
    /// The key's revocation in the log (the first one's, when repeated).
    #[schema(value_type = openapi::shared::Seq)]
    seq: Seq,
}

/// Every token signed by the key is rejected from now on and the key leaves the JWKS. If it was
/// the active key, a fresh key takes over signing.
#[utoipa::path(
    post,
    path = "/v1/keys/{kid}/revoke",
    tag = "keys",
    operation_id = "revoke_key",
    params(("kid" = openapi::shared::KeyId, Path, description = "The key to revoke.")),
    responses(
        (status = OK, description = "Revoked, now or before.", body = RevokeKeyAnswer),
        (status = BAD_REQUEST, body = ErrorBody,
            description = "`invalid_request`: the path is not valid percent-encoded UTF-8."),
        (status = NOT_FOUND, body = ErrorBody,
            description = "`unknown_key`: this authority has no such key."),
        openapi::LimitedErrors,
    ),
    security(("admin" = [])),
)]
pub async fn revoke(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    PathParams(kid): PathParams<String>,
) -> Result<Json<RevokeKeyAnswer>, ApiError> {
    let unknown = || ApiError::not_found("no such key").with_code("unknown_key");
    let kid: KeyId = kid.parse().map_err(|_| unknown())?;
    if !app.view.has_key(&kid) {
        // Another replica may have added it a moment ago.
        app.tail.refresh_keys().await?;
        if !app.view.has_key(&kid) {
            return Err(unknown());
        }
    }
    // Generated whether or not it is needed: which key is active is decided in the commit.
    let replacement = new_key().await?;
    match app.ledger.submit(RevokeKey { kid, replacement }).await? {
        KeyRevocation::Revoked {
            logged: Logged { seq, .. },
            activated,
            ..
        } => {
            let activated = activated.map(|key| key.kid());
            tracing::warn!(%kid, %seq, replacement = ?activated, "signing key revoked");
            Ok(Json(RevokeKeyAnswer { kid, seq }))
        }
        KeyRevocation::AlreadyRevoked(Logged { seq, .. }) => Ok(Json(RevokeKeyAnswer { kid, seq })),
        KeyRevocation::UnknownKey => Err(unknown()),
    }
}
