//! What one connection sends, whatever the transport: `hello`, then the backlog `since+1 ..=
//! head` (from the hub's memory or, for older positions, from the store page by page), then
//! the live feed with heartbeats — each event exactly once, in order, with every `seq`
//! checked. Transports only write the shared frames of the batches [`Feed::next`] returns.
//!
//! [`Feed::next`] is cancel-safe: its state changes only after each await completes, so a
//! transport can `select!` it against reading the socket.
//!
//! Linger: a connection's writes of events are paced to one per linger on average, with a
//! burst of a few ([`WriteBudget`]); once the burst is spent it takes nothing more from the
//! live feed until its budget allows (a write of heartbeats or `hello` alone costs nothing).
//! An isolated revocation — even one a moment after another — therefore goes out at once,
//! but under sustained load each connection writes about once per linger, carrying every
//! commit of that interval in one write. The linger grows with the fleet ([`Pacing`]), so the
//! writes per second stay bounded however many subscribers there are and however fast
//! revocations are committed.

use std::collections::VecDeque;
use std::sync::Arc;

use revocast_shared::event::Control;
use revocast_shared::{Epoch, Seq};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use super::encoded::Encoded;
use super::hub::{Hub, Subscription};
use super::pacing::{Pacing, WriteBudget};
use super::part::{FRAME_BYTES, Frame, Part, Published};
use crate::store::{Backlog, Store};

/// Events read from the store per backlog page.
const STORE_PAGE: u32 = 1000;
/// A batch (one write) stops growing past this many bytes of JSON. Two frames: at 10,000
/// subscribers and 1,000 revocations/s a paced connection has ~22 KB to send every 250 ms,
/// and a write costs about the same however much it carries (see the `pacing` module), so
/// that should be one write, not two (BENCHMARKS.md has the soak's figures). A batch is
/// references to shared frames, written with one vectored write, so its size costs no
/// per-connection memory.
const BATCH_BYTES: usize = 2 * FRAME_BYTES;

/// Why a feed ended.
#[derive(Debug)]
pub enum End {
    /// The client must resync from the snapshot: send this `reset`, then close.
    Reset(Encoded),
    /// The subscriber fell a whole queue behind: disconnect it (it resumes by `seq`).
    Lagged,
    /// The authority is shutting down.
    ShuttingDown,
    /// The store failed or the log broke an invariant; the client should reconnect.
    Failed,
}

/// What is ready to send, in order, held as the shared parts it arrived in (one per commit or
/// backlog page) with the next frame of the first: a connection holds references to what the
/// hub published, never per-connection copies. A commit of a thousand events costs a lagging
/// connection one pointer, not 80 KB of copies in a buffer that would then never shrink.
#[derive(Default)]
struct Pending {
    parts: VecDeque<Published>,
    /// Frames of `parts[0]` already taken.
    taken: usize,
}

