//! Decoding stream messages, events and JWKs from arbitrary bytes: never a panic; whatever
//! decodes re-encodes and decodes to the same value; `Message::from_json` decodes as serde does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revocast_shared::event::{Message, RevocationEvent};
use revocast_shared::{JwkSet, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<Message>(data) {
        let again = serde_json::to_vec(&message).expect("encode");
        let back: Message = serde_json::from_slice(&again).expect("re-decode");
        if let Message::Event(event) = &message {
            // Timestamps are re-encoded as seconds: compare what survives exactly.
            let Message::Event(back) = &back else {
                panic!("an event decoded back as a control message")
            };
            assert_eq!((back.seq, &back.revocation), (event.seq, &event.revocation));
        }
    }
    // The agents' decoder agrees with serde's `untagged` derive on every object of valid
    // UTF-8 and refuses anything else. (On other bytes the derive's buffering refuses a bad
    // string in an unknown field that a direct decode skips unread; stream text is UTF-8.)
    let fast = Message::from_json(data).ok();
    if data.iter().find(|b| !b" \t\n\r".contains(b)) != Some(&b'{') {
        assert!(fast.is_none());
    } else if std::str::from_utf8(data).is_ok() {
        assert_eq!(fast, serde_json::from_slice::<Message>(data).ok());
    }
    let _ = serde_json::from_slice::<RevocationEvent>(data);
    if let Ok(set) = serde_json::from_slice::<JwkSet>(data) {
        for jwk in &set.keys {
            let _ = VerifyingKey::from_jwk(jwk);
        }
    }
});
