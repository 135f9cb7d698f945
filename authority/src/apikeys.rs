//! API keys: generation, hashing, lookup with a small cache, and the first-start bootstrap that
//! writes `admin.key` and `subscriber.key` into the data directory.
//!
//! Keys are 256 random bits, so a plain SHA-256 is a sound stored form: there is nothing to
//! brute-force that a slow password hash would protect. Only the hash is ever stored.
//!
//! Public: [`create`], what `revocast-authority create-key` does, on any [`Store`]. The rest
//! is the authority's own.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_shared::UnixSeconds;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::config::Scope;
use crate::error::{Error, StoreError};
use crate::store::{NewApiKey, Store};

/// Prefix of every key, so leaked keys are recognisable by secret scanners.
const PREFIX: &str = "rvc_";
/// A presented key longer than this is refused before hashing.
const MAX_KEY_LEN: usize = 256;

pub(crate) const ADMIN_KEY_FILE: &str = "admin.key";
pub(crate) const SUBSCRIBER_KEY_FILE: &str = "subscriber.key";

/// A new random API key; the secret never leaves memory except to its file or stdout.
pub(crate) fn generate() -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|_| revocast_shared::Error::Randomness)?;
    Ok(Zeroizing::new(format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(*bytes)
    )))
}

pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The SHA-256 of a key that authenticated: what the store keys on, and what per-key rate
/// limits count against. `Authorized` puts it in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyDigest(pub(crate) [u8; 32]);

/// Resolves presented keys to scopes. Hits are cached; misses always ask the store, so a key
/// created by `create-key` while the authority runs works at once.
///
/// Concurrent misses for one key share one store query. After a restart every agent of a
/// fleet reconnects at once with the same subscriber key; without this, 10,000 identical
/// queries queued for the store's few connections, and handshakes waited seconds for them.
pub(crate) struct ApiKeys {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<[u8; 32], Scope>>,
    /// Store queries in flight, by digest.
    inflight: Mutex<HashMap<[u8; 32], Arc<Lookup>>>,
}

/// One store query for a digest, shared by every caller that missed the cache meanwhile.
type Lookup = OnceCell<Option<Scope>>;

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The scope of `presented`, with its digest; `None` for an unknown key.
    pub async fn scope_of(
        &self,
        presented: &str,
    ) -> Result<Option<(Scope, KeyDigest)>, StoreError> {
        if presented.is_empty() || presented.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let digest = hash(presented);
        let cached = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            // The map finds a candidate by hash; the final equality is constant time so that
            // the comparison leaks nothing about how much of a stored hash was matched.
            cache
                .get_key_value(&digest)
                .filter(|(stored, _)| bool::from(stored.ct_eq(&digest)))
                .map(|(_, scope)| *scope)
        };
        if let Some(scope) = cached {
            return Ok(Some((scope, KeyDigest(digest))));
        }
        let scope = self.look_up(digest).await?;
        Ok(scope.map(|scope| (scope, KeyDigest(digest))))
    }

    /// Ask the store, joining a query for the same digest that is already in flight.
    async fn look_up(&self, digest: [u8; 32]) -> Result<Option<Scope>, StoreError> {
        let query = Arc::clone(
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(digest)
                .or_default(),
        );
        // One caller runs the query; the others wait for its answer. If it fails, the next
        // waiter tries again.
        let answer = query
            .get_or_try_init(|| self.store.api_key_scope(&digest))
            .await
            .copied();
        if let Ok(Some(scope)) = answer {
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest, scope);
        }
        // Done: the next miss (an unknown key, or a key created since) asks the store again.
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&digest)
            .is_some_and(|current| Arc::ptr_eq(current, &query))
        {
            inflight.remove(&digest);
        }
        answer
    }
}

/// Create a key of `scope`, store its hash and return the secret.
pub async fn create(
    store: &dyn Store,
    scope: Scope,
    label: Option<&str>,
    now: UnixSeconds,
) -> Result<Zeroizing<String>, Error> {
    let key = generate()?;
    store.insert_api_key(&hash(&key), scope, label, now).await?;
    Ok(key)
}

