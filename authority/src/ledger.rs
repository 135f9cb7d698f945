//! The ledger: the single writer of durable state, with group commit.
//!
//! Handlers submit commands ([`RevokeToken`](crate::store::RevokeToken), …) over a bounded
//! channel and wait for the outcome of that command's own type ([`Command::Outcome`]). The
//! ledger task takes whatever has queued up (up to [`MAX_BATCH`]), commits it in one
//! transaction — one fsync for the whole group — hands the new events to the [`LogTail`] (which
//! mirrors them into the view and the stream hub in `seq` order), and only then answers. So a
//! revocation is answered only after it is durable, applied here and on its way to every
//! subscriber (a replica that cannot read the log up to it answers 503 instead),
//! concurrent revocations share an fsync, and `seq` order is commit order — on the wire too.

use std::sync::Arc;

use revocast_shared::UnixMillis;
use revocast_shared::event::RevocationEvent;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::metrics::{Metrics, gauge_value};
use crate::store::{Command, Mutation, Outcome, Store};
use crate::tail::LogTail;
use crate::view::View;

/// Most mutations committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// A commit that has not returned after this long is answered as failed (503). The store may
/// be unreachable without any error (a silent network); the ledger must not hang with it.
/// The commit may still land — every mutation is idempotent, so a retry is safe — and the log
/// tail publishes it if it did.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Requests that may wait for the ledger before submitters are slowed down.
const QUEUE: usize = 8192;

struct Request {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Handle for submitting commands. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Request>,
}

impl Ledger {
    /// Start the ledger task. It ends when every `Ledger` handle is dropped or
    /// [`LedgerTask::stop`] is called, in both cases after committing everything queued, so
    /// shutdown loses no accepted request.
    pub fn spawn(
        store: Arc<dyn Store>,
        view: Arc<View>,
        tail: Arc<LogTail>,
        metrics: Arc<Metrics>,
    ) -> (Ledger, LedgerTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run(rx, stopped, store, view, tail, metrics));
        (Ledger { tx }, LedgerTask { stop, handle })
    }

    /// Commit `command` durably and return its outcome: a
    /// [`TokenRevocation`](crate::store::TokenRevocation) for a
    /// [`RevokeToken`](crate::store::RevokeToken), and so on.
    pub async fn submit<C: Command>(&self, command: C) -> Result<C::Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                mutation: command.into(),
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        C::outcome(answer.await.map_err(|_| StoreError::Closed)??)
    }
}

/// The running ledger, to stop it.
pub struct LedgerTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl LedgerTask {
    /// Refuse new submissions, commit what is queued, and wait for the task to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.handle.await {
            tracing::error!(error = &e as &dyn std::error::Error, "ledger task failed");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    mut stopped: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    view: Arc<View>,
    tail: Arc<LogTail>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = &mut stopped, if !stopped.is_terminated() => {
                // Closing keeps what is queued receivable; `recv_many` returns 0 once drained.
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let (mutations, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.mutation, r.reply)).unzip();
        let at = UnixMillis::now();
        metrics.commit_batch_size.observe(mutations.len() as f64);
        let committed = tokio::time::timeout(COMMIT_TIMEOUT, store.commit(at, &mutations))
            .await
            .unwrap_or_else(|_| Err(StoreError::TimedOut));
        match committed {
            Ok(outcomes) => {
                let appended = mirror(&outcomes, at, &view, &metrics);
                if let Some(through) = outcomes.iter().filter_map(Outcome::position).max() {
                    // On failure, the answers below that it does not cover say so.
                    let _ = tail.committed(&appended, through).await;
                }
                let head = tail.head();
                let mut outcomes = outcomes.into_iter();
                for reply in replies {
                    let outcome = outcomes
                        .next()
                        .ok_or(StoreError::Invariant(
                            "the store answered fewer outcomes than it was given mutations",
                        ))
                        .and_then(|o| match o.position() {
                            // Durable, but this process does not enforce it yet: no 200.
                            Some(seq) if seq > head => Err(StoreError::NotApplied),
                            _ => Ok(o),
                        });
                    // The requester may have gone away (client disconnected); the commit stands.
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    batch = mutations.len(),
                    "commit failed; nothing of the batch was written"
                );
                for reply in replies {
                    let _ = reply.send(Err(StoreError::CommitFailed));
                }
            }
        }
    }
    tracing::debug!("ledger stopped");
}

