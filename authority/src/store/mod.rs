//! Durable state behind one trait, so the embedded SQLite default and the PostgreSQL backend
//! (for replicas) are interchangeable. A store assigns `seq` itself, inside the committing
//! transaction: that is what keeps the log gap-free and in commit order on any backend.
//!
//! - `mutation`: the commands a commit is made of, each with the type of its outcome.
//! - `commit`: the one commit algorithm both backends run.
//! - `log`: the row mapping and the chunked reads both backends share.
//! - `sqlite`: one file, one process.
//! - `postgres`: one database shared by several replicas, with a [`Doorbell`] that tells
//!   each replica when another one committed.

mod commit;
#[cfg(test)]
pub(crate) mod gated;
mod log;
mod mutation;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use revocast_shared::crypto::SigningSeed;
use revocast_shared::event::RevocationEvent;
use revocast_shared::tlog::{Frontier, TreeHash};
use revocast_shared::{Epoch, KeyId, Seq, UnixMillis, UnixSeconds};
use tokio::sync::mpsc;

pub(crate) use mutation::Command;
pub use mutation::{
    AddKey, InitKey, KeyAdded, KeyInit, KeyRevocation, Logged, Mutation, NewRefreshToken, Outcome,
    Prune, Pruned, RefreshRefusal, RefreshRevocation, RevokeKey, RevokeRefresh, RevokeSession,
    RevokeSubject, RevokeToken, Rotate, Rotation, SessionRevoked, SessionStart, StartSession,
    SubjectRevoked, TokenRevocation,
};
pub use postgres::PgStore;
pub(crate) use sqlite::DB_FILE;
pub use sqlite::SqliteStore;

use crate::config::Scope;
use crate::error::StoreError;

/// A piece of `/v1/snapshot`, as [`Store::snapshot`] produces it: the head first, then the
/// revocations in force in `seq` order, in chunks.
#[derive(Debug)]
pub enum SnapshotPart {
    Head {
        epoch: Epoch,
        seq: Seq,
        /// The transparency log's frontier at `seq`, read with it.
        tree: Frontier,
    },
    Events(Vec<RevocationEvent>),
    /// Everything was sent. A channel that closes without it carries an incomplete snapshot.
    End,
}

/// Events after a position, as [`Store::events_after`] reads them.
#[derive(Debug)]
pub enum Backlog {
    /// The next events, in `seq` order and contiguous from the requested position.
    Events(Vec<RevocationEvent>),
    /// Events right after the position were pruned: the client must resync from a snapshot.
    Pruned { floor: Seq },
}

/// An API key to store: the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, Copy)]
pub struct NewApiKey<'a> {
    pub hash: [u8; 32],
    pub scope: Scope,
    pub label: Option<&'a str>,
}

/// A stored API key as listed: its hash (never the secret), scope, label and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    pub scope: Scope,
    pub label: Option<String>,
    pub created_at: UnixSeconds,
    /// When it was revoked; `None` while it is in force.
    pub revoked_at: Option<UnixSeconds>,
}

/// One subscriber of one replica, as replicas share their fleets through a shared store
/// (times in Unix milliseconds, counts as stored).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FleetRecord {
    pub replica: String,
    pub id: i64,
    pub name: Option<String>,
    pub version: Option<String>,
    pub transport: String,
    pub remote: Option<String>,
    pub connected_at: i64,
    pub applied: Option<i64>,
    pub acked_at: Option<i64>,
    pub lag_events: Option<i64>,
    pub lag_ms: Option<i64>,
    pub last_heard: Option<i64>,
    pub resyncs: Option<i64>,
    pub acks_ignored: i64,
}

/// A stored refresh token and its session, as read (never the token: its hash is the key).
#[derive(Debug, Clone)]
pub struct RefreshState {
    pub sid: String,
    pub sub: String,
    /// The subject's generation when the session started.
    pub session_gen: u64,
    /// The subject's generation now.
    pub current_gen: u64,
    /// What rotations issue access tokens with (JSON, see `refresh::Grant`).
    pub grant: String,
    pub session_expires_at: UnixSeconds,
    pub session_revoked: bool,
    pub issued_at: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// When it was rotated; `None` while it is live.
    pub used_at: Option<UnixMillis>,
    /// It was rotated and its successor is still unused.
    pub successor_live: bool,
    /// Its rotation's answer, sealed under the token (with a reuse interval only).
    pub sealed: Option<Vec<u8>>,
}

