//! The fan-out hub. The [`LogTail`](crate::tail::LogTail) publishes each committed group of
//! revocations here once, in `seq` order; the hub encodes it once and hands the shared bytes to every connection through one bounded
//! broadcast ring. A connection that falls a whole ring behind is told so (`Lagged`) and
//! disconnected — it resumes by `seq` — so no subscriber is ever buffered without limit or
//! silently skipped.
//!
//! Joining is atomic with publishing: [`Hub::subscribe`] reads the head and joins the ring
//! under the same lock [`Hub::publish`] takes, so a new connection's backlog ends exactly where
//! its live feed begins, even while revocations are being committed. That is why the hub owns
//! the process's head — the last `seq` published — and everything else reads it from here
//! ([`Hub::head`]): a head kept anywhere else could run ahead of the ring.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use revocast_shared::event::RevocationEvent;
use revocast_shared::{Epoch, Seq, UnixMillis};
use tokio::sync::broadcast;

use super::encoded::Encoded;
use super::part::{CheckpointBeat, Part, Published};
use crate::tlog::SignedCheckpoint;

/// Recent events kept encoded in memory, so most resumes never touch the store.
pub const RECENT_EVENTS: usize = 16_384;

pub struct Hub {
    epoch: Epoch,
    recent_capacity: usize,
    /// Live connections as of the last heartbeat or join: read on every write to pace it,
    /// so kept outside the lock.
    fleet: AtomicUsize,
    /// `State::head`, stored under the lock once its events are in the ring, so
    /// that readers (every acknowledgment checks it) need not take the lock the publisher
    /// and every joining connection contend for.
    head: AtomicU64,
    /// A std Mutex: nothing awaits while it is held, and every critical section is a few
    /// pointer pushes.
    state: Mutex<State>,
}

struct State {
    /// The last `seq` published: the head of the log as this process has applied it.
    head: Seq,
    /// The last `recent_capacity` events, oldest first.
    recent: VecDeque<Encoded>,
    /// `None` once the hub is closed for shutdown.
    tx: Option<broadcast::Sender<Published>>,
    /// The latest signed checkpoint heartbeats may carry (its size is at most `head`), and
    /// its number.
    checkpoint: Option<(u64, Arc<SignedCheckpoint>)>,
    /// A newer one beyond `head` (signed from the store before this process applied its
    /// events): it replaces `checkpoint` once `head` reaches its size.
    waiting: Option<Arc<SignedCheckpoint>>,
}

impl State {
    fn receivers(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.receiver_count())
    }
}

/// A new connection's position in the log.
pub struct Subscription {
    /// The head when it joined: its backlog is `since+1 ..= head`, its live feed `head+1 ..`.
    pub head: Seq,
    pub since: Seq,
    /// The backlog, if the hub still holds all of it; otherwise it must come from the store.
    pub recent: Option<Vec<Encoded>>,
    pub live: broadcast::Receiver<Published>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// `since` is beyond the head.
    BeyondHead {
        head: Seq,
    },
    ShuttingDown,
}

impl Hub {
    /// `queue` is how many commit groups and heartbeats a subscriber may fall behind before it
    /// is disconnected.
    #[cfg(test)]
    pub fn new(epoch: Epoch, head: Seq, queue: usize) -> Self {
        Self::with_recent_capacity(epoch, head, queue, RECENT_EVENTS)
    }

