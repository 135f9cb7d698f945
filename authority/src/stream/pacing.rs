//! How often one stream connection may write under sustained load.
//!
//! Fan-out costs one write per connection per write, and on loopback the sender also pays
//! for the receiver's whole TCP path: about 20 µs each on the machine in BENCHMARKS.md,
//! however few events the write carries. With 10,000 subscribers, writing every commit as it
//! comes would need more writes per second than two cores can make, and the connections'
//! tasks would crowd the scheduler so that revocations themselves wait behind them. So after
//! a connection has written everything it had, it stays quiet for a *linger* that grows with
//! the fleet: the total stays near `writes_per_second`, and each write carries every commit
//! since the last. An isolated revocation still goes out at once; only the ones right after
//! it wait, at most [`MAX_LINGER`].
//!
//! Acknowledgments are the same budget the other way: each is a segment the authority reads
//! and a wake-up of its connection (~8 µs in the soak of BENCHMARKS.md). `hello` asks each
//! subscriber to acknowledge at most once per [`Pacing::ack_interval`] on average, which grows
//! with the fleet so that the whole fleet stays near `acks_per_second` under sustained load.
//! A quiet subscriber still acknowledges an isolated revocation at once.

use std::time::Duration;

/// The longest linger: well inside the agents' staleness budget (heartbeats wait behind it).
pub const MAX_LINGER: Duration = Duration::from_millis(250);

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
    /// Acknowledgments per second the whole fleet should cost at most
    /// (`--fleet-acks-per-second`).
    pub acks_per_second: u32,
}

impl Pacing {
    /// The quiet time after a write for one of `subscribers` connections.
    pub(crate) fn linger(&self, subscribers: usize) -> Duration {
        let spread =
            Duration::from_secs_f64(subscribers as f64 / f64::from(self.writes_per_second.max(1)));
        spread.max(self.min_linger).min(MAX_LINGER)
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
            acks_per_second: 5_000,
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
    fn the_ack_interval_grows_with_the_fleet_between_the_protocols_minimum_and_the_cap() {
        let pacing = Pacing {
            min_linger: Duration::ZERO,
            writes_per_second: 40_000,
            acks_per_second: 5_000,
        };
        let ms = |subscribers| pacing.ack_interval(subscribers).as_millis();
        assert_eq!(ms(0), 50);
        assert_eq!(ms(100), 50);
        assert_eq!(ms(1_000), 200);
        assert_eq!(ms(10_000), 2_000);
        assert_eq!(ms(1_000_000), 2_000);
    }
}
