//! How often one stream connection may write under sustained load.
//!
//! Fan-out costs one write per connection per write, and on loopback the sender also pays
//! for the receiver's whole TCP path: about 20 µs each on the machine in BENCHMARKS.md,
//! however few events the write carries. With 10,000 subscribers, writing every commit as it
//! comes would need more writes per second than two cores can make, and the connections'
//! tasks would crowd the scheduler so that revocations themselves wait behind them. So after
//! a connection writes events at most once per *linger* on average, a linger that grows with
//! the fleet: the total stays near `writes_per_second`, and each write carries every commit
//! since the last. The average is kept by a GCRA ([`WriteBudget`]) with a burst of
//! [`WRITE_BURST`] writes, not by a fixed quiet time after each write: a revocation that
//! follows another by less than a linger — two urgent ones a moment apart, the usual case for
//! "isolated" revocations at 10,000 subscribers, whose linger is 250 ms — still goes out at
//! once. Only sustained load, which spends the burst, is batched; a write then waits at most
//! [`MAX_LINGER`].
//!
//! Acknowledgments are the same budget the other way: each is a segment the authority reads
//! and a wake-up of its connection (~8 µs in the soak of BENCHMARKS.md). `hello` asks each
//! subscriber to acknowledge at most once per [`Pacing::ack_interval`] on average, which grows
//! with the fleet so that the whole fleet stays near `acks_per_second` under sustained load.
//! A quiet subscriber still acknowledges an isolated revocation at once.

use std::time::Duration;

/// The longest linger: well inside the agents' staleness budget (heartbeats wait behind it).
pub const MAX_LINGER: Duration = Duration::from_millis(250);

/// Writes of events a connection may make back to back before the linger paces it, by
/// default (`--stream-write-burst`): enough that revocations a fraction of a linger apart are
/// never held, few enough that a fleet-wide burst (every connection spending it at once when
/// load starts) stays a moment's work. 1 is a fixed quiet linger after every write.
pub const WRITE_BURST: u32 = 4;

/// One connection's budget of event writes: a GCRA (the theoretical time of its next write)
/// over intervals of one linger, allowing [`Pacing::write_burst`] writes at once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteBudget {
    tat: Option<tokio::time::Instant>,
}

impl WriteBudget {
    /// Record a write of events at `now`, each write being worth `linger`.
    pub(crate) fn wrote(&mut self, now: tokio::time::Instant, linger: Duration) {
        self.tat = Some(self.tat.map_or(now, |tat| tat.max(now)) + linger);
    }

    /// When the next write of events may go, if not at once: `None` while the burst lasts.
    pub(crate) fn ready_at(
        &self,
        now: tokio::time::Instant,
        linger: Duration,
        burst: u32,
    ) -> Option<tokio::time::Instant> {
        let tolerance = linger * burst.saturating_sub(1);
        let at = self.tat?.checked_sub(tolerance)?;
        (at > now).then_some(at)
    }
}

/// The heartbeat window per subscriber ([`Pacing::beat_delay`]): a fleet of 100 or more spreads
/// its heartbeats over the whole of [`Pacing::heartbeat_spread`].
pub const BEAT_SPACING: Duration = Duration::from_millis(5);

/// The protocol's least interval between acknowledgments (PROTOCOL.md).
pub const MIN_ACK_INTERVAL: Duration = Duration::from_millis(50);
/// The longest interval asked for: well inside the 5 s after which the fleet view calls an
/// acknowledging subscriber behind.
pub const MAX_ACK_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// The linger however small the fleet (`--stream-linger`; 0: none).
    pub min_linger: Duration,
    /// Writes per second the whole fleet should cost at most (`--stream-writes-per-second`).
    pub writes_per_second: u32,
    /// Writes of events one connection may make at once before the linger paces it
    /// (`--stream-write-burst`, at least 1).
    pub write_burst: u32,
    /// Acknowledgments per second the whole fleet should cost at most
    /// (`--fleet-acks-per-second`).
    pub acks_per_second: u32,
    /// The longest a connection holds a heartbeat back to spread the fleet's heartbeats over
    /// time (half the heartbeat interval; zero: none). See `Pacing::beat_delay`.
    pub heartbeat_spread: Duration,
}

impl Pacing {
    /// The quiet time after a write for one of `subscribers` connections.
    pub(crate) fn linger(&self, subscribers: usize) -> Duration {
        let spread =
            Duration::from_secs_f64(subscribers as f64 / f64::from(self.writes_per_second.max(1)));
        spread.max(self.min_linger).min(MAX_LINGER)
    }

    /// How long the connection at `phase` (a fraction in `[0, 1)`, fixed per connection) holds
    /// a heartbeat back when it is one of `subscribers`.
    ///
    /// Every connection gets the hub's heartbeat at the same instant. Written at once, that is
    /// one write per connection back to back — at 10,000 subscribers ~120 ms of both cores
    /// every second here — and each subscriber then handles it at the same moment too (an
    /// agent verifies the checkpoint it carries: ~0.1–0.2 ms). A revocation committed
    /// meanwhile waits behind all of it: the tail of isolated revocations was this burst. So
    /// each connection writes its heartbeat at its own phase of a window of
    /// [`BEAT_SPACING`] per subscriber, at most [`heartbeat_spread`](Self::heartbeat_spread)
    /// (half the heartbeat interval); an event arriving meanwhile goes out at once, with the
    /// held heartbeat ahead of it in the same write. A fleet of a few is not spread at all,
    /// to speak of.
    pub(crate) fn beat_delay(&self, subscribers: usize, phase: f64) -> Duration {
        let fleet = u32::try_from(subscribers).unwrap_or(u32::MAX);
        let window = BEAT_SPACING
            .saturating_mul(fleet)
            .min(self.heartbeat_spread);
        window.mul_f64(phase.clamp(0.0, 1.0))
    }