    pub fn with_recent_capacity(
        epoch: Epoch,
        head: Seq,
        queue: usize,
        recent_capacity: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(queue.max(1));
        Self {
            epoch,
            recent_capacity,
            fleet: AtomicUsize::new(0),
            head: AtomicU64::new(head.get()),
            state: Mutex::new(State {
                head,
                recent: VecDeque::new(),
                tx: Some(tx),
                checkpoint: None,
                waiting: None,
            }),
        }
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// The last `seq` published (or the head the hub started from).
    pub fn head(&self) -> Seq {
        Seq::new(self.head.load(Ordering::Acquire))
    }

    /// Connections following the live feed, as of the last heartbeat or join, without a lock.
    pub fn fleet_size(&self) -> usize {
        self.fleet.load(Ordering::Relaxed)
    }

    fn note_fleet(&self, state: &State) {
        self.fleet.store(state.receivers(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the stream would, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish the events of one commit, in `seq` order, continuing the head.
    pub fn publish(&self, events: &[RevocationEvent]) {
        if events.is_empty() {
            return;
        }
        // Encode before taking the lock.
        let encoded: Published = Part::of_events(events);
        let mut state = self.lock();
        if events[0].seq != state.head.next() {
            // Connections check continuity themselves and drop on a gap, so this is loud but
            // not silent data loss.
            tracing::error!(head = %state.head, first = %events[0].seq, "published events do not continue the head");
        }
        for e in encoded
            .messages()
            .iter()
            .rev()
            .take(self.recent_capacity)
            .rev()
        {
            if state.recent.len() >= self.recent_capacity {
                state.recent.pop_front();
            }
            state.recent.push_back(e.clone());
        }
        state.head = events[events.len() - 1].seq;
        // Before sending: a subscriber may get the events, apply and acknowledge them before
        // this thread runs again, and its acknowledgment is checked against this head.
        self.head.store(state.head.get(), Ordering::Release);
        if let Some(tx) = &state.tx {
            // An error only means nobody is listening.
            let _ = tx.send(encoded);
        }
    }

    /// A newly signed checkpoint for heartbeats to carry: at once if this process has applied
    /// every event it covers, else once it has. One smaller than what heartbeats already
    /// carry (signed on demand for a snapshot of an older head) is not offered to them.
    pub fn offer_checkpoint(&self, signed: Arc<SignedCheckpoint>) {
        let mut state = self.lock();
        if signed.size() > state.head.get() {
            if state
                .waiting
                .as_ref()
                .is_none_or(|w| w.size() <= signed.size())
            {
                state.waiting = Some(signed);
            }
        } else {
            install(&mut state, signed);
        }
    }

    /// Send a heartbeat carrying the head to every connection, in order with the events, and
    /// the acknowledgment interval `ack_interval` gives for the number of connections. Its
    /// alternative with the latest checkpoint is encoded once, here, for every connection.
    pub fn heartbeat(&self, ack_interval: impl FnOnce(usize) -> Duration) {
        let mut state = self.lock();
        let head = state.head.get();
        if let Some(waiting) = state.waiting.take_if(|w| w.size() <= head) {
            install(&mut state, waiting);
        }
        let at = UnixMillis::now();
        let ack_interval_ms = ack_interval(state.receivers()).as_millis() as u64;
        let plain = Encoded::heartbeat(state.head, at, ack_interval_ms, None);
        let checkpoint = state
            .checkpoint
            .as_ref()
            .map(|(serial, signed)| CheckpointBeat {
                serial: *serial,
                size: signed.size(),
                beat: Part::new([Encoded::heartbeat(
                    state.head,
                    at,
                    ack_interval_ms,
                    Some(&signed.note),
                )]),
            });
        if let Some(tx) = &state.tx {
            let _ = tx.send(Part::heartbeat(plain, checkpoint));
        }
        self.note_fleet(&state);
    }

    /// Join the log after `since` (the head if `None`: live events only).
    pub fn subscribe(&self, since: Option<Seq>) -> Result<Subscription, SubscribeError> {
        let state = self.lock();
        let head = state.head;
        let since = since.unwrap_or(head);
        if since > head {
            return Err(SubscribeError::BeyondHead { head });
        }
        let live = state
            .tx
            .as_ref()
            .ok_or(SubscribeError::ShuttingDown)?
            .subscribe();
        self.note_fleet(&state);
        let oldest_held = state.recent.front().and_then(|e| e.seq);
        let recent = if since == head {
            Some(Vec::new())
        } else {
            match oldest_held {
                Some(oldest) if oldest.get() <= since.get() + 1 => Some(
                    state
                        .recent
                        .iter()
                        .filter(|e| e.seq.is_some_and(|s| s > since))
                        .cloned()
                        .collect(),
                ),
                _ => None,
            }
        };
        Ok(Subscription {
            head,
            since,
            recent,
            live,
        })
    }

    /// Stop the live feed: connections end once they have sent what was published.
    pub fn close(&self) {
        self.lock().tx = None;
    }
}

/// Make `signed` the checkpoint heartbeats carry, unless it is older than the one they do.
fn install(state: &mut State, signed: Arc<SignedCheckpoint>) {
    let serial = match &state.checkpoint {
        Some((_, current)) if current.size() > signed.size() => return,
        Some((serial, _)) => serial + 1,
        None => 1,
    };
    state.checkpoint = Some((serial, signed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::testing::session as event;

    fn seqs(v: &[Encoded]) -> Vec<u64> {
        v.iter().filter_map(|e| e.seq.map(Seq::get)).collect()
    }

    #[test]
    fn backlog_comes_from_memory_while_it_is_held() {
        let hub = Hub::with_recent_capacity(Epoch::new("e"), Seq::ZERO, 8, 4);
        hub.publish(&[event(1), event(2), event(3)]);
        hub.publish(&[event(4), event(5)]);
        assert_eq!(hub.head(), Seq::new(5));
        let s = hub.subscribe(Some(Seq::new(1))).unwrap();
        assert_eq!(seqs(&s.recent.unwrap()), vec![2, 3, 4, 5]);
        assert!(hub.subscribe(Some(Seq::ZERO)).unwrap().recent.is_none());
        assert!(hub.subscribe(None).unwrap().recent.unwrap().is_empty());
        assert_eq!(
            hub.subscribe(Some(Seq::new(6))).err(),
            Some(SubscribeError::BeyondHead { head: Seq::new(5) })
        );
    }

    #[test]
    fn live_feed_starts_right_after_the_head_seen_at_join() {
        let hub = Hub::new(Epoch::new("e"), Seq::ZERO, 8);
        hub.publish(&[event(1)]);
        let mut s = hub.subscribe(Some(Seq::ZERO)).unwrap();
        hub.publish(&[event(2), event(3)]);
        hub.heartbeat(|_| Duration::from_millis(50));
        assert_eq!(s.head, Seq::new(1));
        assert_eq!(seqs(&s.recent.take().unwrap()), vec![1]);
        assert_eq!(seqs(s.live.try_recv().unwrap().messages()), vec![2, 3]);
        let beat = s.live.try_recv().unwrap();
        assert!(
            beat.messages()[0]
                .json
                .as_str()
                .contains(r#""type":"heartbeat","seq":3"#)
        );
        hub.close();
        assert!(matches!(
            s.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert_eq!(
            hub.subscribe(None).err(),
            Some(SubscribeError::ShuttingDown)
        );
    }

    #[test]
    fn a_subscriber_a_whole_ring_behind_learns_it_lagged() {
        let hub = Hub::new(Epoch::new("e"), Seq::ZERO, 2);
        let mut s = hub.subscribe(None).unwrap();
        for i in 1..=3 {
            hub.publish(&[event(i)]);
        }
        assert!(matches!(
            s.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }
}
