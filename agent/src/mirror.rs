//! The agent's local copy of the authority's state: the revocation set, the verifying keys,
//! and the position (`epoch`, applied `seq`) it was built to — plus [`Freshness`], whether
//! this copy can still be trusted to be current, by arrival and by the authority's own clock.
//!
//! A std `RwLock`, because nothing awaits while it is held: verifies take it for a few hash
//! lookups, the sync task for applying one frame of events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::revset::RevocationSet;
use revocast_shared::{Epoch, KeyId, Seq, UnixMillis, VerifyingKey};
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
    pub fn apply(&mut self, event: RevocationEvent) {
        if let Revocation::Key { kid } = &event.revocation {
            self.keys.remove(kid);
        }
        self.revset.insert(event.revocation);
        self.applied = event.seq;
        self.head = self.head.max(event.seq);
    }

    /// Hold exactly the keys of a JWKS fetch, except revoked ones; returns how many were
    /// added and how many removed.
    pub fn replace_keys(&mut self, keys: impl IntoIterator<Item = VerifyingKey>) -> (usize, usize) {
        let old = std::mem::take(&mut self.keys);
        self.add_keys(keys);
        let added = self.keys.keys().filter(|k| !old.contains_key(*k)).count();
        let removed = old.keys().filter(|k| !self.keys.contains_key(*k)).count();
        (added, removed)
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

/// Whether the copy can be trusted to be current, judged on two clocks:
///
/// - *arrival* (tokio's clock, so tests can pause time): when something last arrived from the
///   authority while the copy was current. A silent link shows here first.
/// - *authority time*: the newest time the authority itself stamped on what the copy is known
///   to include (the `at` of heartbeats and events applied while current, and of the snapshot
///   loaded). A relay can keep bytes flowing while holding them back; it cannot make the
///   authority's stamps newer, so the age of the newest one, on the agent's wall clock, bounds
///   how far behind the copy may be — as long as the two clocks agree within `max_clock_skew`.
pub struct Freshness {
    origin: Instant,
    /// Milliseconds since `origin`; `u64::MAX` = never.
    heard_ms: AtomicU64,
    synced: AtomicBool,
    /// Unix milliseconds of the newest authority time held; `i64::MIN` = unknown.
    authority_ms: AtomicI64,
    /// The authority's time minus ours when its newest stamp arrived; `i64::MIN` = none yet.
    offset_ms: AtomicI64,
    /// The last stamp that arrived was ahead of our clock by more than the allowed skew.
    ahead: AtomicBool,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            heard_ms: AtomicU64::new(u64::MAX),
            synced: AtomicBool::new(false),
            authority_ms: AtomicI64::new(i64::MIN),
            offset_ms: AtomicI64::new(i64::MIN),
            ahead: AtomicBool::new(false),
        }
    }
}

/// How the newest authority time held compares with the agent's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityTime {
    /// Within `max_staleness` (plus the allowed skew) of now.
    Recent,
    /// Older than that: the copy may lack revocations made since.
    Old,
    /// Ahead of the agent's clock by more than the allowed skew: the authority's clock (or
    /// ours) is off, and its stamps cannot bound anything.
    Ahead,
    /// No authority time yet (a snapshot from an authority that does not stamp it, and no
    /// heartbeat or event since).
    Unknown,
}

impl AuthorityTime {
    /// The rule: `now - max_staleness - max_skew <= newest <= now + max_skew`.
    pub fn judge(
        newest: Option<UnixMillis>,
        now: UnixMillis,
        max_staleness: Duration,
        max_skew: Duration,
    ) -> Self {
        let Some(newest) = newest else {
            return Self::Unknown;
        };
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let age = now.as_millis().saturating_sub(newest.as_millis());
        if age < -ms(max_skew) {
            Self::Ahead
        } else if age > ms(max_staleness).saturating_add(ms(max_skew)) {
            Self::Old
        } else {
            Self::Recent
        }
    }
}

