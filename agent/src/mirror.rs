//! The agent's local copy of the authority's state: the revocation set, the verifying keys,
//! and the position (`epoch`, applied `seq`) it was built to — plus [`Freshness`], when the
//! authority was last heard from while this copy was current.
//!
//! A std `RwLock`, because nothing awaits while it is held: verifies take it for a few hash
//! lookups, the sync task for applying one frame of events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::revset::RevocationSet;
use revocast_shared::{Epoch, KeyId, Seq, VerifyingKey};
use tokio::time::Instant;

/// The local copy of the authority's state, as of `applied`.
#[derive(Default)]
pub struct LocalState {
    /// `None` until the first snapshot.
    pub epoch: Option<Epoch>,
    pub applied: Seq,
    /// The highest `seq` the authority has told us of.
    pub head: Seq,
    pub revset: RevocationSet,
    pub keys: HashMap<KeyId, VerifyingKey>,
}

impl LocalState {
    /// Apply the next event. The caller has checked that `event.seq == applied + 1`.
    pub fn apply(&mut self, event: &RevocationEvent) {
        self.revset.apply(&event.revocation);
        if let Revocation::Key { kid } = &event.revocation {
            self.keys.remove(kid);
        }
        self.applied = event.seq;
        self.head = self.head.max(event.seq);
    }

    /// Add keys from a JWKS fetch, except revoked ones.
    pub fn add_keys(&mut self, keys: impl IntoIterator<Item = VerifyingKey>) {
        for key in keys {
            if !self.revset.is_key_revoked(&key.kid()) {
                self.keys.insert(key.kid(), key);
            }
        }
    }
}

#[derive(Default)]
pub struct Mirror {
    inner: RwLock<LocalState>,
}

impl Mirror {
    pub fn read(&self) -> RwLockReadGuard<'_, LocalState> {
        // Poisoning means a panic mid-update elsewhere; the data is still a valid set, and the
        // sync task resyncs on any inconsistency it notices.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, LocalState> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// When the authority was last heard from while the copy was current, on tokio's clock (so
/// tests can pause time).
pub struct Freshness {
    origin: Instant,
    /// Milliseconds since `origin`; `u64::MAX` = never.
    heard_ms: AtomicU64,
    synced: AtomicBool,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            heard_ms: AtomicU64::new(u64::MAX),
            synced: AtomicBool::new(false),
        }
    }
}

impl Freshness {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The copy is current as of now.
    pub fn heard(&self) {
        self.heard_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    /// The first snapshot has been loaded.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.heard();
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Time since the copy was last known current; `None` if never.
    pub fn staleness(&self) -> Option<Duration> {
        let heard = self.heard_ms.load(Ordering::Acquire);
        (heard != u64::MAX).then(|| Duration::from_millis(self.elapsed_ms().saturating_sub(heard)))
    }

    pub fn is_fresh(&self, max_staleness: Duration) -> bool {
        self.is_synced() && self.staleness().is_some_and(|s| s <= max_staleness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn freshness_follows_the_clock() {
        let f = Freshness::default();
        let max = Duration::from_secs(5);
        assert!(!f.is_fresh(max), "never synced");
        f.heard();
        assert!(!f.is_fresh(max), "heard but never synced");
        f.mark_synced();
        assert!(f.is_fresh(max));
        tokio::time::advance(Duration::from_millis(5_000)).await;
        assert!(f.is_fresh(max), "exactly max_staleness is still fresh");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!f.is_fresh(max));
        f.heard();
        assert!(f.is_fresh(max), "fresh again once heard");
    }
}