impl RefreshState {
    /// Why the token cannot be used at `now` whether or not it was used: its session or
    /// subject was revoked, or it or its session expired.
    pub fn refusal(&self, now: UnixSeconds) -> Option<RefreshRefusal> {
        if self.session_revoked {
            Some(RefreshRefusal::SessionRevoked)
        } else if self.current_gen != self.session_gen {
            Some(RefreshRefusal::SubjectRevoked)
        } else if self.expires_at <= now || self.session_expires_at <= now {
            Some(RefreshRefusal::Expired)
        } else {
            None
        }
    }

    /// Usable at `now`: not refused, and not used.
    pub fn is_active(&self, now: UnixSeconds) -> bool {
        self.refusal(now).is_none() && self.used_at.is_none()
    }
}

/// Why a [`Doorbell`] rang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// A commit moved the log's head to this `seq`.
    Log(Seq),
    /// The signing keys changed (rotated, or one revoked).
    Keys,
    /// The doorbell's own connection was lost and is back: anything may have been committed
    /// meanwhile without a ring.
    Reconnected,
}

/// Rings when another process commits to a shared store. A ring is a hint to read the store,
/// never data: rings can be lost, so the reader also polls.
#[async_trait]
pub trait Doorbell: Send {
    /// Wait for the next ring. Reconnects by itself; it never returns an error.
    async fn ring(&mut self) -> Ring;
}

/// A stored signing key.
#[derive(Debug)]
pub struct KeyRecord {
    pub kid: KeyId,
    pub seed: SigningSeed,
    pub created_at: UnixSeconds,
    pub retired_at: Option<UnixSeconds>,
    pub revoked: bool,
    pub active: bool,
}

/// A stored log key (see `tlog::keys`): it signs checkpoints and snapshot seals from
/// `signs_from` on.
#[derive(Debug)]
pub struct LogKeyRecord {
    pub kid: KeyId,
    pub seed: SigningSeed,
    pub created_at: UnixMillis,
    pub signs_from: UnixMillis,
}

/// The transparency log's state as one read sees it: the head, the floor below which rows
/// may have been pruned, and the tree's frontier at the head.
#[derive(Debug, Clone)]
pub struct TreeHead {
    pub head: Seq,
    pub floor: Seq,
    pub tree: Frontier,
}

/// Everything the authority loads into memory at start.
#[derive(Debug)]
pub struct Loaded {
    pub epoch: Epoch,
    pub head: Seq,
    pub keys: Vec<KeyRecord>,
    /// Revocations still in force at load time, in `seq` order.
    pub revocations: Vec<RevocationEvent>,
    pub subject_generations: Vec<(String, u64)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Read the state the authority keeps in memory, at time `now`.
    async fn load(&self, now: UnixSeconds) -> Result<Loaded, StoreError>;

    /// Commit `batch` atomically and durably (fsync before returning), all at time `at`, and
    /// report each mutation's outcome in order. On error nothing of the batch is committed.
    /// Runs on the store's writer connection, never one of the readers': no read, however
    /// slow, makes a commit wait for a connection.
    async fn commit(&self, at: UnixMillis, batch: &[Mutation]) -> Result<Vec<Outcome>, StoreError>;

    /// Up to `limit` events with `seq > after`, in order, read in one consistent transaction
    /// with the log floor.
    async fn events_after(&self, after: Seq, limit: u32) -> Result<Backlog, StoreError>;

    /// Send the snapshot to `out`: the head, then every revocation in force at `now` as of that
    /// head. Stops early, without error, if `out` closes. Read chunk by chunk up to the head,
    /// each chunk on a read connection taken for it alone: while `out` is full (a slow
    /// subscriber) no connection or transaction is held (see `log::send_snapshot`).
    async fn snapshot(
        &self,
        now: UnixSeconds,
        out: mpsc::Sender<SnapshotPart>,
    ) -> Result<(), StoreError>;

    /// The transparency log's head, floor and frontier, read together.
    async fn tree_head(&self) -> Result<TreeHead, StoreError>;

    /// Up to `limit` stored leaf hashes after the first `after` leaves, in order: the
    /// hashes of the events `after + 1, after + 2, …`. A gap in the stored leaves is an error.
    async fn leaf_hashes(&self, after: u64, limit: u32) -> Result<Vec<TreeHash>, StoreError>;

