//! What an agent runs: verify a checkpoint note against the log keys it trusts, and its root
//! against the agent's own tree, built from the events it applied. Every doubt is a
//! [`Mismatch`], whose [`code`](Mismatch::code) is a metric label.

use std::fmt;

use super::checkpoint::{CHECKPOINT_CONTEXT, Checkpoint, CheckpointError, checkpoint_key_id};
use super::frontier::Frontier;
use super::hash::{TreeHash, leaf_hash};
use super::note::SignedNote;
use crate::UnixMillis;
use crate::keys::LogVerifyingKey;

/// Why a checkpoint (or a snapshot's seal) was not accepted. All of them mean: resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Not a signed note, not a checkpoint of our format, or a snapshot end line that is not.
    Malformed(String),
    /// Well-formed, but for another log (another issuer or epoch).
    WrongOrigin { expected: String, got: String },
    /// No signature from a known log key (name = origin, key ID of a known key). After one
    /// JWKS refresh, a resync.
    UnknownKey,
    /// A signature from a known log key that does not verify.
    BadSignature,
    /// The checkpoint covers leaves the agent has not received (its size is above ours).
    SizeMismatch { checkpoint: u64, ours: u64 },
    /// The checkpoint's root differs from the root of the agent's own tree at that size.
    RootMismatch { size: u64 },
    /// A smaller tree than a checkpoint already verified (a replay, or a rollback).
    OlderThanSeen { seen: u64, got: u64 },
}

