//! [`Agent`]: the handle a resource server holds. It starts the background tasks (sync, purge,
//! key refresh) and answers [`Agent::verify`] from local state alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revocast_shared::revset::RevocationSet;
use revocast_shared::{
    Epoch, Seq, UnixMillis, UnverifiedToken, Validation, VerifiedToken, VerifyError,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::VerdictCache;
use crate::config::{AgentConfig, OnStale};
use crate::error::{Error, Rejection};
use crate::metrics::{Metrics, gauge};
use crate::mirror::{Freshness, Mirror};
use crate::{sync, tls};

/// A verified token: its claims, `rid` and `kid`. Shared, because the verdict cache and every
/// caller of a cached token hold the same one.
pub type Verified = Arc<VerifiedToken>;

/// Longest a verify waits for a JWKS refresh triggered by an unknown `kid`.
const KEY_REFRESH_WAIT: Duration = Duration::from_secs(2);

/// Everything the agent's tasks and verifies share.
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub validation: Validation,
    pub http: reqwest::Client,
    /// For `wss` connections (the HTTP client has its own copy).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub mirror: Mirror,
    pub freshness: Freshness,
    pub cache: VerdictCache,
    pub metrics: Metrics,
    /// Index into `config.authorities` of the authority currently followed.
    pub current: AtomicUsize,
    /// Rung when a token names an unknown `kid`.
    pub keys_wanted: Notify,
    /// Bumped after every key refresh attempt, for verifies waiting on one.
    pub keys_refreshed: watch::Sender<u64>,
    /// When the last refresh triggered by an unknown `kid` started.
    pub last_key_refresh: Mutex<Option<Instant>>,
    /// The applied `seq`, published after every applied frame and every snapshot (a snapshot's
    /// after the agent is marked synced).
    pub applied: watch::Sender<Seq>,
}

impl Shared {
    /// Whether an unknown-`kid` JWKS refresh may start now (rate limit).
    pub fn key_refresh_allowed(&self) -> bool {
        let last = *self
            .last_key_refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.config.jwks_min_interval)
    }
}

/// Aborts the background tasks when the last [`Agent`] handle goes away.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A local verifier fed by the authority's revocation stream. Cheap to clone; the background
/// tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// Where the agent stands, for health checks and operators.
#[derive(Debug, Clone)]
pub struct Status {
    /// The first snapshot has been loaded.
    pub synced: bool,
    /// Synced, heard from the authority within `max_staleness`, and its newest time stamp
    /// held is within `max_staleness` + `max_clock_skew` of our clock (and not ahead of it by
    /// more than the skew).
    pub fresh: bool,
    /// Time since something last arrived while the copy was current.
    pub staleness: Option<Duration>,
    /// Our clock minus the newest authority time stamp held, in milliseconds (how far behind
    /// the copy may be); negative when the authority's clock is ahead. `None`: no stamp yet.
    pub authority_age_ms: Option<i64>,
    /// The authority's time stamp minus our clock when it arrived, in milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// The authority's clock runs ahead of ours by more than `max_clock_skew`: not fresh.
    pub clock_ahead: bool,
    pub max_staleness: Duration,
    pub max_clock_skew: Duration,
    pub epoch: Option<Epoch>,
    pub applied: Seq,
    pub head: Seq,
    /// Revocation entries held.
    pub entries: usize,
    pub keys: usize,
    /// The authority URL currently followed.
    pub authority: String,
    /// Stream connections lost or refused since start.
    pub reconnects: u64,
    /// Snapshots loaded since start (the first sync included).
    pub resyncs: u64,
    /// Revocation events applied from the stream since start (snapshots not counted).
    pub events_applied: u64,
    /// Whether the agent verifies the authority's transparency log (`verify_log`).
    pub verify_log: bool,
    /// The size (last `seq`) of the newest signed checkpoint verified against the events
    /// applied: everything up to it is exactly what the authority signed. `None` before the
    /// first, or when not verifying.
    pub log_verified: Option<Seq>,
}

