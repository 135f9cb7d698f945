//! The agent's check of the authority's transparency log (PROTOCOL.md, "What a verifying
//! subscriber does"): the log keys from the JWKS, the tree the agent builds from the events
//! it applies (a [`CheckpointVerifier`]: the frontier at the last verified checkpoint and the
//! leaf hashes since), and when the leaves not yet covered by a checkpoint arrived.
//!
//! Owned by the sync task alone: verifies never read it, they see its effect on freshness,
//! which a verifying agent takes only from the signed time of the newest verified checkpoint.
//! Every doubt is a [`Mismatch`], on which the sync task counts its code and resyncs.

use std::collections::VecDeque;

use revocast_shared::tlog::note::SignedNote;
use revocast_shared::tlog::{Checkpoint, CheckpointVerifier, Mismatch, TreeHash, origin};
use revocast_shared::{Epoch, LogVerifyingKey, Seq};
use tokio::time::Instant;

use super::fetch::SnapshotLog;

pub(crate) struct LogCheck {
    keys: Vec<LogVerifyingKey>,
    /// The tokens' issuer, when configured: the origin is then exactly `origin(issuer, epoch)`.
    issuer: Option<String>,
    /// Without a configured issuer, the origin's part before `/<epoch>`, as signed in the
    /// first verified checkpoint; pinned from then on (signed by a log key of the authority
    /// the agent was configured with, it names that authority).
    learned: Option<String>,
    /// The tree followed; `None` until a snapshot with a checkpoint has verified (or when the
    /// authority does not sign its log: the agent then stays stale).
    tree: Option<CheckpointVerifier>,
    /// The newest checkpoint verified, across resyncs: a snapshot older than it is a rollback.
    seen: Option<Checkpoint>,
    /// For leaves not yet covered by a verified checkpoint, one entry per frame that brought
    /// some: (tree size after the frame, when it arrived). The front is the arrival of the
    /// oldest uncovered leaf.
    arrivals: VecDeque<(u64, Instant)>,
}

impl LogCheck {
    pub fn new(issuer: Option<&str>) -> Self {
        Self {
            keys: Vec::new(),
            issuer: issuer.map(str::to_owned),
            learned: None,
            tree: None,
            seen: None,
            arrivals: VecDeque::new(),
        }
    }

    /// The log keys of the latest JWKS fetched.
    pub fn set_keys(&mut self, keys: Vec<LogVerifyingKey>) {
        self.keys = keys;
    }

    /// Whether a tree is being followed (the last snapshot carried a checkpoint that verified).
    pub fn following(&self) -> bool {
        self.tree.is_some()
    }

    /// The size of the newest checkpoint verified against the tree followed.
    pub fn verified_size(&self) -> Option<u64> {
        self.tree.as_ref().and_then(|t| t.newest()).map(|c| c.size)
    }

    /// The origin the checkpoints of `epoch` must carry.
    fn expected_origin(&self, epoch: &Epoch, note: &str) -> Result<String, Mismatch> {
        if let Some(issuer) = &self.issuer {
            return origin(issuer, epoch).map_err(|e| {
                Mismatch::Malformed(format!("the configured issuer gives no log origin: {e}"))
            });
        }
        if let Some(part) = &self.learned {
            return Ok(format!("{part}/{epoch}"));
        }
        // Not known yet: whatever the note names, provided it is this epoch's log. Its
        // signature is checked against the expected origin next.
        let parsed =
            SignedNote::parse(note.as_bytes()).map_err(|e| Mismatch::Malformed(e.to_string()))?;
        let named = Checkpoint::from_note_text(parsed.text())?.origin;
        match named.strip_suffix(epoch.as_str()) {
            Some(part) if part.len() > 1 && part.ends_with('/') => Ok(named),
            _ => Err(Mismatch::WrongOrigin {
                expected: format!("…/{epoch}"),
                got: named,
            }),
        }
    }

