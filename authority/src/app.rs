//! Assembling an authority: open the store, load the in-memory view, make sure a signing key
//! and the bootstrap API keys exist, start the ledger, and serve the router until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use revocast_shared::{Epoch, KeyId, Seq, SigningKey, UnixMillis, UnixSeconds, Validation};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::apikeys::{self, ApiKeys};
use crate::config::{Config, Scope};
use crate::datadir;
use crate::error::{Error, StoreError};
use crate::fleet::Fleet;
use crate::ledger::{Ledger, LedgerTask};
use crate::limit::Limits;
use crate::metrics::{Metrics, gauge_value};
use crate::net::{self, ListenerSettings};
use crate::slots::SnapshotSlots;
use crate::store::{
    self, Doorbell, InitKey, KeyInit, PgStore, Prune, Pruned, RevokeToken, SqliteStore, Store,
    TokenRevocation,
};
use crate::stream::Hub;
use crate::tail::{self, LogTail};
use crate::tlog::{self, Checkpointer, LeafCache, LogKeys};
use crate::view::View;

/// What every handler can reach.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ledger: Ledger,
    pub(crate) view: Arc<View>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) tail: Arc<LogTail>,
    pub(crate) api_keys: Arc<ApiKeys>,
    pub(crate) limits: Limits,
    /// Snapshot downloads in progress, per key (`--max-snapshots-per-key`).
    pub(crate) snapshot_slots: Arc<SnapshotSlots>,
    pub(crate) metrics: Arc<Metrics>,
    /// The subscribers connected here and what they acknowledged.
    pub(crate) fleet: Arc<Fleet>,
    /// The authority's own verification policy: its issuer, no leeway (it is the clock).
    pub(crate) validation: Validation,
    /// The transparency log: its checkpoints (and keys), and the leaves proofs are made of.
    pub(crate) checkpointer: Arc<Checkpointer>,
    pub(crate) leaves: Arc<LeafCache>,
}

pub(crate) type AppState = Arc<App>;

/// A ready-to-serve authority.
pub struct Authority {
    app: AppState,
    ledger_task: LedgerTask,
    /// Set on a shared database: other replicas commit too, and this one follows them.
    doorbell: Option<Box<dyn Doorbell>>,
}

impl Authority {
    /// Open (or create) the data directory and the store — the shared PostgreSQL database
    /// if configured, else the embedded SQLite file — and get everything ready to serve. No
    /// port is bound.
    pub async fn open(config: Config) -> Result<Self, Error> {
        datadir::prepare(&config.data_dir)?;
        let store = open_store(&config).await?;
        // SQLite created its files with the process umask: private now, whatever it was.
        datadir::make_private(&config.data_dir)?;
        Self::with_store(config, store).await
    }

