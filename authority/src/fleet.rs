//! The fleet: every subscriber connected to this process, what it says it is, and the `seq` it
//! has acknowledged applying.
//!
//! One owner per entry, lock-light: a connection registers once (a write lock on the map) and
//! holds its [`Subscriber`]; its acknowledgments then update that entry's atomics only — no
//! lock, no allocation — so acks from 10,000 subscribers cost one parse and a few atomic
//! stores each. Readers (`GET /v1/fleet`, `wait=fleet`, the propagation tracker) take the read
//! lock and load the atomics.
//!
//! Acks are claims, never trusted further than the subscriber's own entry: one above the head,
//! from another epoch, or faster than the coalescing allows is ignored and counted. Names and
//! versions are whatever the subscriber said (bounded, no control characters): untrusted text.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use revocast_shared::event::RevocationEvent;
use revocast_shared::{Epoch, Seq, UnixMillis};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::apikeys::KeyDigest;
use crate::metrics::{Metrics, gauge_value};
use crate::store::{FleetRecord, Store};

/// Least interval between two acks a well-behaved subscriber sends (it coalesces to this).
pub const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Acks a subscriber may send in a burst above that rate (network jitter bunches them up)
/// before further ones are ignored as a flood.
const ACK_BURST: u64 = 5;
/// Longest `name` a subscriber may give, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest `version`, in bytes.
pub const MAX_VERSION_LEN: usize = 64;
/// A subscriber whose oldest unapplied revocation is older than this counts as behind.
pub const BEHIND_AFTER: Duration = Duration::from_secs(5);
/// Commit groups remembered for lag in milliseconds (older positions report no `lag_ms`).
const COMMITS_KEPT: usize = 16_384;
/// A revocation not applied by the whole fleet within this is no longer tracked for the
/// propagation histograms (counted in `fleet_propagation_incomplete`).
const TRACK_FOR: Duration = Duration::from_secs(60);
/// Revocation groups tracked at once for the histograms; beyond, the oldest are dropped.
const TRACKED_MAX: usize = 512;
/// How often the propagation tracker looks at the fleet (the histograms' resolution).
const TRACK_TICK: Duration = Duration::from_millis(20);
/// How often a replica shares its fleet through a shared database and reads the others'.
const SHARE_EVERY: Duration = Duration::from_secs(1);
/// Another replica's fleet counts while it shared it within this.
const SHARED_FRESH_FOR: Duration = Duration::from_secs(5);
/// Most names a `wait=fleet` answer lists as missing.
pub const MISSING_LISTED: usize = 1000;

/// What a subscriber says about itself when it subscribes (`name`, `version` on the stream
/// URL); both optional.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// Check a self-reported identity field: bounded, no control characters.
pub fn check_identity(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(format!(
            "{field} must be 1 to {max} bytes without control characters"
        ));
    }
    Ok(())
}

/// An acknowledgment, on either transport: `{"type":"ack","seq":N,"epoch":"E","resyncs":R}`.
#[derive(Debug, Deserialize)]
pub struct Ack {
    pub seq: Seq,
    pub epoch: Epoch,
    /// Snapshot loads since the agent started, if it reports them.
    pub resyncs: Option<u64>,
}

/// A WebSocket client message, as far as we read it: unknown fields and types are ignored.
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<Seq>,
    epoch: Option<Epoch>,
    resyncs: Option<u64>,
}

/// Read a WebSocket client text message: `Ok(Some)` for an ack, `Ok(None)` for a message of
/// another type (ignored, for forward compatibility), `Err` for one we cannot read (an ack
/// without `seq` or `epoch` included).
#[allow(clippy::result_unit_err)]
pub fn parse_client_message(text: &[u8]) -> Result<Option<Ack>, ()> {
    let message: ClientMessage = serde_json::from_slice(text).map_err(|_| ())?;
    match message.kind.as_deref() {
        Some("ack") => match (message.seq, message.epoch) {
            (Some(seq), Some(epoch)) => Ok(Some(Ack {
                seq,
                epoch,
                resyncs: message.resyncs,
            })),
            _ => Err(()),
        },
        Some(_) => Ok(None),
        None => Err(()),
    }
}

/// Why an ack was ignored (the `reason` label of `fleet_acks_ignored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Above the head this process has published: it cannot have been applied.
    AboveHead,
    /// From another epoch: its `seq` means nothing in this log.
    Epoch,
    /// Faster than the coalescing allows.
    Flood,
    /// Not an ack we can read.
    Malformed,
    /// Below what the subscriber already acknowledged.
    Backwards,
    /// Over SSE, for a connection that is not open or that another key opened.
    UnknownConnection,
}

