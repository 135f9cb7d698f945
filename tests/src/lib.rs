//! Shared harness for the cross-crate integration tests: an in-process authority on
//! 127.0.0.1:0 with its own temporary data directory.

use revocast_authority::{AppState, Authority, Config};
use tokio::sync::oneshot;

/// A running authority; it shuts down gracefully when dropped.
pub struct TestAuthority {
    pub base: String,
    pub admin_key: String,
    pub subscriber_key: String,
    pub app: AppState,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl TestAuthority {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let authority = Authority::open(Config::for_data_dir(dir.path()))
            .await
            .expect("authority opens");
        let app = AppState::clone(authority.state());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(authority.serve(listener, async move {
            let _ = stopped.await;
        }));
        let read = |f: &str| {
            std::fs::read_to_string(dir.path().join(f))
                .expect("key file")
                .trim()
                .to_string()
        };
        Self {
            admin_key: read("admin.key"),
            subscriber_key: read("subscriber.key"),
            base,
            app,
            _stop: stop,
            _dir: dir,
        }
    }
}