impl Pending {
    fn push(&mut self, part: Published) {
        if !part.is_empty() {
            self.parts.push_back(part);
        }
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Queue everything `other` holds after what is queued here (`other` is whole: nothing
    /// of it taken yet — held heartbeats are never partly sent).
    fn append(&mut self, other: Pending) {
        debug_assert_eq!(other.taken, 0);
        for part in other.parts {
            self.push(part);
        }
    }

    /// Whether anything pending is an event (rather than `hello` or a heartbeat).
    fn has_events(&self) -> bool {
        self.parts
            .iter()
            .any(|part| part.messages().iter().any(|m| m.seq.is_some()))
    }

    /// Take whole frames from the front, at least one, until the next would pass `max_bytes`.
    fn take(&mut self, max_bytes: usize) -> Vec<Frame> {
        let mut bytes = 0;
        let mut batch: Vec<Frame> = Vec::new();
        while let Some(front) = self.parts.front() {
            let Some(frame) = Frame::of(front, self.taken) else {
                self.parts.pop_front();
                self.taken = 0;
                continue;
            };
            if !batch.is_empty() && bytes + frame.bytes() > max_bytes {
                break;
            }
            bytes += frame.bytes();
            batch.push(frame);
            self.taken += 1;
        }
        // Drop what is used up, so `is_empty` means nothing is left to take.
        while self.parts.front().is_some_and(|f| self.taken >= f.frames()) {
            self.parts.pop_front();
            self.taken = 0;
        }
        batch
    }
}

pub struct Feed {
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    /// Ready to send, in order.
    pending: Pending,
    /// What follows `pending` once it is sent, instead of more events.
    end: Option<End>,
    /// The last `seq` handed over (or queued in `pending`).
    last: Seq,
    /// The backlog from the store runs through this `seq`; the live feed starts after it.
    backlog_through: Seq,
    live: tokio::sync::broadcast::Receiver<Published>,
    /// How often this connection may write events (see the module docs).
    pacing: Pacing,
    /// The writes of events made, against the linger's average.
    budget: WriteBudget,
    /// No live events are taken before this instant: the budget is spent until then.
    quiet_until: Option<Instant>,
    /// Where the subscriber resumed from: it is never sent a checkpoint below it, which it
    /// could not check (it holds none of the leaves up to there).
    resumed_from: Seq,
    /// The hub's number of the last checkpoint sent on this connection (0: none yet).
    checkpoint_sent: u64,
    /// This connection's place in the fleet's heartbeat window, a fraction in `[0, 1)`
    /// ([`Pacing::beat_delay`]).
    beat_phase: f64,
    /// Heartbeats held back to that place, and when they go. Events received meanwhile go at
    /// once, ahead of them: a heartbeat counts only events before it, so one that follows
    /// newer events still says something true, and a subscriber's work on it (an agent
    /// verifies the checkpoint it carries) never comes between it and a revocation.
    held: Option<(Pending, Instant)>,
}

/// The next connection's heartbeat phase: successive multiples of the golden ratio's
/// fraction, which fill `[0, 1)` evenly however many connections there are.
fn next_beat_phase() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    const GOLDEN_FRACTION: f64 = 0.618_033_988_749_894_8;
    let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    (n as f64 * GOLDEN_FRACTION).fract()
}

impl Feed {
    /// Start a feed for `subscription`. A client naming an epoch other than the log's gets
    /// `hello` then `reset`: its `since` means nothing in this log. `conn`, the connection's
    /// handle for acknowledgments, goes in `hello`.
    pub fn new(
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        subscription: Subscription,
        client_epoch: Option<&Epoch>,
        pacing: Pacing,
        conn: Option<&str>,
    ) -> Self {
        let Subscription {
            head,
            since,
            recent,
            live,
        } = subscription;
        let mut pending = Pending::default();
        let acks = conn.map(|conn| (conn, pacing.ack_interval(hub.fleet_size())));
        pending.push(Part::new([Encoded::hello(hub.epoch(), head, acks)]));
        let mut feed = Self {
            hub,
            store,
            pending,
            end: None,
            last: since,
            backlog_through: since,
            live,
            pacing,
            budget: WriteBudget::default(),
            quiet_until: None,
            resumed_from: since,
            checkpoint_sent: 0,
            beat_phase: next_beat_phase(),
            held: None,
        };
        if client_epoch.is_some_and(|e| e != feed.hub.epoch()) {
            feed.end = Some(End::Reset(feed.reset_message()));
        } else if let Some(recent) = recent {
            feed.last = head;
            feed.backlog_through = head;
            feed.pending.push(Part::new(recent));
        } else {
            feed.backlog_through = head;
        }
        feed
    }

    fn reset_message(&self) -> Encoded {
        Encoded::control(&Control::Reset {
            epoch: self.hub.epoch().clone(),
            seq: self.hub.head(),
        })
    }

