//! The authority's in-memory mirror of its durable state: keys, the revocation set and subject
//! generations. Requests read it; the [`LogTail`](crate::tail::LogTail) writes it in `seq` order,
//! and the ledger waits for that before answering, so an answered revocation is already visible
//! to every later request on this process. (The log's head is the stream
//! [`Hub`](crate::stream::Hub)'s: it must move atomically with the hub's ring.)
//!
//! A std `RwLock`, because nothing awaits while it is held and every critical section is a few
//! hash lookups. Signature checks run outside the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::revset::RevocationSet;
use revocast_shared::{
    Epoch, JwkSet, KeyId, SigningKey, UnixSeconds, UnverifiedToken, Validation, VerifiedToken,
    VerifyError,
};

use crate::error::StoreError;
use crate::store::{KeyRecord, Loaded};

/// A key the authority has ever signed with.
struct KeyEntry {
    key: Arc<SigningKey>,
    /// When it stopped being the active key; it keeps verifying until its tokens have expired,
    /// i.e. `retired_at + max_ttl` (the recorded one, see [`View::max_ttl`]).
    retired_at: Option<UnixSeconds>,
    revoked: bool,
}

struct Inner {
    revset: RevocationSet,
    /// Current generation of every subject ever revoked (tokens are issued with it).
    subject_generations: HashMap<String, u64>,
    keys: HashMap<KeyId, KeyEntry>,
    active: KeyId,
}

pub struct View {
    epoch: Epoch,
    /// The longest token lifetime the store records (the largest `--max-ttl` any replica was
    /// started with), not this process's own: it only rises.
    max_ttl_secs: AtomicI64,
    inner: RwLock<Inner>,
}

/// Why a token cannot be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueRefusal {
    SessionRevoked,
    /// No active signing key: an invariant broke (`new`, `activate_key` and `replace_keys`
    /// always keep one).
    NoSigningKey,
}