impl Ignored {
    pub fn reason(self) -> &'static str {
        match self {
            Self::AboveHead => "above_head",
            Self::Epoch => "epoch",
            Self::Flood => "flood",
            Self::Malformed => "malformed",
            Self::Backwards => "backwards",
            Self::UnknownConnection => "unknown_connection",
        }
    }
}

/// One connected subscriber. Written by its own connection (acks), read by everyone.
pub struct Subscriber {
    /// Registration order: lower ids were connected earlier.
    pub id: u64,
    /// The connection's secret handle, for acks over SSE (`POST /v1/ack`); never listed.
    conn: String,
    key: KeyDigest,
    pub identity: Identity,
    pub transport: &'static str,
    pub remote: Option<SocketAddr>,
    pub connected_at: UnixMillis,
    /// The applied `seq` acknowledged, plus one; 0 while it never acknowledged. Raised under
    /// the fleet's `tracked` lock, so the tracked groups' counts follow it exactly.
    applied: AtomicU64,
    /// Unregistered (under the `tracked` lock): a late ack (over SSE, from another
    /// connection) counts for no group any more.
    left: AtomicBool,
    /// When the last accepted ack arrived (Unix ms); 0 never.
    acked_at: AtomicI64,
    /// When anything last arrived from it (Unix ms); 0 never.
    heard_at: AtomicI64,
    /// Resyncs it reports, plus one; 0 while unreported.
    resyncs: AtomicU64,
    /// Acks of this subscriber that were ignored.
    ignored: AtomicU64,
    /// The flood limit's theoretical arrival time (GCRA), in ms since `Fleet::origin`.
    tat: AtomicU64,
}

impl Subscriber {
    /// The connection handle a client quotes in `POST /v1/ack`.
    pub fn conn(&self) -> &str {
        &self.conn
    }

    /// The applied `seq` it acknowledged, if it ever did.
    pub fn applied(&self) -> Option<Seq> {
        match self.applied.load(Ordering::Acquire) {
            0 => None,
            n => Some(Seq::new(n - 1)),
        }
    }

    fn acked_at(&self) -> Option<UnixMillis> {
        match self.acked_at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UnixMillis::new(ms)),
        }
    }

    /// What to call it in answers: its name, or `#ID` if it gave none.
    pub fn label(&self) -> String {
        match &self.identity.name {
            Some(name) => name.clone(),
            None => format!("#{}", self.id),
        }
    }

    /// Note that something arrived from it.
    pub fn heard(&self) {
        self.heard_at
            .store(UnixMillis::now().as_millis(), Ordering::Relaxed);
    }
}

/// One commit group: its `seq`s, when it was committed, and who was connected then.
#[derive(Clone, Copy, Debug)]
struct Commit {
    first: Seq,
    last: Seq,
    at: UnixMillis,
    /// Subscribers with a lower id were registered when it was published.
    before_id: u64,
}

/// A commit group followed until the fleet has applied it, for the histograms.
///
/// Its counts are kept as things happen, never by a pass over the fleet: `of` is the fleet
/// at commit (the registry's size then) less those that left since, `applied` those of them
/// whose acknowledgments have covered it. At 10,000 subscribers a pass every tick cost the
/// authority ~7 % of its CPU while groups were tracked (always, under steady revocations,
/// since a fleet that large acknowledges every 2 s) — CPU the fan-out itself needs.
struct Tracked {
    commit: Commit,
    events: u64,
    published: Instant,
    /// Subscribers connected at commit and still connected.
    of: u64,
    /// Of those, how many acknowledged a `seq` at or past the group's last.
    applied: u64,
    /// Which of 50 %, 99 %, 100 % have been reached (and observed).
    reached: [bool; 3],
}

