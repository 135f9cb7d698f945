//! Signing key management: rotate, and revoke a key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use revocast_shared::{KeyId, SigningKey};
use serde_json::{Value, json};

use super::blocking;
use crate::app::AppState;
use crate::auth::{Admin, Authorized};
use crate::error::ApiError;
use crate::limit::{Limited, Revocations};
use crate::store::{AddKey, KeyRevocation, Logged, RevokeKey};

async fn new_key() -> Result<Arc<SigningKey>, ApiError> {
    blocking(SigningKey::generate)
        .await?
        .map(Arc::new)
        .map_err(|e| ApiError::internal(&e))
}

/// A new signing key becomes active; older keys keep verifying (and stay in the JWKS) until
/// every token they signed has expired.
pub async fn rotate(
    _: Authorized<Admin>,
    State(app): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let key = new_key().await?;
    let kid = key.kid();
    app.ledger.submit(AddKey { key }).await?;
    tracing::info!(%kid, "signing key rotated");
    Ok(Json(json!({ "kid": kid })))
}

/// Every token signed by the key is rejected from now on and the key leaves the JWKS. If it was
/// the active key, a fresh key takes over signing.
pub async fn revoke(
    _: Authorized<Admin>,
    _: Limited<Revocations>,
    State(app): State<AppState>,
    Path(kid): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
            Ok(Json(json!({ "kid": kid, "seq": seq })))
        }
        KeyRevocation::AlreadyRevoked(Logged { seq, .. }) => {
            Ok(Json(json!({ "kid": kid, "seq": seq })))
        }
        KeyRevocation::UnknownKey => Err(unknown()),
    }
}
