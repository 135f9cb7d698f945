//! API keys: generation, hashing, lookup with a small cache, listing and revocation, and the
//! first-start bootstrap that writes `admin.key` and `subscriber.key` into the data directory.
//!
//! Keys are 256 random bits, so a plain SHA-256 is a sound stored form: there is nothing to
//! brute-force that a slow password hash would protect. Only the hash is ever stored, and a
//! key is only ever shown by its id — base64url of that hash — and its label.
//!
//! Public: [`create`], what `revocast-authority create-key` does, on any [`Store`];
//! [`ApiKeyInfo`], [`id_of`] and [`find`], what `keys list` and `keys revoke` show and take.
//! The rest is the authority's own.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_shared::UnixSeconds;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::config::Scope;
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::store::{ApiKeyRecord, NewApiKey, Store};

mod watch;

pub(crate) use watch::{KeyWatch, Verdict};

/// Prefix of every key, so leaked keys are recognisable by secret scanners.
const PREFIX: &str = "rvc_";
/// A presented key longer than this is refused before hashing.
const MAX_KEY_LEN: usize = 256;

/// How long a key the store confirmed is trusted before the store is asked again. A key
/// revoked elsewhere (another replica, the CLI) stops working here within this plus one store
/// query: the bound is one second, and this leaves room for a slow query.
const KNOWN_FOR: Duration = Duration::from_millis(500);
/// How long an unknown (or revoked) key is answered 401 without asking the store again. A key
/// created by another process is, by then, one nobody could have presented before (it is 256
/// random bits), so in practice this delays nothing; a key created through this process
/// clears its entry at once.
const UNKNOWN_FOR: Duration = Duration::from_secs(1);
/// At most this many unknown keys are remembered: a flood of random keys must not grow memory
/// without bound. When full, expired entries go, and if that frees too little, all of them.
const MAX_UNKNOWN: usize = 10_000;
/// Store queries for keys not known valid in flight at once, whatever the number of distinct
/// keys presented: a flood of random keys (which no cache can absorb) waits for these few
/// slots instead of taking the store's connections from snapshots, backlog reads and the
/// periodic re-checks of real keys (which do not wait for these slots).
const MAX_LOOKUPS: usize = 2;
/// `keys revoke` takes a prefix of an id, if it names one key and is at least this long.
pub const MIN_ID_PREFIX: usize = 6;

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

/// A key's id: base64url (unpadded) of its SHA-256, the stored form. Shown by `keys list` and
/// `GET /v1/api-keys`; it reveals nothing of the secret.
pub fn id_of(hash: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(hash)
}

/// The hash an [`id_of`] names; `None` if `id` is not one.
pub(crate) fn parse_id(id: &str) -> Option<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
    bytes.try_into().ok()
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// The key's id: base64url (unpadded) of the SHA-256 of the key.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub id: String,
    pub scope: Scope,
    /// The note given when it was created.
    pub label: Option<String>,
    /// Created at, Unix seconds.
    pub created_at: i64,
    /// Revoked at, Unix seconds; `null` while the key is in force.
    pub revoked_at: Option<i64>,
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(key: &ApiKeyRecord) -> Self {
        Self {
            id: id_of(&key.hash),
            scope: key.scope,
            label: key.label.clone(),
            created_at: key.created_at.get(),
            revoked_at: key.revoked_at.map(UnixSeconds::get),
        }
    }
}

/// What an id, or a prefix of one, names among `keys`.
#[derive(Debug)]
pub enum Found<'a> {
    One(&'a ApiKeyRecord),
    None,
    /// The prefix fits this many keys.
    Ambiguous(usize),
    /// Shorter than [`MIN_ID_PREFIX`] and not a whole id.
    TooShort,
}

