//! Property tests: wire encodings round-trip for any value, and no input — arbitrary text or a
//! real token with any single change — makes decoding or verification panic or accept a
//! forgery.

use proptest::prelude::*;
use revocast_shared::crypto::backends;
use revocast_shared::event::{Control, Message, Revocation, RevocationEvent};
use revocast_shared::token::issue;
use revocast_shared::{
    Claims, Epoch, KeyId, RevocationId, Seq, SigningKey, UnixMillis, UnverifiedToken, Validation,
    VerifyingKey,
};
use std::sync::OnceLock;

fn digest() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn revocation() -> impl Strategy<Value = Revocation> {
    prop_oneof![
        (digest(), any::<i64>()).prop_map(|(d, exp)| Revocation::Token {
            rid: RevocationId::from_bytes(d),
            exp
        }),
        (any::<String>(), any::<u64>(), any::<i64>()).prop_map(|(sub, g, until)| {
            Revocation::Subject {
                sub,
                r#gen: g,
                until,
            }
        }),
        (any::<String>(), any::<i64>()).prop_map(|(sid, until)| Revocation::Session { sid, until }),
        digest().prop_map(|d| Revocation::Key {
            kid: KeyId::from_bytes(d)
        }),
    ]
}

/// Commit times in milliseconds, up to about 1,100 years after 1970.
fn at() -> impl Strategy<Value = UnixMillis> {
    (0i64..1 << 45).prop_map(UnixMillis::new)
}

fn event() -> impl Strategy<Value = RevocationEvent> {
    (any::<u64>(), revocation(), at()).prop_map(|(seq, revocation, at)| RevocationEvent {
        seq: Seq::new(seq),
        revocation,
        at,
    })
}

/// One signing key for every case: ML-DSA key generation is not free.
fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let claims = Claims {
            iss: "https://auth.test".into(),
            sub: "prop".into(),
            iat: 0,
            exp: i64::MAX / 2,
            nbf: None,
            aud: None,
            jti: "j".into(),
            sid: None,
            r#gen: 0,
            custom: Default::default(),
        };
        issue(&claims, key()).unwrap().token
    })
}

/// The key's public half once per backend compiled in.
fn verifying_keys() -> &'static [VerifyingKey] {
    static KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let public = key().verifying_key().public_key();
        backends()
            .iter()
            .map(|b| VerifyingKey::from_public_key_with(public, *b).unwrap())
            .collect()
    })
}

/// Whether `text` verifies under the key with any backend.
fn verifies(text: &str) -> bool {
    verifying_keys().iter().any(|public| {
        UnverifiedToken::parse(text)
            .is_ok_and(|t| t.verify(public, &Validation::new(0), 1_000).is_ok())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn events_round_trip(event in event()) {
        let json = serde_json::to_string(&event).unwrap();
        let back: RevocationEvent = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &event);
        // And as a stream message, which is how agents read it.
        let message: Message = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(message, Message::Event(event));
    }

    #[test]
    fn control_messages_round_trip(epoch in "[0-9a-f]{1,40}", seq in any::<u64>(), at in at()) {
        for control in [
            Control::Hello { epoch: Epoch::new(epoch.clone()), seq: Seq::new(seq), ack_interval_ms: None },
            Control::Heartbeat { seq: Seq::new(seq), at, ack_interval_ms: None },
            Control::Reset { epoch: Epoch::new(epoch.clone()), seq: Seq::new(seq) },
        ] {
            let json = serde_json::to_string(&control).unwrap();
            let back: Message = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, Message::Control(control));
        }
    }

    #[test]
    fn ids_round_trip_through_text(d in digest()) {
        let rid = RevocationId::from_bytes(d);
        prop_assert_eq!(rid.to_string().parse::<RevocationId>().unwrap(), rid);
        let kid = KeyId::from_bytes(d);
        prop_assert_eq!(kid.to_string().parse::<KeyId>().unwrap(), kid);
    }

    #[test]
    fn arbitrary_text_never_panics_the_decoders(text in any::<String>()) {
        let _ = serde_json::from_str::<Message>(&text);
        let _ = text.parse::<RevocationId>();
        prop_assert!(!verifies(&text));
    }

    /// `Message::from_json` (the agents' fast path) decodes exactly what serde's `untagged`
    /// `Message` decodes, to the same value, for any object of the wire's fields and types.
    #[test]
    fn the_fast_message_decoder_agrees_with_serde(
        fields in proptest::collection::btree_map(
            prop_oneof![Just("seq"), Just("type"), Just("rid"), Just("exp"), Just("sub"),
                        Just("gen"), Just("until"), Just("sid"), Just("kid"), Just("at"),
                        Just("epoch"), Just("ack_interval_ms"), Just("checkpoint"), Just("new")],
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                (0u64..100).prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::from(RevocationId::from_bytes([7; 32]).to_string())),
                prop_oneof![Just("token"), Just("subject"), Just("session"), Just("key"),
                            Just("hello"), Just("heartbeat"), Just("reset"), Just("future")]
                    .prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
                Just(serde_json::json!([1, {"a": "b"}])),
            ],
            0..12,
        )
    ) {
        let object: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let json = serde_json::to_vec(&object).unwrap();
        let fast = Message::from_json(&json).ok();
        let serde = serde_json::from_slice::<Message>(&json).ok();
        prop_assert_eq!(&fast, &serde);
        let text = Message::from_json_str(std::str::from_utf8(&json).unwrap()).ok();
        prop_assert_eq!(text, serde);
    }

    #[test]
    fn arbitrary_text_decodes_alike_both_ways(text in any::<String>()) {
        // Only objects are messages (serde would also take a struct's fields as an array).
        let serde = serde_json::from_str::<Message>(&text)
            .ok()
            .filter(|_| text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{'));
        prop_assert_eq!(&Message::from_json(text.as_bytes()).ok(), &serde);
        prop_assert_eq!(Message::from_json_str(&text).ok(), serde);
    }

    #[test]
    fn arbitrary_json_objects_never_panic_the_event_decoder(
        fields in proptest::collection::btree_map(
            prop_oneof![Just("seq"), Just("type"), Just("rid"), Just("exp"), Just("sub"),
                        Just("gen"), Just("until"), Just("sid"), Just("kid"), Just("at")],
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
                prop_oneof![Just("token"), Just("subject"), Just("session"), Just("key")]
                    .prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
            0..10,
        )
    ) {
        let object: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = serde_json::from_value::<RevocationEvent>(object.into());
    }

    /// Any single-byte change, truncation or extension of a valid token is refused (or, if
    /// it leaves the signed bytes unchanged, still the same token), and never panics.
    #[test]
    fn any_change_to_a_token_is_refused(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0u8..3,
    ) {
        let original = token().as_bytes();
        let i = at.index(original.len());
        let mut changed = original.to_vec();
        match how {
            0 => changed[i] = byte,
            1 => changed.truncate(i),
            _ => changed.insert(i, byte),
        }
        let Ok(text) = String::from_utf8(changed) else { return Ok(()) };
        if text != token() {
            prop_assert!(!verifies(&text), "a changed token verified: {text}");
        }
    }
}

#[test]
fn the_unchanged_token_verifies() {
    for public in verifying_keys() {
        let token = UnverifiedToken::parse(token()).unwrap();
        assert!(token.verify(public, &Validation::new(0), 1_000).is_ok());
    }
}
