//! API key authentication as an extractor: `Authorized<Admin>` in a handler's arguments means
//! the request carried a key whose scope allows admin operations. It runs before the body is
//! read, so an unauthenticated request learns nothing about body validation.

use std::marker::PhantomData;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::apikeys::KeyDigest;
use crate::app::AppState;
use crate::config::Scope;
use crate::error::ApiError;
use crate::net::Peer;

/// A scope requirement of a route.
pub trait Requirement {
    /// What the route needs, for the 403 message.
    const NEEDS: &'static str;
    /// With `--client-ca`, the route also needs a verified client certificate.
    const CLIENT_CERT: bool = false;
    fn allows(scope: Scope) -> bool;
}

/// Admin operations: issue, revoke, rotate.
pub struct Admin;
/// Remote verification: `/v1/verify`, `/oauth2/introspect`.
pub struct Introspect;
/// The revocation stream and snapshot.
pub struct Subscribe;

impl Requirement for Admin {
    const NEEDS: &'static str = "admin";
    fn allows(scope: Scope) -> bool {
        scope == Scope::Admin
    }
}

impl Requirement for Introspect {
    const NEEDS: &'static str = "introspect or admin";
    fn allows(scope: Scope) -> bool {
        matches!(scope, Scope::Admin | Scope::Introspect)
    }
}

impl Requirement for Subscribe {
    const NEEDS: &'static str = "subscribe or admin";
    const CLIENT_CERT: bool = true;
    fn allows(scope: Scope) -> bool {
        matches!(scope, Scope::Admin | Scope::Subscribe)
    }
}

/// Proof that the request is authorized for `R`, by the key whose digest it holds.
pub struct Authorized<R> {
    digest: KeyDigest,
    requirement: PhantomData<R>,
}

impl<R> Authorized<R> {
    /// The key that authorized the request (a stream watches it, to end on its revocation).
    pub(crate) fn digest(&self) -> KeyDigest {
        self.digest
    }
}

/// The key of an `Authorization: Bearer KEY` header (scheme case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Whether the request came on a connection with a verified client certificate. A request
/// without connection info (served in-process, not through the listener) has none.
fn client_cert(parts: &Parts) -> bool {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|info| info.0.client_cert)
}

impl<R: Requirement + Send + Sync> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing API key: send Authorization: Bearer KEY")
        })?;
        match app.api_keys.scope_of(key).await? {
            None => Err(ApiError::unauthorized("unknown API key")),
            Some(_)
                if R::CLIENT_CERT && app.config.subscriber_client_cert && !client_cert(parts) =>
            {
                Err(ApiError::forbidden(
                    "this authority requires a client certificate (mutual TLS) for the revocation stream and snapshot",
                ))
            }
            Some((scope, digest)) if R::allows(scope) => {
                parts.extensions.insert(digest);
                // For handlers whose options depend on the scope (`observe` on the stream).
                parts.extensions.insert(scope);
                Ok(Self {
                    digest,
                    requirement: PhantomData,
                })
            }
            Some((scope, _)) => Err(ApiError::forbidden(format!(
                "this key has scope {}; the request needs {}",
                scope.as_str(),
                R::NEEDS
            ))),
        }
    }
}