    /// Start following the tree of a snapshot of `epoch` at `seq`: its checkpoint must verify
    /// and not be older than one seen, its frontier must be the tree at the checkpoint, whose
    /// size must be `seq`, and its seal must verify — a verifying agent loads only sealed
    /// NDJSON snapshots, whose every byte is then the authority's. Returns the checkpoint.
    pub fn start(
        &mut self,
        epoch: &Epoch,
        seq: Seq,
        snapshot: &SnapshotLog,
    ) -> Result<Checkpoint, Mismatch> {
        let origin = self.expected_origin(epoch, &snapshot.checkpoint)?;
        let frontier = snapshot.frontier.clone().ok_or_else(|| {
            Mismatch::Malformed("the snapshot has a checkpoint but no frontier".into())
        })?;
        let tree = CheckpointVerifier::from_snapshot(
            &origin,
            snapshot.checkpoint.as_bytes(),
            frontier,
            &self.keys,
            self.seen.as_ref(),
        )?;
        let checkpoint = tree.newest().cloned().ok_or_else(|| {
            Mismatch::Malformed("a verified snapshot without its checkpoint".into())
        })?;
        if checkpoint.size != seq.get() {
            return Err(Mismatch::SizeMismatch {
                checkpoint: checkpoint.size,
                ours: seq.get(),
            });
        }
        let Some(digest) = snapshot.digest else {
            return Err(Mismatch::Malformed(
                "a single-document snapshot is not sealed: a verifying agent needs NDJSON".into(),
            ));
        };
        match &snapshot.seal {
            Err(e) => return Err(e.clone()),
            Ok(None) => {
                return Err(Mismatch::Malformed(
                    "the snapshot has a checkpoint but its end line no seal".into(),
                ));
            }
            Ok(Some(seal)) => seal.verify(&digest, &self.keys)?,
        }
        if self.issuer.is_none() {
            let part = origin.strip_suffix(epoch.as_str()).unwrap_or(&origin);
            self.learned = Some(part.trim_end_matches('/').to_owned());
        }
        self.tree = Some(tree);
        self.seen = Some(checkpoint.clone());
        self.arrivals.clear();
        Ok(checkpoint)
    }

    /// A snapshot without a checkpoint (an authority that does not sign its log): nothing to
    /// follow, so nothing will make the agent fresh.
    pub fn stop(&mut self) {
        self.tree = None;
        self.arrivals.clear();
    }

    /// The leaf hash of an event just applied.
    pub fn push(&mut self, leaf: TreeHash) {
        if let Some(tree) = &mut self.tree {
            tree.push_leaf_hash(leaf);
        }
    }

    /// A frame has been applied (its leaves pushed), at `now`.
    pub fn frame_arrived(&mut self, now: Instant) {
        let Some(tree) = &self.tree else {
            return;
        };
        let size = tree.size();
        let newer = self.arrivals.back().is_none_or(|(s, _)| *s < size);
        if tree.unverified_leaves() > 0 && newer {
            self.arrivals.push_back((size, now));
        }
    }

    /// Check a heartbeat's checkpoint against the tree; on success its leaves are covered.
    /// `None` if no tree is followed.
    pub fn check(&mut self, note: &str) -> Option<Result<Checkpoint, Mismatch>> {
        let tree = self.tree.as_mut()?;
        let checked = tree.check(note.as_bytes(), &self.keys);
        if let Ok(checkpoint) = &checked {
            while self
                .arrivals
                .front()
                .is_some_and(|(size, _)| *size <= checkpoint.size)
            {
                self.arrivals.pop_front();
            }
            self.seen = tree.newest().cloned();
        }
        Some(checked)
    }

    /// When the oldest leaf no verified checkpoint covers yet arrived.
    pub fn uncovered_since(&self) -> Option<Instant> {
        self.arrivals.front().map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use revocast_shared::tlog::snapshot::end_line;
    use revocast_shared::tlog::{Frontier, SnapshotDigest, SnapshotSeal, leaf_hash};
    use revocast_shared::{LogSigningKey, UnixMillis};

    use super::*;

    const ISSUER: &str = "https://auth.example.com";

    fn epoch() -> Epoch {
        Epoch::new("ep1".to_string())
    }

    fn leaves(n: u64) -> Vec<Vec<u8>> {
        (1..=n)
            .map(|seq| format!(r#"{{"seq":{seq},"type":"key"}}"#).into_bytes())
            .collect()
    }

    fn frontier(leaves: &[Vec<u8>]) -> Frontier {
        Frontier::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)))
    }

