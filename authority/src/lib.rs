//! The revocast authority: signs ML-DSA-65 access tokens, records revocations durably with a
//! gap-free `seq`, and serves the HTTP API described by its OpenAPI document.
//!
//! # The public surface
//!
//! What an embedder (and the `revocast-authority` binary) needs, and nothing more:
//! - [`Authority`]: open the store, load the state, [`router`](Authority::router) and
//!   [`serve`](Authority::serve); [`Handle`], cloneable and usable while it serves, reads its
//!   head, epoch and active key and does what needs no HTTP (create an API key, revoke a
//!   token in-process). [`open_store`] opens the store a [`Config`] names.
//! - [`config`]: [`Config`] (with [`Config::for_data_dir`]) and the types of its fields; the
//!   command line ([`Cli`], [`config::ServeArgs`], [`config::Command`]) that validates into it;
//!   [`Scope`].
//! - [`store`]: the [`store::Store`] trait, its SQLite and PostgreSQL backends, and the
//!   commands, outcomes and records its methods take and return — for
//!   [`Authority::with_store`].
//! - [`datadir`]: the data directory, created and kept private (what the binary does at every
//!   start, before and after opening the store).
//! - [`apikeys::create`], [`tls::server_config`] (what fills [`Config::tls`]),
//!   [`openapi()`], [`shutdown::shutdown_signal`], [`Error`], [`StoreError`];
//!   `fit_to_descriptor_limit` and `raise_descriptor_limit` (what the binary does before it
//!   serves).
//!
//! # Inside (private)
//!
//! - `app`: what every handler reaches (`App`), the background purge and heartbeat.
//! - `api`: the router and one module per group of endpoints; `auth` and `extract`: the
//!   extractors for API keys and bodies that fail in our error shape (`ApiError`, in `error`).
//! - `ledger`: the single writer, committing concurrent mutations in groups (one fsync each).
//! - `tail`: applies the log to the view and the hub in `seq` order — our own commits, and on
//!   a shared PostgreSQL database those of the other replicas.
//! - `view`: the in-memory mirror (keys, revocation set, subject generations) requests read.
//! - `stream`: the fan-out `Hub` and the per-connection `Feed` behind `/v1/events` and
//!   `/v1/stream`, paced by [`config::Pacing`].
//! - `websocket`: the server side of RFC 6455 under `/v1/stream` — a frame codec on bytes
//!   alone, the upgrade, and the socket that writes shared frames.
//! - `net`: the accept loop every connection comes through: connection caps (in all, per
//!   address), TLS, header-read and idle timeouts, TCP_NODELAY and the write timeout.
//! - `refresh`: refresh tokens' form and stored form, and the sealed answer a retry within
//!   the reuse interval gets (the sessions and tokens themselves live in the store, rotated
//!   by the ledger's `Rotate` command).
//! - `tlog`: the transparency log — log keys, the checkpointer, the leaf cache behind the
//!   proofs, and the audit at start that refuses a log changed behind the authority's back.
//! - `limit`: per-key rate limits (per address for `/oauth2/token`); `slots`: the per-key cap on concurrent snapshots;
//!   `metrics`: the Prometheus registry behind `/metrics`.

#![forbid(unsafe_code)]

pub mod apikeys;
pub mod config;
pub mod datadir;
pub mod shutdown;
pub mod store;
pub mod tls;

mod api;
mod app;
mod auth;
mod error;
mod extract;
mod fleet;
mod ledger;
mod limit;
mod metrics;
mod net;
mod refresh;
mod slots;
mod stream;
mod tail;
mod tlog;
mod view;
mod websocket;

pub use api::openapi;
pub use app::{Authority, Handle, open_store};
pub use config::{Cli, Config, Scope};
pub use error::{Error, StoreError};
#[cfg(unix)]
pub use net::{fit_to_descriptor_limit, raise_descriptor_limit};
