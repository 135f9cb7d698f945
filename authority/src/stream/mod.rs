//! The revocation stream, transport-independent: the [`Hub`] that encodes each committed event
//! once and fans it out, and the [`Feed`] that turns a subscription into exactly what one
//! connection must send. The HTTP transports (SSE, WebSocket) and `/v1/snapshot` live in
//! `api::stream`; the protocol is described in `PROTOCOL.md`.

mod encoded;
mod feed;
mod hub;
mod pacing;
mod part;
#[cfg(test)]
mod testing;

pub use feed::{End, Feed};
pub use hub::{Hub, RECENT_EVENTS, SubscribeError};
pub use pacing::{MAX_LINGER, Pacing, WRITE_BURST};
pub use part::Frame;
pub(crate) use part::sse_of;
