//! Checkpoints in the C2SP tlog-checkpoint format (<https://c2sp.org/tlog-checkpoint>), signed
//! as C2SP signed notes by the log key with ML-DSA-65 under the FIPS 204 context
//! [`CHECKPOINT_CONTEXT`]:
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 root hash>
//! revocast-time <Unix milliseconds>
//!
//! — <origin> <base64(key ID || ML-DSA-65 signature)>
//! ```

use std::fmt;

use super::frontier::MAX_TREE_SIZE;
use super::hash::TreeHash;
use super::note::{NoteError, NoteSignature, SignedNote, check_key_name, key_id};
use crate::keys::{LogSigningKey, LogVerifyingKey};
use crate::{Epoch, Error, UnixMillis};

/// The FIPS 204 context string of checkpoint signatures.
pub const CHECKPOINT_CONTEXT: &[u8] = b"revocast/checkpoint/v1";

/// The signed-note signature type of checkpoint signatures. ML-DSA-65 with our context has no
/// identifier byte assigned by signed-note, so per its rule for such types it is `0xff`
/// followed by a longer identifier unlikely to collide: ours is the context string itself.
pub fn signature_type() -> Vec<u8> {
    let mut t = Vec::with_capacity(1 + CHECKPOINT_CONTEXT.len());
    t.push(0xff);
    t.extend_from_slice(CHECKPOINT_CONTEXT);
    t
}

/// The extension line's keyword: `revocast-time <Unix milliseconds>`.
pub const TIME_EXTENSION: &str = "revocast-time ";

/// Why a checkpoint's text is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a signed note: {0}")]
    Note(#[from] NoteError),
    #[error("a checkpoint is exactly four lines: origin, size, root, revocast-time")]
    LineCount,
    #[error("the origin is empty or holds a space, a plus or a control character")]
    BadOrigin,
    #[error("the tree size is not a canonical decimal number within range")]
    BadSize,
    #[error("the root hash is not standard base64 of 32 bytes")]
    BadRoot,
    #[error("the fourth line is not revocast-time with canonical decimal milliseconds")]
    BadTime,
}

/// A checkpoint's content: which log, how many leaves, their root, and the authority's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `<issuer without scheme>/<epoch>`, see [`origin`].
    pub origin: String,
    /// Leaves in the tree: the `seq` of the last event it covers.
    pub size: u64,
    pub root: TreeHash,
    /// The authority's clock when it signed.
    pub time: UnixMillis,
}

/// The log's origin line (and signing key name): the issuer URL without its `https://` or
/// `http://` and trailing `/`, then `/`, then the epoch. `https://auth.example.com` and epoch
/// `0f1e…` give `auth.example.com/0f1e…`. An error if the result would not be a valid key
/// name (empty, or holding a space, a plus or a control character).
pub fn origin(issuer: &str, epoch: &Epoch) -> Result<String, CheckpointError> {
    let host_path = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer)
        .trim_end_matches('/');
    if host_path.is_empty() || epoch.as_str().is_empty() {
        return Err(CheckpointError::BadOrigin);
    }
    let origin = format!("{host_path}/{epoch}");
    check_origin(&origin)?;
    Ok(origin)
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.chars().any(char::is_control) {
        return Err(CheckpointError::BadOrigin);
    }
    check_key_name(origin).map_err(|_| CheckpointError::BadOrigin)
}

impl Checkpoint {
    /// The note text: four lines, each ending in a newline.
    pub fn to_note_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIME_EXTENSION}{}\n",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.time.as_millis()
        )
    }

    /// Parse a note text strictly: exactly the four lines [`Checkpoint::to_note_text`] writes.
    pub fn from_note_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::LineCount)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root), Some(time), None) = (
            lines.next(),
            lines.next(),
            lines.next(),
            lines.next(),
            lines.next(),
        ) else {
            return Err(CheckpointError::LineCount);
        };
        check_origin(origin)?;
        let size = parse_canonical_u64(size)
            .filter(|s| *s <= MAX_TREE_SIZE)
            .ok_or(CheckpointError::BadSize)?;
        let root = TreeHash::from_base64(root).ok_or(CheckpointError::BadRoot)?;
        let millis = time
            .strip_prefix(TIME_EXTENSION)
            .and_then(parse_canonical_u64)
            .and_then(|ms| i64::try_from(ms).ok())
            .ok_or(CheckpointError::BadTime)?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            time: UnixMillis::new(millis),
        })
    }

    /// The signed note: this checkpoint signed by `key`, key name = origin.
    pub fn sign(&self, key: &LogSigningKey) -> Result<String, Error> {
        let text = self.to_note_text();
        let signature = key.sign_in_context(text.as_bytes(), CHECKPOINT_CONTEXT)?;
        let line = NoteSignature {
            key_name: self.origin.clone(),
            key_id: checkpoint_key_id(&self.origin, &key.verifying_key()),
            signature,
        };
        Ok(SignedNote::new(text, vec![line]).to_text())
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} root {}", self.origin, self.size, self.root)
    }
}

/// The signed-note key ID of `key` signing checkpoints as `key_name`:
/// SHA-256(key name || 0x0A || 0xff || "revocast/checkpoint/v1" || public key)\[:4\].
pub fn checkpoint_key_id(key_name: &str, key: &LogVerifyingKey) -> u32 {
    key_id(key_name, &signature_type(), key.public_key())
}

