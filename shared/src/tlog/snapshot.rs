//! The seal of an NDJSON snapshot: the SHA-256 of every byte of the body before its last line,
//! signed by the log key under [`SNAPSHOT_CONTEXT`], carried in that last line:
//!
//! ```text
//! {"end":{"events":N,"sha256":"<base64url>","kid":"<log key kid>","sig":"<base64url>"}}
//! ```
//!
//! so a snapshot served by a cache or a mirror can be checked. The members sit inside the
//! existing `end` object, where subscribers that do not know them ignore them.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::verifier::Mismatch;
use crate::crypto::SIGNATURE_LEN;
use crate::keys::{LogSigningKey, LogVerifyingKey};
use crate::{B64, Error, KeyId};

/// The FIPS 204 context string of snapshot seals.
pub const SNAPSHOT_CONTEXT: &[u8] = b"revocast/snapshot/v1";

/// The running digest of a snapshot body: feed it every line before the end line, each with
/// its newline, exactly as sent or received.
#[derive(Clone, Default)]
pub struct SnapshotDigest(Sha256);

impl SnapshotDigest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The signature part of a snapshot's end line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSeal {
    /// SHA-256 of the body before the end line.
    pub sha256: [u8; 32],
    /// The log key that signed (its JWK `kid`).
    pub kid: KeyId,
    /// ML-DSA-65 over the 32 digest bytes, context `revocast/snapshot/v1`.
    pub signature: Vec<u8>,
}

impl SnapshotSeal {
    /// Sign a body's digest.
    pub fn sign(key: &LogSigningKey, sha256: [u8; 32]) -> Result<Self, Error> {
        Ok(Self {
            sha256,
            kid: key.kid(),
            signature: key.sign_in_context(&sha256, SNAPSHOT_CONTEXT)?,
        })
    }

    /// Check the seal against the digest the receiver computed itself and the log keys it
    /// trusts: the digest must be the one signed, by a known key.
    pub fn verify(&self, computed: &[u8; 32], keys: &[LogVerifyingKey]) -> Result<(), Mismatch> {
        let key = keys
            .iter()
            .find(|k| k.kid() == self.kid)
            .ok_or(Mismatch::UnknownKey)?;
        if self.sha256 != *computed {
            return Err(Mismatch::Malformed(
                "the snapshot body is not the one its end line seals".into(),
            ));
        }
        if !key.verify_in_context(&self.sha256, SNAPSHOT_CONTEXT, &self.signature) {
            return Err(Mismatch::BadSignature);
        }
        Ok(())
    }
}

/// The end line's JSON: `{"end":{"events":N,…seal}}`.
#[derive(Serialize, Deserialize)]
struct EndLine {
    end: EndMembers,
}

#[derive(Serialize, Deserialize)]
struct EndMembers {
    events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The end line of a sealed snapshot, newline included.
pub fn end_line(events: u64, seal: &SnapshotSeal) -> String {
    let line = EndLine {
        end: EndMembers {
            events,
            sha256: Some(B64.encode(seal.sha256)),
            kid: Some(seal.kid),
            sig: Some(B64.encode(&seal.signature)),
        },
    };
    match serde_json::to_string(&line) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => unreachable!("the end line always serializes: {e}"),
    }
}

