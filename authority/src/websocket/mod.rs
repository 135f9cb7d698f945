//! The server side of RFC 6455, as much of it as the revocation stream needs: [`codec`] builds
//! server frames and parses what a client sends, on bytes alone; [`socket`] answers the
//! upgrade and moves those frames over a switched connection.
//!
//! Why by hand rather than through a WebSocket library: the stream's frames are built once and
//! shared by every connection (`stream::Part`), so a batch goes to the socket as the shared
//! bytes themselves, in one vectored write, and a connection keeps no write buffer of its own
//! between writes. A library that copies each outgoing message into a per-connection buffer
//! would pay that copy, and hold that memory, once per subscriber.
//!
//! What a client sends is parsed with the limits of the protocol and ours: frames must be
//! masked, control frames short and whole, no extension bits, messages at most
//! [`MAX_CLIENT_MESSAGE`](codec::MAX_CLIENT_MESSAGE) bytes, text valid UTF-8. Anything else
//! ends the connection with the close code RFC 6455 gives for it.

pub(crate) mod codec;
mod socket;

pub use codec::{Inbound, OP_TEXT, ReadEnd, close_code, frame_header, text_frame};
pub use socket::{Socket, Upgrade};
