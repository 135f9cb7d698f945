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
//! read the log. [`LogTail::is_current`] says whether it did recently; the heartbeat task sends
//! no heartbeat otherwise, so agents go stale and fail over instead of trusting a replica that
//! may be missing revocations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use revocast_shared::event::RevocationEvent;
use revocast_shared::{Seq, UnixSeconds};

use crate::error::StoreError;
use crate::metrics::{Metrics, gauge_value};
use crate::store::{Backlog, Doorbell, Ring, Store};
use crate::stream::Hub;
use crate::view::View;

/// Events read from the store per catch-up query.
const CATCH_UP_PAGE: u32 = 4096;

pub struct LogTail {
    store: Arc<dyn Store>,
    view: Arc<View>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Held while applying, so events enter the view and the hub strictly in `seq` order.
    order: tokio::sync::Mutex<()>,
    /// `None` for a store only this process writes: it is current by construction.
    confirmed: Option<Mutex<Instant>>,
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
        }
    }

    /// Apply the events of one of our commits (in `seq` order), after first reading from the
    /// store whatever other replicas committed before them. If that read fails, our events
    /// wait too: the next catch-up brings them all, in order.
    pub async fn committed(&self, events: &[RevocationEvent]) {
        let Some(first) = events.first() else {
            return;
        };
        let _order = self.order.lock().await;
        if first.seq > self.hub.head().next()
            && let Err(e) = self.read_until(first.seq).await
        {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "cannot read the log before our own commit; it will be published at the next catch-up"
            );
            return;
        }
        let head = self.hub.head();
        let fresh: Vec<RevocationEvent> = events.iter().filter(|e| e.seq > head).cloned().collect();
        self.publish(&fresh);
    }

    /// Read and apply everything committed after our head. Returns how many events it applied.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let _order = self.order.lock().await;
        let applied = self.read_until(Seq::new(u64::MAX)).await?;
        if let Some(confirmed) = &self.confirmed {
            *confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
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

    /// Whether this process read the log within `within` (always, for a store only it writes).
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
