//! Keeping the mirror current: load the JWKS and the snapshot, follow the stream from the
//! snapshot's `seq`, and on any doubt — `reset`, a `seq` gap, a heartbeat ahead of us, an epoch
//! change — resync from a snapshot rather than "just resume". Connection failures rotate to
//! the next authority URL after a backoff with full jitter, and resume there by `seq`.
//!
//! With `verify_log` (the default), `log` checks the snapshot's checkpoint and seal and every
//! heartbeat's checkpoint against the tree of the events applied; any mismatch is a resync,
//! counted by reason, and freshness comes only from the signed times of verified checkpoints.

mod fetch;
mod log;
mod stream;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use revocast_shared::event::{Control, Message};
use revocast_shared::tlog::{Checkpoint, Mismatch};
use revocast_shared::{Seq, UnixMillis};
use tokio::time::Instant;

use crate::agent::Shared;
use crate::error::Error;
use crate::metrics::gauge;
use crate::mirror::LocalState;
use log::LogCheck;
use stream::{ConnectError, Connection, Received};

/// A session that lasted this long was healthy: the next reconnect starts from the shortest
/// backoff again.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// The idle timeout grows to at most this many times its configured value (see `run`).
const MAX_IDLE_FACTOR: u32 = 8;

/// Why a session ended.
enum SessionEnd {
    /// The copy cannot be continued by resuming: load a snapshot.
    Resync(&'static str),
    /// The connection or a request failed: back off, try the next authority, resume by `seq`.
    Failed(Error),
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.config.backoff_min, shared.config.backoff_max);
    // How long a stream may stay silent before it counts as dead. It doubles after each
    // session that ended silent, up to `MAX_IDLE_FACTOR` times the configured value: a dead
    // link is still dropped quickly, but when the authority is only overloaded (too slow to
    // send heartbeats in time), a fleet that reconnected all at once would add handshakes and
    // backlog reads to the overload and never catch up. Failing closed does not depend on it:
    // freshness has its own `max_staleness`.
    let base_idle = shared.config.idle_timeout();
    let mut idle = base_idle;
    let mut need_snapshot = true;
    let authorities = shared.config.authorities.len();
    let mut index = 0;
    let mut log = shared
        .config
        .verify_log
        .then(|| LogCheck::new(shared.config.issuer.as_deref()));
    loop {
        shared.current.store(index, Ordering::Relaxed);
        let base = &shared.config.authorities[index];
        let started = Instant::now();
        match session(&shared, base, &mut need_snapshot, idle, log.as_mut()).await {
            SessionEnd::Resync(why) => {
                tracing::info!(authority = %base, why, "resyncing from a snapshot");
                need_snapshot = true;
            }
            SessionEnd::Failed(e) => {
                if matches!(e, Error::Silent) {
                    idle = (idle * 2).min(base_idle * MAX_IDLE_FACTOR);
                }
                tracing::warn!(authority = %base, error = &e as &dyn std::error::Error, "stream lost; reconnecting");
                shared.metrics.reconnects.inc();
                index = (index + 1) % authorities;
            }
        }
        if started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
            idle = base_idle;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn session(
    shared: &Shared,
    base: &str,
    need_snapshot: &mut bool,
    idle: Duration,
    mut log: Option<&mut LogCheck>,
) -> SessionEnd {
    if *need_snapshot {
        if let Err(e) = resync(shared, base, log.as_deref_mut()).await {
            return SessionEnd::Failed(e);
        }
        *need_snapshot = false;
    }
    let (since, epoch) = {
        let state = shared.mirror.read();
        (state.applied, state.epoch.clone())
    };
    let key = shared.config.subscriber_key.as_str();
    let who = stream::Identity {
        key,
        name: &shared.config.name,
        version: env!("CARGO_PKG_VERSION"),
    };
    let mut conn = match stream::connect(
        &shared.http,
        shared.tls.as_ref(),
        base,
        shared.config.transport,
        since,
        epoch.as_ref(),
        &who,
        log.is_some(),
    )
    .await
    {
        Ok(conn) => conn,
        Err(ConnectError::BadPosition) => {
            return SessionEnd::Resync("the authority's log does not reach our position");
        }
        Err(ConnectError::UpgradeRefused(e) | ConnectError::Other(e)) => {
            return SessionEnd::Failed(e);
        }
    };
    tracing::debug!(authority = %base, %since, "stream connected");
    follow(shared, base, &mut conn, idle, log).await
}

/// Least time between two acknowledgments on average (the authority ignores faster ones),
/// and the interval when the authority announces none.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Acknowledgments that may go at once after a quiet spell, beyond the interval: an operator's
/// few revocations in a row are each acknowledged at once. Below the authority's tolerance
/// of 5, so that acks bunched by the network are never taken for a flood.
const ACK_BURST: u32 = 3;

/// When to acknowledge the applied `seq`: at once after a batch while the budget allows
/// (one per interval on average, [`ACK_BURST`] after a quiet spell), else when it allows
/// again — so the last position is always acknowledged. The interval is the authority's
/// `hello.ack_interval_ms` (it grows with the fleet, so a large fleet under sustained load
/// costs the authority a bounded number of acks a second), never below [`ACK_INTERVAL`].
struct Acks {
    /// The last `seq` acknowledged on this connection.
    sent: Option<Seq>,
    /// GCRA's theoretical time of the next ack: one may go up to `ACK_BURST - 1` intervals
    /// before it.
    tat: Option<Instant>,
    interval: Duration,
    /// Set while an ack waits for the budget.
    due: Option<Instant>,
}

impl Default for Acks {
    fn default() -> Self {
        Self {
            sent: None,
            tat: None,
            interval: ACK_INTERVAL,
            due: None,
        }
    }
}

impl Acks {
    /// The interval the authority announced in `hello` (milliseconds).
    fn announce(&mut self, interval_ms: u64) {
        self.interval = Duration::from_millis(interval_ms).max(ACK_INTERVAL);
    }

    /// The earliest time the next ack may go.
    fn earliest(&self) -> Option<Instant> {
        let early = self.interval * (ACK_BURST - 1);
        self.tat.map(|tat| tat.checked_sub(early).unwrap_or(tat))
    }

    /// Note the applied position after a frame; `true` if it should be acknowledged now.
    fn applied(&mut self, applied: Seq) -> bool {
        if self.sent == Some(applied) {
            return false;
        }
        match self.earliest() {
            Some(at) if at > Instant::now() => {
                self.due.get_or_insert(at);
                false
            }
            _ => true,
        }
    }

    fn sent(&mut self, seq: Seq) {
        let now = Instant::now();
        self.sent = Some(seq);
        self.tat = Some(self.tat.map_or(now, |tat| tat.max(now)) + self.interval);
        self.due = None;
    }

    /// Resolves when a deferred ack is due (never, if none is).
    async fn wait_due(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// Acknowledge what the copy has applied now.
async fn acknowledge(shared: &Shared, conn: &mut Connection, acks: &mut Acks) -> Result<(), Error> {
    let (applied, epoch) = {
        let state = shared.mirror.read();
        (state.applied, state.epoch.clone())
    };
    let Some(epoch) = epoch else {
        return Ok(());
    };
    let ack = stream::Ack::new(applied, epoch, shared.metrics.resyncs.get());
    tokio::time::timeout(shared.config.request_timeout, conn.ack(&ack))
        .await
        .map_err(|_| Error::Protocol("sending an acknowledgment timed out".into()))??;
    acks.sent(applied);
    Ok(())
}

/// Apply what the stream sends until something ends the session.
async fn follow(
    shared: &Shared,
    base: &str,
    conn: &mut Connection,
    idle: Duration,
    mut log: Option<&mut LogCheck>,
) -> SessionEnd {
    let mut received: Vec<Received> = Vec::new();
    let mut checkpoints: Vec<String> = Vec::new();
    let mut acks = Acks::default();
    // The stream is silent once `idle` passes from the start of a wait (after a frame or an
    // acknowledgment) with nothing read. One timer, moved on only when it fires, rather
    // than a new one per frame.
    let mut waiting_since = Instant::now();
    let silence = tokio::time::sleep_until(waiting_since + idle);
    tokio::pin!(silence);
    loop {
        received.clear();
        // `next` is cancel-safe: what a cancelled read had taken stays buffered. The read is
        // polled first: a task the runtime could not poll for a while finds what arrived
        // meanwhile before it looks at the timer (silence means nothing arrived, not a late
        // look).
        let read = tokio::select! {
            biased;
            read = conn.next(&mut received) => read,
            () = &mut silence => {
                let deadline = waiting_since + idle;
                if Instant::now() >= deadline {
                    return SessionEnd::Failed(Error::Silent);
                }
                silence.as_mut().reset(deadline);
                continue;
            }
            () = acks.wait_due() => {
                if let Err(e) = acknowledge(shared, conn, &mut acks).await {
                    return SessionEnd::Failed(e);
                }
                waiting_since = Instant::now();
                continue;
            }
        };
        waiting_since = Instant::now();
        if let Err(e) = read {
            return SessionEnd::Failed(e);
        }
        if received.is_empty() {
            continue;
        }
        for r in &received {
            if let Message::Control(
                Control::Hello {
                    ack_interval_ms: Some(ms),
                    ..
                }
                | Control::Heartbeat {
                    ack_interval_ms: Some(ms),
                    ..
                },
            ) = r.message
            {
                acks.announce(ms);
            }
        }
        // The newest time the authority stamped on this frame (events' commit times,
        // heartbeats' send times). A verifying agent trusts only signed times (below).
        let mut stamped = None;
        if log.is_none() {
            stamped = received
                .iter()
                .filter_map(|r| match &r.message {
                    Message::Event(event) => Some(event.at),
                    Message::Control(Control::Heartbeat { at, .. }) => Some(*at),
                    Message::Control(_) => None,
                })
                .max();
            if let Some(at) = stamped {
                observe_clock(shared, at);
            }
        }
        let current = {
            let mut state = shared.mirror.write();
            let before = state.applied;
            let keys_before = state.keys.len();
            let mut handled = Ok(());
            checkpoints.clear();
            // The whole batch under one lock; each message moves into the copy.
            for r in received.drain(..) {
                checkpoints.extend(r.checkpoint);
                handled = handle(&mut state, r.message);
                if handled.is_err() {
                    break;
                }
                // Applied (`handle` applies events only in contiguous order): its leaf joins
                // the tree.
                if let (Some(log), Some(leaf)) = (log.as_deref_mut(), r.leaf) {
                    log.push(leaf);
                }
            }
            let keys_removed = state.keys.len() < keys_before;
            shared
                .metrics
                .events_applied
                .inc_by(state.applied.get() - before.get());
            if keys_removed {
                // Still under the lock: no verify sees the key gone but its verdicts cached.
                shared.cache.clear();
            }
            if let Err(why) = handled {
                return SessionEnd::Resync(why);
            }
            shared.metrics.applied_seq.set(gauge(state.applied.get()));
            shared.metrics.head_seq.set(gauge(state.head.get()));
            shared
                .metrics
                .lag
                .set(gauge(state.head.get().saturating_sub(state.applied.get())));
            shared.metrics.entries.set(gauge(state.revset.len() as u64));
            let applied = state.applied;
            shared.applied.send_if_modified(|seq| {
                let changed = *seq != applied;
                *seq = applied;
                changed
            });
            state.applied >= state.head
        };
        if let Some(log) = log.as_deref_mut() {
            // Checked outside the mirror's lock: an ML-DSA verification must not hold up
            // verifies.
            match check_frame(shared, base, log, &checkpoints).await {
                Ok(signed) => stamped = signed,
                Err(why) => return SessionEnd::Resync(why),
            }
        }
        // Heard from the authority, and nothing it announced is missing: current as of the
        // newest time it stamped (not as of now: the frame may have been held back).
        if current {
            shared.freshness.heard(stamped);
        }
        let applied = *shared.applied.borrow();
        if acks.applied(applied)
            && let Err(e) = acknowledge(shared, conn, &mut acks).await
        {
            return SessionEnd::Failed(e);
        }
    }
}

/// The log checks of a batch whose events are applied: every checkpoint its heartbeats carry
/// (`checkpoints`, in order), and that no leaf is left uncovered by a checkpoint arriving more
/// than `max_staleness` + `max_clock_skew` after it. Returns the
/// newest signed time verified; `Err` means resync (the reason counted and logged).
async fn check_frame(
    shared: &Shared,
    base: &str,
    log: &mut LogCheck,
    checkpoints: &[String],
) -> Result<Option<UnixMillis>, &'static str> {
    log.frame_arrived(Instant::now());
    let mut newest = None;
    for note in checkpoints {
        if !log.following() {
            // The snapshot carried no checkpoint, the stream does: an authority that began to
            // sign. Only a snapshot gives a tree to check against.
            return Err("checkpoints arrive, but the snapshot had none");
        }
        let mut checked = log.check(note);
        if matches!(checked, Some(Err(Mismatch::UnknownKey)))
            && refresh_log_keys(shared, base, log).await
        {
            checked = log.check(note);
        }
        match checked {
            Some(Ok(checkpoint)) => {
                verified(shared, &checkpoint);
                newest = newest.max(Some(checkpoint.time));
            }
            Some(Err(mismatch)) => return Err(log_mismatch(shared, base, &mismatch)),
            None => return Err("checkpoints arrive, but the snapshot had none"),
        }
    }
    // Every event the authority commits is covered by a checkpoint about a heartbeat
    // interval later. Leaves that checkpoints arriving long after them still do not cover
    // are not in the authority's log: an event invented after the last one, which the next
    // real event would only meet as a repeated seq. They are never verified, so resync —
    // after as long as freshness allows a checkpoint to be old, so that a slow signer is not
    // taken for it. Judged only as a checkpoint verifies: a link that was down or stalled
    // meanwhile delivers the covering checkpoint first.
    let allowed = shared.config.max_staleness + shared.config.max_clock_skew;
    if newest.is_some()
        && let Some(since) = log.uncovered_since()
        && since.elapsed() > allowed
    {
        let mismatch = Mismatch::SizeMismatch {
            checkpoint: log.verified_size().unwrap_or(0),
            ours: shared.mirror.read().applied.get(),
        };
        tracing::warn!(authority = %base, "events applied {:?} ago are still not covered by a signed checkpoint", since.elapsed());
        return Err(log_mismatch(shared, base, &mismatch));
    }
    if let Some(at) = newest {
        observe_clock(shared, at);
    }
    Ok(newest)
}

/// A checkpoint verified: count it, and show where the verified tree is.
fn verified(shared: &Shared, checkpoint: &Checkpoint) {
    shared.metrics.log_checkpoints_verified.inc();
    shared.metrics.log_verified_seq.set(gauge(checkpoint.size));
}

/// Count and log a log mismatch; the reason for the resync that follows.
fn log_mismatch(shared: &Shared, base: &str, mismatch: &Mismatch) -> &'static str {
    shared.metrics.count_log_resync(mismatch.code());
    tracing::warn!(
        authority = %base,
        reason = mismatch.code(),
        error = mismatch as &dyn std::error::Error,
        "the transparency log did not verify: resyncing from a snapshot"
    );
    "the transparency log did not verify"
}

/// One JWKS refresh for a checkpoint or seal by a key not (yet) known: a log key published
/// since the last fetch. `false` if the fetch failed.
async fn refresh_log_keys(shared: &Shared, base: &str, log: &mut LogCheck) -> bool {
    let config = &shared.config;
    match fetch::jwks(
        &shared.http,
        base,
        config.request_timeout,
        config.crypto_backend,
    )
    .await
    {
        Ok(keys) => {
            shared.metrics.jwks_fetches.inc();
            log.set_keys(keys.log);
            true
        }
        Err(e) => {
            tracing::warn!(authority = %base, error = &e as &dyn std::error::Error, "JWKS refresh for an unknown log key failed");
            false
        }
    }
}

/// Note the authority's clock offset seen in a stamp that just arrived; log when it starts or
/// stops running ahead of ours by more than the allowed skew.
fn observe_clock(shared: &Shared, at: UnixMillis) {
    let skew = shared.config.max_clock_skew;
    let now = UnixMillis::now();
    if shared.freshness.observe_offset(at, now, skew) {
        let offset_ms = at.as_millis().saturating_sub(now.as_millis());
        if shared.freshness.is_ahead() {
            tracing::warn!(
                offset_ms,
                max_clock_skew = ?skew,
                "the authority's clock is ahead of ours by more than the allowed skew: not fresh until the clocks agree"
            );
        } else {
            tracing::info!(offset_ms, "the authority's clock agrees with ours again");
        }
    }
    shared
        .metrics
        .clock_offset_ms
        .set(at.as_millis().saturating_sub(now.as_millis()));
}

/// Apply one message; `Err` names why the copy must be resynced instead.
fn handle(state: &mut LocalState, message: Message) -> Result<(), &'static str> {
    match message {
        Message::Event(event) => {
            if event.seq <= state.applied {
                // Never expected: the authority sends each seq once. Re-applying would be
                // harmless, but a confused stream is not trusted.
                return Err("the stream repeated a seq");
            }
            if event.seq != state.applied.next() {
                return Err("gap in seq");
            }
            state.apply(event);
        }
        Message::Control(Control::Hello { epoch, seq, .. }) => {
            if state.epoch.as_ref() != Some(&epoch) {
                return Err("the authority's epoch changed");
            }
            state.head = state.head.max(seq);
        }
        Message::Control(Control::Heartbeat { seq, .. }) => {
            // Heartbeats follow the events they count: one ahead of us means we missed some.
            if seq > state.applied {
                return Err("a heartbeat is ahead of the applied seq");
            }
        }
        Message::Control(Control::Reset { .. }) => return Err("the authority sent reset"),
    }
    Ok(())
}

/// Replace the copy with the authority's snapshot and current keys. A verifying agent loads
/// it only if its checkpoint and seal verify (else counts the reason and fails, to retry);
/// it is then current as of the checkpoint's signed time.
async fn resync(shared: &Shared, base: &str, log: Option<&mut LogCheck>) -> Result<(), Error> {
    let key = shared.config.subscriber_key.as_str();
    let timeout = shared.config.request_timeout;
    let keys = fetch::jwks(&shared.http, base, timeout, shared.config.crypto_backend).await?;
    shared.metrics.jwks_fetches.inc();
    // A snapshot can be large (about 150 MB for a million entries); it is applied as it
    // streams in.
    let fetch::Loaded {
        epoch,
        seq,
        at,
        mut revset,
        log: snapshot_log,
    } = fetch::snapshot(&shared.http, base, key, timeout * 4).await?;
    // Shown once the copy holds it (a reader seeing the gauge then sees the copy).
    let mut checkpoint = None;
    let at = match log {
        None => at,
        Some(log) => {
            log.set_keys(keys.log);
            match &snapshot_log {
                None => {
                    log.stop();
                    shared.metrics.log_verified_seq.set(-1);
                    tracing::warn!(authority = %base, "the snapshot carries no checkpoint (an authority that does not sign its log): stale while log verification is on");
                    None
                }
                Some(snapshot) => {
                    let mut started = log.start(&epoch, seq, snapshot);
                    if matches!(started, Err(Mismatch::UnknownKey))
                        && refresh_log_keys(shared, base, log).await
                    {
                        started = log.start(&epoch, seq, snapshot);
                    }
                    match started {
                        Ok(verified) => {
                            let time = verified.time;
                            checkpoint = Some(verified);
                            Some(time)
                        }
                        Err(mismatch) => {
                            log_mismatch(shared, base, &mismatch);
                            return Err(Error::Log(mismatch));
                        }
                    }
                }
            }
        }
    };
    if let Some(at) = at {
        observe_clock(shared, at);
    }
    revset.purge_expired(UnixMillis::now().as_secs() - i64::from(shared.config.leeway_secs));
    let entries = revset.len();
    {
        let mut state = shared.mirror.write();
        *state = LocalState {
            epoch: Some(epoch.clone()),
            applied: seq,
            head: seq,
            revset,
            keys: Default::default(),
        };
        state.add_keys(keys.token);
        // Verdicts cached under the old copy may rest on keys or a log it no longer has (a
        // resync to another epoch brings other keys): start over, under the same lock.
        shared.cache.clear();
    }
    if let Some(checkpoint) = &checkpoint {
        verified(shared, checkpoint);
    }
    shared.metrics.resyncs.inc();
    shared.metrics.applied_seq.set(gauge(seq.get()));
    shared.metrics.head_seq.set(gauge(seq.get()));
    shared.metrics.lag.set(0);
    shared.metrics.entries.set(gauge(entries as u64));
    shared.metrics.synced.set(1);
    // Synced first: `Agent::wait_until_synced` looks again when `applied` changes. Current
    // as of the snapshot's `at`; one without it (an older authority) is of unknown age and
    // makes the agent fresh only once a stamped heartbeat or event arrives.
    shared.freshness.mark_synced(at);
    shared.applied.send_replace(seq);
    if at.is_none() && !shared.config.verify_log {
        tracing::warn!(authority = %base, "the snapshot carries no `at` (an older authority): fresh only once a heartbeat arrives");
    }
    tracing::info!(authority = %base, %epoch, seq = %seq, entries, "snapshot loaded");
    Ok(())
}

/// Fetch the JWKS from the current authority and hold exactly its keys (less revoked ones).
/// Used when a token names an unknown `kid` (rate-limited by the caller). A key the JWKS no
/// longer lists signs no live token (the authority lists retired keys while their tokens may
/// live): it is dropped, and with it every cached verdict. Returns the keys added.
pub(crate) async fn refresh_keys(shared: &Shared) -> Result<usize, Error> {
    let index = shared.current.load(Ordering::Relaxed);
    let base = &shared.config.authorities[index];
    let config = &shared.config;
    let keys = fetch::jwks(
        &shared.http,
        base,
        config.request_timeout,
        config.crypto_backend,
    )
    .await?;
    shared.metrics.jwks_fetches.inc();
    let mut state = shared.mirror.write();
    let (added, removed) = state.replace_keys(keys.token);
    if removed > 0 {
        tracing::info!(removed, "signing keys left the JWKS");
        shared.cache.clear();
    }
    Ok(added)
}

/// Exponential backoff with full jitter: each delay is uniform in `0..=current`, and `current`
/// doubles up to the cap.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        // If the OS random source fails, no jitter is better than no reconnect.
        let unit = getrandom::u64().map_or(1.0, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        ceiling.mul_f64(unit).max(self.min / 2)
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::event::{Revocation, RevocationEvent};
    use revocast_shared::{Epoch, Seq};

    use super::*;

    fn session_event(seq: u64) -> Message {
        Message::Event(RevocationEvent {
            seq: Seq::new(seq),
            revocation: Revocation::Session {
                sid: format!("s{seq}"),
                until: i64::MAX,
            },
            at: UnixMillis::new(0),
        })
    }

    fn state_at(seq: u64) -> LocalState {
        LocalState {
            epoch: Some(Epoch::new("e")),
            applied: Seq::new(seq),
            head: Seq::new(seq),
            ..LocalState::default()
        }
    }

    #[test]
    fn only_the_next_seq_applies_and_doubt_means_resync() {
        let mut state = state_at(5);
        assert!(handle(&mut state, session_event(6)).is_ok());
        assert_eq!(state.applied, Seq::new(6));
        assert!(handle(&mut state, session_event(8)).is_err(), "gap");
        assert!(handle(&mut state, session_event(6)).is_err(), "repeat");
        let beat = |seq| {
            Message::Control(Control::Heartbeat {
                seq: Seq::new(seq),
                at: UnixMillis::new(0),
                ack_interval_ms: None,
            })
        };
        assert!(handle(&mut state, beat(6)).is_ok());
        assert!(handle(&mut state, beat(7)).is_err(), "heartbeat ahead");
        let hello = |epoch: &str| {
            Message::Control(Control::Hello {
                epoch: Epoch::new(epoch),
                seq: Seq::new(9),
                ack_interval_ms: None,
            })
        };
        assert!(handle(&mut state, hello("other")).is_err());
        assert!(handle(&mut state, hello("e")).is_ok());
        assert_eq!(state.head, Seq::new(9), "hello announces the head");
        let reset = Message::Control(Control::Reset {
            epoch: Epoch::new("e"),
            seq: Seq::new(9),
        });
        assert!(handle(&mut state, reset).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn acks_go_at_once_when_idle_and_at_most_one_per_interval_under_load() {
        let mut acks = Acks::default();
        // The first position on a connection is acknowledged at once.
        assert!(acks.applied(Seq::new(5)));
        acks.sent(Seq::new(5));
        // Nothing new: nothing to send.
        assert!(!acks.applied(Seq::new(5)));
        // A few more in a row go at once (the burst)…
        for seq in 6..=7 {
            assert!(acks.applied(Seq::new(seq)), "burst ack {seq}");
            acks.sent(Seq::new(seq));
        }
        // …then the budget holds the next one until an interval after the burst's start.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!acks.applied(Seq::new(8)));
        assert!(!acks.applied(Seq::new(9)));
        let started = Instant::now();
        acks.wait_due().await;
        assert_eq!(started.elapsed(), Duration::from_millis(40));
        acks.sent(Seq::new(9));
        // Under sustained load: one per interval.
        assert!(!acks.applied(Seq::new(10)));
        let started = Instant::now();
        acks.wait_due().await;
        assert_eq!(started.elapsed(), ACK_INTERVAL);
        acks.sent(Seq::new(10));
        // Quiet for the burst's worth of intervals: at once again.
        tokio::time::advance(ACK_INTERVAL * ACK_BURST).await;
        assert!(acks.applied(Seq::new(11)));
        acks.sent(Seq::new(11));
        // Nothing due: waiting never resolves.
        let waited = tokio::time::timeout(Duration::from_secs(1), acks.wait_due()).await;
        assert!(waited.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_announced_interval_paces_acks_but_never_below_the_protocols() {
        let mut acks = Acks::default();
        acks.announce(10);
        assert_eq!(acks.interval, ACK_INTERVAL);
        acks.announce(1_000);
        for seq in 1..=ACK_BURST {
            assert!(acks.applied(Seq::new(u64::from(seq))));
            acks.sent(Seq::new(u64::from(seq)));
        }
        assert!(!acks.applied(Seq::new(10)));
        let started = Instant::now();
        acks.wait_due().await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(50)));
        assert_eq!(b.current, Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