    /// The average interval between acknowledgments asked of each of `subscribers`.
    pub(crate) fn ack_interval(&self, subscribers: usize) -> Duration {
        let spread =
            Duration::from_secs_f64(subscribers as f64 / f64::from(self.acks_per_second.max(1)));
        spread.clamp(MIN_ACK_INTERVAL, MAX_ACK_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_grows_with_the_fleet_between_the_minimum_and_the_cap() {
        let pacing = Pacing {
            min_linger: Duration::from_millis(5),
            writes_per_second: 40_000,
            write_burst: WRITE_BURST,
            acks_per_second: 5_000,
            heartbeat_spread: Duration::from_millis(500),
        };
        let ms = |subscribers| pacing.linger(subscribers).as_secs_f64() * 1000.0;
        assert_eq!(ms(0), 5.0);
        assert_eq!(ms(10), 5.0);
        assert_eq!(ms(1_000), 25.0);
        assert_eq!(ms(10_000), 250.0);
        assert_eq!(ms(1_000_000), 250.0);
        let off = Pacing {
            min_linger: Duration::ZERO,
            ..pacing
        };
        assert_eq!(off.linger(100), Duration::from_micros(2_500));
        assert_eq!(off.linger(0), Duration::ZERO);
    }

    #[test]
    fn writes_burst_then_keep_one_per_linger_on_average() {
        let linger = Duration::from_millis(250);
        let start = tokio::time::Instant::now();
        let mut budget = WriteBudget::default();
        assert_eq!(
            budget.ready_at(start, linger, WRITE_BURST),
            None,
            "a quiet connection writes at once"
        );
        for _ in 0..WRITE_BURST {
            assert_eq!(
                budget.ready_at(start, linger, WRITE_BURST),
                None,
                "within the burst"
            );
            budget.wrote(start, linger);
        }
        // The burst is spent: the next write waits one linger, then one per linger.
        assert_eq!(
            budget.ready_at(start, linger, WRITE_BURST),
            Some(start + linger)
        );
        budget.wrote(start + linger, linger);
        assert_eq!(
            budget.ready_at(start + linger, linger, WRITE_BURST),
            Some(start + linger * 2)
        );
        // Quiet for a burst's worth of lingers, and the whole burst is back.
        let later = start + linger * (2 + WRITE_BURST);
        for _ in 0..WRITE_BURST {
            assert_eq!(budget.ready_at(later, linger, WRITE_BURST), None);
            budget.wrote(later, linger);
        }
        assert!(budget.ready_at(later, linger, WRITE_BURST).is_some());
        // A burst of 1 is a fixed quiet linger after each write.
        let mut budget = WriteBudget::default();
        budget.wrote(later, linger);
        assert_eq!(budget.ready_at(later, linger, 1), Some(later + linger));
        // Isolated revocations, however close, while they come slower than one per linger on
        // average, never wait: here four in 200 ms after a quiet second.
        let mut budget = WriteBudget::default();
        for i in 0..4u32 {
            let at = later + Duration::from_secs(1) + Duration::from_millis(50) * i;
            assert_eq!(budget.ready_at(at, linger, WRITE_BURST), None);
            budget.wrote(at, linger);
        }
    }

    #[test]
    fn the_ack_interval_grows_with_the_fleet_between_the_protocols_minimum_and_the_cap() {
        let pacing = Pacing {
            min_linger: Duration::ZERO,
            writes_per_second: 40_000,
            write_burst: WRITE_BURST,
            acks_per_second: 5_000,
            heartbeat_spread: Duration::from_millis(500),
        };
        let ms = |subscribers| pacing.ack_interval(subscribers).as_millis();
        assert_eq!(ms(0), 50);
        assert_eq!(ms(100), 50);
        assert_eq!(ms(1_000), 200);
        assert_eq!(ms(10_000), 2_000);
        assert_eq!(ms(1_000_000), 2_000);
    }

    #[test]
    fn heartbeats_spread_over_a_window_that_grows_with_the_fleet_up_to_the_cap() {
        let pacing = Pacing {
            min_linger: Duration::ZERO,
            writes_per_second: 40_000,
            write_burst: WRITE_BURST,
            acks_per_second: 5_000,
            heartbeat_spread: Duration::from_millis(500),
        };
        let ms = |subscribers, phase| pacing.beat_delay(subscribers, phase).as_secs_f64() * 1e3;
        assert_eq!(ms(1, 0.5), 2.5);
        assert_eq!(ms(10, 0.5), 25.0);
        assert_eq!(ms(1_000, 0.0), 0.0);
        assert_eq!(ms(50, 0.5), 125.0);
        assert_eq!(ms(1_000, 0.5), 250.0);
        assert_eq!(ms(10_000, 0.5), 250.0);
        assert_eq!(ms(100_000, 0.999), 499.5);
        assert_eq!(ms(100_000, 7.0), 500.0, "a phase is a fraction");
        let off = Pacing {
            heartbeat_spread: Duration::ZERO,
            ..pacing
        };
        assert_eq!(off.beat_delay(10_000, 0.5), Duration::ZERO);
    }
}
