//! Shared harness for the cross-crate integration tests: an in-process authority on
//! 127.0.0.1:0 with its own temporary data directory, and raw stream clients that speak the
//! wire protocol the way a third-party subscriber would.

pub mod interop;
pub mod postgres;
pub mod proxy;
pub mod stream_client;
pub mod tamper;

use std::future::Future;
use std::time::Duration;

use revocast_authority::config::DatabaseUrl;
use revocast_authority::{Authority, Config, Handle, Scope};
use revocast_shared::{Epoch, KeyId};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Upper bound for anything a test waits for: generous, because CI machines stall.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Poll `condition` until it holds, panicking with `what` after [`PATIENCE`].
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `e` and its sources, joined by `": "`: what a test matches an error's words against.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A running authority; it shuts down gracefully when dropped.
pub struct TestAuthority {
    pub base: String,
    pub admin_key: String,
    pub subscriber_key: String,
    /// The authority in-process: its head, epoch and active key, and what needs no HTTP.
    pub handle: Handle,
    pub http: reqwest::Client,
    pub addr: std::net::SocketAddr,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    served: Option<Served>,
    _dir: tempfile::TempDir,
}

impl TestAuthority {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start with the test defaults adjusted by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_data_dir(dir.path());
        configure(&mut config);
        let mut a = Self::start_in(dir, config).await;
        (a.admin_key, a.subscriber_key) = a.key_files().expect("key files");
        a
    }

    /// The `admin.key` and `subscriber.key` this authority wrote, if it did.
    fn key_files(&self) -> Option<(String, String)> {
        let read = |f: &str| {
            std::fs::read_to_string(self._dir.path().join(f))
                .ok()
                .map(|k| k.trim().to_string())
        };
        Some((read("admin.key")?, read("subscriber.key")?))
    }

    /// Start `n` replicas on the PostgreSQL database `db` at once — so they race to initialise
    /// it — each with its own data directory and the test defaults adjusted by `configure`.
    /// Exactly one of them must have written the API key files; all get its keys.
    pub async fn start_replicas(
        db: &postgres::TestDatabase,
        n: usize,
        configure: impl Fn(&mut Config),
    ) -> Vec<Self> {
        let url = Some(DatabaseUrl::parse(&db.url).expect("database URL"));
        let starts = (0..n).map(|_| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = Config::for_data_dir(dir.path());
            config.database_url = url.clone();
            configure(&mut config);
            Self::start_in(dir, config)
        });
        let mut replicas = futures_util::future::join_all(starts).await;
        let keys: Vec<(String, String)> = replicas.iter().filter_map(Self::key_files).collect();
        assert_eq!(keys.len(), 1, "exactly one replica writes the key files");
        for r in &mut replicas {
            (r.admin_key, r.subscriber_key) = keys[0].clone();
        }
        replicas
    }

    /// Start another replica of `peer`'s database (as `configure` sets it up), with `peer`'s
    /// API keys.
    pub async fn start_with_keys(
        peer: &TestAuthority,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_data_dir(dir.path());
        config.database_url = peer.config.database_url.clone();
        configure(&mut config);
        let mut a = Self::start_in(dir, config).await;
        a.admin_key = peer.admin_key.clone();
        a.subscriber_key = peer.subscriber_key.clone();
        a
    }

    async fn start_in(dir: tempfile::TempDir, config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (handle, stop, served) = serve(config.clone(), listener).await;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Self {
            admin_key: String::new(),
            subscriber_key: String::new(),
            base: format!("{scheme}://{addr}"),
            handle,
            http: reqwest::Client::new(),
            addr,
            config,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    /// Stop gracefully (as on SIGTERM) and wait until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("serve task").expect("authority serves");
        }
    }

    /// Wait (at most [`PATIENCE`]) until the authority stops by itself, and return the error
    /// it stopped with, with its sources; panics if it stopped cleanly.
    pub async fn stops_with_error(&mut self) -> String {
        let served = self.served.take().expect("the authority is serving");
        let stopped = tokio::time::timeout(PATIENCE, served)
            .await
            .expect("the authority stops by itself")
            .expect("serve task");
        error_chain(&stopped.expect_err("the authority stops with an error"))
    }

    /// Stop, then start again on the same address and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the same address");
        let (handle, stop, served) = serve(self.config.clone(), listener).await;
        self.handle = handle;
        self.stop = Some(stop);
        self.served = Some(served);
    }

    /// Stop, then start again on the same address and data directory with the configuration
    /// adjusted by `configure`, as an operator restarts with other flags.
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut Config)) {
        configure(&mut self.config);
        self.restart().await;
    }

    /// POST `body` with the admin key and return the JSON answer; panics unless 2xx.
    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let answer: Value = resp.json().await.expect("JSON answer");
        assert!(status.is_success(), "{path} → {status}: {answer}");
        answer
    }

    /// POST `body` with the admin key: the status and the JSON answer (`null` if none), for
    /// tests that check refusals too.
    pub async fn try_admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .timeout(PATIENCE)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET `path` with the admin key and return the JSON answer; panics unless 2xx.
    pub async fn admin_get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let answer: Value = resp.json().await.expect("JSON answer");
        assert!(status.is_success(), "{path} → {status}: {answer}");
        answer
    }

    /// Revoke session `sid`; returns its `seq`.
    pub async fn revoke_session(&self, sid: &str) -> u64 {
        self.admin_post("/v1/revoke/session", json!({ "sid": sid }))
            .await["seq"]
            .as_u64()
            .expect("seq")
    }

    /// Issue a token for `sub`; returns the answer (`token`, `rid`, `exp`, …).
    pub async fn issue(&self, sub: &str, ttl: u64) -> Value {
        self.admin_post("/v1/tokens", json!({ "sub": sub, "ttl": ttl }))
            .await
    }

    /// `GET /v1/snapshot` with the subscriber key.
    pub async fn snapshot(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/v1/snapshot", self.base))
            .bearer_auth(&self.subscriber_key)
            .send()
            .await
            .expect("snapshot request");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("snapshot JSON")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the series `name` in `/metrics`, labels included as they are printed
    /// (`revocast_log_floor`, `revocast_stream_subscribers{transport="sse"}`); 0 while it has
    /// no sample (a labelled series appears on its first change).
    pub async fn metric(&self, name: &str) -> i64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |value| value.trim().parse().expect("an integer metric"))
    }

    /// A new API key of `scope`.
    pub async fn create_key(&self, scope: Scope) -> String {
        self.handle
            .create_api_key(scope, None)
            .await
            .expect("create key")
            .to_string()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn head(&self) -> u64 {
        self.handle.head().get()
    }

    pub fn epoch(&self) -> Epoch {
        self.handle.epoch()
    }

    pub fn active_kid(&self) -> KeyId {
        self.handle.active_kid()
    }
}

type Served = tokio::task::JoinHandle<Result<(), revocast_authority::Error>>;

async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
) -> (Handle, oneshot::Sender<()>, Served) {
    let authority = Authority::open(config).await.expect("authority opens");
    let handle = authority.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        authority
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (handle, stop, served)
}
