//! The agent's Prometheus metrics, in a registry per agent (no global recorder).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub applied_seq: Gauge,
    pub head_seq: Gauge,
    pub lag: Gauge,
    /// Milliseconds, set when rendering.
    pub staleness_ms: Gauge,
    pub synced: Gauge,
    /// The authority's time stamp minus ours when it arrived, milliseconds.
    pub clock_offset_ms: Gauge,
    pub entries: Gauge,
    pub reconnects: Counter,
    pub resyncs: Counter,
    pub events_applied: Counter,
    pub jwks_fetches: Counter,
    pub stale_allowed: Counter,
    pub verifications: Family<Labels, Counter>,
    /// Resyncs because the transparency log did not verify, by reason (the PROTOCOL.md codes).
    pub log_resyncs: Family<Labels, Counter>,
    /// Checkpoints verified (snapshots' and heartbeats').
    pub log_checkpoints_verified: Counter,
    /// Size of the newest checkpoint verified against the local tree; -1 before the first.
    pub log_verified_seq: Gauge,
    /// Handles into `verifications`, fetched once so a verify only bumps an atomic.
    verify_ok: Counter,
    verify_rejected: Vec<(&'static str, Counter)>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("revocast_agent");
        macro_rules! register {
            ($metric:expr, $name:literal, $help:literal) => {{
                let m = $metric;
                registry.register($name, $help, m.clone());
                m
            }};
        }
        let verifications = register!(
            Family::<Labels, Counter>::default(),
            "verifications",
            "Verify answers, by result (ok or the rejection code)"
        );
        let verify_ok = verifications.get_or_create(&vec![("result", "ok")]).clone();
        let verify_rejected = crate::Rejection::all_codes()
            .map(|code| {
                (
                    code,
                    verifications.get_or_create(&vec![("result", code)]).clone(),
                )
            })
            .collect();
        let log_resyncs = register!(
            Family::<Labels, Counter>::default(),
            "log_resyncs",
            "Snapshots reloaded because the transparency log did not verify, by reason"
        );
        for code in revocast_shared::tlog::Mismatch::CODES {
            let _ = log_resyncs.get_or_create(&vec![("reason", code)]);
        }
        let log_verified_seq = register!(
            Gauge::default(),
            "log_verified_seq",
            "Size of the newest signed checkpoint verified against the local tree (-1: none)"
        );
        log_verified_seq.set(-1);
        Self {
            log_resyncs,
            log_verified_seq,
            log_checkpoints_verified: register!(
                Counter::default(),
                "log_checkpoints_verified",
                "Signed checkpoints verified against the local tree"
            ),
            verify_ok,
            verify_rejected,
            applied_seq: register!(
                Gauge::default(),
                "applied_seq",
                "Last revocation seq applied locally"
            ),
            head_seq: register!(
                Gauge::default(),
                "head_seq",
                "Highest seq the authority has announced"
            ),
            lag: register!(Gauge::default(), "lag", "head_seq minus applied_seq"),
            staleness_ms: register!(
                Gauge::default(),
                "staleness_milliseconds",
                "Time since the authority was last heard while current (-1: never)"
            ),
            clock_offset_ms: register!(
                Gauge::default(),
                "authority_clock_offset_milliseconds",
                "The authority's newest time stamp minus the agent's clock when it arrived: \
                 above max_clock_skew, the authority's clock runs ahead (not fresh); well below \
                 zero, the stream is held back on the way"
            ),
            synced: register!(
                Gauge::default(),
                "synced",
                "1 once the first snapshot is loaded"
            ),
            entries: register!(
                Gauge::default(),
                "entries",
                "Revocation entries held (tokens, subjects, sessions, keys)"
            ),
            reconnects: register!(
                Counter::default(),
                "reconnects",
                "Stream connections lost or refused, followed by a reconnect"
            ),
            resyncs: register!(
                Counter::default(),
                "resyncs",
                "Snapshots loaded (first sync, reset, gap or epoch change)"
            ),
            events_applied: register!(
                Counter::default(),
                "events_applied",
                "Revocation events applied from the stream (snapshots not counted)"
            ),
            jwks_fetches: register!(Counter::default(), "jwks_fetches", "JWKS fetches"),
            stale_allowed: register!(
                Counter::default(),
                "stale_allowed",
                "Verifies answered from a stale set because on_stale=allow"
            ),
            verifications,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Count a resync for a log mismatch; `code` is one of `Mismatch::CODES`.
    pub fn count_log_resync(&self, code: &'static str) {
        self.log_resyncs
            .get_or_create(&vec![("reason", code)])
            .inc();
    }

    /// Resyncs counted for `code` so far.
    pub fn log_resyncs_for(&self, code: &'static str) -> u64 {
        self.log_resyncs
            .get_or_create(&vec![("reason", code)])
            .get()
    }

    /// Count one verify answer: `None` for ok, else the rejection code.
    pub fn count_verification(&self, rejected: Option<&'static str>) {
        match rejected {
            None => {
                self.verify_ok.inc();
            }
            Some(code) => {
                if let Some((_, c)) = self.verify_rejected.iter().find(|(k, _)| *k == code) {
                    c.inc();
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Saturating conversion for gauges.
pub fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