    /// The next batch to send with one write (never empty), or why the feed ended.
    pub async fn next(&mut self) -> Result<Vec<Frame>, End> {
        loop {
            if !self.pending.is_empty() {
                let batch = self.pending.take(BATCH_BYTES);
                // Only a write that carried events spends the budget: a heartbeat (every
                // second) or `hello` must never hold back the revocation that follows it.
                if self.pending.is_empty() && batch.iter().any(|f| f.events() > 0) {
                    let linger = self.pacing.linger(self.hub.fleet_size());
                    let now = Instant::now();
                    self.budget.wrote(now, linger);
                    self.quiet_until = self.budget.ready_at(now, linger, self.pacing.write_burst);
                }
                return Ok(batch);
            }
            if let Some(end) = self.end.take() {
                return Err(end);
            }
            if self.last < self.backlog_through {
                self.read_backlog().await?;
                continue;
            }
            let beat_due = self.held.as_ref().map(|(_, due)| *due);
            if let Some(until) = self.quiet_until {
                // The budget is spent: nothing from the live feed until then, but a held
                // heartbeat still goes at its time. Cancel-safe: an interrupted sleep is
                // resumed to the same instant.
                if let Some(due) = beat_due.filter(|due| *due < until) {
                    tokio::time::sleep_until(due).await;
                    self.release_held();
                    continue;
                }
                tokio::time::sleep_until(until).await;
                self.quiet_until = None;
            }
            let received = match beat_due {
                // Cancel-safe: nothing changes until one of the two has completed.
                Some(due) => tokio::select! {
                    biased;
                    received = self.live.recv() => received,
                    () = tokio::time::sleep_until(due) => {
                        self.release_held();
                        continue;
                    }
                },
                None => self.live.recv().await,
            };
            let bytes = self.accept_live(received)?;
            self.drain_live(bytes)?;
            if !self.pending.has_events() {
                // Heartbeats alone: spread over the fleet's window (see `Pacing::beat_delay`).
                if self.held.is_some() {
                    // One is still held (a write took longer than a heartbeat interval):
                    // both go now, in order.
                    let newer = std::mem::take(&mut self.pending);
                    self.release_held();
                    self.pending.append(newer);
                } else {
                    let delay = self
                        .pacing
                        .beat_delay(self.hub.fleet_size(), self.beat_phase);
                    if !delay.is_zero() {
                        let beats = std::mem::take(&mut self.pending);
                        self.held = Some((beats, Instant::now() + delay));
                    }
                }
            }
        }
    }

    /// Queue the held heartbeats to go next.
    fn release_held(&mut self) {
        if let Some((beats, _)) = self.held.take() {
            self.pending.append(beats);
        }
    }

    /// Queue whatever else is already in the live feed, up to a batch (`bytes` queued so
    /// far), so that one write carries it.
    fn drain_live(&mut self, mut bytes: usize) -> Result<(), End> {
        while bytes < BATCH_BYTES {
            match self.live.try_recv() {
                Ok(published) => bytes += self.accept_live(Ok(published))?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => {
                    self.accept_live(Err(RecvError::Lagged(n)))?;
                }
                Err(TryRecvError::Closed) => {
                    // Send what we have; the next call reports the close.
                    break;
                }
            }
        }
        Ok(())
    }

