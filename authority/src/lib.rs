//! The revocast authority: signs ML-DSA-65 access tokens, records revocations durably with a
//! gap-free `seq`, and serves the HTTP API described by its OpenAPI document.
//!
//! Map of the crate:
//! - [`config`]: flags and `REVOCAST_*` env, validated before anything is bound or written.
//! - [`app`]: [`Authority`] — open the store, load the view, start the ledger, serve.
//! - [`api`]: the router and one module per group of endpoints.
//! - [`auth`], [`extract`]: extractors for API keys and bodies that fail in our error shape.
//! - [`ledger`]: the single writer, committing concurrent mutations in groups (one fsync each).
//! - [`tail`]: applies the log to the view and the hub in `seq` order — our own commits, and
//!   on a shared PostgreSQL database those of the other replicas.
//! - [`stream`]: the fan-out [`stream::Hub`] and the per-connection [`stream::Feed`] behind
//!   `/v1/events` and `/v1/stream`.
//! - `websocket` (private): the server side of RFC 6455 under `/v1/stream` — a frame codec
//!   on bytes alone, the upgrade, and the socket that writes shared frames.
//! - [`net`]: the listener (TCP_NODELAY, write timeout) every connection comes through.
//! - [`view`]: the in-memory mirror (keys, revocation set, subject generations) requests read.
//! - [`store`]: the durable state behind the [`store::Store`] trait; SQLite by default,
//!   PostgreSQL for replicas.
//! - [`apikeys`]: API key generation, hashing, lookup, first-start files.
//! - [`metrics`], [`shutdown`], [`error`].

#![forbid(unsafe_code)]

pub mod api;
pub mod apikeys;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod ledger;
pub mod limit;
pub mod metrics;
pub mod net;
pub mod shutdown;
pub mod store;
pub mod stream;
pub mod tail;
pub mod tls;
pub mod view;
mod websocket;

pub use app::{App, AppState, Authority};
pub use config::{Cli, Config, Scope};
pub use error::{ApiError, Error};
