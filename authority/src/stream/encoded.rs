//! Messages encoded once, in both wire forms, for sharing with every connection.

use std::io::Write as _;
use std::str::Utf8Error;
use std::time::Duration;

use bytes::Bytes;
use revocast_shared::Seq;
use revocast_shared::event::{Control, RevocationEvent};
use serde::Serialize;

/// One message in its SSE form, with the bare JSON object a zero-copy slice of the same
/// allocation. Cloning it copies two reference counts, never the bytes.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The revocation's `seq`; `None` for control messages.
    pub seq: Option<Seq>,
    /// `id: SEQ` (events only), `event: TYPE`, `data: JSON` and the blank line.
    pub sse: Bytes,
    /// The JSON object, as sent in a WebSocket text frame.
    pub json: Utf8Bytes,
}

impl Encoded {
    pub fn event(event: &RevocationEvent) -> Self {
        Self::build(Some(event.seq), event.revocation.kind(), event)
    }

    pub fn control(control: &Control) -> Self {
        let kind = match control {
            Control::Hello { .. } => "hello",
            Control::Heartbeat { .. } => "heartbeat",
            Control::Reset { .. } => "reset",
        };
        Self::build(None, kind, control)
    }

    /// `hello` with, for a connection in the fleet, its handle (for acks over SSE) and the
    /// average interval between acknowledgments it is asked to keep, after the contract's
    /// fields.
    pub fn hello(
        epoch: &revocast_shared::Epoch,
        head: Seq,
        acks: Option<(&str, Duration)>,
    ) -> Self {
        #[derive(Serialize)]
        struct Hello<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            epoch: &'a revocast_shared::Epoch,
            seq: Seq,
            #[serde(skip_serializing_if = "Option::is_none")]
            conn: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ack_interval_ms: Option<u64>,
        }
        Self::build(
            None,
            "hello",
            &Hello {
                kind: "hello",
                epoch,
                seq: head,
                conn: acks.map(|(conn, _)| conn),
                ack_interval_ms: acks.map(|(_, every)| every.as_millis() as u64),
            },
        )
    }

    /// `heartbeat` carrying a signed checkpoint note: the contract's fields, `ack_interval_ms`,
    /// then `checkpoint` last (PROTOCOL.md "How checkpoints travel").
    pub fn heartbeat(
        seq: Seq,
        at: revocast_shared::UnixMillis,
        ack_interval_ms: u64,
        checkpoint: Option<&str>,
    ) -> Self {
        #[derive(Serialize)]
        struct Heartbeat<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            seq: Seq,
            at: revocast_shared::UnixMillis,
            ack_interval_ms: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            checkpoint: Option<&'a str>,
        }
        Self::build(
            None,
            "heartbeat",
            &Heartbeat {
                kind: "heartbeat",
                seq,
                at,
                ack_interval_ms,
                checkpoint,
            },
        )
    }

    fn build(seq: Option<Seq>, kind: &str, message: &impl Serialize) -> Self {
        let mut buf = Vec::with_capacity(192);
        // Writes into a Vec cannot fail, and our message types always serialize (string keys,
        // no maps with non-string keys, no floats that could be NaN).
        if let Some(seq) = seq {
            let _ = writeln!(buf, "id: {seq}");
        }
        let _ = write!(buf, "event: {kind}\ndata: ");
        let start = buf.len();
        if let Err(e) = serde_json::to_writer(&mut buf, message) {
            unreachable!("wire messages always serialize: {e}");
        }
        let end = buf.len();
        buf.extend_from_slice(b"\n\n");
        let sse = Bytes::from(buf);
        let json = match Utf8Bytes::try_from(sse.slice(start..end)) {
            Ok(json) => json,
            Err(e) => unreachable!("serde_json writes UTF-8: {e}"),
        };
        Self { seq, sse, json }
    }
}

/// Bytes known to be UTF-8, as a WebSocket text frame needs: a [`Bytes`] (cloned by reference
/// count, sliced without a copy) that can only be made by checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text. The crate forbids the `unsafe` that skipping the check would take, so this
    /// checks the bytes again: for tests, not the hot path.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.0) {
            Ok(text) => text,
            Err(e) => unreachable!("Utf8Bytes are checked when made: {e}"),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::Epoch;

    use super::*;
    use crate::stream::testing::session;

    #[test]
    fn sse_form_has_id_only_for_events() {
        let e = Encoded::event(&session(7));
        assert_eq!(
            &e.sse[..],
            b"id: 7\nevent: session\ndata: {\"seq\":7,\"type\":\"session\",\"sid\":\"s7\",\"until\":100,\"at\":5.0}\n\n"
        );
        assert_eq!(
            e.json.as_str(),
            r#"{"seq":7,"type":"session","sid":"s7","until":100,"at":5.0}"#
        );
        let hello = Encoded::control(&Control::Hello {
            epoch: Epoch::new("ep"),
            seq: Seq::new(3),
            ack_interval_ms: None,
        });
        assert_eq!(
            &hello.sse[..],
            b"event: hello\ndata: {\"type\":\"hello\",\"epoch\":\"ep\",\"seq\":3}\n\n"
        );
        assert_eq!(hello.seq, None);
    }
}