/// On the first start (no API keys stored), create an `admin` and a `subscribe` key and write
/// them to `admin.key` / `subscriber.key` (mode 0600).
///
/// Replicas may initialise one shared database together; exactly one of them stores its keys
/// (atomically, only if none exist) and only that one writes the files. The secrets go to
/// `*.key.new` files first, so that a crash right after the keys were stored cannot lose them:
/// the next start finishes the job (`finish_pending`).
pub(crate) async fn bootstrap(
    store: &dyn Store,
    data_dir: &Path,
    now: UnixSeconds,
) -> Result<(), Error> {
    if store.count_api_keys().await? > 0 {
        return finish_pending(store, data_dir).await;
    }
    let admin = generate()?;
    let subscriber = generate()?;
    let files = [
        (ADMIN_KEY_FILE, &admin, Scope::Admin, "bootstrap admin"),
        (
            SUBSCRIBER_KEY_FILE,
            &subscriber,
            Scope::Subscribe,
            "bootstrap subscriber",
        ),
    ];
    for (name, secret, ..) in &files {
        write_secret(&pending_path(data_dir, name), secret)?;
    }
    let keys: Vec<NewApiKey<'_>> = files
        .iter()
        .map(|(_, secret, scope, label)| NewApiKey {
            hash: hash(secret),
            scope: *scope,
            label: Some(label),
        })
        .collect();
    if store.insert_first_api_keys(&keys, now).await? {
        for (name, ..) in &files {
            publish_pending(data_dir, name)?;
        }
        tracing::info!(
            admin_key_file = %data_dir.join(ADMIN_KEY_FILE).display(),
            subscriber_key_file = %data_dir.join(SUBSCRIBER_KEY_FILE).display(),
            "first start: created API keys"
        );
    } else {
        tracing::info!("another replica initialised the database and holds its API key files");
        for (name, ..) in &files {
            remove_pending(data_dir, name)?;
        }
    }
    Ok(())
}

/// Keys exist: a `*.key.new` file left by a crash is moved into place if its key was stored,
/// and removed otherwise.
async fn finish_pending(store: &dyn Store, data_dir: &Path) -> Result<(), Error> {
    for name in [ADMIN_KEY_FILE, SUBSCRIBER_KEY_FILE] {
        let pending = pending_path(data_dir, name);
        let Ok(secret) = std::fs::read_to_string(&pending).map(Zeroizing::new) else {
            continue;
        };
        if store
            .api_key_scope(&hash(secret.trim_end()))
            .await?
            .is_some()
        {
            publish_pending(data_dir, name)?;
            tracing::info!(file = %data_dir.join(name).display(), "finished writing an API key file after a crash");
        } else {
            remove_pending(data_dir, name)?;
        }
    }
    Ok(())
}

fn pending_path(data_dir: &Path, name: &str) -> std::path::PathBuf {
    data_dir.join(format!("{name}.new"))
}

fn publish_pending(data_dir: &Path, name: &str) -> Result<(), Error> {
    let (from, to) = (pending_path(data_dir, name), data_dir.join(name));
    std::fs::rename(&from, &to).map_err(|source| Error::Io {
        what: format!("cannot rename {} into {}", from.display(), to.display()),
        source,
    })
}

fn remove_pending(data_dir: &Path, name: &str) -> Result<(), Error> {
    let path = pending_path(data_dir, name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: format!("cannot remove {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Write `secret` and a newline to `path` atomically with mode 0600.
fn write_secret(path: &Path, secret: &str) -> Result<(), Error> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| Error::Io { what, source }
    };
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io("cannot create"))?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io("cannot restrict"))?;
    file.write_all(secret.as_bytes())
        .map_err(io("cannot write"))?;
    file.write_all(b"\n").map_err(io("cannot write"))?;
    file.sync_all().map_err(io("cannot sync"))?;
    std::fs::rename(&tmp, path).map_err(io("cannot rename into"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::SqliteStore;
    use crate::store::gated::GatedStore;

    #[tokio::test]
    async fn concurrent_misses_for_one_key_share_one_store_query() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let key = create(&sqlite, Scope::Subscribe, None, UnixSeconds::new(0))
            .await
            .unwrap();
        let store = Arc::new(GatedStore::closed(sqlite));
        let keys = Arc::new(ApiKeys::new(store.clone()));
        // 50 connections present the same uncached key while the first query is held.
        let lookups: Vec<_> = (0..50)
            .map(|_| {
                let (keys, key) = (Arc::clone(&keys), key.clone());
                tokio::spawn(async move { keys.scope_of(&key).await })
            })
            .collect();
        while store.key_lookups.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        store.lookup_gate.add_permits(100);
        for lookup in lookups {
            let (scope, _) = lookup.await.unwrap().unwrap().expect("known key");
            assert_eq!(scope, Scope::Subscribe);
        }
        assert_eq!(
            store.key_lookups.load(Ordering::SeqCst),
            1,
            "one query for 50 misses"
        );
        // Cached now; an unknown key still asks the store, every time.
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        assert!(keys.scope_of("rvc_unknown").await.unwrap().is_none());
        assert!(keys.scope_of("rvc_unknown").await.unwrap().is_none());
        assert_eq!(store.key_lookups.load(Ordering::SeqCst), 3);
        assert!(
            keys.inflight.lock().unwrap().is_empty(),
            "nothing left in flight"
        );
    }

    #[test]
    fn keys_are_random_prefixed_and_hash_stably() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43);
        assert_ne!(*a, *b);
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(hash(&a), hash(&b));
    }
}
