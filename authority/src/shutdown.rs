//! The one shutdown signal, SIGINT or SIGTERM, shared with the agent's sidecar: see
//! [`revocast_shared::runtime`].

pub use revocast_shared::runtime::shutdown_signal;
