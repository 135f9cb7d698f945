//! RFC 6962 / RFC 9162 §2.1.1 Merkle tree hashing: SHA-256 with a one-byte domain separator, so
//! that no leaf can be passed off as an interior node or the reverse.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Standard base64 with padding (RFC 4648 §4), as C2SP notes and RFC 9162 JSON use for hashes.
/// Decoding is strict: missing padding and non-canonical trailing bits are rejected.
pub(crate) const STD_B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Length of every hash in the tree.
pub const HASH_LEN: usize = 32;

/// A SHA-256 value in the tree: a leaf hash, an interior node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeHash(pub [u8; HASH_LEN]);

impl TreeHash {
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Standard base64 (44 characters), the form in checkpoints and JSON.
    pub fn to_base64(&self) -> String {
        STD_B64.encode(self.0)
    }

    /// Parse standard padded base64 of exactly 32 bytes; `None` for anything else.
    pub fn from_base64(text: &str) -> Option<Self> {
        // 32 bytes are always 44 characters; checking first keeps odd input from being decoded.
        if text.len() != 44 {
            return None;
        }
        let mut out = [0u8; HASH_LEN];
        match STD_B64.decode_slice(text, &mut out) {
            Ok(HASH_LEN) => Some(Self(out)),
            _ => None,
        }
    }
}

impl fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeHash({})", self.to_base64())
    }
}

impl fmt::Display for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// The leaf hash of `leaf`: SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    TreeHash(h.finalize().into())
}

/// An interior node over `left` and `right`: SHA-256(0x01 || left || right).
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    TreeHash(h.finalize().into())
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> TreeHash {
    TreeHash(Sha256::digest([]).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_rfc_6962_definitions() {
        // SHA-256("") and SHA-256(0x00), well-known values.
        assert_eq!(
            hex::encode(empty_root().0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"").0),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concat = vec![0x01];
        concat.extend_from_slice(&a.0);
        concat.extend_from_slice(&b.0);
        assert_eq!(
            node_hash(&a, &b).0,
            <[u8; 32]>::from(Sha256::digest(&concat))
        );
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn base64_is_strict() {
        let h = leaf_hash(b"x");
        let text = h.to_base64();
        assert_eq!(TreeHash::from_base64(&text), Some(h));
        assert!(TreeHash::from_base64(text.trim_end_matches('=')).is_none());
        assert!(TreeHash::from_base64("").is_none());
        // base64url characters are not standard base64.
        assert!(TreeHash::from_base64(&format!("-{}", &text[1..])).is_none());
        // The 43rd character carries the last 4 bits and 2 unused ones, which must be zero.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bytes = text.into_bytes();
        let value = ALPHABET.iter().position(|&c| c == bytes[42]).unwrap();
        assert_eq!(value & 0b11, 0, "canonical encoding");
        bytes[42] = ALPHABET[value | 1];
        assert!(TreeHash::from_base64(std::str::from_utf8(&bytes).unwrap()).is_none());
    }
}