impl Agent {
    /// Validate `config` and start syncing in the background (on the current tokio runtime).
    /// Verifies answer `unavailable` until the first snapshot is loaded; see
    /// [`wait_until_synced`](Self::wait_until_synced).
    pub fn start(config: AgentConfig) -> Result<Self, Error> {
        let config = config.validate()?;
        let mut validation = Validation::new(config.leeway_secs);
        if let Some(issuer) = &config.issuer {
            validation = validation.issuer(issuer.clone());
        }
        if let Some(audience) = &config.audience {
            validation = validation.audience(audience.clone());
        }
        // No total timeout on the client: the SSE stream lives for hours (the sync task's idle
        // timeout guards it). One-shot requests set their own.
        // Only built when needed: loading the system's roots costs milliseconds per agent.
        let tls = config
            .authorities
            .iter()
            .any(|url| url.starts_with("https://"))
            .then(|| tls::client_config(&config.tls))
            .transpose()?;
        let mut http = reqwest::Client::builder();
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = http
            .connect_timeout(config.request_timeout)
            .tcp_nodelay(true)
            // JWKS and snapshot requests come in a burst at (re)sync and then rarely: keep the
            // connection for the burst, not for reqwest's default 90 s, which would hold a
            // second socket per agent on both sides, doubling the file descriptors a large
            // fleet needs (BENCHMARKS.md, propagation at 10,000 agents).
            .pool_idle_timeout(Duration::from_secs(2))
            .build()?;
        let shared = Arc::new(Shared {
            cache: VerdictCache::new(config.verdict_cache_capacity),
            validation,
            http,
            tls,
            mirror: Mirror::default(),
            freshness: Freshness::default(),
            metrics: Metrics::new(),
            current: AtomicUsize::new(0),
            keys_wanted: Notify::new(),
            keys_refreshed: watch::channel(0).0,
            last_key_refresh: Mutex::new(None),
            applied: watch::channel(Seq::ZERO).0,
            config,
        });
        let tasks = vec![
            tokio::spawn(sync::run(Arc::clone(&shared))),
            tokio::spawn(purge(Arc::clone(&shared))),
            tokio::spawn(refresh_keys(Arc::clone(&shared))),
        ];
        Ok(Self {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// Verify `token` locally: signature (skipped for a token verified before), claims, and
    /// the revocation set (never skipped). Never blocks on the network; a token naming an
    /// unknown key triggers a background JWKS refresh and answers `unknown_key` — see
    /// [`verify_or_refresh_keys`](Self::verify_or_refresh_keys) to wait for it.
    pub fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        let verdict = self.check(token);
        self.count(&verdict);
        verdict
    }

    /// Like [`verify`](Self::verify), but on an unknown `kid` waits (briefly, rate-limited) for
    /// the JWKS to be refetched and tries again — so the first token signed after a key
    /// rotation is accepted. The tower layer and the sidecar use this.
    pub async fn verify_or_refresh_keys(&self, token: &str) -> Result<Verified, Rejection> {
        let mut verdict = self.check(token);
        if matches!(verdict, Err(Rejection::Invalid(VerifyError::UnknownKey)))
            && self.shared.key_refresh_allowed()
        {
            let mut refreshed = self.shared.keys_refreshed.subscribe();
            refreshed.mark_unchanged();
            self.shared.keys_wanted.notify_one();
            if tokio::time::timeout(KEY_REFRESH_WAIT, refreshed.changed())
                .await
                .is_ok()
            {
                verdict = self.check(token);
            }
        }
        self.count(&verdict);
        verdict
    }

    fn count(&self, verdict: &Result<Verified, Rejection>) {
        self.shared
            .metrics
            .count_verification(verdict.as_ref().err().map(|r| r.code()));
    }

    fn check(&self, token: &str) -> Result<Verified, Rejection> {
        let shared = &*self.shared;
        self.check_fresh()?;
        let now = UnixMillis::now().as_secs();
        if let Some(hit) = shared.cache.get(token) {
            // The signature is known good; time and revocation are checked every time.
            if hit.claims().exp <= now - i64::from(shared.config.leeway_secs) {
                return Err(VerifyError::Expired.into());
            }
            let state = shared.mirror.read();
            state.revset.check(&hit)?;
            // A verdict cached just before its key left (the cache is cleared then, but a
            // verify racing the removal may insert after the clear).
            if !state.keys.contains_key(&hit.kid()) {
                return Err(VerifyError::UnknownKey.into());
            }
            return Ok(hit);
        }
        let unverified = UnverifiedToken::parse(token)?;
        let key = {
            let state = shared.mirror.read();
            // A revoked key is no longer held, so its tokens cannot be verified: they are
            // revoked whatever their signature (and no JWKS fetch will bring the key back).
            if state.revset.is_key_revoked(&unverified.kid()) {
                return Err(VerifyError::Revoked.into());
            }
            state.keys.get(&unverified.kid()).cloned()
        };
        let Some(key) = key else {
            shared.keys_wanted.notify_one();
            return Err(VerifyError::UnknownKey.into());
        };
        let verified = Arc::new(unverified.verify(&key, &shared.validation, now)?);
        // Cached before the revocation check: a revoked token replayed again and again must
        // not cost a signature check each time. Revocation is re-checked on every hit.
        shared.cache.insert(token, Arc::clone(&verified), now);
        shared.mirror.read().revset.check(&verified)?;
        Ok(verified)
    }

    fn check_fresh(&self) -> Result<(), Rejection> {
        let shared = &*self.shared;
        if !shared.freshness.is_synced() {
            return Err(Rejection::Unavailable);
        }
        if shared
            .freshness
            .is_fresh(shared.config.max_staleness, shared.config.max_clock_skew)
        {
            return Ok(());
        }
        match shared.config.on_stale {
            OnStale::Reject => Err(Rejection::Unavailable),
            OnStale::Allow => {
                shared.metrics.stale_allowed.inc();
                tracing::warn!(staleness = ?shared.freshness.staleness(), "verifying against a stale revocation set (on_stale = allow)");
                Ok(())
            }
        }
    }

    pub fn status(&self) -> Status {
        let shared = &*self.shared;
        let state = shared.mirror.read();
        Status {
            synced: shared.freshness.is_synced(),
            fresh: shared
                .freshness
                .is_fresh(shared.config.max_staleness, shared.config.max_clock_skew),
            staleness: shared.freshness.staleness(),
            authority_age_ms: shared
                .freshness
                .authority_time()
                .map(|at| UnixMillis::now().as_millis().saturating_sub(at.as_millis())),
            clock_offset_ms: shared.freshness.offset(),
            clock_ahead: shared.freshness.is_ahead(),
            max_staleness: shared.config.max_staleness,
            max_clock_skew: shared.config.max_clock_skew,
            epoch: state.epoch.clone(),
            applied: state.applied,
            head: state.head,
            entries: state.revset.len(),
            keys: state.keys.len(),
            authority: shared.config.authorities[shared.current.load(Ordering::Relaxed)].clone(),
            reconnects: shared.metrics.reconnects.get(),
            resyncs: shared.metrics.resyncs.get(),
            events_applied: shared.metrics.events_applied.get(),
            verify_log: shared.config.verify_log,
            log_verified: u64::try_from(shared.metrics.log_verified_seq.get())
                .ok()
                .map(Seq::new),
        }
    }

    /// A copy of the revocation set as applied so far (for diagnostics and tests: it copies
    /// every entry).
    pub fn revocations(&self) -> RevocationSet {
        self.shared.mirror.read().revset.clone()
    }

    /// Wait until the first snapshot is loaded, up to `limit`; `false` on timeout.
    pub async fn wait_until_synced(&self, limit: Duration) -> bool {
        // Every snapshot is published on `applied` once the agent counts as synced, so a
        // change of `applied` is the moment to look again.
        let mut applied = self.shared.applied.subscribe();
        let synced = applied.wait_for(|_| self.shared.freshness.is_synced());
        // `Err` from `wait_for` would mean the sender is gone; `self.shared` holds it.
        matches!(tokio::time::timeout(limit, synced).await, Ok(Ok(_)))
    }

    /// The Prometheus text exposition of this agent's metrics.
    pub fn render_metrics(&self) -> String {
        let m = &self.shared.metrics;
        m.staleness_ms
            .set(self.shared.freshness.staleness().map_or(-1, |s| {
                gauge(u64::try_from(s.as_millis()).unwrap_or(u64::MAX))
            }));
        m.render()
    }

    /// Follow the applied `seq`: it changes after every frame of events applied and every
    /// snapshot loaded (it can go down after a resync to another log).
    pub fn watch_applied(&self) -> watch::Receiver<Seq> {
        self.shared.applied.subscribe()
    }

    /// Entries in the verdict cache.
    pub fn cached_verdicts(&self) -> usize {
        self.shared.cache.len()
    }
}

/// Drop expired revocation entries and cached verdicts every `purge_interval`.
async fn purge(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = UnixMillis::now().as_secs();
        // An entry must outlive its token's acceptance, which the leeway extends.
        let expired_by = now - i64::from(shared.config.leeway_secs);
        let entries = {
            let mut state = shared.mirror.write();
            state.revset.purge_expired(expired_by);
            state.revset.len()
        };
        shared.metrics.entries.set(gauge(entries as u64));
        shared.cache.purge_expired(expired_by);
    }
}

/// Refetch the JWKS when a verify meets an unknown `kid`, at most once per
/// `jwks_min_interval`, so garbage tokens cannot make the agent hammer the authority.
async fn refresh_keys(shared: Arc<Shared>) {
    loop {
        shared.keys_wanted.notified().await;
        if !shared.key_refresh_allowed() {
            continue;
        }
        *shared
            .last_key_refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        match sync::refresh_keys(&shared).await {
            Ok(added) if added > 0 => tracing::info!(added, "new signing keys from the JWKS"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "JWKS refresh failed"),
        }
        shared.keys_refreshed.send_modify(|n| *n += 1);
    }
}