    /// Like [`open`](Self::open) on a store the caller opened (another backend, or a test's).
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, Error> {
        let now = UnixMillis::now();
        // Before anything is served or signed: tokens of another issuer would be rejected by
        // the replicas, and restarts, that keep the recorded one.
        let stored = store.claim_issuer(&config.issuer).await?;
        if stored != config.issuer {
            return Err(Error::IssuerMismatch {
                stored,
                configured: config.issuer,
            });
        }
        // Every token lives at most the largest `--max-ttl` any start recorded: subject and
        // session revocations must outlive them, even after `--max-ttl` is lowered.
        let max_ttl = store.raise_max_ttl(config.max_ttl_secs).await?;
        if max_ttl > config.max_ttl_secs {
            tracing::info!(
                recorded = max_ttl,
                configured = config.max_ttl_secs,
                "an earlier start allowed longer-lived tokens; revocations are kept for the recorded max-ttl"
            );
        }
        let doorbell = store.doorbell().await?;
        let mut loaded = store.load(now.to_seconds()).await?;
        if !loaded.keys.iter().any(|k| k.active) {
            // First start: create the signing key durably before anything can be signed with
            // it. Replicas starting together race here; the store lets exactly one key in.
            let key = Arc::new(SigningKey::generate()?);
            if let KeyInit::Added(key) =
                store::commit_one(store.as_ref(), now, InitKey { key }).await?
            {
                tracing::info!(kid = %key.kid(), "generated signing key");
            }
            loaded = store.load(now.to_seconds()).await?;
        }
        apikeys::bootstrap(store.as_ref(), &config.data_dir, now.to_seconds()).await?;
        // The transparency log: before anything is served, the stored log must still be the
        // tree it signed (a row changed or deleted behind our back refuses the start).
        let origin = revocast_shared::tlog::origin(&config.issuer, &loaded.epoch)
            .map_err(|e| Error::Config(format!("the issuer cannot name the log: {e}")))?;
        // A superseded log key stays published as long as a token key would.
        let log_keys = Arc::new(
            LogKeys::load(
                store.as_ref(),
                now,
                Duration::from_secs(u64::try_from(max_ttl).unwrap_or(0)),
            )
            .await?,
        );
        tlog::audit::check(store.as_ref(), &origin, &log_keys).await?;

        let metrics = Arc::new(Metrics::new());
        metrics.head_seq.set(gauge_value(loaded.head.get()));
        // The hub owns the head from here on: it moves with the hub's ring.
        let hub = Arc::new(Hub::with_recent_capacity(
            loaded.epoch.clone(),
            loaded.head,
            config.subscriber_queue,
            config.stream_recent_events,
        ));
        let checkpointer = Arc::new(Checkpointer::new(
            Arc::clone(&store),
            log_keys,
            Arc::clone(&hub),
            origin,
        ));
        // The first checkpoint, so `/v1/checkpoint` and the first heartbeats have one.
        checkpointer.tick(config.heartbeat_interval).await?;
        let view = Arc::new(View::new(loaded, max_ttl)?);
        let fleet = Arc::new(Fleet::new(Arc::clone(&metrics)));
        let tail = Arc::new(
            LogTail::new(
                Arc::clone(&store),
                Arc::clone(&view),
                Arc::clone(&hub),
                Arc::clone(&metrics),
                doorbell.is_some(),
            )
            .with_fleet(Arc::clone(&fleet)),
        );
        let (ledger, ledger_task) = Ledger::spawn(
            Arc::clone(&store),
            Arc::clone(&view),
            Arc::clone(&tail),
            Arc::clone(&metrics),
        );
        tracing::info!(
            epoch = %view.epoch(),
            head = %hub.head(),
            kid = %view.active_kid(),
            crypto = revocast_shared::crypto::default_backend().name(),
            "state loaded"
        );
        let app = Arc::new(App {
            validation: Validation::new(0).issuer(config.issuer.clone()),
            api_keys: Arc::new(ApiKeys::new(Arc::clone(&store), Arc::clone(&metrics))),
            limits: Limits::new(config.rate_limit_tokens, config.rate_limit_revocations),
            snapshot_slots: SnapshotSlots::new(config.max_snapshots_per_key),
            config,
            store,
            ledger,
            view,
            hub,
            tail,
            metrics,
            fleet,
            checkpointer,
            leaves: Arc::new(LeafCache::default()),
        });
        Ok(Self {
            app,
            ledger_task,
            doorbell,
        })
    }

    /// A handle on this authority that stays usable after [`serve`](Self::serve) took it.
    pub fn handle(&self) -> Handle {
        Handle {
            app: Arc::clone(&self.app),
        }
    }

    /// The HTTP API as a router (for `oneshot` tests, say). Only [`serve`](Self::serve) adds
    /// the listener (TLS, client certificates, connection caps and timeouts) and the background tasks
    /// (heartbeats, expiry, following other replicas).
    pub fn router(&self) -> Router {
        crate::api::router(Arc::clone(&self.app))
    }