    /// Queue one live slot, checking that its events continue exactly where we are; returns
    /// the JSON bytes queued.
    fn accept_live(&mut self, received: Result<Published, RecvError>) -> Result<usize, End> {
        let published = match received {
            Ok(published) => published,
            Err(RecvError::Lagged(_)) => return Err(End::Lagged),
            Err(RecvError::Closed) => return Err(End::ShuttingDown),
        };
        // A heartbeat carries the latest checkpoint if this connection has not had it yet —
        // so its first heartbeat carries the latest one — unless it ends before `since`.
        let with_checkpoint = published
            .checkpoint()
            .filter(|c| c.serial != self.checkpoint_sent && c.size >= self.resumed_from.get())
            .map(|c| (c.serial, Arc::clone(&c.beat)));
        let published = match with_checkpoint {
            Some((serial, beat)) => {
                self.checkpoint_sent = serial;
                beat
            }
            None => published,
        };
        let mut bytes = 0;
        for message in published.messages() {
            if let Some(seq) = message.seq {
                if seq != self.last.next() {
                    tracing::error!(expected = %self.last.next(), got = %seq, "gap in the live feed; dropping the connection");
                    return Err(End::Failed);
                }
                self.last = seq;
            }
            bytes += message.json.len();
        }
        self.pending.push(published);
        Ok(bytes)
    }