const SHARES: [(f64, &str); 3] = [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")];

/// One row of `GET /v1/fleet`, read from the atomics at one moment.
#[derive(Debug, Clone)]
pub struct Row {
    /// The replica it is connected to.
    pub replica: String,
    pub id: u64,
    pub name: Option<String>,
    pub version: Option<String>,
    pub transport: String,
    pub remote: Option<String>,
    pub connected_at: UnixMillis,
    pub applied: Option<Seq>,
    pub lag_events: Option<u64>,
    pub lag_ms: Option<i64>,
    pub last_heard: Option<UnixMillis>,
    pub resyncs: Option<u64>,
    pub acks_ignored: u64,
    /// When its last accepted ack arrived.
    pub acked_at: Option<UnixMillis>,
}

impl Row {
    /// As replicas share it through the store.
    pub fn to_record(&self) -> FleetRecord {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        FleetRecord {
            replica: self.replica.clone(),
            id: i(self.id),
            name: self.name.clone(),
            version: self.version.clone(),
            transport: self.transport.clone(),
            remote: self.remote.clone(),
            connected_at: self.connected_at.as_millis(),
            applied: self.applied.map(|s| i(s.get())),
            acked_at: self.acked_at.map(UnixMillis::as_millis),
            lag_events: self.lag_events.map(i),
            lag_ms: self.lag_ms,
            last_heard: self.last_heard.map(UnixMillis::as_millis),
            resyncs: self.resyncs.map(i),
            acks_ignored: i(self.acks_ignored),
        }
    }

    /// A row another replica shared.
    pub fn of_record(r: &FleetRecord) -> Self {
        let u = |n: i64| u64::try_from(n).unwrap_or(0);
        Self {
            replica: r.replica.clone(),
            id: u(r.id),
            name: r.name.clone(),
            version: r.version.clone(),
            transport: r.transport.clone(),
            remote: r.remote.clone(),
            connected_at: UnixMillis::new(r.connected_at),
            applied: r.applied.map(|a| Seq::new(u(a))),
            lag_events: r.lag_events.map(u),
            lag_ms: r.lag_ms,
            last_heard: r.last_heard.map(UnixMillis::new),
            resyncs: r.resyncs.map(u),
            acks_ignored: u(r.acks_ignored),
            acked_at: r.acked_at.map(UnixMillis::new),
        }
    }

    /// What to call it in answers: its name, or `#ID` (`#ID@REPLICA` on another replica).
    fn label(&self, here: &str) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None if self.replica == here => format!("#{}", self.id),
            None => format!("#{}@{}", self.id, self.replica),
        }
    }
}

/// Totals over the rows.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub subscribers: u64,
    pub acknowledging: u64,
    pub never_acknowledged: u64,
    pub current: u64,
    pub behind: u64,
}

/// Where a `wait=fleet` stands.
#[derive(Debug, Clone, Default)]
pub struct Propagation {
    pub applied: u64,
    pub of: u64,
    pub slowest_ms: Option<i64>,
    pub missing: Vec<String>,
}

pub struct Fleet {
    /// This process's id among replicas sharing a database (random per start).
    replica: String,
    /// The other replicas' subscribers, as they last shared them.
    others: Mutex<Vec<FleetRecord>>,
    next_id: AtomicU64,
    by_id: RwLock<HashMap<u64, Arc<Subscriber>>>,
    by_conn: RwLock<HashMap<String, Arc<Subscriber>>>,
    /// Recent commit groups, oldest first (lag in ms, who was connected at commit time).
    commits: Mutex<VecDeque<Commit>>,
    /// Groups not yet applied by the whole fleet (for the histograms).
    tracked: Mutex<VecDeque<Tracked>>,
    /// Woken when an ack advances someone, while `waiters` > 0.
    advanced: Notify,
    waiters: AtomicU64,
    origin: Instant,
    metrics: Arc<Metrics>,
    accepted: Counter,
}

