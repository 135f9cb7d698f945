//! The log tail: what keeps this process's [`View`] and stream [`Hub`] in step with the durable
//! log, in `seq` order, with nothing skipped and nothing applied twice.
//!
//! Events reach it two ways. The ledger hands over the events of each of its own commits, and
//! waits, so that an answered revocation is visible here before the answer. On a shared
//! database other replicas commit too: their events are read from the store by `seq` — before
//! our own when our commit jumped past them, and by [`follow`] when the doorbell rings or the
//! poll timer fires. One async lock orders both paths, so the hub always sees `head + 1` next.
//! The head is the hub's (see [`Hub::head`]): it moves with the hub's ring, atomically.
//!
//! Fail closed: on a shared database this process can only vouch for its head while it can
//! read the log. [`LogTail::is_current`] says whether it did recently (within
//! [`current_within`]); otherwise the heartbeat task sends no heartbeat, so agents go stale and
//! fail over, and verification, introspection and issuance answer 503 instead of answering
//! from a view that may miss revocations. Likewise the ledger answers a commit only once it is
//! applied here ([`LogTail::committed`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use revocast_shared::event::RevocationEvent;
use revocast_shared::{Seq, UnixSeconds};

use crate::config::Config;
use crate::error::StoreError;
use crate::fleet::Fleet;
use crate::metrics::{Metrics, gauge_value};
use crate::store::{Backlog, Doorbell, Ring, Store};
use crate::stream::Hub;
use crate::view::View;

/// Events read from the store per catch-up query.
const CATCH_UP_PAGE: u32 = 4096;

/// How long the ledger keeps retrying to apply one of its commits here (reading what other
/// replicas committed before it) before answering that it is durable but not yet applied.
pub const APPLY_WITHIN: Duration = Duration::from_secs(5);

/// How recently a replica must have read the shared log to vouch for its view: three missed
/// polls (one slow query does not count) plus a heartbeat interval. Past it, heartbeats stop
/// and `/v1/verify`, `/oauth2/introspect` and `/v1/tokens` answer 503 — the one figure both
/// use.
pub fn current_within(config: &Config) -> Duration {
    config.database_poll_interval * 3 + config.heartbeat_interval
}

pub struct LogTail {
    store: Arc<dyn Store>,
    view: Arc<View>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Held while applying, so events enter the view and the hub strictly in `seq` order.
    order: tokio::sync::Mutex<()>,
    /// `None` for a store only this process writes: it is current by construction.
    confirmed: Option<Mutex<Instant>>,
    /// Told of every group published, for lag and propagation (see `fleet`).
    fleet: Option<Arc<Fleet>>,
}

impl LogTail {
    /// `shared`: other processes commit to `store` too.
    pub fn new(
        store: Arc<dyn Store>,
        view: Arc<View>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shared: bool,
    ) -> Self {
        Self {
            store,
            view,
            hub,
            metrics,
            order: tokio::sync::Mutex::new(()),
            confirmed: shared.then(|| Mutex::new(Instant::now())),
            fleet: None,
        }
    }

    /// Tell `fleet` of every group published from now on.
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Apply the events of one of our commits (in `seq` order), after first reading from the
    /// store whatever other replicas committed before them, and make sure the log is applied
    /// here through `through`: the furthest position any answer of the commit vouches for (a
    /// revocation appended now, or one found already there, perhaps from another replica).
    ///
    /// The ledger answers only what is applied, so a failed read is retried for up to
    /// [`APPLY_WITHIN`]; after that this answers [`StoreError::NotApplied`] — the commit is
    /// durable and the next catch-up applies it, in order, but it must not be acknowledged yet.
    pub async fn committed(
        &self,
        events: &[RevocationEvent],
        through: Seq,
    ) -> Result<(), StoreError> {
        let _order = self.order.lock().await;
        let deadline = tokio::time::Instant::now() + APPLY_WITHIN;
        let mut pause = Duration::from_millis(20);
        loop {
            match tokio::time::timeout_at(deadline, self.apply_through(events, through)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot read the log before our own commit; retrying"
                ),
                Err(_) => {}
            }
            if tokio::time::Instant::now() + pause >= deadline {
                tracing::warn!(
                    through = %through,
                    head = %self.hub.head(),
                    "our commit is durable but not applied here yet; the next catch-up applies it"
                );
                return Err(StoreError::NotApplied);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// One attempt of [`committed`](Self::committed). The caller holds `order`; a cancelled
    /// attempt leaves the head consistent (events are published only after a read returned).
    async fn apply_through(
        &self,
        events: &[RevocationEvent],
        through: Seq,
    ) -> Result<(), StoreError> {
        if let Some(first) = events.first()
            && first.seq > self.hub.head()
        {
            if first.seq > self.hub.head().next() {
                self.read_until(first.seq).await?;
            }
            let head = self.hub.head();
            if head.next() < first.seq {
                return Err(StoreError::Corrupt(format!(
                    "the log ends at {head}, before our own commit at {}",
                    first.seq
                )));
            }
            let fresh: Vec<RevocationEvent> =
                events.iter().filter(|e| e.seq > head).cloned().collect();
            self.publish(&fresh);
        }
        if self.hub.head() < through {
            self.read_until(through.next()).await?;
        }
        let head = self.hub.head();
        if head < through {
            return Err(StoreError::Corrupt(format!(
                "the log ends at {head}, before {through}, which a commit reported"
            )));
        }
        Ok(())
    }

    /// Read and apply everything committed after our head. Returns how many events it applied.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let _order = self.order.lock().await;
        // The read shows the log as of some moment after this one: vouch only for this one.
        let started = Instant::now();
        let applied = self.read_until(Seq::new(u64::MAX)).await?;
        if let Some(confirmed) = &self.confirmed {
            *confirmed.lock().unwrap_or_else(|p| p.into_inner()) = started;
        }
        Ok(applied)
    }

    /// The log's head as applied here: the last event published to the hub.
    pub fn head(&self) -> Seq {
        self.hub.head()
    }

    /// Drop revocation entries whose time has passed from the view, returning how many went.
    pub fn purge_expired(&self, now: UnixSeconds) -> usize {
        let dropped = self.view.purge_expired(now);
        self.count_entries();
        dropped
    }

    /// Re-read the signing keys, after another replica rotated or revoked one.
    pub async fn refresh_keys(&self) -> Result<(), StoreError> {
        let keys = self.store.load_keys().await?;
        if let Err(e) = self.view.replace_keys(keys) {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "stored signing keys are unusable; keeping the ones in memory"
            );
        }
        Ok(())
    }