/// ASCII decimal with no sign, no leading zero (but `0` itself) and no overflow.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tlog::hash::leaf_hash;

    fn example() -> Checkpoint {
        Checkpoint {
            origin: "auth.example.com/0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            size: 3,
            root: leaf_hash(b"r"),
            time: UnixMillis::new(1_767_222_000_123),
        }
    }

    #[test]
    fn origins_drop_the_scheme_and_refuse_bad_key_names() {
        let e = Epoch::new("0f1e");
        assert_eq!(
            origin("https://auth.example.com", &e).unwrap(),
            "auth.example.com/0f1e"
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/", &e).unwrap(),
            "127.0.0.1:8080/0f1e"
        );
        assert_eq!(
            origin("https://a.example/tenant/x", &e).unwrap(),
            "a.example/tenant/x/0f1e"
        );
        for bad in ["https://", "https://a b", "https://a+b", "https://a\tb"] {
            assert_eq!(origin(bad, &e), Err(CheckpointError::BadOrigin), "{bad}");
        }
        assert_eq!(
            origin("https://a", &Epoch::new("")),
            Err(CheckpointError::BadOrigin)
        );
    }

    #[test]
    fn text_round_trips_and_has_the_documented_form() {
        let c = example();
        let text = c.to_note_text();
        assert_eq!(
            text,
            format!(
                "auth.example.com/0f1e2d3c4b5a69788796a5b4c3d2e1f0\n3\n{}\nrevocast-time 1767222000123\n",
                c.root
            )
        );
        assert_eq!(Checkpoint::from_note_text(&text).unwrap(), c);
        let empty = Checkpoint { size: 0, ..c };
        assert_eq!(
            Checkpoint::from_note_text(&empty.to_note_text()).unwrap(),
            empty
        );
    }

    #[test]
    fn malformed_texts_are_refused_with_their_reason() {
        let root = leaf_hash(b"r").to_base64();
        let cases = [
            (
                format!("o\n3\n{root}\nrevocast-time 1"),
                CheckpointError::LineCount,
            ),
            (format!("o\n3\n{root}\n"), CheckpointError::LineCount),
            (
                format!("o\n3\n{root}\nrevocast-time 1\nmore\n"),
                CheckpointError::LineCount,
            ),
            (
                format!("\n3\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadOrigin,
            ),
            (
                format!("o p\n3\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadOrigin,
            ),
            (
                format!("o\n03\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadSize,
            ),
            (
                format!("o\n+3\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadSize,
            ),
            (
                format!("o\n\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadSize,
            ),
            (
                format!("o\n9223372036854775808\n{root}\nrevocast-time 1\n"),
                CheckpointError::BadSize,
            ),
            (
                "o\n3\nAAAA\nrevocast-time 1\n".to_string(),
                CheckpointError::BadRoot,
            ),
            (
                format!("o\n3\n{root}\nrevocast-time 01\n"),
                CheckpointError::BadTime,
            ),
            (
                format!("o\n3\n{root}\nrevocast-time -1\n"),
                CheckpointError::BadTime,
            ),
            (
                format!("o\n3\n{root}\nrevocast-time 1.5\n"),
                CheckpointError::BadTime,
            ),
            (
                format!("o\n3\n{root}\nrevocast-time  1\n"),
                CheckpointError::BadTime,
            ),
            (
                format!("o\n3\n{root}\nrevocast-time 9223372036854775808\n"),
                CheckpointError::BadTime,
            ),
            (format!("o\n3\n{root}\ntime 1\n"), CheckpointError::BadTime),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::from_note_text(&text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn a_signed_checkpoint_is_a_note_signed_under_the_origin_with_the_type_ff_key_id() {
        let key = LogSigningKey::generate().unwrap();
        let c = example();
        let note = c.sign(&key).unwrap();
        let parsed = SignedNote::parse(note.as_bytes()).unwrap();
        assert_eq!(parsed.text(), c.to_note_text());
        let [sig] = parsed.signatures() else {
            panic!("one signature")
        };
        assert_eq!(sig.key_name, c.origin);
        let mut preimage = c.origin.as_bytes().to_vec();
        preimage.push(b'\n');
        preimage.push(0xff);
        preimage.extend_from_slice(b"revocast/checkpoint/v1");
        preimage.extend_from_slice(key.verifying_key().public_key());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&preimage);
        assert_eq!(sig.key_id.to_be_bytes(), digest[..4]);
        assert!(key.verifying_key().verify_in_context(
            parsed.text().as_bytes(),
            CHECKPOINT_CONTEXT,
            &sig.signature
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,120}") {
            let _ = Checkpoint::from_note_text(&text);
        }

        #[test]
        fn checkpoint_shaped_text_never_panics(
            origin in "[a-z./ +]{0,10}",
            size in "[0-9+-]{0,21}",
            root in "[A-Za-z0-9+/=]{40,46}",
            time in "[0-9 -]{0,21}",
        ) {
            let text = format!("{origin}\n{size}\n{root}\nrevocast-time {time}\n");
            if let Ok(c) = Checkpoint::from_note_text(&text) {
                prop_assert_eq!(c.to_note_text(), text);
            }
        }
    }
}
