//! The log keys: ML-DSA-65 keys that sign checkpoints and snapshot seals, never tokens (a
//! token key never signs for the log either: they are separate keys in separate tables).
//!
//! Rotation mirrors the token keys', with one difference: a new log key is published in the
//! JWKS `--log-key-lead` before it signs, so every agent has fetched it by the time it sees a
//! checkpoint signed by it. The newest key whose `signs_from` has passed signs. A key that was
//! superseded stays published for `--max-ttl` afterwards, while checkpoints and snapshots it
//! signed may still be presented (a snapshot cached by a mirror, say).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use revocast_shared::keys::{Jwk, LogSigningKey, LogVerifyingKey};
use revocast_shared::{KeyId, UnixMillis};

use crate::error::{Error, StoreError};
use crate::store::{LogKeyRecord, Store};

struct LogKey {
    key: Arc<LogSigningKey>,
    signs_from: UnixMillis,
}

pub struct LogKeys {
    /// Ordered by `signs_from`, then `kid`: the signer at a time is the last one that started.
    keys: RwLock<Vec<LogKey>>,
    /// How long a superseded key stays published.
    kept: Duration,
}

impl LogKeys {
    /// Load the stored log keys, creating the first one (signing at once: nobody can hold a
    /// checkpoint of this log yet) if there is none.
    pub async fn load(store: &dyn Store, now: UnixMillis, kept: Duration) -> Result<Self, Error> {
        let keys = Self {
            keys: RwLock::new(Vec::new()),
            kept,
        };
        keys.refresh(store).await?;
        if keys.read().is_empty() {
            let key = generate().await?;
            store
                .insert_log_key(&LogKeyRecord {
                    kid: key.kid(),
                    seed: key.seed().clone(),
                    created_at: now,
                    signs_from: now,
                })
                .await?;
            tracing::info!(kid = %key.kid(), "generated log key");
            // Replicas starting together may each have added one: read what is stored.
            keys.refresh(store).await?;
        }
        Ok(keys)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<LogKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the stored keys (another replica may have rotated).
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let records = store.log_keys().await?;
        let known: Vec<(KeyId, Arc<LogSigningKey>)> = self
            .read()
            .iter()
            .map(|k| (k.key.kid(), Arc::clone(&k.key)))
            .collect();
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            let key = match known.iter().find(|(kid, _)| *kid == record.kid) {
                Some((_, key)) => Arc::clone(key),
                None => {
                    let key = LogSigningKey::from_seed(record.seed);
                    if key.kid() != record.kid {
                        return Err(StoreError::Corrupt(format!(
                            "the log key {} does not match its seed",
                            record.kid
                        )));
                    }
                    Arc::new(key)
                }
            };
            keys.push(LogKey {
                key,
                signs_from: record.signs_from,
            });
        }
        keys.sort_by(|a, b| {
            (a.signs_from, a.key.kid().to_string()).cmp(&(b.signs_from, b.key.kid().to_string()))
        });
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    /// The key that signs at `now`.
    pub fn signer(&self, now: UnixMillis) -> Option<Arc<LogSigningKey>> {
        self.read()
            .iter()
            .rev()
            .find(|k| k.signs_from <= now)
            .map(|k| Arc::clone(&k.key))
    }

    /// Every stored log key's public half: what the audit at start verifies the stored
    /// checkpoint against.
    pub fn all(&self) -> Vec<LogVerifyingKey> {
        self.read().iter().map(|k| k.key.verifying_key()).collect()
    }

    /// The keys published at `now`: those not yet signing, the signer, and those superseded
    /// less than the kept time ago.
    pub fn published(&self, now: UnixMillis) -> Vec<LogVerifyingKey> {
        let keys = self.read();
        let signer = keys.iter().rposition(|k| k.signs_from <= now);
        keys.iter()
            .enumerate()
            .filter(|(i, _)| {
                let Some(signer) = signer else { return true };
                if *i >= signer {
                    return true;
                }
                // Superseded when the next key started signing.
                keys.get(i + 1).is_none_or(|next| {
                    next.signs_from
                        .as_millis()
                        .saturating_add(self.kept.as_millis() as i64)
                        > now.as_millis()
                })
            })
            .map(|(_, k)| k.key.verifying_key())
            .collect()
    }

    /// The published keys as JWKs (`"use":"revocast-log"`).
    pub fn jwks(&self, now: UnixMillis) -> Vec<Jwk> {
        self.published(now)
            .iter()
            .map(LogVerifyingKey::to_jwk)
            .collect()
    }

    /// Add a new key that signs from `now + lead`, durably, and return it with that time.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        now: UnixMillis,
        lead: Duration,
    ) -> Result<(KeyId, UnixMillis), Error> {
        let key = generate().await?;
        let signs_from = UnixMillis::new(now.as_millis().saturating_add(lead.as_millis() as i64));
        store
            .insert_log_key(&LogKeyRecord {
                kid: key.kid(),
                seed: key.seed().clone(),
                created_at: now,
                signs_from,
            })
            .await?;
        self.refresh(store).await?;
        Ok((key.kid(), signs_from))
    }
}

async fn generate() -> Result<LogSigningKey, Error> {
    tokio::task::spawn_blocking(LogSigningKey::generate)
        .await
        .map_err(|e| Error::Io {
            what: "generating a log key".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(Error::from)
}