    /// Re-read the longest token lifetime the store records, which a replica started with a
    /// larger `--max-ttl` raises.
    pub async fn refresh_max_ttl(&self) -> Result<(), StoreError> {
        self.view.raise_max_ttl(self.store.max_ttl().await?);
        Ok(())
    }

    /// Whether this process read the log within `within` (always, for a store only it writes).
    /// Callers pass [`current_within`].
    pub fn is_current(&self, within: Duration) -> bool {
        self.confirmed.as_ref().is_none_or(|confirmed| {
            confirmed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                <= within
        })
    }

    /// Read and apply events after our head, page by page, until the one before `stop` or the
    /// end of the log. The caller holds `order`.
    async fn read_until(&self, stop: Seq) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let head = self.hub.head();
            if head.next() >= stop {
                return Ok(applied);
            }
            // Never past `stop`: before our own commit, its rows need not come back.
            let limit = u32::try_from(stop.get() - head.next().get())
                .map_or(CATCH_UP_PAGE, |n| n.min(CATCH_UP_PAGE));
            let page = match self.store.events_after(head, limit).await? {
                Backlog::Events(events) => events,
                Backlog::Pruned { floor } => {
                    // Only if this process fell behind by more than the retention window: its
                    // view would miss revocations it can no longer read one by one.
                    return Err(StoreError::Corrupt(format!(
                        "this replica fell behind the log floor {floor} (head {head}); restart it to reload"
                    )));
                }
            };
            let full = page.len() == limit as usize;
            applied += page.len();
            self.publish(&page);
            if !full || page.is_empty() {
                return Ok(applied);
            }
        }
    }

    /// Apply events that continue the head to the view and the hub. The caller holds `order`.
    fn publish(&self, events: &[RevocationEvent]) {
        if events.is_empty() {
            return;
        }
        let now = UnixSeconds::now();
        for event in events {
            self.view.apply_event(event, now);
            self.metrics
                .revocations
                .get_or_create(&vec![("kind", event.revocation.kind())])
                .inc();
        }
        // Tracked before it is published, so no acknowledgment of it can come first.
        if let Some(fleet) = &self.fleet {
            fleet.committed(events);
        }
        self.hub.publish(events);
        self.metrics
            .head_seq
            .set(gauge_value(self.hub.head().get()));
        self.count_entries();
    }

    /// The one place the revocation-entries gauge is set: after each change to the view's
    /// revocation set (events applied, expired entries dropped).
    fn count_entries(&self) {
        self.metrics
            .revocation_entries
            .set(gauge_value(self.view.revocation_entries() as u64));
    }
}

/// Follow a shared store: catch up whenever the doorbell rings (unless it only announces a
/// head we already have) and every `poll`, and re-read the keys when they changed or the
/// doorbell reconnected. Runs until aborted.
pub async fn follow(tail: Arc<LogTail>, mut bell: Box<dyn Doorbell>, poll: Duration) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let keys = tokio::select! {
            ring = bell.ring() => match ring {
                Ring::Log(seq) if seq <= tail.head() => continue,
                Ring::Log(_) => false,
                Ring::Keys | Ring::Reconnected => true,
            },
            _ = tick.tick() => true,
        };
        if keys && let Err(e) = tail.refresh_keys().await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot re-read the signing keys"
            );
        }
        if keys && let Err(e) = tail.refresh_max_ttl().await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot re-read the longest token lifetime"
            );
        }
        match tail.catch_up().await {
            Ok(n) if n > 0 => tracing::trace!(events = n, "caught up with the log"),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot read the log; retrying"
            ),
        }
    }
}
