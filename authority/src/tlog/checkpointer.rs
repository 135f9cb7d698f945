//! Signing checkpoints: off the hot path, never per event.
//!
//! A task signs a checkpoint of the stored tree once per heartbeat interval while the head
//! moves, and at least every [`IDLE_RESIGN`] while it does not. It reads the head and the
//! frontier together from the store — on PostgreSQL the one tree every replica commits to —
//! so each replica signs what the database holds. Each checkpoint is kept durably as the
//! latest (the audit at start checks the stored leaves against it) and offered to the hub,
//! which puts it on heartbeats once its own head has reached its size.
//!
//! A snapshot needs a checkpoint of exactly its `seq` ([`Checkpointer::at`]): the latest one
//! if it is of that tree, else one signed on demand — one at a time, and cached as the latest,
//! so however many snapshots are asked for, the authority signs at most once per new head.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use revocast_shared::UnixMillis;
use revocast_shared::tlog::{Checkpoint, Frontier};

use super::keys::LogKeys;
use crate::error::{Error, StoreError};
use crate::store::Store;
use crate::stream::Hub;

/// An idle log is signed again at least this often, so a verifying subscriber's newest
/// signed time stays fresh.
pub const IDLE_RESIGN: Duration = Duration::from_secs(2);

/// How often the log keys are re-read from the store (another replica may have rotated).
const KEYS_REFRESH: Duration = Duration::from_secs(10);

/// A checkpoint and its signed note.
#[derive(Debug)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: Arc<str>,
}

impl SignedCheckpoint {
    pub fn size(&self) -> u64 {
        self.checkpoint.size
    }
}

pub struct Checkpointer {
    store: Arc<dyn Store>,
    keys: Arc<LogKeys>,
    hub: Arc<Hub>,
    origin: String,
    latest: Mutex<Option<Arc<SignedCheckpoint>>>,
    /// One signature at a time: a burst of snapshots waits for one, then reuses it.
    signing: tokio::sync::Mutex<()>,
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, keys: Arc<LogKeys>, hub: Arc<Hub>, origin: String) -> Self {
        Self {
            store,
            keys,
            hub,
            origin,
            latest: Mutex::new(None),
            signing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn keys(&self) -> &Arc<LogKeys> {
        &self.keys
    }

    /// The log's origin (the issuer and epoch) its checkpoints name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The latest checkpoint this process signed (or loaded).
    pub fn latest(&self) -> Option<Arc<SignedCheckpoint>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn latest_of(&self, tree: &Frontier) -> Option<Arc<SignedCheckpoint>> {
        self.latest()
            .filter(|l| l.checkpoint.size == tree.size() && l.checkpoint.root == tree.root())
    }

    /// A checkpoint of exactly `tree`.
    pub async fn at(&self, tree: &Frontier) -> Result<Arc<SignedCheckpoint>, Error> {
        if let Some(latest) = self.latest_of(tree) {
            return Ok(latest);
        }
        let _one = self.signing.lock().await;
        // Signed meanwhile by whoever held the lock.
        if let Some(latest) = self.latest_of(tree) {
            return Ok(latest);
        }
        self.sign(tree).await
    }

    /// Sign `tree` now, keep it durably as the latest, and offer it to the hub.
    async fn sign(&self, tree: &Frontier) -> Result<Arc<SignedCheckpoint>, Error> {
        let now = UnixMillis::now();
        let key = self
            .keys
            .signer(now)
            .ok_or_else(|| Error::Store(StoreError::Invariant("no log key signs at this time")))?;
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: tree.size(),
            root: tree.root(),
            time: now,
        };
        let note = {
            let checkpoint = checkpoint.clone();
            tokio::task::spawn_blocking(move || checkpoint.sign(&key))
                .await
                .map_err(|e| Error::Io {
                    what: "signing a checkpoint".into(),
                    source: std::io::Error::other(e),
                })??
        };
        self.store.save_checkpoint(checkpoint.size, &note).await?;
        let signed = Arc::new(SignedCheckpoint {
            checkpoint,
            note: note.into(),
        });
        {
            let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if latest.as_ref().is_none_or(|l| l.size() <= signed.size()) {
                *latest = Some(Arc::clone(&signed));
            }
        }
        self.hub.offer_checkpoint(Arc::clone(&signed));
        Ok(signed)
    }

    /// Sign the stored tree if its head moved since the latest checkpoint, or if the latest
    /// would be older than [`IDLE_RESIGN`] by the next tick.
    pub async fn tick(&self, interval: Duration) -> Result<(), Error> {
        let tree = self.store.tree_head().await?.tree;
        let _one = self.signing.lock().await;
        let due = match self.latest() {
            None => true,
            Some(latest) => {
                let age = UnixMillis::now()
                    .as_millis()
                    .saturating_sub(latest.checkpoint.time.as_millis());
                latest.size() != tree.size()
                    || Duration::from_millis(u64::try_from(age).unwrap_or(0)) + interval
                        > IDLE_RESIGN
            }
        };
        if due {
            self.sign(&tree).await?;
        }
        Ok(())
    }

    /// Sign every `interval` (the heartbeat interval) for as long as the authority runs.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keys_read = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if keys_read.elapsed() >= KEYS_REFRESH {
                keys_read = tokio::time::Instant::now();
                if let Err(e) = self.keys.refresh(self.store.as_ref()).await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "re-reading the log keys failed"
                    );
                }
            }
            if let Err(e) = self.tick(interval).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "signing a checkpoint failed; retrying at the next tick"
                );
            }
        }
    }
}
