//! Embedding in axum: [`VerifyLayer`] checks the `Authorization: Bearer` token of every request
//! with the [`Agent`], puts the verified token into the request extensions as
//! [`Authenticated`] (also an extractor), and answers RFC 6750 `401` or `503` itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::agent::{Agent, Verified};
use crate::error::Rejection;

/// The verified token of the current request.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Verified);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        // Absent only when the route is not behind a `VerifyLayer`: refuse rather than serve
        // an unauthenticated request as if it were authenticated.
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(missing_token)
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (status, axum::Json(body)).into_response()
}

/// `401` for a request without a bearer token: a bare challenge, as RFC 6750 §3.1 asks.
pub fn missing_token() -> Response {
    let mut resp = json_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request",
        "a bearer token is required",
    );
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The answer to a rejected token: `401` with an RFC 6750 challenge naming the reason, or
/// `503` when the agent cannot vouch for its revocation set.
pub fn rejection_response(rejection: Rejection) -> Response {
    match rejection {
        Rejection::Unavailable => {
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation set is not current; try again shortly",
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Rejection::Invalid(e) => {
            let mut resp = json_error(StatusCode::UNAUTHORIZED, "invalid_token", e.code());
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                e.code()
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(WWW_AUTHENTICATE, value);
            }
            resp
        }
    }
}

/// A tower layer requiring a valid, unrevoked bearer token on every request.
#[derive(Clone)]
pub struct VerifyLayer {
    agent: Agent,
}

impl VerifyLayer {
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            agent: self.agent.clone(),
        }
    }
}

#[derive(Clone)]
pub struct VerifyService<S> {
    inner: S,
    agent: Agent,
}

impl<S> Service<Request<Body>> for VerifyService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let agent = self.agent.clone();
        Box::pin(async move {
            let verdict = match bearer_token(request.headers()) {
                None => return Ok(missing_token()),
                Some(token) => agent.verify_or_refresh_keys(token).await,
            };
            match verdict {
                Ok(verified) => {
                    request.extensions_mut().insert(Authenticated(verified));
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection_response(rejection)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn rejections_follow_rfc_6750() {
        let r = rejection_response(Rejection::Invalid(revocast_shared::VerifyError::Revoked));
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token_revoked\""
        );
        let r = rejection_response(Rejection::Unavailable);
        assert_eq!(r.status(), 503);
        assert_eq!(missing_token().headers()[WWW_AUTHENTICATE], "Bearer");
    }
}