/// The key whose id is `id`, or starts with it.
pub fn find<'a>(keys: &'a [ApiKeyRecord], id: &str) -> Found<'a> {
    if let Some(hash) = parse_id(id) {
        return keys
            .iter()
            .find(|k| k.hash == hash)
            .map_or(Found::None, Found::One);
    }
    if id.len() < MIN_ID_PREFIX {
        return Found::TooShort;
    }
    let mut fits = keys.iter().filter(|k| id_of(&k.hash).starts_with(id));
    match (fits.next(), fits.count()) {
        (None, _) => Found::None,
        (Some(key), 0) => Found::One(key),
        (Some(_), more) => Found::Ambiguous(more + 1),
    }
}

/// Admin keys still in force among `keys`.
pub fn active_admin_keys(keys: &[ApiKeyRecord]) -> usize {
    keys.iter()
        .filter(|k| k.scope == Scope::Admin && k.revoked_at.is_none())
        .count()
}

/// The SHA-256 of a key that authenticated: what the store keys on, and what per-key rate
/// limits count against. `Authorized` puts it in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyDigest(pub(crate) [u8; 32]);

/// Resolves presented keys to scopes, with a short-lived cache in front of the store.
///
/// - A key the store confirmed is trusted for [`KNOWN_FOR`], then asked for again, so a key
///   revoked on another replica stops working here within a second. A key revoked through
///   this process is forgotten at once.
/// - An unknown or revoked key is answered from the cache for [`UNKNOWN_FOR`] (at most
///   [`MAX_UNKNOWN`] of them), so a client hammering with a bad key costs one query a second.
/// - Concurrent lookups of one key share one store query. After a restart every agent of a
///   fleet reconnects at once with the same subscriber key; without this, 10,000 identical
///   queries queued for the store's few connections, and handshakes waited seconds for them.
///   With the expiry, a fleet sharing one key costs one query per [`KNOWN_FOR`], not one per
///   request.
/// - At most [`MAX_LOOKUPS`] store queries for keys not known valid run at once; re-checks
///   of known keys do not queue behind them, so a flood of bad keys does not slow real ones.
///
/// When the store cannot answer, a key whose entry has expired is refused with 503, whatever
/// its scope: its revocation may be exactly what cannot be read, and serving it would break
/// the one-second bound. During such an outage a PostgreSQL replica cannot follow the log
/// either, so its agents are better off failing over to a replica that can.
pub(crate) struct ApiKeys {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    cache: RwLock<Cache>,
    /// Store queries in flight, by digest.
    inflight: Mutex<HashMap<[u8; 32], Arc<Lookup>>>,
    lookups: Semaphore,
    /// Keys with open streams, re-checked while they have some (see [`watch`]).
    watchers: watch::Watchers,
    /// [`KNOWN_FOR`], [`UNKNOWN_FOR`], [`watch::RECHECK_EVERY`] and
    /// [`watch::UNVERIFIED_FOR`], which unit tests change.
    known_for: Duration,
    unknown_for: Duration,
    recheck_every: Duration,
    unverified_for: Duration,
}

/// One store query for a digest, shared by every caller that missed the cache meanwhile.
type Lookup = OnceCell<Option<Scope>>;

/// What the cache holds for a digest.
enum Cached {
    /// An answer young enough to trust.
    Fresh(Option<Scope>),
    /// A key the store confirmed, too long ago: to check again.
    Expired,
    /// Nothing (or an expired miss).
    Miss,
}

/// Which store queries a lookup waits for.
#[derive(Clone, Copy)]
enum Lane {
    /// Re-checking a key the store confirmed: there are only as many of those as real keys,
    /// each checked at most once per `KNOWN_FOR`, so they never wait behind a flood.
    Known,
    /// Any other key, possibly one of a flood: at most [`MAX_LOOKUPS`] at once.
    Unknown,
}

#[derive(Default)]
struct Cache {
    /// Keys the store confirmed, with the time the confirming query started.
    known: HashMap<[u8; 32], (Scope, Instant)>,
    /// Keys the store did not know (or knew revoked), likewise.
    unknown: HashMap<[u8; 32], Instant>,
    /// Bumped by every create and revoke through this process: a query that started before
    /// one may hold an answer it made outdated, so its answer is not cached.
    changes: u64,
}