    fn note(key: &LogSigningKey, origin: &str, leaves: &[Vec<u8>], time: i64) -> String {
        Checkpoint {
            origin: origin.into(),
            size: leaves.len() as u64,
            root: frontier(leaves).root(),
            time: UnixMillis::new(time),
        }
        .sign(key)
        .unwrap()
    }

    /// A sealed snapshot's log members for the tree of `leaves`, as `fetch` reads them.
    fn snapshot(key: &LogSigningKey, leaves: &[Vec<u8>], time: i64) -> SnapshotLog {
        let origin = format!("auth.example.com/{}", epoch());
        let body = format!("{{\"head\":{}}}\n", leaves.len());
        let mut digest = SnapshotDigest::new();
        digest.update(body.as_bytes());
        let digest = digest.finish();
        let seal = SnapshotSeal::sign(key, digest).unwrap();
        let line = end_line(0, &seal);
        let parsed = revocast_shared::tlog::snapshot::parse_end_line(line.trim_end().as_bytes())
            .map(|(_, seal)| seal);
        SnapshotLog {
            checkpoint: note(key, &origin, leaves, time),
            frontier: Some(frontier(leaves)),
            seal: parsed,
            digest: Some(digest),
        }
    }

    fn check(key: &LogSigningKey, issuer: Option<&str>) -> LogCheck {
        let mut log = LogCheck::new(issuer);
        log.set_keys(vec![key.verifying_key()]);
        log
    }

    #[test]
    fn a_sealed_snapshot_then_heartbeat_checkpoints_verify() {
        let key = LogSigningKey::generate().unwrap();
        let all = leaves(9);
        let mut log = check(&key, Some(ISSUER));
        let start = log.start(&epoch(), Seq::new(4), &snapshot(&key, &all[..4], 1000));
        assert_eq!(start.unwrap().time, UnixMillis::new(1000));
        assert_eq!(log.verified_size(), Some(4));
        let t0 = Instant::now();
        for leaf in &all[4..7] {
            log.push(leaf_hash(leaf));
        }
        log.frame_arrived(t0);
        let later = t0 + Duration::from_millis(10);
        for leaf in &all[7..9] {
            log.push(leaf_hash(leaf));
        }
        log.frame_arrived(later);
        assert_eq!(log.uncovered_since(), Some(t0));
        let origin = format!("auth.example.com/{}", epoch());
        // A checkpoint inside the first frame: that frame's leaves are not all covered yet.
        let c = log.check(&note(&key, &origin, &all[..6], 2000)).unwrap();
        assert_eq!(c.unwrap().size, 6);
        assert_eq!(log.uncovered_since(), Some(t0));
        let c = log.check(&note(&key, &origin, &all[..7], 2000)).unwrap();
        assert_eq!(c.unwrap().size, 7);
        assert_eq!(log.uncovered_since(), Some(later));
        log.check(&note(&key, &origin, &all, 3000))
            .unwrap()
            .unwrap();
        assert_eq!(
            (log.uncovered_since(), log.verified_size()),
            (None, Some(9))
        );
        // A replay of an older one.
        assert_eq!(
            log.check(&note(&key, &origin, &all[..7], 4000)).unwrap(),
            Err(Mismatch::OlderThanSeen { seen: 9, got: 7 })
        );
        // And a resync to an older snapshot (a rollback, or a stale cache) is refused.
        assert_eq!(
            log.start(&epoch(), Seq::new(4), &snapshot(&key, &all[..4], 5000)),
            Err(Mismatch::OlderThanSeen { seen: 9, got: 4 })
        );
    }

