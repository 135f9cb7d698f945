//! Request rate limits per API key on the endpoints that cost the most: issuing tokens (an
//! ML-DSA signature each) and revoking (a durable write each). Over the limit a request gets
//! `429 rate_limited` with `Retry-After` at once, instead of queueing until everything slows
//! down. A handler opts in by taking [`Limited<B>`] *after* its `Authorized<…>` argument:
//! extractors run in order, so only keys that authenticated get a bucket and a flood of
//! made-up keys cannot grow the table.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::apikeys::KeyDigest;
use crate::app::AppState;
use crate::error::ApiError;
use crate::net::Peer;

type Limiter = DefaultKeyedRateLimiter<[u8; 32]>;

/// The configured limiters; `None` where the limit is off.
pub struct Limits {
    tokens: Option<Limiter>,
    revocations: Option<Limiter>,
    /// `POST /oauth2/token`, per client address: see [`RefreshLimited`].
    refreshes: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limits {
    /// Requests per second per API key (bursts up to one second's worth); 0 turns a limit off.
    /// Refreshes count against the issuing rate, per client address instead of per key.
    pub fn new(tokens_per_second: u32, revocations_per_second: u32) -> Self {
        let limiter = |n: u32| NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_second(n)));
        Self {
            tokens: limiter(tokens_per_second),
            revocations: limiter(revocations_per_second),
            refreshes: NonZeroU32::new(tokens_per_second)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
        }
    }

    /// Forget the client addresses whose bucket is full again, so the table stays bounded
    /// by the addresses seen within about a second.
    pub fn forget_idle(&self) {
        if let Some(refreshes) = &self.refreshes {
            refreshes.retain_recent();
            refreshes.shrink_to_fit();
        }
    }
}

/// Proof that a `POST /oauth2/token` request was within its client address's rate (the
/// issuing rate, `--rate-limit-tokens`). There is no API key: the refresh token is the
/// credential, and it is known to be one only after a store lookup — the very cost a flood of
/// made-up tokens must not impose unbounded. So the limit applies before the lookup, and the
/// only identity a request has then is where it comes from. (Behind a proxy every client
/// shares the proxy's address: raise the limit, or limit at the proxy.)
pub struct RefreshLimited;

impl FromRequestParts<AppState> for RefreshLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(limiter) = &app.limits.refreshes else {
            return Ok(Self);
        };
        // Served in-process (not through the listener) there is no address: one bucket.
        let ip = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip);
        match limiter.check_key(&ip) {
            Ok(()) => Ok(Self),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                app.metrics
                    .rate_limited
                    .get_or_create(&vec![("limit", "refreshes")])
                    .inc();
                Err(ApiError::rate_limited(
                    "too many token requests from this address; retry later",
                    wait,
                ))
            }
        }
    }
}

/// Which limit a route counts against.
pub trait Bucket {
    /// For the metric label and the error message.
    const NAME: &'static str;
    fn limiter(limits: &Limits) -> Option<&Limiter>;
}

/// `POST /v1/tokens`.
pub struct Tokens;
/// Every revoke endpoint.
pub struct Revocations;

impl Bucket for Tokens {
    const NAME: &'static str = "tokens";
    fn limiter(limits: &Limits) -> Option<&Limiter> {
        limits.tokens.as_ref()
    }
}

impl Bucket for Revocations {
    const NAME: &'static str = "revocations";
    fn limiter(limits: &Limits) -> Option<&Limiter> {
        limits.revocations.as_ref()
    }
}

/// Proof that the request was within its key's rate for `B`.
pub struct Limited<B>(PhantomData<B>);

impl<B: Bucket + Send + Sync> FromRequestParts<AppState> for Limited<B> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(limiter) = B::limiter(&app.limits) else {
            return Ok(Self(PhantomData));
        };
        // `Authorized` ran first and left the key's digest.
        let Some(KeyDigest(key)) = parts.extensions.get::<KeyDigest>().copied() else {
            return Err(ApiError::unauthorized(
                "missing API key: send Authorization: Bearer KEY",
            ));
        };
        match limiter.check_key(&key) {
            Ok(()) => Ok(Self(PhantomData)),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                app.metrics
                    .rate_limited
                    .get_or_create(&vec![("limit", B::NAME)])
                    .inc();
                Err(ApiError::rate_limited(
                    format!(
                        "too many {} requests for this API key; retry later",
                        B::NAME
                    ),
                    wait,
                ))
            }
        }
    }
}
