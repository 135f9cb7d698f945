//! The revocast agent: verifies access tokens locally, in microseconds, against a copy of the
//! authority's revocation set that the authority pushes to it — and fails closed when it can
//! no longer be sure that copy is current.
//!
//! ```no_run
//! # async fn example() -> Result<(), revocast_agent::Error> {
//! use revocast_agent::{Agent, AgentConfig};
//! let agent = Agent::start(AgentConfig::new("http://127.0.0.1:8080", "rvc_…"))?;
//! agent.wait_until_synced(std::time::Duration::from_secs(10)).await;
//! match agent.verify("eyJ…") {
//!     Ok(verified) => println!("hello {}", verified.claims().sub),
//!     Err(rejection) => println!("no: {}", rejection.code()),
//! }
//! # Ok(()) }
//! ```
//!
//! Map of the crate:
//! - [`agent`]: [`Agent`] — start, [`Agent::verify`], status, metrics.
//! - `sync` (private): snapshot, stream, resume, resync, fail-over, backoff.
//! - `mirror` (private): the local copy (revocation set, keys, position) and its freshness.
//! - `cache` (private): the verdict cache keyed on the whole token.
//! - [`layer`]: the tower [`VerifyLayer`] and the [`Authenticated`] extractor for axum.
//! - [`sidecar`]: the `/verify`, `/healthz`, `/metrics` router of the `revocast-agent` binary.
//! - [`config`], [`error`], [`metrics`], [`shutdown`].

#![forbid(unsafe_code)]

pub mod agent;
mod cache;
pub mod config;
pub mod error;
pub mod layer;
pub mod metrics;
mod mirror;
pub mod shutdown;
pub mod sidecar;
mod sync;
pub mod tls;

pub use agent::{Agent, Status, Verified};
pub use config::{AgentConfig, OnStale, Transport};
pub use error::{Error, Rejection};
pub use layer::{Authenticated, VerifyLayer};
pub use revocast_shared::revset::RevocationSet;
pub use tls::TlsOptions;
