//! The wire protocol's messages: revocation events (each with its `seq`) and the control
//! messages `hello`, `heartbeat` and `reset`. One message is one JSON object.

use serde::{Deserialize, Serialize};

use crate::{Epoch, KeyId, RevocationId, Seq, UnixMillis};

/// How long past its expiry a revocation stays in snapshots and in the log. Verifiers that
/// tolerate clock skew accept a token up to their leeway after its `exp`; its revocation must
/// still be there, so verifier leeway must not exceed this.
pub const EXPIRY_GRACE_SECS: i64 = 60;

/// What a revocation revokes. The `type` tag and field names are the wire format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Revocation {
    /// One exact token, until its `exp` (Unix seconds).
    Token { rid: RevocationId, exp: i64 },
    /// Every token of `sub` with a generation below `gen`, until `until`.
    Subject { sub: String, r#gen: u64, until: i64 },
    /// Every token carrying `sid`, until `until`.
    Session { sid: String, until: i64 },
    /// Every token signed by `kid`, forever.
    Key { kid: KeyId },
}

impl Revocation {
    /// Unix second after which the entry can no longer matter; `None` for "forever".
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Self::Token { exp, .. } => Some(*exp),
            Self::Subject { until, .. } | Self::Session { until, .. } => Some(*until),
            Self::Key { .. } => None,
        }
    }

    /// The wire `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Subject { .. } => "subject",
            Self::Session { .. } => "session",
            Self::Key { .. } => "key",
        }
    }
}

/// A committed revocation: `{"seq":41,"type":"token","rid":"…","exp":…,"at":…}`.
///
/// Decoded through `WireEvent`, a flat struct, rather than serde's `flatten`, which buffers
/// every event into an intermediate tree first: snapshots hold millions of events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireEvent")]
pub struct RevocationEvent {
    pub seq: Seq,
    #[serde(flatten)]
    pub revocation: Revocation,
    /// When the authority committed it.
    pub at: UnixMillis,
}

/// The flat wire form of a [`RevocationEvent`], for fast decoding. Unknown fields are ignored.
#[derive(Deserialize)]
struct WireEvent {
    seq: Seq,
    #[serde(rename = "type")]
    kind: WireKind,
    at: UnixMillis,
    rid: Option<RevocationId>,
    exp: Option<i64>,
    sub: Option<String>,
    r#gen: Option<u64>,
    until: Option<i64>,
    sid: Option<String>,
    kid: Option<KeyId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireKind {
    Token,
    Subject,
    Session,
    Key,
}

impl TryFrom<WireEvent> for RevocationEvent {
    type Error = &'static str;

    fn try_from(w: WireEvent) -> Result<Self, Self::Error> {
        let revocation = match w.kind {
            WireKind::Token => Revocation::Token {
                rid: w.rid.ok_or("token event without rid")?,
                exp: w.exp.ok_or("token event without exp")?,
            },
            WireKind::Subject => Revocation::Subject {
                sub: w.sub.ok_or("subject event without sub")?,
                r#gen: w.r#gen.ok_or("subject event without gen")?,
                until: w.until.ok_or("subject event without until")?,
            },
            WireKind::Session => Revocation::Session {
                sid: w.sid.ok_or("session event without sid")?,
                until: w.until.ok_or("session event without until")?,
            },
            WireKind::Key => Revocation::Key {
                kid: w.kid.ok_or("key event without kid")?,
            },
        };
        Ok(Self {
            seq: w.seq,
            revocation,
            at: w.at,
        })
    }
}

/// Control messages; they carry the head `seq` but no `seq` of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    /// First message on every connection. `ack_interval_ms` (an extension) is the average
    /// interval between acknowledgments the authority asks of this connection.
    Hello {
        epoch: Epoch,
        seq: Seq,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack_interval_ms: Option<u64>,
    },
    /// Sent at least every heartbeat interval. `ack_interval_ms` (an extension) updates
    /// `hello`'s as the fleet grows or shrinks.
    Heartbeat {
        seq: Seq,
        at: UnixMillis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack_interval_ms: Option<u64>,
    },
    /// The client must resync from `/v1/snapshot`.
    Reset { epoch: Epoch, seq: Seq },
}

/// Anything the authority sends on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Message {
    Event(RevocationEvent),
    Control(Control),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_match_the_wire_examples() {
        let rid = RevocationId::of_signature(b"x");
        let e = RevocationEvent {
            seq: Seq::new(41),
            revocation: Revocation::Token {
                rid,
                exp: 1_767_225_600,
            },
            at: UnixMillis::new(1_767_222_000_123),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"seq":41,"type":"token","rid":"{rid}","exp":1767225600,"at":1767222000.123}}"#
            )
        );
        assert_eq!(serde_json::from_str::<RevocationEvent>(&json).unwrap(), e);

        let s = RevocationEvent {
            seq: Seq::new(42),
            revocation: Revocation::Subject {
                sub: "user_123".into(),
                r#gen: 4,
                until: 1_767_308_400,
            },
            at: UnixMillis::new(1_767_222_000_000),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"seq":42,"type":"subject","sub":"user_123","gen":4,"until":1767308400,"at":1767222000.0}"#
        );
        assert_eq!(
            serde_json::from_str::<Message>(&json).unwrap(),
            Message::Event(s)
        );
    }

    #[test]
    fn control_messages_decode() {
        let m: Message = serde_json::from_str(r#"{"type":"hello","epoch":"e1","seq":0}"#).unwrap();
        assert_eq!(
            m,
            Message::Control(Control::Hello {
                epoch: Epoch::new("e1"),
                seq: Seq::ZERO,
                ack_interval_ms: None,
            })
        );
        assert!(serde_json::from_str::<Message>(r#"{"type":"token","seq":1}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"type":"bogus"}"#).is_err());
        // A revocation missing its fields is not an event.
        assert!(
            serde_json::from_str::<RevocationEvent>(r#"{"seq":1,"type":"session","at":1.0}"#)
                .is_err()
        );
        // Unknown fields are ignored (forward compatibility).
        let e: RevocationEvent = serde_json::from_str(
            r#"{"seq":2,"type":"session","sid":"s","until":5,"at":1.5,"new":true}"#,
        )
        .unwrap();
        assert_eq!(
            e.revocation,
            Revocation::Session {
                sid: "s".into(),
                until: 5
            }
        );
    }
}
