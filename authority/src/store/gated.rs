//! A store for unit tests: SQLite underneath, with commits and API-key lookups that wait at
//! a gate (closed until a test adds permits) and are counted, so a test can hold an operation
//! mid-way while more queue up behind it.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use revocast_shared::event::RevocationEvent;
use revocast_shared::tlog::TreeHash;
use revocast_shared::{Seq, UnixMillis, UnixSeconds};
use tokio::sync::{Semaphore, mpsc};

use super::{
    ApiKeyRecord, Backlog, KeyRecord, Loaded, LogKeyRecord, Mutation, NewApiKey, Outcome,
    SnapshotPart, SqliteStore, Store, TreeHead,
};
use crate::config::Scope;
use crate::error::StoreError;

pub struct GatedStore {
    inner: SqliteStore,
    pub commit_gate: Semaphore,
    pub lookup_gate: Semaphore,
    /// Commits that reached the gate, and that passed it.
    pub entered: AtomicUsize,
    pub commits: AtomicUsize,
    /// API-key lookups that reached the gate.
    pub key_lookups: AtomicUsize,
    /// Log reads (`events_after`) that fail, one fewer each time, before reads work again.
    pub read_failures: AtomicUsize,
}

impl GatedStore {
    /// Both gates closed.
    pub fn closed(inner: SqliteStore) -> Self {
        Self {
            inner,
            commit_gate: Semaphore::new(0),
            lookup_gate: Semaphore::new(0),
            entered: AtomicUsize::new(0),
            commits: AtomicUsize::new(0),
            key_lookups: AtomicUsize::new(0),
            read_failures: AtomicUsize::new(0),
        }
    }
}

async fn pass(gate: &Semaphore) -> Result<(), StoreError> {
    gate.acquire()
        .await
        .map_err(|_| StoreError::Closed)?
        .forget();
    Ok(())
}

#[async_trait]
impl Store for GatedStore {
    async fn load(&self, now: UnixSeconds) -> Result<Loaded, StoreError> {
        self.inner.load(now).await
    }
    async fn commit(&self, at: UnixMillis, batch: &[Mutation]) -> Result<Vec<Outcome>, StoreError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        pass(&self.commit_gate).await?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(at, batch).await
    }
    async fn events_after(
        &self,
        after: revocast_shared::Seq,
        limit: u32,
    ) -> Result<Backlog, StoreError> {
        let failing = self
            .read_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::TimedOut);
        }
        self.inner.events_after(after, limit).await
    }
    async fn snapshot(
        &self,
        now: UnixSeconds,
        out: mpsc::Sender<SnapshotPart>,
    ) -> Result<(), StoreError> {
        self.inner.snapshot(now, out).await
    }
    async fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.load_keys().await
    }
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        self.inner.tree_head().await
    }
    async fn leaf_hashes(&self, after: u64, limit: u32) -> Result<Vec<TreeHash>, StoreError> {
        self.inner.leaf_hashes(after, limit).await
    }
    async fn log_rows(&self, after: Seq, limit: u32) -> Result<Vec<RevocationEvent>, StoreError> {
        self.inner.log_rows(after, limit).await
    }
    async fn log_keys(&self) -> Result<Vec<LogKeyRecord>, StoreError> {
        self.inner.log_keys().await
    }
    async fn insert_log_key(&self, key: &LogKeyRecord) -> Result<(), StoreError> {
        self.inner.insert_log_key(key).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn save_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        self.inner.save_checkpoint(size, note).await
    }
    async fn insert_first_api_keys(
        &self,
        keys: &[NewApiKey<'_>],
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        self.inner.insert_first_api_keys(keys, now).await
    }
    async fn claim_issuer(&self, issuer: &str) -> Result<String, StoreError> {
        self.inner.claim_issuer(issuer).await
    }
    async fn raise_max_ttl(&self, secs: i64) -> Result<i64, StoreError> {
        self.inner.raise_max_ttl(secs).await
    }
    async fn max_ttl(&self) -> Result<i64, StoreError> {
        self.inner.max_ttl().await
    }
    async fn api_key_scope(&self, hash: &[u8; 32]) -> Result<Option<Scope>, StoreError> {
        self.key_lookups.fetch_add(1, Ordering::SeqCst);
        pass(&self.lookup_gate).await?;
        self.inner.api_key_scope(hash).await
    }
    async fn insert_api_key(
        &self,
        h: &[u8; 32],
        s: Scope,
        l: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.inner.insert_api_key(h, s, l, now).await
    }
    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        self.inner.count_api_keys().await
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_api_keys().await
    }
    async fn revoke_api_key(
        &self,
        h: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.revoke_api_key(h, now).await
    }
    async fn refresh_token(&self, h: &[u8; 32]) -> Result<Option<super::RefreshState>, StoreError> {
        self.inner.refresh_token(h).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