impl Mismatch {
    /// The metric label: `malformed`, `wrong_origin`, `unknown_key`, `bad_signature`,
    /// `size_mismatch`, `root_mismatch`, `older_than_seen`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongOrigin { .. } => "wrong_origin",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::RootMismatch { .. } => "root_mismatch",
            Self::OlderThanSeen { .. } => "older_than_seen",
        }
    }

    /// Every code, for registering metric labels up front.
    pub const CODES: [&'static str; 7] = [
        "malformed",
        "wrong_origin",
        "unknown_key",
        "bad_signature",
        "size_mismatch",
        "root_mismatch",
        "older_than_seen",
    ];
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed: {why}"),
            Self::WrongOrigin { expected, got } => {
                write!(f, "checkpoint of log {got:?}, expected {expected:?}")
            }
            Self::UnknownKey => f.write_str("no signature by a known log key"),
            Self::BadSignature => f.write_str("a log key's signature does not verify"),
            Self::SizeMismatch { checkpoint, ours } => write!(
                f,
                "checkpoint of size {checkpoint} is beyond the {ours} events received"
            ),
            Self::RootMismatch { size } => {
                write!(f, "the checkpoint's root at size {size} differs from ours")
            }
            Self::OlderThanSeen { seen, got } => write!(
                f,
                "checkpoint of size {got} is older than the verified size {seen}"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

impl From<CheckpointError> for Mismatch {
    fn from(e: CheckpointError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Check a checkpoint note's form, origin and signature (not its root): signed-note's rule is
/// that signatures from unknown keys are ignored, a known key's signature that fails rejects
/// the note, and a note with no verified known signature is rejected.
pub fn verify_checkpoint_note(
    note: &[u8],
    origin: &str,
    keys: &[LogVerifyingKey],
) -> Result<Checkpoint, Mismatch> {
    let parsed = SignedNote::parse(note).map_err(|e| Mismatch::Malformed(e.to_string()))?;
    let checkpoint = Checkpoint::from_note_text(parsed.text())?;
    if checkpoint.origin != origin {
        return Err(Mismatch::WrongOrigin {
            expected: origin.to_owned(),
            got: checkpoint.origin,
        });
    }
    let mut verified = false;
    for signature in parsed.signatures() {
        if signature.key_name != origin {
            continue;
        }
        for key in keys {
            if checkpoint_key_id(origin, key) != signature.key_id {
                continue;
            }
            if !key.verify_in_context(
                parsed.text().as_bytes(),
                CHECKPOINT_CONTEXT,
                &signature.signature,
            ) {
                return Err(Mismatch::BadSignature);
            }
            verified = true;
        }
    }
    if verified {
        Ok(checkpoint)
    } else {
        Err(Mismatch::UnknownKey)
    }
}

/// An agent's view of the log: the frontier at the last verified checkpoint, the leaf hashes
/// of the events applied since, and the newest checkpoint verified.
///
/// Checkpoints are signed off the hot path, so one reaches the agent after events beyond it
/// may have: keeping the leaves since the last verified checkpoint lets the agent compute
/// the root at any size between that checkpoint and its position, for one 32-byte push per
/// event. The leaves are dropped as soon as a checkpoint covers them.
#[derive(Clone, Debug)]
pub struct CheckpointVerifier {
    origin: String,
    verified: Frontier,
    unverified: Vec<TreeHash>,
    newest: Option<Checkpoint>,
    newest_time: Option<UnixMillis>,
}

impl CheckpointVerifier {
    /// Start from a snapshot: its checkpoint note must verify, and its frontier (the tree at
    /// the checkpoint's size) must have that size and root. `seen` is the newest checkpoint
    /// verified before (across a resync); a snapshot older than it, of the same log, is a
    /// [`Mismatch::OlderThanSeen`].
    pub fn from_snapshot(
        origin: &str,
        checkpoint_note: &[u8],
        frontier: Frontier,
        keys: &[LogVerifyingKey],
        seen: Option<&Checkpoint>,
    ) -> Result<Self, Mismatch> {
        let checkpoint = verify_checkpoint_note(checkpoint_note, origin, keys)?;
        if let Some(seen) = seen.filter(|s| s.origin == origin)
            && checkpoint.size < seen.size
        {
            return Err(Mismatch::OlderThanSeen {
                seen: seen.size,
                got: checkpoint.size,
            });
        }
        if frontier.size() != checkpoint.size {
            return Err(Mismatch::SizeMismatch {
                checkpoint: checkpoint.size,
                ours: frontier.size(),
            });
        }
        if frontier.root() != checkpoint.root {
            return Err(Mismatch::RootMismatch {
                size: checkpoint.size,
            });
        }
        Ok(Self {
            origin: origin.to_owned(),
            verified: frontier,
            unverified: Vec::new(),
            newest_time: Some(checkpoint.time),
            newest: Some(checkpoint),
        })
    }

    /// Append the leaf of an event applied: its exact wire bytes.
    pub fn push_leaf(&mut self, leaf: &[u8]) {
        self.unverified.push(leaf_hash(leaf));
    }

    /// Append a leaf already hashed.
    pub fn push_leaf_hash(&mut self, leaf: TreeHash) {
        self.unverified.push(leaf);
    }

    /// Leaves applied: the agent's `seq`.
    pub fn size(&self) -> u64 {
        self.verified.size() + self.unverified.len() as u64
    }

    /// Leaves applied since the last verified checkpoint.
    pub fn unverified_leaves(&self) -> usize {
        self.unverified.len()
    }

    /// The log this verifier follows.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The largest checkpoint verified (the one the frontier is at).
    pub fn newest(&self) -> Option<&Checkpoint> {
        self.newest.as_ref()
    }

    /// The latest signed time of any checkpoint verified: what freshness is judged by.
    pub fn newest_time(&self) -> Option<UnixMillis> {
        self.newest_time
    }

    /// Verify a checkpoint note: signature, origin, and root against our own leaves. On
    /// success the leaves it covers are forgotten and its time counts for freshness; on any
    /// [`Mismatch`] nothing changes (and the caller resyncs).
    ///
    /// A checkpoint of the same size as the newest one (an idle log signing again) is valid;
    /// one of a smaller size is [`Mismatch::OlderThanSeen`]. The signed time never has to
    /// increase (replicas' clocks differ slightly): only the latest counts.
    pub fn check(&mut self, note: &[u8], keys: &[LogVerifyingKey]) -> Result<Checkpoint, Mismatch> {
        let checkpoint = verify_checkpoint_note(note, &self.origin, keys)?;
        if checkpoint.size < self.verified.size() {
            return Err(Mismatch::OlderThanSeen {
                seen: self.verified.size(),
                got: checkpoint.size,
            });
        }
        let ours = self.size();
        if checkpoint.size > ours {
            return Err(Mismatch::SizeMismatch {
                checkpoint: checkpoint.size,
                ours,
            });
        }
        // In range: verified.size() <= checkpoint.size <= size().
        let covered = (checkpoint.size - self.verified.size()) as usize;
        let mut at_size = self.verified.clone();
        for leaf in &self.unverified[..covered] {
            at_size.push(*leaf);
        }
        if at_size.root() != checkpoint.root {
            return Err(Mismatch::RootMismatch {
                size: checkpoint.size,
            });
        }
        self.verified = at_size;
        self.unverified.drain(..covered);
        self.newest_time = self.newest_time.max(Some(checkpoint.time));
        self.newest = Some(checkpoint.clone());
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LogSigningKey;
    use crate::tlog::proof::reference_root;

    const ORIGIN: &str = "auth.example.com/ep1";

    fn leaves(n: u64) -> Vec<Vec<u8>> {
        (1..=n)
            .map(|seq| format!(r#"{{"seq":{seq}}}"#).into_bytes())
            .collect()
    }

    fn root_of(leaves: &[Vec<u8>]) -> TreeHash {
        reference_root(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>())
    }

    fn signed(key: &LogSigningKey, leaves: &[Vec<u8>], time: i64) -> String {
        Checkpoint {
            origin: ORIGIN.into(),
            size: leaves.len() as u64,
            root: root_of(leaves),
            time: UnixMillis::new(time),
        }
        .sign(key)
        .unwrap()
    }

    fn start(key: &LogSigningKey, all: &[Vec<u8>], at: usize) -> CheckpointVerifier {
        let frontier = Frontier::from_leaf_hashes(all[..at].iter().map(|l| leaf_hash(l)));
        let note = signed(key, &all[..at], 1000);
        CheckpointVerifier::from_snapshot(
            ORIGIN,
            note.as_bytes(),
            frontier,
            &[key.verifying_key()],
            None,
        )
        .unwrap()
    }

    #[test]
    fn checkpoints_behind_our_position_verify_and_release_their_leaves() {
        let key = LogSigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let all = leaves(20);
        let mut v = start(&key, &all, 5);
        for leaf in &all[5..12] {
            v.push_leaf(leaf);
        }
        assert_eq!((v.size(), v.unverified_leaves()), (12, 7));
        // A checkpoint at 9 arrives after event 12: verified from the kept leaves.
        let c = v
            .check(signed(&key, &all[..9], 2000).as_bytes(), &keys)
            .unwrap();
        assert_eq!(c.size, 9);
        assert_eq!((v.size(), v.unverified_leaves()), (12, 3));
        assert_eq!(v.newest_time(), Some(UnixMillis::new(2000)));
        // The same size signed again later (idle): valid, and fresher.
        v.check(signed(&key, &all[..9], 3000).as_bytes(), &keys)
            .unwrap();
        assert_eq!(v.newest_time(), Some(UnixMillis::new(3000)));
        // Same size, an earlier time (another replica's clock): valid, not fresher.
        v.check(signed(&key, &all[..9], 2500).as_bytes(), &keys)
            .unwrap();
        assert_eq!(v.newest_time(), Some(UnixMillis::new(3000)));
        v.check(signed(&key, &all[..12], 3100).as_bytes(), &keys)
            .unwrap();
        assert_eq!(v.unverified_leaves(), 0);
    }

    #[test]
    fn every_doubt_is_a_mismatch_and_changes_nothing() {
        let key = LogSigningKey::generate().unwrap();
        let other = LogSigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let all = leaves(10);
        let mut v = start(&key, &all, 4);
        for leaf in &all[4..8] {
            v.push_leaf(leaf);
        }
        let before = (v.size(), v.unverified_leaves(), v.newest().cloned());

        // Older than the verified size.
        let old = signed(&key, &all[..3], 5000);
        assert_eq!(
            v.check(old.as_bytes(), &keys),
            Err(Mismatch::OlderThanSeen { seen: 4, got: 3 })
        );
        // Beyond what we received.
        let ahead = signed(&key, &all[..9], 5000);
        assert_eq!(
            v.check(ahead.as_bytes(), &keys),
            Err(Mismatch::SizeMismatch {
                checkpoint: 9,
                ours: 8
            })
        );
        // A root over other leaves (an event dropped, changed or invented).
        let mut tampered = all[..8].to_vec();
        tampered[6] = br#"{"seq":7,"changed":true}"#.to_vec();
        let forged = signed(&key, &tampered, 5000);
        assert_eq!(
            v.check(forged.as_bytes(), &keys),
            Err(Mismatch::RootMismatch { size: 8 })
        );
        // Reordered leaves.
        let mut swapped = all[..8].to_vec();
        swapped.swap(5, 6);
        let swapped = signed(&key, &swapped, 5000);
        assert_eq!(
            v.check(swapped.as_bytes(), &keys),
            Err(Mismatch::RootMismatch { size: 8 })
        );
        // Signed by a key we do not know.
        let foreign = signed(&other, &all[..8], 5000);
        assert_eq!(
            v.check(foreign.as_bytes(), &keys),
            Err(Mismatch::UnknownKey)
        );
        // A known key's signature over other text.
        let good = signed(&key, &all[..8], 5000);
        let bad_sig = good.replacen("revocast-time 5000", "revocast-time 5001", 1);
        assert_eq!(
            v.check(bad_sig.as_bytes(), &keys),
            Err(Mismatch::BadSignature)
        );
        // Another log's checkpoint (another epoch), even signed by our key.
        let other_log = Checkpoint {
            origin: "auth.example.com/ep2".into(),
            size: 8,
            root: root_of(&all[..8]),
            time: UnixMillis::new(5000),
        }
        .sign(&key)
        .unwrap();
        assert!(matches!(
            v.check(other_log.as_bytes(), &keys),
            Err(Mismatch::WrongOrigin { .. })
        ));
        // Garbage.
        assert!(matches!(
            v.check(b"not a note", &keys),
            Err(Mismatch::Malformed(_))
        ));

        assert_eq!(
            before,
            (v.size(), v.unverified_leaves(), v.newest().cloned())
        );
        // And the genuine one still verifies, alongside an unknown key's signature.
        let foreign_line = foreign.split_once("\n\n").unwrap().1;
        let both = format!("{good}{foreign_line}");
        assert_eq!(v.check(both.as_bytes(), &keys).unwrap().size, 8);
    }

    #[test]
    fn a_failing_known_signature_rejects_the_note_even_beside_a_good_one() {
        let key = LogSigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let all = leaves(3);
        let good = signed(&key, &all, 1);
        let (text, line) = good.split_once("\n\n").unwrap();
        let note = SignedNote::parse(good.as_bytes()).unwrap();
        let mut broken = note.signatures()[0].clone();
        broken.signature[0] ^= 1;
        let both = format!("{text}\n\n{line}{}", broken.to_line());
        assert_eq!(
            verify_checkpoint_note(both.as_bytes(), ORIGIN, &keys),
            Err(Mismatch::BadSignature)
        );
    }

    #[test]
    fn a_snapshot_must_match_its_checkpoint_and_not_be_older_than_seen() {
        let key = LogSigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let all = leaves(6);
        let note = signed(&key, &all[..5], 1);
        let frontier = |n: usize| Frontier::from_leaf_hashes(all[..n].iter().map(|l| leaf_hash(l)));
        let check = |f: Frontier, seen: Option<&Checkpoint>| {
            CheckpointVerifier::from_snapshot(ORIGIN, note.as_bytes(), f, &keys, seen)
                .map(|v| v.size())
        };
        assert_eq!(check(frontier(5), None), Ok(5));
        assert_eq!(
            check(frontier(4), None),
            Err(Mismatch::SizeMismatch {
                checkpoint: 5,
                ours: 4
            })
        );
        let mut wrong = all[..5].to_vec();
        wrong[0] = b"x".to_vec();
        let wrong = Frontier::from_leaf_hashes(wrong.iter().map(|l| leaf_hash(l)));
        assert_eq!(check(wrong, None), Err(Mismatch::RootMismatch { size: 5 }));
        let seen = Checkpoint {
            origin: ORIGIN.into(),
            size: 6,
            root: root_of(&all),
            time: UnixMillis::new(1),
        };
        assert_eq!(
            check(frontier(5), Some(&seen)),
            Err(Mismatch::OlderThanSeen { seen: 6, got: 5 })
        );
        // A checkpoint seen in another epoch says nothing about this one.
        let elsewhere = Checkpoint {
            origin: "x/ep0".into(),
            ..seen
        };
        assert_eq!(check(frontier(5), Some(&elsewhere)), Ok(5));
        // No log key at all.
        assert_eq!(
            CheckpointVerifier::from_snapshot(ORIGIN, note.as_bytes(), frontier(5), &[], None)
                .map(|v| v.size()),
            Err(Mismatch::UnknownKey)
        );
    }

    #[test]
    fn codes_are_distinct_and_listed() {
        let all = [
            Mismatch::Malformed(String::new()),
            Mismatch::WrongOrigin {
                expected: String::new(),
                got: String::new(),
            },
            Mismatch::UnknownKey,
            Mismatch::BadSignature,
            Mismatch::SizeMismatch {
                checkpoint: 0,
                ours: 0,
            },
            Mismatch::RootMismatch { size: 0 },
            Mismatch::OlderThanSeen { seen: 0, got: 0 },
        ];
        let codes: Vec<&str> = all.iter().map(Mismatch::code).collect();
        assert_eq!(codes, Mismatch::CODES);
    }
}
