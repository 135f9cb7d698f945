//! Assembling an authority: open the store, load the in-memory view, make sure a signing key
//! and the bootstrap API keys exist, start the ledger, and serve the router until shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use revocast_shared::{SigningKey, UnixMillis, Validation};
use tokio::net::TcpListener;

use crate::apikeys::{self, ApiKeys};
use crate::config::Config;
use crate::error::Error;
use crate::ledger::{Ledger, LedgerTask};
use crate::metrics::Metrics;
use crate::store::{Mutation, SqliteStore, Store};
use crate::view::View;

/// What every handler can reach.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub ledger: Ledger,
    pub view: Arc<View>,
    pub api_keys: ApiKeys,
    pub metrics: Arc<Metrics>,
    /// The authority's own verification policy: its issuer, no leeway (it is the clock).
    pub validation: Validation,
}

pub type AppState = Arc<App>;

/// A ready-to-serve authority.
pub struct Authority {
    app: AppState,
    ledger_task: LedgerTask,
}

impl Authority {
    /// Open (or create) the data directory and get everything ready to serve. No port is bound.
    pub async fn open(config: Config) -> Result<Self, Error> {
        create_data_dir(&config.data_dir)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir).await?);
        Self::with_store(config, store).await
    }

    /// Like [`open`](Self::open) on a store the caller opened (another backend, or a test's).
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, Error> {
        let now = UnixMillis::now();
        let mut loaded = store.load(now.as_secs()).await?;
        if !loaded.keys.iter().any(|k| k.active) {
            // First start (or every key revoked while down): create the signing key durably
            // before anything can be signed with it.
            let key = Arc::new(SigningKey::generate()?);
            store
                .commit(
                    now,
                    &[Mutation::AddKey {
                        key: Arc::clone(&key),
                    }],
                )
                .await?;
            tracing::info!(kid = %key.kid(), "generated signing key");
            loaded = store.load(now.as_secs()).await?;
        }
        apikeys::bootstrap(store.as_ref(), &config.data_dir, now.as_secs()).await?;

        let view = Arc::new(View::new(loaded, config.max_ttl_secs)?);
        let metrics = Arc::new(Metrics::new());
        metrics
            .head_seq
            .set(i64::try_from(view.head().get()).unwrap_or(i64::MAX));
        let (ledger, ledger_task) =
            Ledger::spawn(Arc::clone(&store), Arc::clone(&view), Arc::clone(&metrics));
        tracing::info!(epoch = %view.epoch(), head = %view.head(), kid = %view.active_kid(), "state loaded");
        let app = Arc::new(App {
            validation: Validation::new(0).issuer(config.issuer.clone()),
            api_keys: ApiKeys::new(Arc::clone(&store)),
            config,
            store,
            ledger,
            view,
            metrics,
        });
        Ok(Self { app, ledger_task })
    }

    pub fn state(&self) -> &AppState {
        &self.app
    }

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
        tracing::info!(%addr, "listening");
        let router = self.router();
        let purger = tokio::spawn(purge_expired(
            Arc::clone(&self.app.view),
            Arc::clone(&self.app.metrics),
        ));
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Io {
                what: "serving HTTP".into(),
                source,
            });
        purger.abort();
        self.ledger_task.stop().await;
        self.app.store.close().await;
        tracing::info!("stopped");
        served
    }
}

/// How often expired revocation entries are dropped from memory.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Drop in-memory revocation entries whose token `exp` or `until` has passed: no token they
/// could reject is still alive, so the set stays bounded by what is actually in force.
async fn purge_expired(view: Arc<View>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dropped = view.purge_expired(UnixMillis::now().as_secs());
        if dropped > 0 {
            tracing::debug!(dropped, "expired revocation entries dropped");
        }
        metrics
            .revocation_entries
            .set(i64::try_from(view.revocation_entries()).unwrap_or(i64::MAX));
    }
}

fn create_data_dir(dir: &std::path::Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Io {
        what: format!("cannot create data directory {}", dir.display()),
        source,
    })
}
