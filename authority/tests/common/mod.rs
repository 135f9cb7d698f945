//! What the authority's HTTP tests share: a real authority on `127.0.0.1:0` in a temporary
//! data directory, with the first-start API keys read back from their files.

use revocast_authority::{Authority, Config, Handle};
use tokio::sync::oneshot;

pub struct Server {
    pub base: String,
    pub admin: String,
    pub subscriber: String,
    pub http: reqwest::Client,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Serve a fresh authority until the `Server` is dropped; the `Handle` reaches it in-process.
pub async fn start() -> (Server, Handle) {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::open(Config::for_data_dir(dir.path()))
        .await
        .unwrap();
    let handle = authority.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(authority.serve(listener, async move {
        let _ = stopped.await;
    }));
    let read = |f: &str| {
        std::fs::read_to_string(dir.path().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let server = Server {
        admin: read("admin.key"),
        subscriber: read("subscriber.key"),
        base,
        http: reqwest::Client::new(),
        _stop: stop,
        _dir: dir,
    };
    (server, handle)
}
