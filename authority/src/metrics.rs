//! Prometheus metrics, in a registry owned by each authority instance (no global recorder), so
//! several authorities in one test process keep separate counts.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub tokens_issued: Counter,
    pub revocations: Family<Labels, Counter>,
    pub verifications: Family<Labels, Counter>,
    pub commit_batch_size: Histogram,
    pub head_seq: Gauge,
    pub revocation_entries: Gauge,
    /// Connected stream subscribers, by `transport` (`sse`, `websocket`).
    pub subscribers: Family<Labels, Gauge>,
    /// Revocation events written to subscribers, by `transport`.
    pub events_sent: Family<Labels, Counter>,
    /// Subscribers disconnected for falling behind, by `transport`.
    pub slow_disconnects: Family<Labels, Counter>,
    pub log_floor: Gauge,
    pub log_rows_pruned: Counter,
    /// Requests refused with 429, by `limit` (`tokens`, `revocations`, `snapshots`).
    pub rate_limited: Family<Labels, Counter>,
    /// Connections open now (TLS handshakes and streams included).
    pub connections_open: Gauge,
    /// Connections closed at accept because a cap was reached, by `reason`
    /// (`max_connections`, `max_connections_per_ip`).
    pub connections_refused: Family<Labels, Counter>,
    /// Connections closed by a timeout, by `phase` (`handshake`, `headers`, `idle`).
    pub connections_timed_out: Family<Labels, Counter>,
    /// API-key lookups that reached the store (cache misses and expired entries), by
    /// `outcome` (`found`, `unknown` — unknown or revoked —, `error`).
    pub api_key_lookups: Family<Labels, Counter>,
    /// Snapshot responses cut off at `--snapshot-deadline`.
    pub snapshots_cut_off: Counter,
    /// `POST /oauth2/token` answers, by `outcome` (`rotated`, `retried`, `reused`,
    /// `refused`).
    pub refreshes: Family<Labels, Counter>,
    /// Used refresh tokens presented again: each revoked its session.
    pub refresh_reuse: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("revocast");
        let tokens_issued = Counter::default();
        registry.register(
            "tokens_issued",
            "Access tokens signed",
            tokens_issued.clone(),
        );
        let revocations = Family::<Labels, Counter>::default();
        registry.register(
            "revocations",
            "Revocations committed, by kind",
            revocations.clone(),
        );
        let verifications = Family::<Labels, Counter>::default();
        registry.register(
            "verifications",
            "Verify and introspect answers, by result code",
            verifications.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_size",
            "Mutations per durable commit (group commit)",
            commit_batch_size.clone(),
        );
        let head_seq = Gauge::default();
        registry.register(
            "head_seq",
            "Sequence number of the last committed revocation",
            head_seq.clone(),
        );
        let revocation_entries = Gauge::default();
        registry.register(
            "revocation_entries",
            "Revocation entries in force held in memory",
            revocation_entries.clone(),
        );
        let subscribers = Family::<Labels, Gauge>::default();
        registry.register(
            "stream_subscribers",
            "Connected stream subscribers, by transport",
            subscribers.clone(),
        );
        let events_sent = Family::<Labels, Counter>::default();
        registry.register(
            "stream_events_sent",
            "Revocation events written to subscribers, by transport",
            events_sent.clone(),
        );
        let slow_disconnects = Family::<Labels, Counter>::default();
        registry.register(
            "stream_slow_disconnects",
            "Subscribers disconnected for falling a whole queue behind or not reading, by transport",
            slow_disconnects.clone(),
        );
        let log_floor = Gauge::default();
        registry.register(
            "log_floor",
            "Resumes from a seq below this get a reset (older log entries may be pruned)",
            log_floor.clone(),
        );
        let log_rows_pruned = Counter::default();
        registry.register(
            "log_rows_pruned",
            "Expired revocation log rows deleted by retention",
            log_rows_pruned.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a per-key limit (a rate, or concurrent snapshots), by limit",
            rate_limited.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open, TLS handshakes and streams included",
            connections_open.clone(),
        );
        let connections_refused = Family::<Labels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because a connection cap was reached, by reason",
            connections_refused.clone(),
        );
        let connections_timed_out = Family::<Labels, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Connections closed by the handshake, header-read or idle timeout, by phase",
            connections_timed_out.clone(),
        );
        let api_key_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "api_key_lookups",
            "API-key lookups that reached the store (not answered from the cache), by outcome",
            api_key_lookups.clone(),
        );
        let snapshots_cut_off = Counter::default();
        registry.register(
            "snapshots_cut_off",
            "Snapshot responses aborted because they ran past --snapshot-deadline",
            snapshots_cut_off.clone(),
        );
        let refreshes = Family::<Labels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh-token grants answered, by outcome (rotated, retried, reused, refused)",
            refreshes.clone(),
        );
        let refresh_reuse = Counter::default();
        registry.register(
            "refresh_token_reuse",
            "Used refresh tokens presented again (theft detected): each revoked its session",
            refresh_reuse.clone(),
        );
        Self {
            registry,
            refreshes,
            refresh_reuse,
            rate_limited,
            connections_open,
            connections_refused,
            connections_timed_out,
            api_key_lookups,
            snapshots_cut_off,
            subscribers,
            events_sent,
            slow_disconnects,
            log_floor,
            log_rows_pruned,
            tokens_issued,
            revocations,
            verifications,
            commit_batch_size,
            head_seq,
            revocation_entries,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn count_verification(&self, code: &'static str) {
        self.verifications
            .get_or_create(&vec![("result", code)])
            .inc();
    }

    pub fn count_connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub fn count_connection_timeout(&self, phase: &'static str) {
        self.connections_timed_out
            .get_or_create(&vec![("phase", phase)])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one connected subscriber for as long as it lives.
pub struct SubscriberGuard(Gauge);

impl SubscriberGuard {
    pub fn new(metrics: &Metrics, transport: &'static str) -> Self {
        let gauge = metrics
            .subscribers
            .get_or_create(&vec![("transport", transport)])
            .clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Saturating conversion for gauges.
pub fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
