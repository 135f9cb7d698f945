//! Newtypes for the identifiers that cross the wire, so a key id cannot be passed where a
//! revocation id is expected and a sequence number is not a bare `u64`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::B64;

/// Length of a base64url-encoded SHA-256 digest without padding.
const DIGEST_B64_LEN: usize = 43;

/// Parse a 43-character unpadded base64url SHA-256 digest.
fn digest_from_b64(s: &str) -> Option<[u8; 32]> {
    if s.len() != DIGEST_B64_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    match B64.decode_slice(s, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The raw 32 digest bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Wrap 32 raw digest bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                digest_from_b64(s).map(Self).ok_or(InvalidId($what))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; DIGEST_B64_LEN];
                let n = B64.encode_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_id!(
    /// A key id: the RFC 7638 JWK thumbprint (SHA-256) of the public key, per RFC 9964 §6.
    KeyId,
    "key id"
);
digest_id!(
    /// A revocation id: SHA-256 of a token's raw signature bytes. It names one exact token.
    RevocationId,
    "revocation id"
);

impl RevocationId {
    /// The revocation id of a token whose raw (decoded) signature is `signature`.
    pub fn of_signature(signature: &[u8]) -> Self {
        Self(Sha256::digest(signature).into())
    }
}

/// A string that should have been a 43-character base64url SHA-256 digest and was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {0}: expected 43 base64url characters encoding 32 bytes")]
pub struct InvalidId(&'static str);

/// Position of a revocation in the log: 1 for the first, gap-free, strictly increasing in commit
/// order. `Seq::ZERO` means "nothing yet" (the head of an empty log).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence number after this one. Saturates rather than wrapping: 2^64 revocations is
    /// not a state a log reaches, and wrapping would silently break ordering.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// The random identity of a revocation log, fixed when the log is created. A client that sees
/// a different epoch than the one it synced from must resync from a snapshot.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(String);

impl Epoch {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time as milliseconds since the Unix epoch. On the wire it is Unix *seconds* with a
/// millisecond fraction (`1767222000.123`), as the contract specifies for `at` and `revoked_at`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct UnixMillis(i64);

impl UnixMillis {
    pub const fn new(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The same instant in whole seconds, rounded down.
    pub const fn to_seconds(self) -> UnixSeconds {
        UnixSeconds(self.as_secs())
    }

    /// `d` earlier, saturating.
    pub fn saturating_sub(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A point in time as whole seconds since the Unix epoch: a token's `exp`, a revocation's
/// `until`, a key's `created_at`. On the wire a plain integer, as JWT's NumericDate.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixSeconds(i64);

impl UnixSeconds {
    pub const fn new(secs: i64) -> Self {
        Self(secs)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The current wall-clock time, rounded down to the second.
    pub fn now() -> Self {
        UnixMillis::now().to_seconds()
    }

    /// `secs` seconds later (earlier if negative), saturating.
    pub const fn saturating_add_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// `secs` seconds earlier, saturating.
    pub const fn saturating_sub_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for UnixMillis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Exact for any millisecond value below 2^53, i.e. for the next few hundred thousand years.
        s.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for UnixMillis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        if !secs.is_finite() || secs.abs() > 9.0e15 {
            return Err(serde::de::Error::custom("timestamp out of range"));
        }
        Ok(Self((secs * 1000.0).round() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ids_round_trip_and_reject_bad_input() {
        let rid = RevocationId::of_signature(b"sig");
        let s = rid.to_string();
        assert_eq!(s.len(), 43);
        assert_eq!(s.parse::<RevocationId>().unwrap(), rid);
        assert!("".parse::<RevocationId>().is_err());
        assert!(format!("{s}=").parse::<RevocationId>().is_err());
        assert!(s[..42].parse::<RevocationId>().is_err());
        assert!("+".repeat(43).parse::<KeyId>().is_err());
        // 43 chars whose last char carries non-zero trailing bits is not canonical.
        let mut bad = s[..42].to_string();
        bad.push('B');
        if bad != s {
            assert!(
                bad.parse::<RevocationId>().is_err() || bad.parse::<RevocationId>().unwrap() != rid
            );
        }
    }

    #[test]
    fn millis_serialize_as_fractional_seconds() {
        let t = UnixMillis::new(1_767_222_000_123);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1767222000.123");
        let back: UnixMillis = serde_json::from_str("1767222000.123").unwrap();
        assert_eq!(back, t);
        assert_eq!(t.as_secs(), 1_767_222_000);
        assert!(serde_json::from_str::<UnixMillis>("1e300").is_err());
        assert_eq!(
            t.saturating_sub(std::time::Duration::from_millis(123)),
            UnixMillis::new(1_767_222_000_000)
        );
        assert_eq!(
            UnixMillis::new(i64::MIN).saturating_sub(std::time::Duration::MAX),
            UnixMillis::new(i64::MIN)
        );
    }

    #[test]
    fn seconds_round_down_and_serialize_as_integers() {
        assert_eq!(
            UnixMillis::new(1_767_222_000_999).to_seconds(),
            UnixSeconds::new(1_767_222_000)
        );
        assert_eq!(UnixMillis::new(-1).to_seconds(), UnixSeconds::new(-1));
        let t = UnixSeconds::new(1_767_222_000);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1767222000");
        assert_eq!(
            serde_json::from_str::<UnixSeconds>("1767222000").unwrap(),
            t
        );
        assert_eq!(
            UnixSeconds::new(i64::MAX).saturating_add_secs(1),
            UnixSeconds::new(i64::MAX)
        );
    }

    #[test]
    fn seq_is_ordered_and_saturates() {
        assert!(Seq::new(1) > Seq::ZERO);
        assert_eq!(Seq::ZERO.next(), Seq::new(1));
        assert_eq!(Seq::new(u64::MAX).next(), Seq::new(u64::MAX));
    }
}