    /// Serve on `listener` until `shutdown` resolves, then finish in-flight requests, let the
    /// ledger commit what it accepted, and close the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "local address".into(),
            source,
        })?;
        let scheme = if self.app.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%addr, scheme, "listening");
        let router = self.router();
        let purger = tokio::spawn(purge_expired(Arc::clone(&self.app)));
        let heartbeats = tokio::spawn(heartbeat(Arc::clone(&self.app)));
        let checkpoints = tokio::spawn(
            Arc::clone(&self.app.checkpointer).run(self.app.config.heartbeat_interval),
        );
        let tracker = {
            let hub = Arc::clone(&self.app.hub);
            tokio::spawn(Arc::clone(&self.app.fleet).track(move || hub.head()))
        };
        // On a shared database, replicas share their fleets through it.
        let sharer = self.doorbell.is_some().then(|| {
            let hub = Arc::clone(&self.app.hub);
            tokio::spawn(
                Arc::clone(&self.app.fleet).share(Arc::clone(&self.app.store), move || hub.head()),
            )
        });
        let follower = self.doorbell.map(|bell| {
            tokio::spawn(tail::follow(
                Arc::clone(&self.app.tail),
                bell,
                self.app.config.database_poll_interval,
            ))
        });
        // The stored log audited again while serving: found tampered, the authority stops
        // (and its next start refuses, naming the same `seq`).
        let (tampered_tx, tampered_rx) = tokio::sync::oneshot::channel::<Error>();
        let auditor = {
            let app = Arc::clone(&self.app);
            tokio::spawn(async move {
                let checkpointer = &app.checkpointer;
                let found = tlog::audit::watch(
                    app.store.as_ref(),
                    checkpointer.origin(),
                    checkpointer.keys(),
                    app.config.log_audit_interval,
                )
                .await;
                let _ = tampered_tx.send(found);
            })
        };
        let tampered = Arc::new(std::sync::Mutex::new(None::<Error>));
        let hub = Arc::clone(&self.app.hub);
        let shutdown = {
            let tampered = Arc::clone(&tampered);
            async move {
                tokio::select! {
                    () = shutdown => {}
                    Ok(found) = tampered_rx => {
                        tracing::error!(error = %found, "stopping");
                        *tampered.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                    }
                }
                // Long-lived streams end once they have sent what was published, so the
                // graceful shutdown below does not wait for subscribers to leave by themselves.
                hub.close();
            }
        };
        let settings = ListenerSettings {
            write_timeout: self.app.config.write_timeout,
            header_read_timeout: self.app.config.header_read_timeout,
            idle_timeout: self.app.config.idle_timeout,
            max_connections: self.app.config.max_connections,
            max_connections_per_ip: self.app.config.max_connections_per_ip,
        };
        net::serve(
            listener,
            router,
            self.app.config.tls.clone(),
            settings,
            Arc::clone(&self.app.metrics),
            shutdown,
        )
        .await;
        purger.abort();
        heartbeats.abort();
        checkpoints.abort();
        auditor.abort();
        tracker.abort();
        if let Some(sharer) = sharer {
            sharer.abort();
        }
        if let Some(follower) = follower {
            follower.abort();
        }
        self.ledger_task.stop().await;
        self.app.store.close().await;
        tracing::info!("stopped");
        match tampered.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(found) => Err(found),
            None => Ok(()),
        }
    }
}

/// A cheap, cloneable handle on an authority, still usable after [`Authority::serve`] took
/// it: what an embedder reads to watch it (the head, the epoch, the active key — the same
/// values `/readyz` and `/v1/keys` answer) and the in-process operations that need no HTTP.
#[derive(Clone)]
pub struct Handle {
    app: AppState,
}

impl Handle {
    /// The `seq` of the last revocation this process applied (its stream's head).
    pub fn head(&self) -> Seq {
        self.app.hub.head()
    }

    /// The epoch of the log: `seq` values compare only within one epoch.
    pub fn epoch(&self) -> Epoch {
        self.app.view.epoch().clone()
    }

    /// The key id new tokens are signed with.
    pub fn active_kid(&self) -> KeyId {
        self.app.view.active_kid()
    }

    /// Create an API key of `scope` (what `revocast-authority create-key` does) and return its
    /// secret, the only copy: only its hash is stored.
    pub async fn create_api_key(
        &self,
        scope: Scope,
        label: Option<&str>,
    ) -> Result<Zeroizing<String>, Error> {
        // Through the cache, so that the key works here at once.
        self.app
            .api_keys
            .create(scope, label, UnixSeconds::now())
            .await
    }