impl Cache {
    fn remember_unknown(&mut self, digest: [u8; 32], at: Instant, unknown_for: Duration) {
        if self.unknown.len() >= MAX_UNKNOWN {
            let now = Instant::now();
            self.unknown
                .retain(|_, since| now.duration_since(*since) < unknown_for);
            // Freeing at least half keeps this O(1) per insert, amortized.
            if self.unknown.len() >= MAX_UNKNOWN / 2 {
                self.unknown.clear();
            }
        }
        self.unknown.insert(digest, at);
    }
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            cache: RwLock::new(Cache::default()),
            inflight: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(MAX_LOOKUPS),
            watchers: watch::Watchers::default(),
            known_for: KNOWN_FOR,
            unknown_for: UNKNOWN_FOR,
            recheck_every: watch::RECHECK_EVERY,
            unverified_for: watch::UNVERIFIED_FOR,
        }
    }

    /// The scope of `presented`, with its digest; `None` for an unknown or revoked key.
    pub async fn scope_of(
        &self,
        presented: &str,
    ) -> Result<Option<(Scope, KeyDigest)>, StoreError> {
        if presented.is_empty() || presented.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let digest = hash(presented);
        let scope = self.scope_of_digest(digest).await?;
        Ok(scope.map(|scope| (scope, KeyDigest(digest))))
    }

    /// The scope of the key whose SHA-256 is `digest`, through the cache.
    async fn scope_of_digest(&self, digest: [u8; 32]) -> Result<Option<Scope>, StoreError> {
        match self.cached(&digest) {
            Cached::Fresh(answer) => Ok(answer),
            Cached::Expired => self.look_up(digest, Lane::Known).await,
            Cached::Miss => self.look_up(digest, Lane::Unknown).await,
        }
    }

    /// What the cache holds for `digest`.
    fn cached(&self, digest: &[u8; 32]) -> Cached {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The map finds a candidate by hash; the final equality is constant time so that the
        // comparison leaks nothing about how much of a stored hash was matched.
        let known = cache
            .known
            .get_key_value(digest)
            .filter(|(stored, _)| bool::from(stored.ct_eq(digest)));
        if let Some((_, (scope, since))) = known {
            return if now.duration_since(*since) < self.known_for {
                Cached::Fresh(Some(*scope))
            } else {
                Cached::Expired
            };
        }
        match cache.unknown.get(digest) {
            Some(since) if now.duration_since(*since) < self.unknown_for => Cached::Fresh(None),
            _ => Cached::Miss,
        }
    }

    /// Ask the store, joining a query for the same digest that is already in flight.
    async fn look_up(&self, digest: [u8; 32], lane: Lane) -> Result<Option<Scope>, StoreError> {
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
            .get_or_try_init(|| self.ask_store(digest, lane))
            .await
            .copied();
        // Done: the next miss, once the cached answer expires, asks the store again.
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&digest)
            .is_some_and(|current| Arc::ptr_eq(current, &query))
        {
            inflight.remove(&digest);
        }
        answer
    }

    /// One store query, counted, its answer cached.
    async fn ask_store(&self, digest: [u8; 32], lane: Lane) -> Result<Option<Scope>, StoreError> {
        let _slot = match lane {
            Lane::Known => None,
            Lane::Unknown => Some(
                self.lookups
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Closed)?,
            ),
        };
        let changes = self.cache.read().unwrap_or_else(|e| e.into_inner()).changes;
        let started = Instant::now();
        let answer = self.store.api_key_scope(&digest).await;
        let outcome = match answer {
            Ok(Some(_)) => "found",
            Ok(None) => "unknown",
            Err(_) => "error",
        };
        self.metrics
            .api_key_lookups
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        let Ok(scope) = answer else {
            return answer;
        };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let current = cache.changes == changes;
        match scope {
            Some(scope) if current => {
                cache.unknown.remove(&digest);
                cache.known.insert(digest, (scope, started));
            }
            Some(_) => {}
            None => {
                // Unknown now is unknown for good (or until created here, which clears it).
                cache.known.remove(&digest);
                if current {
                    cache.remember_unknown(digest, started, self.unknown_for);
                }
            }
        }
        Ok(scope)
    }

    /// Create a key of `scope` and return the secret; it works here at once.
    pub async fn create(
        &self,
        scope: Scope,
        label: Option<&str>,
        now: UnixSeconds,
    ) -> Result<Zeroizing<String>, Error> {
        let key = create(self.store.as_ref(), scope, label, now).await?;
        self.changed(&hash(&key), None);
        Ok(key)
    }

    /// Revoke the key whose SHA-256 is `digest` (see [`Store::revoke_api_key`]); it stops
    /// working here at once, and on other replicas within a second. Its open streams end
    /// likewise (see [`watch`]).
    pub async fn revoke(
        &self,
        digest: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let revoked = self.store.revoke_api_key(digest, now).await?;
        if revoked.is_some() {
            self.changed(digest, Some(Instant::now()));
            self.watchers.end(digest, None, Verdict::Revoked);
        }
        Ok(revoked)
    }

    /// Every stored key, revoked ones included.
    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.list_api_keys().await
    }

    /// `digest` was created (`unknown_since` = `None`) or revoked here: drop what the cache
    /// and the queries in flight hold about it, and about anything a query in flight reads.
    fn changed(&self, digest: &[u8; 32], unknown_since: Option<Instant>) {
        {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            cache.changes += 1;
            cache.known.remove(digest);
            cache.unknown.remove(digest);
            if let Some(since) = unknown_since {
                cache.remember_unknown(*digest, since, self.unknown_for);
            }
        }
        // A query already in flight may have read the old state: later callers start anew.
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
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

    /// An API-key cache on a gated SQLite store holding one `subscribe` key, and that key.
    async fn gated(
        known_for: Duration,
        unknown_for: Duration,
    ) -> (
        Arc<GatedStore>,
        ApiKeys,
        Zeroizing<String>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).await.unwrap();
        let key = create(&sqlite, Scope::Subscribe, None, UnixSeconds::new(0))
            .await
            .unwrap();
        let store = Arc::new(GatedStore::closed(sqlite));
        let mut keys = ApiKeys::new(store.clone(), Arc::new(Metrics::new()));
        (keys.known_for, keys.unknown_for) = (known_for, unknown_for);
        (store, keys, key, dir)
    }

    const LONG: Duration = Duration::from_secs(3600);

    fn lookups(store: &GatedStore) -> usize {
        store.key_lookups.load(Ordering::SeqCst)
    }

    fn open(store: &GatedStore) {
        store.lookup_gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_key_share_one_store_query() {
        let (store, keys, key, _dir) = gated(LONG, LONG).await;
        let keys = Arc::new(keys);
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
        // Cached now; an unknown key asks the store once, then is answered from the cache.
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        assert!(keys.scope_of("rvc_unknown").await.unwrap().is_none());
        assert!(keys.scope_of("rvc_unknown").await.unwrap().is_none());
        assert_eq!(store.key_lookups.load(Ordering::SeqCst), 2);
        assert!(
            keys.inflight.lock().unwrap().is_empty(),
            "nothing left in flight"
        );
    }

    /// A client hammering with one bad key costs one store query per `UNKNOWN_FOR`, not one
    /// per request, sequential or concurrent.
    #[tokio::test]
    async fn a_repeated_bad_key_costs_one_store_query_per_interval() {
        let (store, keys, _key, _dir) = gated(LONG, Duration::from_millis(200)).await;
        open(&store);
        let keys = Arc::new(keys);
        let bad = generate().unwrap();
        for _ in 0..100 {
            assert!(keys.scope_of(&bad).await.unwrap().is_none());
        }
        let concurrent: Vec<_> = (0..100)
            .map(|_| {
                let (keys, bad) = (Arc::clone(&keys), bad.clone());
                tokio::spawn(async move { keys.scope_of(&bad).await })
            })
            .collect();
        for lookup in concurrent {
            assert!(lookup.await.unwrap().unwrap().is_none());
        }
        assert_eq!(lookups(&store), 1, "200 requests, one store query");
        let counted = |outcome| {
            keys.metrics
                .api_key_lookups
                .get_or_create(&vec![("outcome", outcome)])
                .get()
        };
        assert_eq!((counted("unknown"), counted("found")), (1, 0));
        // Once the entry has expired, the store is asked again (a key created meanwhile by
        // another process would work from then on).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(keys.scope_of(&bad).await.unwrap().is_none());
        assert_eq!(lookups(&store), 2);
    }

    /// Distinct random keys, each one a store query: the cache of misses never holds more
    /// than `MAX_UNKNOWN` of them.
    #[tokio::test]
    async fn a_flood_of_distinct_bad_keys_keeps_the_cache_bounded() {
        let (store, keys, key, _dir) = gated(LONG, LONG).await;
        open(&store);
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        let flood = MAX_UNKNOWN + MAX_UNKNOWN / 2 + 10;
        let mut largest = 0;
        for i in 0..flood {
            assert!(
                keys.scope_of(&format!("rvc_bad{i}"))
                    .await
                    .unwrap()
                    .is_none()
            );
            let cache = keys.cache.read().unwrap();
            largest = largest.max(cache.unknown.len() + cache.known.len());
        }
        assert!(largest <= MAX_UNKNOWN + 1, "{largest} entries");
        assert_eq!(lookups(&store), flood + 1);
        // The good key stayed cached throughout.
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        assert_eq!(lookups(&store), flood + 1);
    }

    /// However many distinct keys are presented at once, at most `MAX_LOOKUPS` store queries
    /// run: the rest wait for a slot instead of taking the store's connections.
    #[tokio::test]
    async fn distinct_keys_at_once_take_at_most_a_few_store_connections() {
        let (store, keys, _key, _dir) = gated(LONG, LONG).await;
        let keys = Arc::new(keys);
        let flood: Vec<_> = (0..40)
            .map(|i| {
                let keys = Arc::clone(&keys);
                tokio::spawn(async move { keys.scope_of(&format!("rvc_bad{i}")).await })
            })
            .collect();
        while lookups(&store) < MAX_LOOKUPS {
            tokio::task::yield_now().await;
        }
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        assert_eq!(lookups(&store), MAX_LOOKUPS, "the others wait for a slot");
        open(&store);
        for lookup in flood {
            assert!(lookup.await.unwrap().unwrap().is_none());
        }
        assert_eq!(lookups(&store), 40);
    }

    /// While a flood of unknown keys holds every lookup slot, a known key whose cached answer
    /// expired is re-checked at once, not behind the flood.
    #[tokio::test]
    async fn a_known_key_is_rechecked_without_waiting_behind_a_flood() {
        let (store, keys, key, _dir) = gated(Duration::from_millis(50), LONG).await;
        let keys = Arc::new(keys);
        store.lookup_gate.add_permits(1);
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The flood takes the slots and waits at the (closed) gate.
        let flood: Vec<_> = (0..20)
            .map(|i| {
                let keys = Arc::clone(&keys);
                tokio::spawn(async move { keys.scope_of(&format!("rvc_bad{i}")).await })
            })
            .collect();
        while lookups(&store) < 1 + MAX_LOOKUPS {
            tokio::task::yield_now().await;
        }
        let recheck = {
            let (keys, key) = (Arc::clone(&keys), key.clone());
            tokio::spawn(async move { keys.scope_of(&key).await })
        };
        for _ in 0..1000 {
            if lookups(&store) == 2 + MAX_LOOKUPS {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            lookups(&store),
            2 + MAX_LOOKUPS,
            "the re-check reached the store while the flood holds every slot"
        );
        // Let the queries at the gate through: the flood's two and the re-check.
        store.lookup_gate.add_permits(MAX_LOOKUPS + 1);
        assert!(recheck.await.unwrap().unwrap().is_some());
        open(&store);
        for lookup in flood {
            assert!(lookup.await.unwrap().unwrap().is_none());
        }
    }

    /// A key revoked by another process (a replica, the CLI) stops working here once its
    /// cached entry expires; one revoked through this process, at once.
    #[tokio::test]
    async fn a_revoked_key_stops_working_within_the_interval_or_at_once() {
        let (store, keys, key, _dir) = gated(KNOWN_FOR, UNKNOWN_FOR).await;
        open(&store);
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        store
            .revoke_api_key(&hash(&key), UnixSeconds::new(1))
            .await
            .unwrap()
            .expect("stored");
        tokio::time::sleep(KNOWN_FOR + Duration::from_millis(50)).await;
        assert!(
            keys.scope_of(&key).await.unwrap().is_none(),
            "refused once the cached answer expired"
        );

        let other = keys
            .create(Scope::Admin, Some("second"), UnixSeconds::new(2))
            .await
            .unwrap();
        assert!(keys.scope_of(&other).await.unwrap().is_some());
        let before = lookups(&store);
        let revoked = keys
            .revoke(&hash(&other), UnixSeconds::new(3))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(revoked.revoked_at, Some(UnixSeconds::new(3)));
        assert!(keys.scope_of(&other).await.unwrap().is_none(), "at once");
        assert_eq!(lookups(&store), before, "answered from the cache");
        // Revoking again keeps the first time; an unknown digest is `None`.
        let again = keys.revoke(&hash(&other), UnixSeconds::new(9)).await;
        assert_eq!(
            again.unwrap().unwrap().revoked_at,
            Some(UnixSeconds::new(3))
        );
        assert!(
            keys.revoke(&[7; 32], UnixSeconds::new(9))
                .await
                .unwrap()
                .is_none()
        );
        let listed = keys.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|k| k.revoked_at.is_some()));
    }

    /// A key that was refused, then stored through this process, works at once: its cached
    /// miss is dropped.
    #[tokio::test]
    async fn a_key_created_here_works_at_once() {
        let (store, keys, _key, _dir) = gated(LONG, LONG).await;
        open(&store);
        let secret = generate().unwrap();
        assert!(keys.scope_of(&secret).await.unwrap().is_none());
        // Stored by another process: still refused from the cache, for `UNKNOWN_FOR`.
        store
            .insert_api_key(&hash(&secret), Scope::Introspect, None, UnixSeconds::new(1))
            .await
            .unwrap();
        assert!(keys.scope_of(&secret).await.unwrap().is_none());
        // What `ApiKeys::create` does after storing its key.
        keys.changed(&hash(&secret), None);
        let (scope, _) = keys.scope_of(&secret).await.unwrap().expect("works");
        assert_eq!(scope, Scope::Introspect);
        let created = keys
            .create(Scope::Subscribe, None, UnixSeconds::new(2))
            .await;
        assert!(keys.scope_of(&created.unwrap()).await.unwrap().is_some());
    }

    /// While the store cannot answer, a key whose cached answer expired is refused with an
    /// error (503), whatever its scope: never served on an old answer.
    #[tokio::test]
    async fn a_store_outage_fails_closed() {
        let (store, keys, key, _dir) = gated(Duration::from_millis(100), LONG).await;
        open(&store);
        assert!(keys.scope_of(&key).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.lookup_gate.close();
        assert!(keys.scope_of(&key).await.is_err());
        let counted = keys
            .metrics
            .api_key_lookups
            .get_or_create(&vec![("outcome", "error")])
            .get();
        assert_eq!(counted, 1);
    }

    /// Streams watching one key share one checking task; a revocation by another process
    /// ends them all once a re-check reads it, and the task is gone with them.
    #[tokio::test]
    async fn streams_of_one_key_share_one_check_and_end_on_revocation() {
        let (store, mut keys, key, _dir) = gated(Duration::from_millis(20), LONG).await;
        keys.recheck_every = Duration::from_millis(20);
        open(&store);
        let keys = Arc::new(keys);
        let digest = KeyDigest(hash(&key));
        let mut streams: Vec<_> = (0..1000).map(|_| keys.watch(digest)).collect();
        assert_eq!(keys.watchers.keys_watched(), 1, "one task for 1000 streams");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let checks = lookups(&store);
        assert!(checks < 20, "{checks} store queries in 200 ms");
        store
            .revoke_api_key(&digest.0, UnixSeconds::new(1))
            .await
            .unwrap()
            .expect("stored");
        for stream in &mut streams {
            let verdict = tokio::time::timeout(Duration::from_secs(5), stream.ended()).await;
            assert_eq!(verdict.expect("ended"), Verdict::Revoked);
        }
        assert_eq!(keys.watchers.keys_watched(), 0);
    }

    /// A revocation through this process ends the key's streams at once; other keys' run on.
    /// A key whose streams all went is no longer checked.
    #[tokio::test]
    async fn a_revocation_here_ends_streams_at_once_and_unwatched_keys_are_dropped() {
        let (store, keys, key, _dir) = gated(LONG, LONG).await;
        open(&store);
        let keys = Arc::new(keys);
        let other = keys
            .create(Scope::Subscribe, None, UnixSeconds::new(1))
            .await
            .unwrap();
        let mut revoked = keys.watch(KeyDigest(hash(&key)));
        let mut running = keys.watch(KeyDigest(hash(&other)));
        assert_eq!(keys.watchers.keys_watched(), 2);
        keys.revoke(&hash(&key), UnixSeconds::new(2))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(revoked.ended().await, Verdict::Revoked, "at once");
        let still = tokio::time::timeout(Duration::from_millis(100), running.ended()).await;
        assert!(still.is_err(), "the other key's stream runs on");
        drop((revoked, running));
        for _ in 0..1000 {
            if keys.watchers.keys_watched() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(keys.watchers.keys_watched(), 0, "nothing left to check");
    }

    /// While the store cannot answer, open streams run on; once their key has gone
    /// unverified for `unverified_for`, they end.
    #[tokio::test]
    async fn a_store_outage_ends_streams_only_after_the_staleness_bound() {
        let (store, mut keys, key, _dir) = gated(Duration::from_millis(10), LONG).await;
        (keys.recheck_every, keys.unverified_for) =
            (Duration::from_millis(20), Duration::from_millis(400));
        open(&store);
        let keys = Arc::new(keys);
        let mut stream = keys.watch(KeyDigest(hash(&key)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        store.lookup_gate.close();
        let early = tokio::time::timeout(Duration::from_millis(200), stream.ended()).await;
        assert!(early.is_err(), "a failing check alone ends nothing");
        let verdict = tokio::time::timeout(Duration::from_secs(5), stream.ended()).await;
        assert_eq!(verdict.expect("ended"), Verdict::Unverifiable);
    }

    #[test]
    fn ids_name_keys_by_whole_id_or_unique_prefix() {
        let record = |hash: [u8; 32]| ApiKeyRecord {
            hash,
            scope: Scope::Admin,
            label: None,
            created_at: UnixSeconds::new(0),
            revoked_at: None,
        };
        let mut last_differs = [0; 32];
        last_differs[31] = 1;
        // The first two share every character of their ids but the last.
        let keys = [record([0; 32]), record(last_differs), record([1; 32])];
        let id = id_of(&keys[2].hash);
        assert_eq!(parse_id(&id), Some([1; 32]));
        assert!(matches!(find(&keys, &id), Found::One(k) if k.hash == [1; 32]));
        assert!(matches!(find(&keys, &id[..10]), Found::One(k) if k.hash == [1; 32]));
        assert!(matches!(find(&keys, &id_of(&[0; 32])), Found::One(k) if k.hash == [0; 32]));
        assert!(matches!(find(&keys, "AAAAAA"), Found::Ambiguous(2)));
        assert!(matches!(find(&keys, "AQEBAQ"), Found::One(k) if k.hash == [1; 32]));
        assert!(matches!(find(&keys, "AQEBA"), Found::TooShort));
        assert!(matches!(find(&keys, ""), Found::TooShort));
        assert!(matches!(find(&keys, "zzzzzzzz"), Found::None));
        assert!(matches!(find(&keys, &id_of(&[9; 32])), Found::None));
        assert_eq!(parse_id("not an id"), None);
        assert_eq!(active_admin_keys(&keys), 3);
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