    #[test]
    fn a_snapshot_must_be_sealed_matching_and_signed_by_a_log_key() {
        let key = LogSigningKey::generate().unwrap();
        let other = LogSigningKey::generate().unwrap();
        let all = leaves(3);
        let good = snapshot(&key, &all, 1);
        let start = |snap: &SnapshotLog, seq: u64| {
            check(&key, Some(ISSUER)).start(&epoch(), Seq::new(seq), snap)
        };
        assert!(start(&good, 3).is_ok());
        // The snapshot's seq is not the checkpoint's size.
        assert_eq!(
            start(&good, 2),
            Err(Mismatch::SizeMismatch {
                checkpoint: 3,
                ours: 2
            })
        );
        // No frontier, no seal, the single-document form, a body not the one sealed.
        let no_frontier = SnapshotLog {
            frontier: None,
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(
            start(&no_frontier, 3),
            Err(Mismatch::Malformed(_))
        ));
        let unsealed = SnapshotLog {
            seal: Ok(None),
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(start(&unsealed, 3), Err(Mismatch::Malformed(_))));
        let document = SnapshotLog {
            digest: None,
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(start(&document, 3), Err(Mismatch::Malformed(_))));
        let altered = SnapshotLog {
            digest: Some([7; 32]),
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(start(&altered, 3), Err(Mismatch::Malformed(_))));
        // A frontier that is not the checkpoint's tree.
        let wrong_tree = SnapshotLog {
            frontier: Some(frontier(&leaves(4)[1..])),
            ..snapshot(&key, &all, 1)
        };
        assert_eq!(
            start(&wrong_tree, 3),
            Err(Mismatch::RootMismatch { size: 3 })
        );
        // Signed by a key the JWKS does not list as a log key.
        assert_eq!(
            start(&snapshot(&other, &all, 1), 3),
            Err(Mismatch::UnknownKey)
        );
        // Sealed by another key, the checkpoint by ours.
        let foreign_seal = SnapshotLog {
            checkpoint: good.checkpoint.clone(),
            ..snapshot(&other, &all, 1)
        };
        assert_eq!(start(&foreign_seal, 3), Err(Mismatch::UnknownKey));
        // Another issuer's log.
        assert!(matches!(
            check(&key, Some("https://other.example")).start(&epoch(), Seq::new(3), &good),
            Err(Mismatch::WrongOrigin { .. })
        ));
    }

    #[test]
    fn without_a_configured_issuer_the_first_origin_is_learned_and_pinned() {
        let key = LogSigningKey::generate().unwrap();
        let all = leaves(2);
        let mut log = check(&key, None);
        // Another epoch's checkpoint is refused even before the issuer is known.
        let elsewhere = SnapshotLog {
            checkpoint: note(&key, "auth.example.com/ep0", &all, 1),
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(
            log.start(&epoch(), Seq::new(2), &elsewhere),
            Err(Mismatch::WrongOrigin { .. })
        ));
        log.start(&epoch(), Seq::new(2), &snapshot(&key, &all, 1))
            .unwrap();
        // From then on, the issuer part is pinned: another one is the wrong log.
        let other_issuer = note(&key, &format!("evil.example/{}", epoch()), &all, 2);
        assert!(matches!(
            log.check(&other_issuer).unwrap(),
            Err(Mismatch::WrongOrigin { .. })
        ));
        let mut fresh = check(&key, None);
        fresh.learned = log.learned.clone();
        let evil = SnapshotLog {
            checkpoint: other_issuer,
            ..snapshot(&key, &all, 1)
        };
        assert!(matches!(
            fresh.start(&epoch(), Seq::new(2), &evil),
            Err(Mismatch::WrongOrigin { .. })
        ));
    }

    #[test]
    fn nothing_is_followed_without_a_verified_snapshot() {
        let key = LogSigningKey::generate().unwrap();
        let mut log = check(&key, Some(ISSUER));
        log.push(leaf_hash(b"x"));
        log.frame_arrived(Instant::now());
        assert!(!log.following());
        assert!(log.check("anything").is_none());
        assert_eq!(log.uncovered_since(), None);
    }
}
