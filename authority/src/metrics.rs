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
        Self {
            registry,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
