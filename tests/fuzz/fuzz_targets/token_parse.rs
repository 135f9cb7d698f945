//! Token parsing and verification on arbitrary bytes: never a panic, never a valid token.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use revocast_shared::crypto::SigningSeed;
use revocast_shared::{SigningKey, UnverifiedToken, Validation};

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_seed(SigningSeed::from_bytes([7; 32])))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = UnverifiedToken::parse(text) {
        let _ = token.kid();
        // A forgery would need an ML-DSA-65 signature by this key over the fuzzer's bytes.
        assert!(
            token
                .verify(key().verifying_key(), &Validation::new(60), 0)
                .is_err()
        );
    }
});
