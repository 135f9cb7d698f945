//! API key authentication as an extractor: `Authorized<Admin>` in a handler's arguments means
//! the request carried a key whose scope allows admin operations. It runs before the body is
//! read, so an unauthenticated request learns nothing about body validation.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::config::Scope;
use crate::error::ApiError;

/// A scope requirement of a route.
pub trait Requirement {
    /// What the route needs, for the 403 message.
    const NEEDS: &'static str;
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
    fn allows(scope: Scope) -> bool {
        matches!(scope, Scope::Admin | Scope::Subscribe)
    }
}

/// Proof that the request is authorized for `R`.
pub struct Authorized<R>(PhantomData<R>);

/// The key of an `Authorization: Bearer KEY` header (scheme case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

impl<R: Requirement + Send + Sync> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("missing API key: send Authorization: Bearer KEY")
        })?;
        match app.api_keys.scope_of(key).await? {
            None => Err(ApiError::unauthorized("unknown API key")),
            Some(scope) if R::allows(scope) => Ok(Self(PhantomData)),
            Some(scope) => Err(ApiError::forbidden(format!(
                "this key has scope {}; the request needs {}",
                scope.as_str(),
                R::NEEDS
            ))),
        }
    }
}