    /// Queue the next page of the backlog from the store.
    async fn read_backlog(&mut self) -> Result<(), End> {
        let wanted = (self.backlog_through.get() - self.last.get()).min(u64::from(STORE_PAGE));
        let page = u32::try_from(wanted).unwrap_or(STORE_PAGE);
        match self.store.events_after(self.last, page).await {
            Ok(Backlog::Pruned { floor }) => {
                tracing::debug!(since = %self.last, %floor, "resume position pruned; sending reset");
                Err(End::Reset(self.reset_message()))
            }
            Ok(Backlog::Events(events)) => {
                let events: Vec<_> = events
                    .into_iter()
                    .take_while(|e| e.seq <= self.backlog_through)
                    .collect();
                if events.is_empty() {
                    tracing::error!(after = %self.last, through = %self.backlog_through, "store is missing committed events");
                    return Err(End::Failed);
                }
                // The store checked contiguity from `last`.
                self.last = events[events.len() - 1].seq;
                self.pending.push(Part::of_events(&events));
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "reading the stream backlog failed"
                );
                Err(End::Failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::UnixMillis;
    use revocast_shared::event::{Revocation, RevocationEvent};

    use super::*;

    fn part(seqs: std::ops::RangeInclusive<u64>, frame_bytes: usize) -> Published {
        let messages: Vec<Encoded> = seqs
            .map(|seq| {
                Encoded::event(&RevocationEvent {
                    seq: Seq::new(seq),
                    revocation: Revocation::Session {
                        sid: "s".repeat(40),
                        until: 1,
                    },
                    at: UnixMillis::new(0),
                })
            })
            .collect();
        Part::with_frame_bytes(messages, frame_bytes)
    }

    #[tokio::test]
    async fn only_writes_of_events_spend_the_budget_so_a_heartbeat_never_holds_back_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(dir.path()).await.unwrap());
        let hub = Arc::new(Hub::new(Epoch::new("e"), Seq::ZERO, 64));
        let pacing = Pacing {
            min_linger: std::time::Duration::from_secs(60),
            writes_per_second: 40_000,
            write_burst: super::super::pacing::WRITE_BURST,
            acks_per_second: 5_000,
            heartbeat_spread: std::time::Duration::ZERO,
        };
        let subscription = hub.subscribe(None).unwrap();
        let mut feed = Feed::new(Arc::clone(&hub), store, subscription, None, pacing, None);
        let events = |batch: &[Frame]| batch.iter().map(Frame::events).sum::<u64>();
        assert_eq!(events(&feed.next().await.unwrap()), 0, "hello");
        assert_eq!(feed.quiet_until, None, "hello starts no linger");
        hub.heartbeat(|_| std::time::Duration::from_millis(50));
        assert_eq!(events(&feed.next().await.unwrap()), 0, "the heartbeat");
        assert_eq!(feed.quiet_until, None, "a heartbeat starts no linger");
        // So the revocations right after it are taken at once (a minute's linger would hang
        // this test) while the burst lasts; the write that spends it lingers.
        for seq in 1..=u64::from(super::super::pacing::WRITE_BURST) {
            assert_eq!(feed.quiet_until, None, "within the burst");
            hub.publish(&[crate::stream::testing::session(seq)]);
            assert_eq!(events(&feed.next().await.unwrap()), 1);
        }
        assert!(feed.quiet_until.is_some(), "the burst is spent");
    }

    #[tokio::test]
    async fn a_held_heartbeat_goes_at_its_phase_and_never_ahead_of_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(dir.path()).await.unwrap());
        let hub = Arc::new(Hub::new(Epoch::new("e"), Seq::ZERO, 64));
        // A fleet of 400 (these idle ones and the feed's): a window of 2 s, under the cap.
        let _fleet: Vec<_> = (0..399).map(|_| hub.subscribe(None).unwrap()).collect();
        let pacing = Pacing {
            min_linger: std::time::Duration::ZERO,
            writes_per_second: 40_000,
            write_burst: super::super::pacing::WRITE_BURST,
            acks_per_second: 5_000,
            heartbeat_spread: std::time::Duration::from_secs(20),
        };
        let subscription = hub.subscribe(None).unwrap();
        let mut feed = Feed::new(Arc::clone(&hub), store, subscription, None, pacing, None);
        feed.next().await.unwrap(); // hello
        feed.beat_phase = 0.1; // held 200 ms
        hub.heartbeat(|_| std::time::Duration::from_millis(50));
        let short = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(short, feed.next()).await.is_err(),
            "the heartbeat is held to this connection's phase"
        );
        // A revocation meanwhile goes at once, ahead of the held heartbeat (and the
        // interrupted `next` lost nothing); the heartbeat follows at its time.
        hub.publish(&[crate::stream::testing::session(1)]);
        let seqs = |batch: &[Frame]| -> Vec<Option<u64>> {
            batch
                .iter()
                .flat_map(|f| f.messages().iter().map(|m| m.seq.map(Seq::get)))
                .collect()
        };
        let batch = tokio::time::timeout(short, feed.next())
            .await
            .expect("the event is not held")
            .unwrap();
        assert_eq!(seqs(&batch), vec![Some(1)], "the event alone");
        let batch = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
            .await
            .expect("the held heartbeat goes at its time")
            .unwrap();
        assert_eq!(seqs(&batch), vec![None], "then the heartbeat");
        // At phase 0 a heartbeat is not held at all; at its phase a held one goes alone.
        feed.beat_phase = 0.0;
        hub.heartbeat(|_| std::time::Duration::from_millis(50));
        assert!(tokio::time::timeout(short, feed.next()).await.is_ok());
        feed.beat_phase = 0.02; // held 40 ms
        hub.heartbeat(|_| std::time::Duration::from_millis(50));
        let started = std::time::Instant::now();
        let batch = feed.next().await.unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(30));
        assert_eq!(batch.iter().map(Frame::events).sum::<u64>(), 0);
    }

    #[test]
    fn batches_take_whole_frames_across_parts_in_order_within_the_byte_bound() {
        let one = part(1..=1, 1).messages()[0].json.len();
        let mut pending = Pending::default();
        pending.push(part(1..=3, 2 * one));
        pending.push(Part::new(Vec::new()));
        pending.push(part(4..=300, 4 * one));
        let mut seen = Vec::new();
        while !pending.is_empty() {
            let batch = pending.take(10 * one);
            assert!(!batch.is_empty());
            assert!(batch.iter().map(Frame::bytes).sum::<usize>() <= 10 * one);
            for frame in &batch {
                seen.extend(frame.messages().iter().filter_map(|m| m.seq.map(Seq::get)));
            }
        }
        assert_eq!(seen, (1..=300).collect::<Vec<_>>());
        // A frame larger than the bound still goes, alone; the last one leaves it empty.
        pending.push(part(301..=302, 1));
        assert_eq!(pending.take(1).len(), 1);
        assert!(!pending.is_empty());
        assert_eq!(pending.take(1).len(), 1);
        assert!(pending.is_empty());
    }
}
