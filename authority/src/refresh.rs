//! Refresh tokens: their form, their stored form, and the sealed answer a retry within the
//! reuse interval gets back.
//!
//! A refresh token is `rvr_` and the base64url of 256 bits from the OS's random source. Like
//! an API key it needs no slow hash: only its SHA-256 is stored, and there is nothing to
//! brute-force. The prefix lets secret scanners recognise a leaked one.
//!
//! The reuse interval needs the answer of a rotation again, to give a client that lost it the
//! same pair, yet the store must not hold a usable token. So the answer is kept *sealed* under
//! the presented (now used) token: XORed with a keystream derived from that token, which only
//! its holder has (the store keeps its SHA-256, a different function of it). Whoever can
//! unseal it could have made the retry anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_shared::token::Audience;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of every refresh token.
pub(crate) const PREFIX: &str = "rvr_";
/// Length of a refresh token: the prefix and 43 base64url characters (32 bytes).
const TOKEN_LEN: usize = PREFIX.len() + 43;

/// A new refresh token and its SHA-256.
pub(crate) fn generate() -> Result<(Zeroizing<String>, [u8; 32]), revocast_shared::Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|_| revocast_shared::Error::Randomness)?;
    let token = Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(*bytes)));
    let hash = hash(&token);
    Ok((token, hash))
}

/// Whether `token` has a refresh token's form (it may still be unknown).
pub(crate) fn is_refresh_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The stored form of a refresh token.
pub(crate) fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What every access token of a session is issued with besides `sub`, `sid` and `gen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Grant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub claims: Map<String, Value>,
    /// The access tokens' lifetime, seconds (capped by `--max-ttl` at each rotation).
    pub ttl: i64,
}

/// A rotation's answer, as sealed for a retry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pair {
    pub access_token: String,
    pub refresh_token: String,
    /// The access token's `exp`.
    pub exp: i64,
}

/// The keystream block `i` for sealing under `token`: SHA-256 over a label, the token and
/// the block number (SHA-256 as a PRF in counter mode; each token seals one answer only).
fn keystream_block(token: &str, i: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"revocast refresh-token seal v1\0");
    h.update(token.as_bytes());
    h.update(i.to_be_bytes());
    h.finalize().into()
}

fn xor_with_keystream(token: &str, data: &mut [u8]) {
    for (i, chunk) in data.chunks_mut(32).enumerate() {
        let block = keystream_block(token, i as u64);
        for (b, k) in chunk.iter_mut().zip(block) {
            *b ^= k;
        }
    }
}

/// `pair` sealed under `token` (the token presented for the rotation that made `pair`).
pub(crate) fn seal(token: &str, pair: &Pair) -> Result<Vec<u8>, serde_json::Error> {
    let mut data = serde_json::to_vec(pair)?;
    xor_with_keystream(token, &mut data);
    Ok(data)
}

/// The pair sealed under `token`; an error if it was not sealed under it.
pub(crate) fn unseal(token: &str, sealed: &[u8]) -> Result<Pair, serde_json::Error> {
    let mut data = Zeroizing::new(sealed.to_vec());
    xor_with_keystream(token, &mut data);
    serde_json::from_slice(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_recognised() {
        let (a, ha) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(*a, *b);
        assert!(is_refresh_token(&a));
        assert_eq!(hash(&a), ha);
        assert!(!is_refresh_token("rvr_short"));
        assert!(!is_refresh_token(&a.replace(PREFIX, "rvc_")));
        assert!(!is_refresh_token(&format!("{}!", &a[..a.len() - 1])));
    }

    #[test]
    fn a_sealed_pair_opens_only_with_its_token() {
        let (token, _) = generate().unwrap();
        let (other, _) = generate().unwrap();
        let pair = Pair {
            access_token: "a".repeat(5000),
            refresh_token: "rvr_x".into(),
            exp: 42,
        };
        let sealed = seal(&token, &pair).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"rvr_x"));
        let opened = unseal(&token, &sealed).unwrap();
        assert_eq!((opened.refresh_token.as_str(), opened.exp), ("rvr_x", 42));
        assert!(unseal(&other, &sealed).is_err());
    }
}