/// Mirror what a commit at `at` did besides appending to the log — a new active signing key
/// into the view, pruning into the metrics — and return the events it appended, for the tail.
fn mirror(
    outcomes: &[Outcome],
    at: UnixMillis,
    view: &View,
    metrics: &Metrics,
) -> Vec<RevocationEvent> {
    let mut appended = Vec::new();
    for outcome in outcomes {
        if let Some(key) = outcome.activated() {
            view.activate_key(key, at.to_seconds());
        }
        if let Outcome::Prune(pruned) = outcome {
            metrics.log_floor.set(gauge_value(pruned.floor.get()));
            metrics.log_rows_pruned.inc_by(pruned.deleted);
        }
        appended.extend(outcome.appended());
    }
    appended
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use revocast_shared::UnixSeconds;

    use super::*;
    use crate::store::gated::GatedStore;
    use crate::store::{AddKey, RevokeSession, RevokeToken, SessionRevoked, SqliteStore};
    use crate::stream::Hub;

    #[tokio::test]
    async fn concurrent_mutations_share_one_commit_and_get_consecutive_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let key = Arc::new(revocast_shared::SigningKey::generate().unwrap());
        sqlite
            .commit(UnixMillis::now(), &[AddKey { key }.into()])
            .await
            .unwrap();
        let store = Arc::new(GatedStore::closed(sqlite));
        let loaded = store.load(UnixSeconds::new(0)).await.unwrap();
        let hub = Arc::new(Hub::new(loaded.epoch.clone(), loaded.head, 16));
        let view = Arc::new(View::new(loaded, 3600).unwrap());
        let mut live = hub.subscribe(None).unwrap().live;
        let metrics = Arc::new(Metrics::new());
        let tail = Arc::new(LogTail::new(
            store.clone(),
            Arc::clone(&view),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            false,
        ));
        let (ledger, task) = Ledger::spawn(store.clone(), Arc::clone(&view), tail, metrics);

        let session = |i: usize| RevokeSession {
            sid: format!("s{i}"),
            until: UnixSeconds::new(i64::MAX),
            reason: None,
        };
        // The first request is taken alone and held inside its commit…
        let first = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.submit(session(0)).await }
        });
        while store.entered.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // …while 100 more queue up behind it.
        let rest: Vec<_> = (1..=100)
            .map(|i| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.submit(session(i)).await })
            })
            .collect();
        while ledger.tx.max_capacity() - ledger.tx.capacity() < 100 {
            tokio::task::yield_now().await;
        }
        store.commit_gate.add_permits(2);

        let seq_of = |o: SessionRevoked| o.seq.get();
        assert_eq!(seq_of(first.await.unwrap().unwrap()), 1);
        let mut seqs = Vec::new();
        for r in rest {
            seqs.push(seq_of(r.await.unwrap().unwrap()));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=101).collect::<Vec<_>>());
        assert_eq!(
            store.commits.load(Ordering::SeqCst),
            2,
            "101 revocations, two commits"
        );
        assert_eq!(hub.head().get(), 101);
        // The hub got the two commits as two publications, in seq order.
        let published: Vec<u64> = [live.try_recv().unwrap(), live.try_recv().unwrap()]
            .iter()
            .flat_map(|p| p.messages().iter().filter_map(|e| e.seq.map(|s| s.get())))
            .collect();
        assert_eq!(published, (1..=101).collect::<Vec<_>>());

        // Stopping drains what is queued, then refuses new work.
        store.commit_gate.add_permits(10);
        let late = ledger.submit(session(200));
        let (late, ()) = tokio::join!(late, task.stop());
        assert!(late.is_ok());
        assert!(matches!(
            ledger.submit(session(201)).await,
            Err(StoreError::Closed)
        ));
    }

    /// On a shared store another replica's commits come before ours in the log: a revocation
    /// of ours is answered only once this process has read and applied everything up to it —
    /// after retrying the read — and otherwise answered "durable, not applied", as is a retry
    /// of it while the log still cannot be read (never 200 with the revocation unenforced).
    #[tokio::test]
    async fn a_commit_is_answered_only_once_applied_here() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let key = Arc::new(revocast_shared::SigningKey::generate().unwrap());
        sqlite
            .commit(UnixMillis::now(), &[AddKey { key }.into()])
            .await
            .unwrap();
        let store = Arc::new(GatedStore::closed(sqlite));
        store.commit_gate.add_permits(1000);
        let loaded = store.load(UnixSeconds::new(0)).await.unwrap();
        let hub = Arc::new(Hub::new(loaded.epoch.clone(), loaded.head, 16));
        let view = Arc::new(View::new(loaded, 3600).unwrap());
        let metrics = Arc::new(Metrics::new());
        let tail = Arc::new(LogTail::new(
            store.clone(),
            Arc::clone(&view),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            true,
        ));
        let (ledger, task) = Ledger::spawn(store.clone(), Arc::clone(&view), tail, metrics);
        let session = |sid: &str| RevokeSession {
            sid: sid.into(),
            until: UnixSeconds::new(i64::MAX),
            reason: None,
        };
        // "Another replica": a commit straight to the store, which this process has not read.
        let other = |sid: &'static str| {
            let store = store.clone();
            async move {
                store
                    .commit(UnixMillis::now(), &[session(sid).into()])
                    .await
                    .unwrap();
            }
        };
        let now = UnixSeconds::now().get();

        // Reading the other replica's event fails twice, then works: the answer waits for it.
        other("theirs").await;
        store.read_failures.store(2, Ordering::SeqCst);
        let ours = ledger.submit(session("ours")).await.unwrap();
        assert_eq!((ours.seq.get(), hub.head().get()), (2, 2));
        assert_eq!(store.read_failures.load(Ordering::SeqCst), 0, "it retried");
        assert!(
            view.issuing("x", Some("theirs"), UnixSeconds::new(now))
                .is_err()
        );

        // Reading keeps failing: the revocation is durable but not applied here, so no 200 —
        // for the first request and for its retry alike.
        other("theirs-again").await;
        store.read_failures.store(usize::MAX, Ordering::SeqCst);
        let token = RevokeToken {
            rid: revocast_shared::RevocationId::of_signature(b"a token"),
            sub: "ann".into(),
            exp: UnixSeconds::new(now + 600),
            reason: None,
        };
        for attempt in ["first", "retry"] {
            assert!(
                matches!(
                    ledger.submit(token.clone()).await,
                    Err(StoreError::NotApplied)
                ),
                "{attempt}"
            );
            assert_eq!(
                hub.head().get(),
                2,
                "{attempt}: nothing applied out of order"
            );
        }
        // Once the log can be read, the retry is answered: the same, first revocation.
        store.read_failures.store(0, Ordering::SeqCst);
        let retried = ledger.submit(token).await.unwrap();
        assert!(retried.is_already_revoked());
        assert_eq!(retried.logged().seq.get(), 4);
        assert_eq!(hub.head().get(), 4);
        assert!(
            view.issuing("x", Some("theirs-again"), UnixSeconds::new(now))
                .is_err()
        );
        task.stop().await;
    }
}
