//! A cap on the snapshot downloads one API key may have in progress at once. A snapshot is
//! the authority's most expensive answer (every revocation in force, ~150 MB for a million),
//! and a subscriber key is held by every resource server of a fleet: without a cap, one
//! leaked key, or a whole fleet resyncing at once, takes as many downloads as it opens. Over
//! the cap a request gets `429 rate_limited` with `Retry-After` at once — the agent treats any
//! failed snapshot as retryable, backs off with jitter and tries again (or another authority).
//!
//! A handler opts in by taking [`SnapshotSlot`] *after* its `Authorized<…>` argument (which
//! leaves the key's digest), and keeps the slot for as long as its response runs: the slot is
//! moved into the response body and freed when the body is dropped (finished, cut off at the
//! deadline, or the client went away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::apikeys::KeyDigest;
use crate::app::AppState;
use crate::error::ApiError;

/// What a client over the cap is told to wait: about one snapshot's time on a LAN.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Downloads in progress, by key. Only keys with one in progress have an entry, so the map is
/// bounded by the downloads themselves.
pub struct SnapshotSlots {
    /// 0: no limit.
    max: usize,
    held: Mutex<HashMap<[u8; 32], usize>>,
}

impl SnapshotSlots {
    pub fn new(max_per_key: u32) -> Arc<Self> {
        Arc::new(Self {
            max: usize::try_from(max_per_key).unwrap_or(usize::MAX),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` if it holds its maximum already.
    fn take(self: &Arc<Self>, key: [u8; 32]) -> Option<SnapshotSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if self.max != 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SnapshotSlot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Downloads in progress for `key` (for tests).
    #[cfg(test)]
    fn held(&self, key: &[u8; 32]) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).copied().unwrap_or(0)
    }
}

/// One download in progress; freed when dropped.
pub struct SnapshotSlot {
    slots: Arc<SnapshotSlots>,
    key: [u8; 32],
}

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl FromRequestParts<AppState> for SnapshotSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        // `Authorized` ran first and left the key's digest.
        let Some(KeyDigest(key)) = parts.extensions.get::<KeyDigest>().copied() else {
            return Err(ApiError::unauthorized(
                "missing API key: send Authorization: Bearer KEY",
            ));
        };
        app.snapshot_slots.take(key).ok_or_else(|| {
            app.metrics
                .rate_limited
                .get_or_create(&vec![("limit", "snapshots")])
                .inc();
            ApiError::rate_limited(
                format!(
                    "this API key already has {} snapshot downloads in progress \
                     (--max-snapshots-per-key); retry later",
                    app.config.max_snapshots_per_key
                ),
                RETRY_AFTER,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_at_most_its_slots_and_gets_them_back() {
        let slots = SnapshotSlots::new(2);
        let (a, b) = ([1; 32], [2; 32]);
        let first = slots.take(a).unwrap();
        let second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "a third download of one key");
        // Another key has its own slots.
        let other = slots.take(b).unwrap();
        drop(first);
        assert_eq!(slots.held(&a), 1);
        let third = slots.take(a).unwrap();
        drop((second, third, other));
        // Nothing in progress: nothing kept.
        assert!(slots.held.lock().unwrap().is_empty());
    }

    #[test]
    fn zero_means_unlimited() {
        let slots = SnapshotSlots::new(0);
        let held: Vec<_> = (0..1000).map(|_| slots.take([7; 32]).unwrap()).collect();
        assert_eq!(slots.held(&[7; 32]), 1000);
        drop(held);
        assert_eq!(slots.held(&[7; 32]), 0);
    }
}
