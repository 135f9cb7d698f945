//! A fault-injecting TCP proxy for tests: sits between an agent and an authority and, on
//! command, cuts every connection, resets them (RST), truncates them (the next chunk towards
//! the client is cut in half, then the connection closes: a frame or an HTTP body ends
//! mid-way), refuses new ones, stalls traffic (connections stay open but silent — the
//! nastiest failure, because nothing errors), or holds every chunk back a little longer each
//! second (bytes keep flowing, in order, but ever later: silence detection sees nothing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward traffic both ways.
    Forward = 0,
    /// Close new connections at once.
    Refuse = 1,
}

/// A delay that grows with time: a chunk the proxy reads at `t` is written at
/// `t + min(rate × (t - start), max)`, and never before the chunk read before it.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    start: Instant,
    rate: f64,
    max: Duration,
}

impl Ramp {
    fn delay_at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
            .mul_f64(self.rate)
            .min(self.max)
    }
}

struct State {
    target: Mutex<SocketAddr>,
    mode: AtomicU8,
    stalled: watch::Sender<bool>,
    /// `Some` while every chunk is held back (see [`FaultyProxy::delay_ramp`]).
    ramp: watch::Sender<Option<Ramp>>,
    /// Longest a chunk written towards the client was held, in milliseconds, since the ramp
    /// started.
    held_ms: AtomicU64,
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
            target: Mutex::new(target),
            mode: AtomicU8::new(Mode::Forward as u8),
            stalled: watch::channel(false).0,
            ramp: watch::channel(None).0,
            held_ms: AtomicU64::new(0),
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

    /// Send new connections to `target` from now on (open ones stay where they are).
    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap() = target;
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

    /// From now on, hold every chunk (both ways, on every connection) back for longer the
    /// later it arrives: `rate` seconds more per second, up to `max`. Order is kept, nothing
    /// is dropped, and the stream never falls silent — it just runs ever further behind.
    pub fn delay_ramp(&self, rate: f64, max: Duration) {
        self.state.held_ms.store(0, Ordering::SeqCst);
        self.state.ramp.send_replace(Some(Ramp {
            start: Instant::now(),
            rate,
            max,
        }));
    }

    /// Stop holding chunks back: what is held is written at once, the rest as it comes.
    pub fn end_delay(&self) {
        self.state.ramp.send_replace(None);
    }

    /// The longest any chunk written towards the client was held since the ramp started.
    pub fn held(&self) -> Duration {
        Duration::from_millis(self.state.held_ms.load(Ordering::SeqCst))
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
    let target = *state.target.lock().unwrap();
    let Ok(server) = TcpStream::connect(target).await else {
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
    let up = pump(&mut cr, &mut sw, &state, None);
    let down = pump(&mut sr, &mut cw, &state, Some(truncate));
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

/// Move bytes from `from` to `to`: one task-free reader that notes when each chunk arrived,
/// and a writer that holds it back as the delay ramp (if any) says, honours stalls, and
/// truncates. `truncate` is given for the direction towards the client, which is also the
/// one whose hold times are recorded.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    state: &State,
    mut truncate: Option<watch::Receiver<u64>>,
) {
    // Small: a stalled writer soon stops the reader too, so the sender feels backpressure
    // much as through a plain TCP relay.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(16);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let towards_client = truncate.is_some();
    let write = async {
        let mut stalled = state.stalled.subscribe();
        let mut ramp = state.ramp.subscribe();
        while let Some((arrived, chunk)) = rx.recv().await {
            loop {
                let release = (*ramp.borrow_and_update()).map(|r| arrived + r.delay_at(arrived));
                match release {
                    Some(at) if at > Instant::now() => tokio::select! {
                        _ = tokio::time::sleep_until(at) => break,
                        changed = ramp.changed() => if changed.is_err() { return },
                    },
                    _ => break,
                }
            }
            while *stalled.borrow_and_update() {
                if stalled.changed().await.is_err() {
                    return;
                }
            }
            if truncate
                .as_mut()
                .is_some_and(|t| t.has_changed().unwrap_or(false))
            {
                let _ = to.write_all(&chunk[..chunk.len() / 2]).await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            if towards_client && state.ramp.borrow().is_some() {
                let held = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
                state.held_ms.fetch_max(held, Ordering::SeqCst);
            }
        }
    };
    // The writer decides when the direction is done: after a read error or end of stream it
    // still writes what was read before.
    tokio::select! {
        _ = write => {}
        _ = async { read.await; std::future::pending::<()>().await } => {}
    }
}