impl Fleet {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        Self {
            replica: hex::encode(random),
            others: Mutex::default(),
            next_id: AtomicU64::new(1),
            by_id: RwLock::default(),
            by_conn: RwLock::default(),
            commits: Mutex::default(),
            tracked: Mutex::default(),
            advanced: Notify::new(),
            waiters: AtomicU64::new(0),
            origin: Instant::now(),
            accepted: metrics.fleet_acks.clone(),
            metrics,
        }
    }

    fn read_ids(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<Subscriber>>> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tracked(&self) -> MutexGuard<'_, VecDeque<Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commits(&self) -> MutexGuard<'_, VecDeque<Commit>> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection that has joined the stream. It stays listed until the returned
    /// [`Registration`] is dropped.
    pub fn register(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: Identity,
        transport: &'static str,
        remote: Option<SocketAddr>,
    ) -> Registration {
        // The id is taken under the registry's lock, so a commit reading the registry sees
        // exactly the subscribers with lower ids (see `committed`).
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // 128 random bits: the handle is a capability for acks of this one connection (with
        // the key that opened it). If the OS random source fails, the key check still holds.
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        let conn = format!("{id}.{}", hex::encode(random));
        let subscriber = Arc::new(Subscriber {
            id,
            conn: conn.clone(),
            key,
            identity,
            transport,
            remote,
            connected_at: UnixMillis::now(),
            applied: AtomicU64::new(0),
            left: AtomicBool::new(false),
            acked_at: AtomicI64::new(0),
            heard_at: AtomicI64::new(0),
            resyncs: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            tat: AtomicU64::new(0),
        });
        by_id.insert(id, Arc::clone(&subscriber));
        drop(by_id);
        self.by_conn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn, Arc::clone(&subscriber));
        Registration {
            fleet: Arc::clone(self),
            subscriber,
        }
    }

    /// The connection `conn` if `key` opened it: a key can only acknowledge for its own
    /// connections.
    pub fn by_conn(&self, conn: &str, key: KeyDigest) -> Option<Arc<Subscriber>> {
        self.by_conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(conn)
            .filter(|s| s.key == key)
            .cloned()
    }

    /// Count an ack that could not even be read.
    pub fn count_malformed(&self, subscriber: Option<&Subscriber>) {
        if let Some(s) = subscriber {
            s.ignored.fetch_add(1, Ordering::Relaxed);
        }
        self.count_ignored(Ignored::Malformed);
    }

    pub fn count_ignored(&self, why: Ignored) {
        self.metrics
            .fleet_acks_ignored
            .get_or_create(&vec![("reason", why.reason())])
            .inc();
    }

    /// Take `ack` from `subscriber`, given this process's `head` and `epoch`: record it, or
    /// ignore and count it.
    pub fn ack(
        &self,
        subscriber: &Subscriber,
        ack: &Ack,
        head: Seq,
        epoch: &Epoch,
    ) -> Result<(), Ignored> {
        subscriber.heard();
        let verdict = self.check(subscriber, ack, head, epoch);
        if let Err(why) = verdict {
            subscriber.ignored.fetch_add(1, Ordering::Relaxed);
            self.count_ignored(why);
            return verdict;
        }
        let now = UnixMillis::now().as_millis();
        let before = {
            let mut tracked = self.tracked();
            let before = subscriber
                .applied
                .fetch_max(ack.seq.get().saturating_add(1), Ordering::AcqRel);
            if !subscriber.left.load(Ordering::Relaxed) {
                // The groups this ack newly covers: last in [previous applied + 1, seq].
                let from = tracked.partition_point(|t| t.commit.last.get() < before);
                let to = tracked.partition_point(|t| t.commit.last <= ack.seq);
                for t in tracked.range_mut(from..to.max(from)) {
                    if t.commit.before_id > subscriber.id {
                        t.applied += 1;
                    }
                }
            }
            before
        };
        subscriber.acked_at.store(now, Ordering::Relaxed);
        if let Some(r) = ack.resyncs {
            subscriber
                .resyncs
                .store(r.saturating_add(1), Ordering::Relaxed);
        }
        self.accepted.inc();
        if before <= ack.seq.get() && self.waiters.load(Ordering::Acquire) > 0 {
            self.advanced.notify_waiters();
        }
        Ok(())
    }

    fn check(
        &self,
        subscriber: &Subscriber,
        ack: &Ack,
        head: Seq,
        epoch: &Epoch,
    ) -> Result<(), Ignored> {
        if &ack.epoch != epoch {
            return Err(Ignored::Epoch);
        }
        if ack.seq > head {
            return Err(Ignored::AboveHead);
        }
        // GCRA: one ack per interval on average, bursts of `ACK_BURST` above it.
        let interval = ACK_INTERVAL.as_millis() as u64;
        let tolerance = interval * (ACK_BURST - 1);
        let now = self.origin.elapsed().as_millis() as u64;
        let tat = &subscriber.tat;
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let start = current.max(now);
            if start - now > tolerance {
                return Err(Ignored::Flood);
            }
            match tat.compare_exchange_weak(
                current,
                start + interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        if subscriber
            .applied()
            .is_some_and(|applied| ack.seq < applied)
        {
            return Err(Ignored::Backwards);
        }
        Ok(())
    }

    /// Record a commit group the hub just published (called in `seq` order).
    pub fn committed(&self, events: &[RevocationEvent]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        // Read under the registry's lock, held until the group is tracked: registering (an id
        // taken under it) and unregistering (leaving every tracked group under it) cannot
        // come between the count and the group.
        let registry = self.read_ids();
        let commit = Commit {
            first: first.seq,
            last: last.seq,
            at: events.iter().map(|e| e.at).min().unwrap_or(first.at),
            before_id: self.next_id.load(Ordering::Relaxed),
        };
        let of = registry.len() as u64;
        {
            let mut commits = self.commits();
            if commits.len() >= COMMITS_KEPT {
                commits.pop_front();
            }
            commits.push_back(commit);
        }
        let mut tracked = self.tracked();
        if tracked.len() >= TRACKED_MAX {
            tracked.pop_front();
            self.metrics.fleet_propagation_incomplete.inc();
        }
        tracked.push_back(Tracked {
            commit,
            events: last.seq.get().saturating_sub(first.seq.get()) + 1,
            published: Instant::now(),
            of,
            applied: 0,
            reached: [false; 3],
        });
    }

    /// The commit group holding `seq`, if still remembered.
    fn commit_of(&self, seq: Seq) -> Option<Commit> {
        let commits = self.commits();
        let i = commits.partition_point(|c| c.last < seq);
        commits.get(i).copied().filter(|c| c.first <= seq)
    }

    /// This replica's id among those sharing a database.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Every subscriber connected here and, on a shared database, to the other replicas (as
    /// they last shared them), with totals; `head` is this process's.
    pub fn rows(&self, head: Seq) -> (Vec<Row>, Totals) {
        let mut rows = self.local_rows(head);
        rows.extend(self.others().iter().map(Row::of_record));
        let totals = totals(&rows);
        (rows, totals)
    }

    fn others(&self) -> MutexGuard<'_, Vec<FleetRecord>> {
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscribers connected here, by id.
    pub fn local_rows(&self, head: Seq) -> Vec<Row> {
        let now = UnixMillis::now();
        let subscribers: Vec<Arc<Subscriber>> = self.read_ids().values().cloned().collect();
        let mut rows: Vec<Row> = subscribers
            .iter()
            .map(|s| {
                let applied = s.applied();
                let lag_events = applied.map(|a| head.get().saturating_sub(a.get()));
                let lag_ms = applied.and_then(|a| {
                    if a >= head {
                        Some(0)
                    } else {
                        self.commit_of(a.next())
                            .map(|c| now.as_millis().saturating_sub(c.at.as_millis()).max(0))
                    }
                });
                let heard = s.heard_at.load(Ordering::Relaxed);
                Row {
                    replica: self.replica.clone(),
                    id: s.id,
                    name: s.identity.name.clone(),
                    version: s.identity.version.clone(),
                    transport: s.transport.to_string(),
                    remote: s.remote.map(|a| a.to_string()),
                    connected_at: s.connected_at,
                    applied,
                    lag_events,
                    lag_ms,
                    last_heard: (heard != 0).then(|| UnixMillis::new(heard)),
                    resyncs: s.resyncs.load(Ordering::Relaxed).checked_sub(1),
                    acks_ignored: s.ignored.load(Ordering::Relaxed),
                    acked_at: s.acked_at(),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Share this replica's fleet through `store` every [`SHARE_EVERY`] and read the other
    /// replicas', for as long as it runs (on a shared database only).
    pub async fn share(self: Arc<Self>, store: Arc<dyn Store>, head: impl Fn() -> Seq + Send) {
        let mut tick = tokio::time::interval(SHARE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let records: Vec<FleetRecord> =
                self.local_rows(head()).iter().map(Row::to_record).collect();
            let now = UnixMillis::now();
            if let Err(e) = store.share_fleet(&self.replica, now, &records).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "sharing the fleet failed"
                );
            }
            let fresh_since = now.saturating_sub(SHARED_FRESH_FOR);
            match store.shared_fleet(&self.replica, fresh_since).await {
                Ok(others) => {
                    *self.others() = others;
                    if self.waiters.load(Ordering::Acquire) > 0 {
                        self.advanced.notify_waiters();
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "reading the shared fleet failed"
                    );
                }
            }
        }
    }

    /// Wait until every subscriber registered when `seq` was published has acknowledged it
    /// (or has gone), or until `deadline`. `at` is the revocation's commit time.
    pub async fn wait_applied(&self, seq: Seq, at: UnixMillis, deadline: Instant) -> Propagation {
        let before_id = self
            .commit_of(seq)
            .map_or_else(|| self.next_id.load(Ordering::Relaxed), |c| c.before_id);
        // Who has applied it, and when we first saw that (their last ack's time by then).
        // Keyed by (replica, id): `None` for this replica's, so checking them allocates nothing.
        let mut done: HashMap<(Option<String>, u64), i64> = HashMap::new();
        let _waiting = Waiting::new(&self.waiters);
        let since_commit =
            |when: UnixMillis| when.as_millis().saturating_sub(at.as_millis()).max(0);
        loop {
            let notified = self.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut missing = Vec::new();
            for s in self.read_ids().values() {
                let key = (None, s.id);
                if s.id >= before_id || done.contains_key(&key) {
                    continue;
                }
                if s.applied().is_some_and(|a| a >= seq) {
                    done.insert(
                        key,
                        since_commit(s.acked_at().unwrap_or_else(UnixMillis::now)),
                    );
                } else {
                    missing.push((key, s.label()));
                }
            }
            // Other replicas' subscribers connected by the commit, as last shared.
            for r in self.others().iter().map(Row::of_record) {
                let key = (Some(r.replica.clone()), r.id);
                if r.connected_at > at || done.contains_key(&key) {
                    continue;
                }
                if r.applied.is_some_and(|a| a >= seq) {
                    done.insert(
                        key,
                        since_commit(r.acked_at.unwrap_or_else(UnixMillis::now)),
                    );
                } else {
                    missing.push((key, r.label(&self.replica)));
                }
            }
            let finished = missing.is_empty() || Instant::now() >= deadline;
            if finished {
                missing.sort();
                let of = (done.len() + missing.len()) as u64;
                return Propagation {
                    applied: done.len() as u64,
                    of,
                    slowest_ms: done.values().copied().max(),
                    missing: missing
                        .into_iter()
                        .take(MISSING_LISTED)
                        .map(|(_, label)| label)
                        .collect(),
                };
            }
            tokio::select! {
                () = &mut notified => {
                    // Acks arrive in bursts: look again a little later rather than per ack.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Follow published revocations until the fleet connected at their commit has applied
    /// them; observe the times to 50 %, 99 % and 100 %, and keep the gauges current.
    pub async fn track(self: Arc<Self>, head: impl Fn() -> Seq + Send + 'static) {
        let mut tick = tokio::time::interval(TRACK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gauges_at = Instant::now();
        loop {
            tick.tick().await;
            self.track_once();
            if gauges_at.elapsed() >= Duration::from_secs(1) {
                gauges_at = Instant::now();
                // This replica's own subscribers: summed over replicas, each counts once.
                let totals = totals(&self.local_rows(head()));
                self.metrics
                    .fleet_subscribers_behind
                    .set(gauge_value(totals.behind));
                self.metrics
                    .fleet_subscribers_unacknowledged
                    .set(gauge_value(totals.never_acknowledged));
            }
        }
    }

    fn track_once(&self) {
        let mut tracked = self.tracked();
        for t in tracked.iter_mut() {
            let elapsed = t.published.elapsed().as_secs_f64();
            for (k, (share, label)) in SHARES.iter().enumerate() {
                if t.reached[k] {
                    continue;
                }
                // Nobody connected at commit time: nothing to wait for, nothing to observe.
                if t.of == 0 {
                    t.reached[k] = true;
                    continue;
                }
                if t.applied as f64 >= share * t.of as f64 {
                    t.reached[k] = true;
                    let histogram = self
                        .metrics
                        .fleet_applied_seconds
                        .get_or_create(&vec![("share", *label)]);
                    for _ in 0..t.events.min(10_000) {
                        histogram.observe(elapsed);
                    }
                }
            }
        }
        while let Some(front) = tracked.front() {
            if front.reached.iter().all(|r| *r) {
                tracked.pop_front();
            } else if front.published.elapsed() >= TRACK_FOR {
                tracked.pop_front();
                self.metrics.fleet_propagation_incomplete.inc();
            } else {
                break;
            }
        }
        // Later groups may be complete while an earlier one waits: drop them too.
        tracked.retain(|t| !t.reached.iter().all(|r| *r));
    }

    fn unregister(&self, subscriber: &Subscriber) {
        {
            let mut registry = self.by_id.write().unwrap_or_else(|p| p.into_inner());
            registry.remove(&subscriber.id);
            // It is no longer waited for: it leaves every group it was counted in (with its
            // application of it, if it had applied it).
            let mut tracked = self.tracked();
            subscriber.left.store(true, Ordering::Relaxed);
            let applied = subscriber.applied();
            for t in tracked.iter_mut() {
                if t.commit.before_id > subscriber.id {
                    t.of = t.of.saturating_sub(1);
                    if applied.is_some_and(|seq| seq >= t.commit.last) {
                        t.applied = t.applied.saturating_sub(1);
                    }
                }
            }
        }
        self.by_conn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&subscriber.conn);
        // A waiter may be waiting for it alone.
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.advanced.notify_waiters();
        }
    }
}

fn totals(rows: &[Row]) -> Totals {
    let behind_ms = BEHIND_AFTER.as_millis() as i64;
    let mut t = Totals {
        subscribers: rows.len() as u64,
        ..Totals::default()
    };
    for r in rows {
        match r.applied {
            None => t.never_acknowledged += 1,
            Some(_) => {
                t.acknowledging += 1;
                if r.lag_events == Some(0) {
                    t.current += 1;
                }
                if r.lag_ms.is_some_and(|ms| ms > behind_ms)
                    || (r.lag_events.is_some_and(|l| l > 0) && r.lag_ms.is_none())
                {
                    t.behind += 1;
                }
            }
        }
    }
    t
}

/// Counts a waiting `wait=fleet` request while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in the fleet; leaving when dropped.
pub struct Registration {
    fleet: Arc<Fleet>,
    subscriber: Arc<Subscriber>,
}

impl Registration {
    pub fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fleet.unregister(&self.subscriber);
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::event::Revocation;

    use super::*;

    fn fleet() -> Arc<Fleet> {
        Arc::new(Fleet::new(Arc::new(Metrics::new())))
    }

    fn ack(seq: u64, epoch: &str) -> Ack {
        Ack {
            seq: Seq::new(seq),
            epoch: Epoch::new(epoch),
            resyncs: None,
        }
    }

    fn event(seq: u64) -> RevocationEvent {
        RevocationEvent {
            seq: Seq::new(seq),
            revocation: Revocation::Session {
                sid: "s".into(),
                until: 1,
            },
            at: UnixMillis::now(),
        }
    }

    #[tokio::test]
    async fn acks_are_checked_and_a_key_reaches_only_its_own_connections() {
        let f = fleet();
        let e = Epoch::new("e");
        let reg = f.register(KeyDigest([1; 32]), Identity::default(), "sse", None);
        let s = reg.subscriber();
        assert!(f.by_conn(s.conn(), KeyDigest([2; 32])).is_none());
        assert!(f.by_conn(s.conn(), KeyDigest([1; 32])).is_some());
        assert_eq!(s.applied(), None);
        assert_eq!(
            f.ack(s, &ack(9, "e"), Seq::new(5), &e),
            Err(Ignored::AboveHead)
        );
        assert_eq!(f.ack(s, &ack(1, "x"), Seq::new(5), &e), Err(Ignored::Epoch));
        assert_eq!(f.ack(s, &ack(3, "e"), Seq::new(5), &e), Ok(()));
        assert_eq!(s.applied(), Some(Seq::new(3)));
        // A flood: a burst passes, then acks are ignored.
        let results: Vec<_> = (0..20)
            .map(|_| f.ack(s, &ack(4, "e"), Seq::new(5), &e))
            .collect();
        assert!(results.contains(&Err(Ignored::Flood)));
        assert!(results.iter().filter(|r| r.is_ok()).count() <= ACK_BURST as usize);
        drop(reg);
        assert!(f.rows(Seq::new(5)).0.is_empty());
    }

    /// The sample count of `fleet_applied_seconds{share}`.
    fn observed(f: &Fleet, share: &str) -> u64 {
        let text = f.metrics.render();
        let prefix = format!("revocast_fleet_applied_seconds_count{{share=\"{share}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_tracker_observes_each_share_once_per_revocation_of_the_fleet_at_commit() {
        let f = fleet();
        let e = Epoch::new("e");
        let a = f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None);
        let b = f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None);
        f.committed(&[event(1)]);
        // Connected between the two commits: counted for the second only.
        let c = f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None);
        f.committed(&[event(2), event(3)]);
        f.ack(a.subscriber(), &ack(3, "e"), Seq::new(3), &e)
            .unwrap();
        f.track_once();
        // Group 1: 1 of 2 applied → 50 %. Group 2 (two revocations): 1 of 3 → nothing yet.
        assert_eq!(observed(&f, "0.5"), 1);
        assert_eq!(observed(&f, "1"), 0);
        f.ack(b.subscriber(), &ack(1, "e"), Seq::new(3), &e)
            .unwrap();
        f.ack(c.subscriber(), &ack(3, "e"), Seq::new(3), &e)
            .unwrap();
        f.track_once();
        // Group 1 complete; group 2 at 2 of 3: 50 % for both its revocations.
        assert_eq!(observed(&f, "1"), 1);
        assert_eq!(observed(&f, "0.99"), 1);
        assert_eq!(observed(&f, "0.5"), 3);
        // b leaves without applying group 2: it is not waited for, so every subscriber left
        // of those connected at its commit has applied it.
        drop(b);
        f.track_once();
        assert_eq!(observed(&f, "1"), 3);
        assert_eq!(
            f.tracked.lock().unwrap().len(),
            0,
            "complete groups are dropped"
        );
    }

    /// The tracked groups' counts, recounted the slow way: for each group, the subscribers
    /// still connected that were connected at its commit, and those of them whose acks cover it.
    fn recount(f: &Fleet) -> Vec<(u64, u64)> {
        let registry = f.read_ids();
        f.tracked()
            .iter()
            .map(|t| {
                let at_commit = registry.values().filter(|s| s.id < t.commit.before_id);
                let (mut of, mut applied) = (0, 0);
                for s in at_commit {
                    of += 1;
                    if s.applied().is_some_and(|seq| seq >= t.commit.last) {
                        applied += 1;
                    }
                }
                (of, applied)
            })
            .collect()
    }

    proptest::proptest! {
        /// However registrations, commits, acks (in order or not, repeated, late) and
        /// departures interleave, each tracked group's counts are what a pass over the fleet
        /// would find.
        #[test]
        fn tracked_counts_follow_the_fleet_exactly(
            steps in proptest::collection::vec((0u8..4, 0usize..8, 0u64..12), 1..80)
        ) {
            let f = fleet();
            let e = Epoch::new("e");
            let mut live: Vec<Registration> = Vec::new();
            let mut head = 0u64;
            for (kind, who, seq) in steps {
                match kind {
                    0 => live.push(f.register(KeyDigest([1; 32]), Identity::default(), "sse", None)),
                    1 => {
                        let n = 1 + seq % 3;
                        let events: Vec<_> = (head + 1..=head + n).map(event).collect();
                        head += n;
                        f.committed(&events);
                    }
                    2 if !live.is_empty() => {
                        let s = live[who % live.len()].subscriber();
                        // A fresh flood budget each time: the flood limit is not under test.
                        s.tat.store(0, Ordering::Relaxed);
                        let _ = f.ack(s, &ack(seq.min(head), "e"), Seq::new(head), &e);
                    }
                    3 if !live.is_empty() => {
                        // It leaves; then a late ack of its own (over SSE) arrives.
                        let left = live.swap_remove(who % live.len());
                        let s = Arc::clone(&left.subscriber);
                        drop(left);
                        s.tat.store(0, Ordering::Relaxed);
                        let _ = f.ack(&s, &ack(head, "e"), Seq::new(head), &e);
                    }
                    _ => {}
                }
                let counted: Vec<(u64, u64)> =
                    f.tracked().iter().map(|t| (t.of, t.applied)).collect();
                proptest::prop_assert_eq!(counted, recount(&f));
            }
        }
    }

    /// What an acknowledgment costs: parse plus record, over 10,000 subscribers. A figure,
    /// not a test: `cargo test --release -p revocast-authority --lib ack_cost -- --ignored
    /// --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn ack_cost() {
        let f = fleet();
        let e = Epoch::new("e");
        let regs: Vec<_> = (0..10_000)
            .map(|_| f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None))
            .collect();
        let texts: Vec<String> = (1..=ACK_BURST)
            .map(|seq| format!(r#"{{"type":"ack","seq":{seq},"epoch":"e","resyncs":1}}"#))
            .collect();
        let started = std::time::Instant::now();
        for text in &texts {
            for r in &regs {
                let ack = parse_client_message(text.as_bytes()).unwrap().unwrap();
                f.ack(r.subscriber(), &ack, Seq::new(10), &e).unwrap();
            }
        }
        let n = regs.len() as u32 * ACK_BURST as u32;
        println!(
            "{n} acks in {:?}: {:?} each",
            started.elapsed(),
            started.elapsed() / n
        );
        let started = std::time::Instant::now();
        f.committed(&[event(1)]);
        f.track_once();
        println!(
            "one tracker tick with 10,000 subscribers: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn waiting_ends_when_the_fleet_connected_at_commit_applied_it() {
        let f = fleet();
        let e = Epoch::new("e");
        let a = f.register(
            KeyDigest([1; 32]),
            Identity {
                name: Some("a".into()),
                version: None,
            },
            "websocket",
            None,
        );
        let b = f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None);
        f.committed(&[event(1)]);
        // Connected after the commit: not waited for.
        let _late = f.register(KeyDigest([1; 32]), Identity::default(), "websocket", None);
        f.ack(a.subscriber(), &ack(1, "e"), Seq::new(1), &e)
            .unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        let p = f.wait_applied(Seq::new(1), UnixMillis::now(), soon).await;
        assert_eq!((p.applied, p.of), (1, 2));
        assert_eq!(p.missing, vec![format!("#{}", b.subscriber().id)]);
        f.ack(b.subscriber(), &ack(1, "e"), Seq::new(1), &e)
            .unwrap();
        let p = f
            .wait_applied(
                Seq::new(1),
                UnixMillis::now(),
                Instant::now() + Duration::from_secs(5),
            )
            .await;
        assert_eq!((p.applied, p.of), (2, 2));
        assert!(p.missing.is_empty());
    }
}