/// Read an end line: its event count and its seal, `None` when unsealed (an authority without
/// a log key). All three seal members or none; anything else is malformed.
pub fn parse_end_line(line: &[u8]) -> Result<(u64, Option<SnapshotSeal>), Mismatch> {
    let malformed = |why: &str| Mismatch::Malformed(format!("snapshot end line: {why}"));
    let end: EndLine = serde_json::from_slice(line).map_err(|e| malformed(&e.to_string()))?;
    let m = end.end;
    match (m.sha256, m.kid, m.sig) {
        (None, None, None) => Ok((m.events, None)),
        (Some(sha256), Some(kid), Some(sig)) => {
            let mut digest = [0u8; 32];
            match B64.decode_slice(&sha256, &mut digest) {
                Ok(32) => {}
                _ => return Err(malformed("sha256 is not 32 bytes of base64url")),
            }
            let signature = B64
                .decode(&sig)
                .ok()
                .filter(|s| s.len() == SIGNATURE_LEN)
                .ok_or_else(|| malformed("sig is not an ML-DSA-65 signature in base64url"))?;
            Ok((
                m.events,
                Some(SnapshotSeal {
                    sha256: digest,
                    kid,
                    signature,
                }),
            ))
        }
        _ => Err(malformed("sha256, kid and sig come together")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tlog::checkpoint::CHECKPOINT_CONTEXT;

    fn body() -> Vec<&'static [u8]> {
        vec![
            b"{\"epoch\":\"e\",\"seq\":2,\"at\":1.0}\n",
            b"{\"seq\":2,\"type\":\"key\",\"kid\":\"k\",\"at\":1.0}\n",
        ]
    }

    fn digest(lines: &[&[u8]]) -> [u8; 32] {
        let mut d = SnapshotDigest::new();
        for l in lines {
            d.update(l);
        }
        d.finish()
    }

    #[test]
    fn a_sealed_body_verifies_and_any_change_does_not() {
        let key = LogSigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let lines = body();
        let seal = SnapshotSeal::sign(&key, digest(&lines)).unwrap();
        let line = end_line(1, &seal);
        assert!(line.starts_with(r#"{"end":{"events":1,"sha256":""#) && line.ends_with("\"}}\n"));
        let (events, parsed) = parse_end_line(line.trim_end().as_bytes()).unwrap();
        let parsed = parsed.unwrap();
        assert_eq!((events, &parsed), (1, &seal));
        parsed.verify(&digest(&lines), &keys).unwrap();
        // The digest is SHA-256 of the concatenated lines.
        assert_eq!(
            digest(&lines),
            <[u8; 32]>::from(Sha256::digest(lines.concat()))
        );

        // One byte changed, one line dropped.
        let changed: Vec<&[u8]> = vec![
            lines[0],
            b"{\"seq\":2,\"type\":\"key\",\"kid\":\"K\",\"at\":1.0}\n",
        ];
        assert!(matches!(
            parsed.verify(&digest(&changed), &keys),
            Err(Mismatch::Malformed(_))
        ));
        assert!(matches!(
            parsed.verify(&digest(&lines[..1]), &keys),
            Err(Mismatch::Malformed(_))
        ));
        // A seal whose digest was swapped for the new body's, keeping the signature.
        let swapped = SnapshotSeal {
            sha256: digest(&changed),
            ..parsed.clone()
        };
        assert_eq!(
            swapped.verify(&digest(&changed), &keys),
            Err(Mismatch::BadSignature)
        );
        // Another key, unknown; a signature under the checkpoint context does not count.
        let other = LogSigningKey::generate().unwrap();
        assert_eq!(
            parsed.verify(&digest(&lines), &[other.verifying_key()]),
            Err(Mismatch::UnknownKey)
        );
        let cross = SnapshotSeal {
            signature: key
                .sign_in_context(&digest(&lines), CHECKPOINT_CONTEXT)
                .unwrap(),
            ..parsed.clone()
        };
        assert_eq!(
            cross.verify(&digest(&lines), &keys),
            Err(Mismatch::BadSignature)
        );
    }

    #[test]
    fn unsealed_and_malformed_end_lines() {
        assert_eq!(
            parse_end_line(br#"{"end":{"events":3}}"#).unwrap(),
            (3, None)
        );
        for bad in [
            r#"{"end":{"events":3,"sha256":"AAAA"}}"#,
            r#"{"end":{"events":3,"sha256":"AAAA","kid":"x","sig":"AAAA"}}"#,
            r#"{"end":{}}"#,
            r#"{"seq":1}"#,
            "",
        ] {
            assert!(
                matches!(parse_end_line(bad.as_bytes()), Err(Mismatch::Malformed(_))),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_end_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_end_line(&bytes);
        }
    }
}