    /// Up to `limit` revocation rows present after `after`, in `seq` order, whether or not
    /// in force and without checking for gaps (for the audit at start).
    async fn log_rows(&self, after: Seq, limit: u32) -> Result<Vec<RevocationEvent>, StoreError>;

    /// Every stored log key, oldest first.
    async fn log_keys(&self) -> Result<Vec<LogKeyRecord>, StoreError>;

    async fn insert_log_key(&self, key: &LogKeyRecord) -> Result<(), StoreError>;

    /// The latest checkpoint signed, as its note: the largest size, the newest of that size.
    async fn latest_checkpoint(&self) -> Result<Option<String>, StoreError>;

    /// Keep `note` (a checkpoint of `size` leaves) as the latest unless a larger one is.
    async fn save_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError>;

    /// Every stored signing key, oldest first. Replicas re-read them when another replica
    /// rotated or revoked one.
    async fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Store `keys` if, and only if, no API key exists yet, atomically: of several replicas
    /// initialising one database together, exactly one gets `true`.
    async fn insert_first_api_keys(
        &self,
        keys: &[NewApiKey<'_>],
        now: UnixSeconds,
    ) -> Result<bool, StoreError>;

    /// Record `issuer` as the issuer of this store's tokens if none is recorded yet, and
    /// return the recorded one, atomically: of several replicas starting together on an empty
    /// database exactly one records its issuer, and all get the same answer.
    async fn claim_issuer(&self, issuer: &str) -> Result<String, StoreError>;

    /// Raise the recorded longest token lifetime (seconds) to at least `secs`, never lower it,
    /// and return the recorded one, atomically: every start records its `--max-ttl`, so the
    /// recorded value bounds the lifetime of every token any replica ever issued.
    async fn raise_max_ttl(&self, secs: i64) -> Result<i64, StoreError>;

    /// The recorded longest token lifetime (seconds), as another replica may have raised it.
    async fn max_ttl(&self) -> Result<i64, StoreError>;

    /// For a store other processes write too: the doorbell that rings when they commit.
    /// `None` for a store this process alone writes.
    async fn doorbell(&self) -> Result<Option<Box<dyn Doorbell>>, StoreError> {
        Ok(None)
    }

    /// The scope of the API key whose SHA-256 is `hash`; `None` if it is unknown or revoked.
    async fn api_key_scope(&self, hash: &[u8; 32]) -> Result<Option<Scope>, StoreError>;

    async fn insert_api_key(
        &self,
        hash: &[u8; 32],
        scope: Scope,
        label: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;

    /// API keys stored, revoked ones included (the first start creates keys only when there
    /// are none at all: revoking every key never brings the bootstrap keys back).
    async fn count_api_keys(&self) -> Result<u64, StoreError>;

    /// Every stored API key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Mark the API key whose SHA-256 is `hash` revoked at `now` — unless it already is: then
    /// its first revocation time stays — and return it; `None` if no such key is stored. The
    /// row stays, for the audit trail.
    async fn revoke_api_key(
        &self,
        hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// On a store several replicas share: replace `replica`'s fleet with `rows`, note that it
    /// is alive as of `now`, and forget replicas silent for a minute. A no-op elsewhere.
    async fn share_fleet(
        &self,
        _replica: &str,
        _now: UnixMillis,
        _rows: &[FleetRecord],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// On a shared store: the fleets of the replicas other than `replica` that shared theirs
    /// since `fresh_since`. Empty elsewhere.
    async fn shared_fleet(
        &self,
        _replica: &str,
        _fresh_since: UnixMillis,
    ) -> Result<Vec<FleetRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// The refresh token whose SHA-256 is `hash`, with its session, as committed.
    async fn refresh_token(&self, hash: &[u8; 32]) -> Result<Option<RefreshState>, StoreError>;

    /// Cheap liveness check of the storage for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Release connections and flush what the backend buffers.
    async fn close(&self);
}

/// Commit `command` on its own, outside the ledger (the first start, before the ledger runs),
/// and return its outcome.
pub(crate) async fn commit_one<C: Command>(
    store: &dyn Store,
    at: UnixMillis,
    command: C,
) -> Result<C::Outcome, StoreError> {
    let mut outcomes = store.commit(at, &[command.into()]).await?;
    match (outcomes.pop(), outcomes.is_empty()) {
        (Some(outcome), true) => C::outcome(outcome),
        _ => Err(StoreError::Invariant(
            "a commit of one mutation answered another number of outcomes",
        )),
    }
}