    /// Revoke a token in-process: commit `revoke` through the single writer, in a group with
    /// concurrent commits, and publish it to the stream — what `POST /v1/revoke` does once it
    /// has authenticated the token. The caller vouches for `rid`, `sub` and `exp`; nothing here
    /// checks them against a token. (The benchmark preloads its revocations this way, to
    /// measure the commit path without HTTP.)
    pub async fn revoke_token(&self, revoke: RevokeToken) -> Result<TokenRevocation, StoreError> {
        self.app.ledger.submit(revoke).await
    }

    /// Prune the log now as the periodic purge does, but as if the time were `now` and the
    /// retention `retention`: lets tests reach the pruning without waiting for it.
    #[doc(hidden)]
    pub async fn prune_log_at(&self, now: UnixMillis, retention: Duration) {
        prune_log(&self.app, now, retention).await;
    }
}

/// How often expired entries are dropped from memory and the log is pruned.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);
/// Log rows deleted per prune commit, so a large cleanup never holds the writer for long.
const PRUNE_CHUNK: u32 = 5000;

/// Drop revocation entries whose token `exp` or `until` has passed — no token they could
/// reject is still alive — from memory, and from the log once they are also older than the
/// retention window. Everything stays bounded by what is in force plus the retention window.
async fn purge_expired(app: AppState) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = UnixMillis::now();
        app.limits.forget_idle();
        let dropped = app.tail.purge_expired(now.to_seconds());
        if dropped > 0 {
            tracing::debug!(dropped, "expired revocation entries dropped from memory");
        }
        prune_log(&app, now, app.config.log_retention).await;
    }
}

/// Prune the log through the ledger (the single writer), chunk by chunk: what was committed
/// more than `retention` before `now`, and has expired.
async fn prune_log(app: &App, now: UnixMillis, retention: Duration) {
    loop {
        let prune = Prune {
            floor_before: now.saturating_sub(retention),
            expired_by: now
                .to_seconds()
                .saturating_sub_secs(app.config.expiry_grace_secs),
            limit: PRUNE_CHUNK,
        };
        match app.ledger.submit(prune).await {
            Ok(Pruned {
                floor,
                deleted,
                refresh_tokens,
                refresh_sessions,
                revoked_sessions,
                more,
            }) => {
                if deleted > 0 {
                    tracing::debug!(deleted, %floor, "expired log rows pruned");
                }
                if refresh_tokens + refresh_sessions + revoked_sessions > 0 {
                    tracing::debug!(
                        refresh_tokens,
                        refresh_sessions,
                        revoked_sessions,
                        "ended refresh sessions pruned"
                    );
                }
                if !more {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "log pruning failed; retrying at the next tick"
                );
                return;
            }
        }
    }
}

/// Send a heartbeat with the head to every subscriber, every heartbeat interval — but only
/// while this process is sure its head is current (see [`LogTail::is_current`]): a replica
/// that cannot read the shared log falls silent, so its agents go stale and fail over instead
/// of trusting it.
async fn heartbeat(app: AppState) {
    let interval = app.config.heartbeat_interval;
    let current_within = tail::current_within(&app.config);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silent = false;
    loop {
        tick.tick().await;
        let current = app.tail.is_current(current_within);
        if current {
            let pacing = app.config.stream_pacing;
            app.hub.heartbeat(|fleet| pacing.ack_interval(fleet));
        }
        if current == silent {
            silent = !current;
            if silent {
                tracing::warn!("cannot read the shared log: heartbeats stop until it can");
            } else {
                tracing::info!("reading the shared log again: heartbeats resume");
            }
        }
    }
}

/// The store the configuration names, opened: the shared PostgreSQL database if
/// `database_url` is set, else the embedded SQLite file in `data_dir` (which must exist).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(PgStore::open(url.expose()).await?),
        None => Arc::new(SqliteStore::open(&config.data_dir).await?),
    })
}
