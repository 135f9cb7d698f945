#![forbid(unsafe_code)]

pub mod apikeys;
pub mod config;
pub mod shutdown;
pub mod store;
pub mod tls;

mod api;
mod app;
mod auth;
mod error;
mod extract;
mod ledger;
mod limit;
mod metrics;
mod net;
mod stream;
mod tail;
mod view;
mod websocket;

pub use api::openapi;
pub use app::{Authority, Handle, open_store};
pub use config::{Cli, Config, Scope};
pub use error::{Error, StoreError};
