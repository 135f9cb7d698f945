//! The wire protocol's messages: revocation events (each with its `seq`) and the control
//! messages `hello`, `heartbeat` and `reset`. One message is one JSON object.

use serde::{Deserialize, Serialize};

use crate::{Epoch, KeyId, RevocationId, Seq, UnixMillis};

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvent {
    pub seq: Seq,
    #[serde(flatten)]
    pub revocation: Revocation,
    /// When the authority committed it.
    pub at: UnixMillis,
}

/// Control messages; they carry the head `seq` but no `seq` of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    /// First message on every connection.
    Hello { epoch: Epoch, seq: Seq },
    /// Sent at least every heartbeat interval.
    Heartbeat { seq: Seq, at: UnixMillis },
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
                seq: Seq::ZERO
            })
        );
        assert!(serde_json::from_str::<Message>(r#"{"type":"token","seq":1}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"type":"bogus"}"#).is_err());
    }
}