impl Freshness {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Something arrived and the copy is current; `at` is the newest authority time it
    /// carried, if any (a `hello` carries none).
    pub fn heard(&self, at: Option<UnixMillis>) {
        if let Some(at) = at {
            self.authority_ms
                .fetch_max(at.as_millis(), Ordering::AcqRel);
        }
        self.heard_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    /// A snapshot has been loaded: the copy is current as of `at` (`None`: as of an unknown
    /// time). It replaces the copy, so its time replaces the one held, even an older one.
    pub fn mark_synced(&self, at: Option<UnixMillis>) {
        self.authority_ms.store(
            at.map_or(i64::MIN, UnixMillis::as_millis),
            Ordering::Release,
        );
        self.synced.store(true, Ordering::Release);
        self.heard_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Time since something last arrived while the copy was current; `None` if never.
    pub fn staleness(&self) -> Option<Duration> {
        let heard = self.heard_ms.load(Ordering::Acquire);
        (heard != u64::MAX).then(|| Duration::from_millis(self.elapsed_ms().saturating_sub(heard)))
    }

    /// The newest authority time the copy is known current as of.
    pub fn authority_time(&self) -> Option<UnixMillis> {
        let ms = self.authority_ms.load(Ordering::Acquire);
        (ms != i64::MIN).then_some(UnixMillis::new(ms))
    }

    /// Record the authority's clock offset seen in a stamp that just arrived (`at - now`;
    /// a delay on the way makes it lower). Returns whether "ahead by more than `max_skew`"
    /// changed with it, so the caller logs each transition once.
    pub fn observe_offset(&self, at: UnixMillis, now: UnixMillis, max_skew: Duration) -> bool {
        let offset = at.as_millis().saturating_sub(now.as_millis());
        self.offset_ms.store(offset, Ordering::Release);
        let ahead = offset > i64::try_from(max_skew.as_millis()).unwrap_or(i64::MAX);
        self.ahead.swap(ahead, Ordering::AcqRel) != ahead
    }

    /// The last observed offset of the authority's clock (see [`observe_offset`]).
    ///
    /// [`observe_offset`]: Self::observe_offset
    pub fn offset(&self) -> Option<i64> {
        let ms = self.offset_ms.load(Ordering::Acquire);
        (ms != i64::MIN).then_some(ms)
    }

    /// Whether the last stamp that arrived was ahead of our clock by more than the skew.
    pub fn is_ahead(&self) -> bool {
        self.ahead.load(Ordering::Acquire)
    }

    /// Fresh at wall-clock `now`: synced, something arrived within `max_staleness` while the
    /// copy was current, the newest authority time held is [`AuthorityTime::Recent`], and the
    /// last stamp that arrived was not ahead of our clock by more than the skew (an authority
    /// whose clock runs ahead would otherwise look fresh between its heartbeats, and hide a
    /// delay as large as its lead).
    pub fn is_fresh_at(
        &self,
        now: UnixMillis,
        max_staleness: Duration,
        max_skew: Duration,
    ) -> bool {
        self.is_synced()
            && !self.is_ahead()
            && self.staleness().is_some_and(|s| s <= max_staleness)
            && AuthorityTime::judge(self.authority_time(), now, max_staleness, max_skew)
                == AuthorityTime::Recent
    }

    pub fn is_fresh(&self, max_staleness: Duration, max_skew: Duration) -> bool {
        self.is_fresh_at(UnixMillis::now(), max_staleness, max_skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(2);

    #[test]
    fn a_jwks_refresh_holds_exactly_its_keys_less_revoked_ones() {
        let key = || {
            revocast_shared::SigningKey::generate()
                .unwrap()
                .verifying_key()
                .clone()
        };
        let (a, b, c) = (key(), key(), key());
        let mut state = LocalState::default();
        state.add_keys([a.clone(), b.clone()]);
        state.revset.apply(&Revocation::Key { kid: c.kid() });
        // `a` left the JWKS, `c` is revoked: only `b` stays.
        assert_eq!(state.replace_keys([b.clone(), c.clone()]), (0, 1));
        assert_eq!(state.keys.keys().collect::<Vec<_>>(), vec![&b.kid()]);
        assert_eq!(state.replace_keys([a.clone(), b.clone()]), (1, 0));
        assert_eq!(state.keys.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_follows_the_arrival_clock() {
        let f = Freshness::default();
        let max = Duration::from_secs(5);
        // The authority's stamps keep up with our clock throughout.
        let now = UnixMillis::new(1_000_000);
        assert!(!f.is_fresh_at(now, max, SKEW), "never synced");
        f.heard(Some(now));
        assert!(!f.is_fresh_at(now, max, SKEW), "heard but never synced");
        f.mark_synced(Some(now));
        assert!(f.is_fresh_at(now, max, SKEW));
        tokio::time::advance(Duration::from_millis(5_000)).await;
        assert!(
            f.is_fresh_at(now, max, SKEW),
            "exactly max_staleness is still fresh"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!f.is_fresh_at(now, max, SKEW));
        f.heard(Some(now));
        assert!(f.is_fresh_at(now, max, SKEW), "fresh again once heard");
    }

    #[test]
    fn the_authority_time_rule_at_its_edges() {
        let max = Duration::from_secs(3);
        let now = UnixMillis::new(10_000_000);
        let at = |ms: i64| Some(UnixMillis::new(10_000_000 + ms));
        let judge = |newest| AuthorityTime::judge(newest, now, max, SKEW);
        assert_eq!(judge(None), AuthorityTime::Unknown);
        assert_eq!(judge(at(0)), AuthorityTime::Recent);
        assert_eq!(
            judge(at(-5_000)),
            AuthorityTime::Recent,
            "max_staleness + skew"
        );
        assert_eq!(judge(at(-5_001)), AuthorityTime::Old);
        assert_eq!(
            judge(at(2_000)),
            AuthorityTime::Recent,
            "ahead within the skew"
        );
        assert_eq!(judge(at(2_001)), AuthorityTime::Ahead);
        assert_eq!(
            AuthorityTime::judge(at(-3_000), now, max, Duration::ZERO),
            AuthorityTime::Recent
        );
        assert_eq!(
            AuthorityTime::judge(at(-3_001), now, max, Duration::ZERO),
            AuthorityTime::Old
        );
    }

    /// Bytes that keep arriving do not keep the copy fresh: the stamps they carry must be
    /// recent on our clock.
    #[tokio::test(start_paused = true)]
    async fn arrivals_with_old_stamps_are_not_fresh() {
        let f = Freshness::default();
        let max = Duration::from_secs(3);
        let t0 = UnixMillis::new(1_000_000);
        f.mark_synced(Some(t0));
        assert!(f.is_fresh_at(t0, max, SKEW));
        // A relay holds each heartbeat back a little longer: they arrive every second (the
        // arrival clock stays happy), but each is older than the last on our clock.
        for second in 1..=10i64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = UnixMillis::new(t0.as_millis() + second * 1_000);
            let delayed = UnixMillis::new(t0.as_millis() + second * 500);
            f.heard(Some(delayed));
            let age_ms = now.as_millis() - delayed.as_millis();
            assert_eq!(
                f.is_fresh_at(now, max, SKEW),
                age_ms <= 5_000,
                "second {second}, stamp {age_ms} ms old"
            );
        }
        // An older stamp never moves the time held back.
        f.heard(Some(t0));
        assert_eq!(
            f.authority_time(),
            Some(UnixMillis::new(t0.as_millis() + 5_000))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_or_unstamped_snapshot_does_not_make_the_agent_fresh() {
        let f = Freshness::default();
        let max = Duration::from_secs(3);
        let now = UnixMillis::new(1_000_000);
        // A snapshot read a minute ago (held back on the way, or replayed).
        f.mark_synced(Some(UnixMillis::new(now.as_millis() - 60_000)));
        assert!(f.is_synced());
        assert!(!f.is_fresh_at(now, max, SKEW));
        // A snapshot from an authority that does not stamp it: unknown age, not fresh...
        f.mark_synced(None);
        assert!(!f.is_fresh_at(now, max, SKEW));
        // ...until a stamped heartbeat arrives.
        f.heard(Some(now));
        assert!(f.is_fresh_at(now, max, SKEW));
        // A resync replaces the time held, even with an older one.
        f.mark_synced(Some(UnixMillis::new(now.as_millis() - 10_000)));
        assert!(!f.is_fresh_at(now, max, SKEW));
    }

    #[tokio::test(start_paused = true)]
    async fn an_authority_ahead_of_our_clock_fails_closed_and_is_reported() {
        let f = Freshness::default();
        let max = Duration::from_secs(3);
        let now = UnixMillis::new(1_000_000);
        let ahead = UnixMillis::new(now.as_millis() + 2_500);
        f.mark_synced(Some(ahead));
        assert!(!f.is_fresh_at(now, max, SKEW));
        assert!(f.observe_offset(ahead, now, SKEW), "a transition");
        assert!(!f.observe_offset(ahead, now, SKEW), "no transition");
        assert!(f.is_ahead());
        assert_eq!(f.offset(), Some(2_500));
        // A second later the stamp held is within the skew of our clock, but the authority's
        // clock is still known to run ahead: not fresh while it lasts.
        let later = UnixMillis::new(now.as_millis() + 1_000);
        assert_eq!(
            AuthorityTime::judge(f.authority_time(), later, max, SKEW),
            AuthorityTime::Recent
        );
        assert!(!f.is_fresh_at(later, max, SKEW));
        assert!(f.observe_offset(later, later, SKEW), "back within the skew");
        assert!(!f.is_ahead());
        f.heard(Some(later));
        assert!(f.is_fresh_at(later, max, SKEW));
    }
}
