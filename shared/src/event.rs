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
///
/// Its `Deserialize` (serde's `untagged`) buffers every message into serde's intermediate
/// `Content` tree before trying each variant; [`Message::from_json`] decodes the same
/// messages the same way without it, and is what a subscriber's hot path should use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Message {
    Event(RevocationEvent),
    Control(Control),
}

impl Message {
    /// Decode one message from JSON: every object `serde_json::from_slice::<Message>` accepts,
    /// decoded the same way, but straight from the bytes; anything but an object is refused
    /// (a message is one JSON object). An event (the hot path) is read in
    /// one pass into a flat struct, with no intermediate tree; only what is not an event is
    /// read again as a control message (about one a second: heartbeats). The error is the
    /// event's when `type` names an event, else the control message's.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        not_an_object(json)?;
        let event_error = match serde_json::from_slice::<RevocationEvent>(json) {
            Ok(event) => return Ok(Self::Event(event)),
            Err(e) => e,
        };
        match serde_json::from_slice::<Control>(json) {
            Ok(control) => Ok(Self::Control(control)),
            Err(control_error) => Err(
                if serde_json::from_slice::<Tag>(json).is_ok_and(|t| t.kind.is_some()) {
                    event_error
                } else {
                    control_error
                },
            ),
        }
    }

    /// [`Message::from_json`] for text already known to be UTF-8 (a WebSocket text frame):
    /// its strings are not validated again.
    pub fn from_json_str(json: &str) -> Result<Self, serde_json::Error> {
        not_an_object(json.as_bytes())?;
        let event_error = match serde_json::from_str::<RevocationEvent>(json) {
            Ok(event) => return Ok(Self::Event(event)),
            Err(e) => e,
        };
        match serde_json::from_str::<Control>(json) {
            Ok(control) => Ok(Self::Control(control)),
            Err(control_error) => Err(
                if serde_json::from_str::<Tag>(json).is_ok_and(|t| t.kind.is_some()) {
                    event_error
                } else {
                    control_error
                },
            ),
        }
    }
}

/// `Err` unless `json` is an object (or nothing but whitespace, for the parser's own error).
/// serde would also decode a struct from an array of its fields in order — `[1,2,3]` as a
/// heartbeat, the tag as a variant index — which is no message of the protocol.
fn not_an_object(json: &[u8]) -> Result<(), serde_json::Error> {
    match json
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'{') | None => Ok(()),
        Some(_) => Err(serde::de::Error::custom("a message must be a JSON object")),
    }
}

/// A message's `type`, when it names an event (to report the event's error, not the control
/// message's, for a malformed event).
#[derive(Deserialize)]
struct Tag {
    #[serde(rename = "type")]
    kind: Option<WireKind>,
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

    /// The fast decoder (`Message::from_json`) on what the wire may bring: each object is
    /// decoded or refused exactly as serde's `untagged` `Message` does it, anything else is
    /// refused, and nothing panics.
    #[test]
    fn the_fast_decoder_decodes_and_refuses_as_serde_does() {
        let rid = RevocationId::of_signature(b"x");
        let kid = KeyId::from_bytes([0; 32]);
        let cases: Vec<String> = vec![
            // Every kind, as the authority writes them.
            format!(
                r#"{{"seq":41,"type":"token","rid":"{rid}","exp":1767225600,"at":1767222000.123}}"#
            ),
            r#"{"seq":42,"type":"subject","sub":"u","gen":4,"until":1767308400,"at":1.0}"#.into(),
            r#"{"seq":43,"type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            format!(r#"{{"seq":44,"type":"key","kid":"{kid}","at":2}}"#),
            r#"{"type":"hello","epoch":"e1","seq":0}"#.into(),
            r#"{"type":"hello","epoch":"e1","seq":0,"ack_interval_ms":250}"#.into(),
            r#"{"type":"heartbeat","seq":3,"at":1.5,"checkpoint":"o/e\n2\n"}"#.into(),
            r#"{"type":"reset","epoch":"e2","seq":9}"#.into(),
            // Fields in any order, unknown ones ignored, escapes decoded.
            r#"{"at":1.5,"until":5,"new":{"x":[1,2]},"sid":"s\u0041\n","type":"session","seq":2}"#
                .into(),
            r#"{"seq":1,"type":"hello","epoch":"e","at":"not a time"}"#.into(),
            // Unknown types, missing or mistyped fields, truncation, garbage.
            r#"{"type":"future","x":1}"#.into(),
            r#"{"seq":9,"type":"future"}"#.into(),
            r#"{"type":"token","seq":1}"#.into(),
            r#"{"seq":1,"type":"session","at":1.0}"#.into(),
            r#"{"seq":"1","type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            r#"{"seq":-1,"type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            r#"{"seq":1.0,"type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            r#"{"seq":1,"type":"session","sid":5,"until":5,"at":1.5}"#.into(),
            r#"{"seq":1,"type":"session","sid":null,"until":5,"at":1.5}"#.into(),
            r#"{"seq":1,"type":"token","rid":"short","exp":1,"at":1}"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1.5,"seq":2}"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1.5"#.into(),
            r#"{"seq":1,"type":"sess"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1.5} x"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1.5} "#.into(),
            r#"{"type":"heartbeat","seq":3}"#.into(),
            r#"{"type":"hello","epoch":"e"}"#.into(),
            r#"{"type":5}"#.into(),
            "{}".into(),
            "[]".into(),
            "[1,2,3]".into(),
            r#"[42,"session","s",5,1.5]"#.into(),
            "null".into(),
            "".into(),
            "\u{0}\u{ff}garbage".into(),
            // Huge numbers: beyond u64 for `seq`, beyond i64 for `until`, beyond the
            // timestamp range for `at`.
            r#"{"seq":18446744073709551616,"type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            r#"{"seq":18446744073709551615,"type":"session","sid":"s","until":5,"at":1.5}"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":9223372036854775808,"at":1.5}"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1e300}"#.into(),
            r#"{"seq":1,"type":"session","sid":"s","until":5,"at":1e999}"#.into(),
            r#"{"seq":1,"type":"subject","sub":"u","gen":18446744073709551616,"until":5,"at":1}"#
                .into(),
            r#"{"type":"heartbeat","seq":3,"at":1.5,"ack_interval_ms":-1}"#.into(),
        ];
        for case in &cases {
            let fast = Message::from_json(case.as_bytes());
            let text = Message::from_json_str(case);
            assert_eq!(fast.as_ref().ok(), text.as_ref().ok(), "{case}");
            if case.starts_with('{') {
                let serde = serde_json::from_str::<Message>(case);
                assert_eq!(fast.as_ref().ok(), serde.as_ref().ok(), "{case}");
            } else {
                assert!(fast.is_err(), "{case}");
            }
        }
        // serde reads `[1,2,3]` as a heartbeat (the tag as a variant index): not a message.
        assert!(serde_json::from_str::<Message>("[1,2,3]").is_ok());
        assert!(Message::from_json(b" [1,2,3]").is_err());
        assert!(Message::from_json(br#" {"type":"reset","epoch":"e","seq":1}"#).is_ok());
        // The error names what went wrong with the message the `type` names.
        let err = Message::from_json(br#"{"seq":1,"type":"session","at":1.0}"#).unwrap_err();
        assert!(err.to_string().contains("without sid"), "{err}");
        let err = Message::from_json(br#"{"type":"hello","seq":1}"#).unwrap_err();
        assert!(err.to_string().contains("epoch"), "{err}");
        let err = Message::from_json(br#"{"seq":1,"#).unwrap_err();
        assert!(err.is_eof(), "{err}");
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
