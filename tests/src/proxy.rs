//! A fault-injecting TCP proxy for tests: sits between an agent and an authority and, on
//! command, cuts every connection, resets them (RST), truncates them (the next chunk towards
//! the client is cut in half, then the connection closes: a frame or an HTTP body ends
//! mid-way), refuses new ones, or stalls traffic (connections stay open but silent — the
//! nastiest failure, because nothing errors).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward traffic both ways.
    Forward = 0,
    /// Close new connections at once.
    Refuse = 1,
}

struct State {
    target: SocketAddr,
    mode: AtomicU8,
    stalled: watch::Sender<bool>,
    /// Bumped by [`FaultyProxy::truncate`] and [`FaultyProxy::reset`]; each open connection
    /// acts on a change it sees.
    truncate: watch::Sender<u64>,
    reset: watch::Sender<u64>,
    connections: Mutex<Vec<AbortHandle>>,
}

pub struct FaultyProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl FaultyProxy {
    /// Proxy from a new port on 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            target,
            mode: AtomicU8::new(Mode::Forward as u8),
            stalled: watch::channel(false).0,
            truncate: watch::channel(0).0,
            reset: watch::channel(0).0,
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if state.mode.load(Ordering::SeqCst) == Mode::Refuse as u8 {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(pipe(client, Arc::clone(&state)));
                    state.connections.lock().unwrap().push(task.abort_handle());
                }
            }
        })
        .abort_handle();
        Self {
            addr,
            state,
            accept,
        }
    }

    /// `http://ADDR`, for use as an authority URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drop every open connection (both sides see it close).
    pub fn cut(&self) {
        for c in self.state.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Stop (`true`) or resume (`false`) moving bytes on every connection, open or new.
    pub fn stall(&self, stalled: bool) {
        self.state.stalled.send_replace(stalled);
    }

    /// Every open connection forwards only half of its next chunk towards the client, then
    /// closes both sides.
    pub fn truncate(&self) {
        self.state.truncate.send_modify(|n| *n += 1);
    }

    /// Every open connection is aborted with a TCP RST on both sides.
    pub fn reset(&self) {
        self.state.reset.send_modify(|n| *n += 1);
    }
}

async fn pipe(client: TcpStream, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(state.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut reset = state.reset.subscribe();
    let mut truncate = state.truncate.subscribe();
    reset.mark_unchanged();
    truncate.mark_unchanged();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pump(&mut cr, &mut sw, state.stalled.subscribe(), None);
    let down = pump(&mut sr, &mut cw, state.stalled.subscribe(), Some(truncate));
    let reset_now = tokio::select! {
        _ = up => false,
        _ = down => false,
        changed = reset.changed() => changed.is_ok(),
    };
    if reset_now {
        let _ = cw.as_ref().set_zero_linger();
        let _ = sw.as_ref().set_zero_linger();
    }
}

async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut stalled: watch::Receiver<bool>,
    mut truncate: Option<watch::Receiver<u64>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        if truncate
            .as_mut()
            .is_some_and(|t| t.has_changed().unwrap_or(false))
        {
            let _ = to.write_all(&buf[..n / 2]).await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