impl View {
    /// Build from what the store loaded. `loaded.keys` must hold an active key; `max_ttl_secs`
    /// is the longest token lifetime the store records.
    pub fn new(loaded: Loaded, max_ttl_secs: i64) -> Result<Self, StoreError> {
        let (keys, active) = key_entries(loaded.keys)?;
        let mut revset = RevocationSet::new();
        for event in &loaded.revocations {
            revset.apply(&event.revocation);
        }
        Ok(Self {
            epoch: loaded.epoch,
            max_ttl_secs: AtomicI64::new(max_ttl_secs),
            inner: RwLock::new(Inner {
                revset,
                subject_generations: loaded.subject_generations.into_iter().collect(),
                keys,
                active,
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that matters
        // more than refusing all service would, so poisoning is ignored.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    pub fn active_kid(&self) -> KeyId {
        self.read().active
    }

    /// The longest lifetime of any token issued on this store, in seconds, as last read.
    pub fn max_ttl(&self) -> i64 {
        self.max_ttl_secs.load(Ordering::SeqCst)
    }

    /// Take a recorded longest lifetime read from the store; it only ever rises.
    pub fn raise_max_ttl(&self, secs: i64) {
        self.max_ttl_secs.fetch_max(secs, Ordering::SeqCst);
    }

    pub fn revocation_entries(&self) -> usize {
        self.read().revset.len()
    }

    /// The key and subject generation to issue a token for `sub` (and `sid`) with at `now`.
    pub fn issuing(
        &self,
        sub: &str,
        sid: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(Arc<SigningKey>, u64), IssueRefusal> {
        let inner = self.read();
        if sid.is_some_and(|sid| inner.revset.is_session_revoked(sid, now.get())) {
            return Err(IssueRefusal::SessionRevoked);
        }
        let r#gen = inner.subject_generations.get(sub).copied().unwrap_or(0);
        let key = inner.keys.get(&inner.active).map(|e| Arc::clone(&e.key));
        key.map(|k| (k, r#gen)).ok_or(IssueRefusal::NoSigningKey)
    }

    /// Is `token` genuine (a key of ours, valid signature, claims valid at `now`)? Revoked keys
    /// still count as ours here: revoking a token of a revoked key is harmless.
    pub fn authenticate(
        &self,
        token: &str,
        validation: &Validation,
        now: UnixSeconds,
    ) -> Result<VerifiedToken, VerifyError> {
        let unverified = UnverifiedToken::parse(token)?;
        let key = {
            let inner = self.read();
            let entry = inner
                .keys
                .get(&unverified.kid())
                .ok_or(VerifyError::UnknownKey)?;
            entry.key.verifying_key().clone()
        };
        unverified.verify(&key, validation, now.get())
    }

    /// Genuine and not revoked.
    pub fn verify(
        &self,
        token: &str,
        validation: &Validation,
        now: UnixSeconds,
    ) -> Result<VerifiedToken, VerifyError> {
        let verified = self.authenticate(token, validation, now)?;
        self.read().revset.check(&verified)?;
        Ok(verified)
    }

    pub fn has_key(&self, kid: &KeyId) -> bool {
        self.read().keys.contains_key(kid)
    }

    /// Published keys: not revoked, and either active or retired recently enough that tokens
    /// it signed may still be alive.
    pub fn jwks(&self, now: UnixSeconds) -> JwkSet {
        let max_ttl = self.max_ttl();
        let inner = self.read();
        let mut keys: Vec<_> = inner
            .keys
            .values()
            .filter(|e| {
                !e.revoked
                    && e.retired_at
                        .is_none_or(|t| t.saturating_add_secs(max_ttl) > now)
            })
            .map(|e| e.key.verifying_key().to_jwk())
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        JwkSet { keys }
    }

    /// Mirror one revocation of the log. Called in `seq` order only, by the [`LogTail`].
    ///
    /// [`LogTail`]: crate::tail::LogTail
    pub fn apply_event(&self, event: &RevocationEvent, now: UnixSeconds) {
        let mut inner = self.write();
        inner.revset.apply(&event.revocation);
        match &event.revocation {
            Revocation::Subject { sub, r#gen, .. } => {
                let current = inner.subject_generations.entry(sub.clone()).or_insert(0);
                *current = (*current).max(*r#gen);
            }
            Revocation::Key { kid } => {
                if let Some(entry) = inner.keys.get_mut(kid) {
                    entry.revoked = true;
                    entry.retired_at.get_or_insert(now);
                }
            }
            Revocation::Token { .. } | Revocation::Session { .. } => {}
        }
    }

    /// Mirror a commit of this process that made `new_active` the active signing key at `now`
    /// (a rotation, or the replacement of a revoked active key): the previous one retires.
    /// (Keys changed by another replica come through [`replace_keys`](Self::replace_keys).)
    pub fn activate_key(&self, new_active: &Arc<SigningKey>, now: UnixSeconds) {
        let mut inner = self.write();
        let previous = inner.active;
        if let Some(entry) = inner.keys.get_mut(&previous) {
            entry.retired_at.get_or_insert(now);
        }
        inner.keys.insert(
            new_active.kid(),
            KeyEntry {
                key: Arc::clone(new_active),
                retired_at: None,
                revoked: false,
            },
        );
        inner.active = new_active.kid();
    }

    /// Take the signing keys as stored, after another replica changed them. Keys are only ever
    /// added, retired or revoked, never deleted, so the stored set is always a superset.
    pub fn replace_keys(&self, records: Vec<KeyRecord>) -> Result<(), StoreError> {
        let active = active_kid(&records)?;
        // Expand only keys not seen before (expansion is the costly part), outside the lock.
        let known: Vec<KeyId> = self.read().keys.keys().copied().collect();
        let mut new = Vec::new();
        let mut statuses = Vec::new();
        for record in records {
            statuses.push((record.kid, record.retired_at, record.revoked));
            if !known.contains(&record.kid) {
                new.push(expand(record)?);
            }
        }
        let mut inner = self.write();
        for (kid, entry) in new {
            inner.keys.insert(kid, entry);
        }
        for (kid, retired_at, revoked) in statuses {
            if let Some(entry) = inner.keys.get_mut(&kid) {
                entry.retired_at = retired_at;
                entry.revoked = revoked;
            }
        }
        inner.active = active;
        Ok(())
    }

    /// Drop revocation entries whose time has passed.
    pub fn purge_expired(&self, now: UnixSeconds) -> usize {
        self.write().revset.purge_expired(now.get())
    }
}

/// Expand stored keys and find the active one.
fn key_entries(records: Vec<KeyRecord>) -> Result<(HashMap<KeyId, KeyEntry>, KeyId), StoreError> {
    let active = active_kid(&records)?;
    let keys = records
        .into_iter()
        .map(expand)
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok((keys, active))
}

/// The active key of the stored ones: exactly one is, unless the stored data is corrupt.
fn active_kid(records: &[KeyRecord]) -> Result<KeyId, StoreError> {
    records
        .iter()
        .find(|r| r.active)
        .map(|r| r.kid)
        .ok_or_else(|| StoreError::Corrupt("no active signing key".into()))
}

/// Expand a stored key from its seed, checking the seed against its kid.
fn expand(record: KeyRecord) -> Result<(KeyId, KeyEntry), StoreError> {
    let key = SigningKey::from_seed(record.seed);
    if key.kid() != record.kid {
        return Err(StoreError::Corrupt(format!(
            "stored key {} does not match its seed",
            record.kid
        )));
    }
    Ok((
        record.kid,
        KeyEntry {
            key: Arc::new(key),
            retired_at: record.retired_at,
            revoked: record.revoked,
        },
    ))
}
