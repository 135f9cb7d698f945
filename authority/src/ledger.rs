//! The ledger: the single writer of durable state, with group commit.
//!
//! Handlers submit [`Mutation`]s over a bounded channel and wait for their [`Outcome`]. The
//! ledger task takes whatever has queued up (up to [`MAX_BATCH`]), commits it in one
//! transaction — one fsync for the whole group — mirrors the result into the [`View`], and only
//! then answers. So a revocation is answered only after it is durable, concurrent revocations
//! share an fsync, and `seq` order is commit order.

use std::sync::Arc;

use revocast_shared::UnixMillis;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::store::{Mutation, Outcome, Store};
use crate::view::View;

/// Most mutations committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Requests that may wait for the ledger before submitters are slowed down.
const QUEUE: usize = 8192;

struct Request {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Handle for submitting mutations. Cheap to clone.
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
        metrics: Arc<Metrics>,
    ) -> (Ledger, LedgerTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run(rx, stopped, store, view, metrics));
        (Ledger { tx }, LedgerTask { stop, handle })
    }

    /// Commit `mutation` durably and return its outcome.
    pub async fn submit(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { mutation, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
            tracing::error!(error = %e, "ledger task failed");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    mut stopped: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    view: Arc<View>,
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
        match store.commit(at, &mutations).await {
            Ok(outcomes) => {
                for (mutation, outcome) in mutations.iter().zip(&outcomes) {
                    view.apply(mutation, outcome, at.as_secs());
                    if let Outcome::Appended { event, .. } = outcome {
                        metrics
                            .revocations
                            .get_or_create(&vec![("kind", event.revocation.kind())])
                            .inc();
                    }
                }
                metrics
                    .head_seq
                    .set(i64::try_from(view.head().get()).unwrap_or(i64::MAX));
                metrics
                    .revocation_entries
                    .set(i64::try_from(view.revocation_entries()).unwrap_or(i64::MAX));
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The requester may have gone away (client disconnected); the commit stands.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), batch = mutations.len(), "commit failed; nothing of the batch was written");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::CommitFailed));
                }
            }
        }
    }
    tracing::debug!("ledger stopped");
}
