//! Every connection comes through here: an accept loop of our own (axum's `serve` cannot
//! configure hyper), so that no peer can hold the authority's connections, descriptors or
//! tasks by being slow or silent.
//!
//! - **Caps.** At most `--max-connections` connections at once, and `--max-connections-per-ip`
//!   from one source address. Over a cap a connection is accepted and closed at once — no TLS
//!   handshake, no task — and counted (`revocast_connections_refused_total{reason}`). A
//!   connection holds its place from accept until its socket closes: TLS handshakes in
//!   progress and long-lived streams (SSE, and WebSocket after the upgrade) count too.
//! - **Timeouts.** A TLS handshake must finish within [`HANDSHAKE_TIMEOUT`]; a request's
//!   headers within `--header-read-timeout` of its first byte (of the connection, for the
//!   first request), and its body may pause no longer than that; between two requests a
//!   keep-alive connection may stay silent for `--idle-timeout`. While a response is in
//!   flight — a stream's above all — neither runs: a stream is bounded by its heartbeats and
//!   the write timeout instead.
//! - **Writes.** TCP_NODELAY (stream events are small and latency-bound; Nagle would hold them
//!   back) and a write timeout: a peer that stops reading cannot pin a connection, its task
//!   and its buffers forever.
//! - **Descriptors.** [`fit_to_descriptor_limit`] lifts `RLIMIT_NOFILE` to its hard limit at
//!   start, and lowers the caps if they still do not fit under it: the caps, not the
//!   descriptor table, must be what runs out first.
//!
//! Graceful shutdown as axum's: stop accepting, let every connection finish the request it
//! is serving (streams end when the hub closes), then return.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// A TLS handshake that has not finished within this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors kept for everything but connections (the store, the listener, the runtime,
/// logs) when checking `--max-connections` against `RLIMIT_NOFILE`.
pub const DESCRIPTOR_HEADROOM: u64 = 256;

type Tcp = Pin<Box<TimeoutStream<TcpStream>>>;

/// What the listener enforces (from [`Config`](crate::Config)).
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub write_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Accept and serve connections on `listener` until `shutdown` resolves; then stop accepting,
/// let each connection finish what it is serving, and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    settings: ListenerSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        admission: Admission::new(&settings, &metrics),
        router,
        tls: tls.map(TlsAcceptor::from),
        settings,
        metrics,
    });
    // Connections watch `signal` to begin their graceful shutdown; each holds a `done`
    // receiver until it ends, which is what the end of this function waits for.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The peer gave up during the TCP handshake: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => continue,
                // Out of file descriptors or similar: back off instead of spinning.
                Err(e) => {
                    tracing::error!(error = &e as &dyn std::error::Error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        // Over a cap: closed here, before any handshake or task (counted by `admit`).
        let Some(place) = shared.admission.admit(addr.ip()) else {
            drop(stream);
            continue;
        };
        tokio::spawn(Arc::clone(&shared).connection(
            stream,
            addr,
            place,
            signal_tx.clone(),
            done_rx.clone(),
        ));
    }
    drop(done_rx);
    drop(listener);
    done_tx.closed().await;
}

/// What every connection task shares.
struct Shared {
    admission: Admission,
    router: Router,
    tls: Option<TlsAcceptor>,
    settings: ListenerSettings,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// One connection, from the accepted socket to its end (or its upgrade to a WebSocket,
    /// which then owns the socket, and `place` with it).
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        place: Place,
        signal: watch::Sender<()>,
        done: watch::Receiver<()>,
    ) {
        let io = self.tune(stream);
        let conn = match &self.tls {
            None => Conn::Plain(io),
            Some(acceptor) => {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io));
                tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(tls)) => Conn::Tls(Box::pin(tls)),
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = &e as &dyn std::error::Error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            self.metrics.count_connection_timeout("handshake");
                            return;
                        }
                    },
                    // Shutting down: a handshake in progress has no request to finish.
                    () = signal.closed() => return,
                }
            }
        };
        let peer = Peer {
            addr,
            client_cert: conn.has_client_cert(),
        };
        let activity = Arc::new(Activity::new(Instant::now()));
        let io = Tracked {
            conn,
            activity: Arc::clone(&activity),
            _place: place,
        };
        let service = ConnService {
            router: self.router.clone(),
            peer,
            activity: Arc::clone(&activity),
            body_pause: self.settings.header_read_timeout,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Our own timers below decide; hyper's (which starts when it waits for a request and
        // would default to 30s once a timer is set) is only a backstop for what ours cannot
        // see, such as the partial next request of a pipelining client.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.idle_timeout + self.settings.header_read_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let mut shutting_down = false;
        // Often enough to notice a first byte (which may bring the deadline forward) in time.
        let recheck = self
            .settings
            .idle_timeout
            .min(self.settings.header_read_timeout);
        let mut check_at = Instant::now() + recheck;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%addr, error = &e as &dyn std::error::Error, "connection ended with an error");
                    }
                    break;
                }
                () = signal.closed(), if !shutting_down => {
                    // Finish the request in flight, then close; an idle connection closes now.
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                () = tokio::time::sleep_until(check_at) => {
                    let now = Instant::now();
                    match activity.deadline(&self.settings) {
                        Some((deadline, phase)) if deadline <= now => {
                            tracing::debug!(%addr, phase, "connection timed out");
                            self.metrics.count_connection_timeout(phase);
                            // Nothing is in flight: dropping the connection loses no answer.
                            break;
                        }
                        Some((deadline, _)) => check_at = deadline.min(now + recheck),
                        None => check_at = now + recheck,
                    }
                }
            }
        }
        drop(done);
    }

    fn tune(&self, stream: TcpStream) -> Tcp {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(
                error = &e as &dyn std::error::Error,
                "cannot set TCP_NODELAY"
            );
        }
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(self.settings.write_timeout));
        Box::pin(io)
    }
}

/// The connection caps: open connections in all and per source address.
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
    open: Gauge,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    fn new(settings: &ListenerSettings, metrics: &Arc<Metrics>) -> Self {
        Self {
            max_total: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip,
            counts: Arc::default(),
            open: metrics.connections_open.clone(),
            metrics: Arc::clone(metrics),
        }
    }

    /// A place for a connection from `ip`, or `None` (counted) if a cap is reached.
    fn admit(&self, ip: IpAddr) -> Option<Place> {
        // An IPv4 client on a dual-stack socket is the same address as over IPv4.
        let ip = ip.to_canonical();
        let mut counts = lock(&self.counts);
        let reason = if counts.total >= self.max_total {
            "max_connections"
        } else {
            let from_ip = counts.per_ip.entry(ip).or_default();
            if *from_ip < self.max_per_ip {
                *from_ip += 1;
                counts.total += 1;
                self.open.inc();
                return Some(Place {
                    counts: Arc::clone(&self.counts),
                    open: self.open.clone(),
                    ip,
                });
            }
            "max_connections_per_ip"
        };
        drop(counts);
        self.metrics.count_connection_refused(reason);
        None
    }
}

/// A connection's place under the caps, given back when it is dropped (with the socket).
struct Place {
    counts: Arc<Mutex<Counts>>,
    open: Gauge,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        self.open.dec();
    }
}

/// The lock cannot be poisoned in a way that matters: every critical section only adjusts
/// counters, so the data is consistent even after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection is doing, for its timeouts: requests in flight, and since when it has
/// waited for a request (with or without having received some of it).
struct Activity(Mutex<ActivityState>);

struct ActivityState {
    /// Requests whose response has not been written in full.
    in_flight: usize,
    /// When the last response ended (or the connection began).
    idle_since: Instant,
    /// When the request now awaited sent its first byte: from then on its headers are due.
    /// A new connection counts as having started its first request.
    started: Option<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self(Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: now,
            started: Some(now),
        }))
    }

    /// Bytes arrived: if no request is being served, the next one has begun.
    fn read(&self) {
        let mut state = lock(&self.0);
        if state.in_flight == 0 && state.started.is_none() {
            state.started = Some(Instant::now());
        }
    }

    /// A request's headers are complete: the time limits stop until its response is done.
    fn request(self: &Arc<Self>) -> InFlight {
        let mut state = lock(&self.0);
        state.in_flight += 1;
        state.started = None;
        InFlight(Arc::clone(self))
    }

    /// When the connection times out unless something happens, and which timeout that is;
    /// `None` while a request is being served.
    fn deadline(&self, settings: &ListenerSettings) -> Option<(Instant, &'static str)> {
        let state = lock(&self.0);
        if state.in_flight > 0 {
            None
        } else if let Some(started) = state.started {
            Some((started + settings.header_read_timeout, "headers"))
        } else {
            Some((state.idle_since + settings.idle_timeout, "idle"))
        }
    }
}

/// One request being served; dropped with its response body (written, or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&(self.0).0);
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.started = None;
        }
    }
}

/// The router for one connection: tells handlers about the connection ([`Peer`], through
/// `ConnectInfo`) and the timers when a request is in flight.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: Peer,
    activity: Arc<Activity>,
    /// The longest a request body may pause (`--header-read-timeout`).
    body_pause: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let pause = self.body_pause;
        let request = request.map(|body| {
            if hyper::body::Body::is_end_stream(&body) {
                axum::body::Body::new(body)
            } else {
                axum::body::Body::new(TimedBody::new(body, pause))
            }
        });
        let answer = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request body that must keep coming: a pause longer than `pause` before its first piece
/// or between two ends it with an error (the handler answers 400, and the connection, its
/// body unread, closes). While a request is in flight the connection's own timers stop, so
/// without this a client could hold its connection by trickling, or never sending, a body.
struct TimedBody {
    body: Incoming,
    pause: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(body: Incoming, pause: Duration) -> Self {
        Self {
            body,
            pause,
            deadline: Box::pin(tokio::time::sleep(pause)),
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.pause;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|piece| piece.map_err(axum::Error::new)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body stopped coming",
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request in flight until it is written or dropped.
struct TrackedBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket with its place under the caps, telling its timers when bytes
/// arrive. Survives a WebSocket upgrade (hyper hands it to the socket task).
struct Tracked {
    conn: Conn,
    activity: Arc<Activity>,
    _place: Place,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.conn).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

/// Raise the soft `RLIMIT_NOFILE` of this process to its hard limit and log the figures.
/// Returns the soft limit before and after (`None`: unlimited).
#[cfg(unix)]
pub fn raise_descriptor_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let after = if limit.current == limit.maximum {
        before
    } else {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.maximum,
            Err(e) => {
                tracing::warn!(
                    error = &io::Error::from(e) as &dyn std::error::Error,
                    soft = ?before,
                    hard = ?limit.maximum,
                    "cannot raise the open file limit to its hard limit"
                );
                before
            }
        }
    };
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    tracing::info!(
        before = %show(before),
        after = %show(after),
        "open file limit (RLIMIT_NOFILE)"
    );
    (before, after)
}

/// Raise the open file limit (see [`raise_descriptor_limit`]), and if `--max-connections`
/// plus `DESCRIPTOR_HEADROOM` (256 descriptors for the store, logs and files) does not fit
/// under it, warn and lower both caps to what fits, keeping their ratio: past the limit,
/// accepting would fail for every client instead of the caps refusing the excess — and one
/// address could take all there is.
#[cfg(unix)]
pub fn fit_to_descriptor_limit(config: &mut crate::Config) {
    let (_, Some(limit)) = raise_descriptor_limit() else {
        return;
    };
    let (max, per_ip) = fit_caps(limit, config.max_connections, config.max_connections_per_ip);
    if max < config.max_connections {
        tracing::warn!(
            limit,
            configured = config.max_connections,
            max_connections = max,
            max_connections_per_ip = per_ip,
            "--max-connections plus {DESCRIPTOR_HEADROOM} descriptors for the store and the \
             rest exceeds the open file limit: both connection caps lowered to fit; raise the \
             limit (LimitNOFILE=, ulimit -n) to serve more"
        );
        config.max_connections = max;
        config.max_connections_per_ip = per_ip;
    }
}

/// The connection caps (in all, per address) that fit under an open file limit of `limit`:
/// unchanged if they do, else the total what fits and the per-address cap lowered in the same
/// proportion.
fn fit_caps(limit: u64, max_connections: usize, per_ip: usize) -> (usize, usize) {
    let fits = usize::try_from(limit.saturating_sub(DESCRIPTOR_HEADROOM))
        .unwrap_or(usize::MAX)
        .max(1);
    if max_connections <= fits {
        return (max_connections, per_ip);
    }
    let scaled = (per_ip as u128 * fits as u128 / max_connections.max(1) as u128) as usize;
    (fits, scaled.clamp(1, fits))
}

/// An accepted connection: plain TCP, or TLS over it.
pub enum Conn {
    Plain(Tcp),
    Tls(Pin<Box<TlsStream<Tcp>>>),
}

impl Conn {
    /// Whether the peer presented a client certificate that the handshake verified.
    pub fn has_client_cert(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty()),
        }
    }
}

/// What the handlers may learn about the connection a request came on (as
/// `ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address, as the listener saw it (a proxy's, behind one).
    pub addr: SocketAddr,
    /// A client certificate was presented and verified against `--client-ca`.
    pub client_cert: bool,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => io.as_mut().poll_read(cx, buf),
            Conn::Tls(io) => io.as_mut().poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => io.as_mut().poll_write(cx, buf),
            Conn::Tls(io) => io.as_mut().poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => io.as_mut().poll_write_vectored(cx, bufs),
            Conn::Tls(io) => io.as_mut().poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => io.as_mut().poll_flush(cx),
            Conn::Tls(io) => io.as_mut().poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => io.as_mut().poll_shutdown(cx),
            Conn::Tls(io) => io.as_mut().poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_connections: usize, max_connections_per_ip: usize) -> ListenerSettings {
        ListenerSettings {
            write_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections,
            max_connections_per_ip,
        }
    }

    #[test]
    fn caps_refuse_per_address_then_in_all_and_places_come_back() {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(&settings(3, 2), &metrics);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "a third from one address");
        // The same address seen as IPv4-mapped IPv6 on a dual-stack socket.
        assert!(
            admission
                .admit("::ffff:192.0.2.1".parse().unwrap())
                .is_none()
        );
        let _third = admission.admit(b).unwrap();
        assert!(admission.admit(b).is_none(), "a fourth in all");
        assert_eq!(metrics.connections_open.get(), 3);
        drop(first);
        assert_eq!(metrics.connections_open.get(), 2);
        let _again = admission.admit(a).expect("the place came back");
        assert!(admission.admit(b).is_none(), "and only that one");
        let rendered = metrics.render();
        assert!(
            rendered.contains(
                r#"revocast_connections_refused_total{reason="max_connections_per_ip"} 2"#
            ) && rendered
                .contains(r#"revocast_connections_refused_total{reason="max_connections"} 2"#),
            "{rendered}"
        );
    }

    #[test]
    fn caps_that_do_not_fit_the_descriptor_limit_shrink_in_proportion() {
        assert_eq!(fit_caps(1_048_576, 16_384, 4_096), (16_384, 4_096));
        assert_eq!(fit_caps(16_384 + 256, 16_384, 4_096), (16_384, 4_096));
        assert_eq!(fit_caps(1_024, 16_384, 4_096), (768, 192));
        assert_eq!(fit_caps(100, 16_384, 4_096), (1, 1));
    }

    #[test]
    fn timers_run_only_while_no_request_is_in_flight() {
        let settings = settings(1, 1);
        let start = Instant::now();
        let activity = Arc::new(Activity::new(start));
        // A new connection: its first request's headers are due.
        let (deadline, phase) = activity.deadline(&settings).unwrap();
        assert_eq!(
            (deadline, phase),
            (start + settings.header_read_timeout, "headers")
        );
        let request = activity.request();
        assert!(
            activity.deadline(&settings).is_none(),
            "a request in flight"
        );
        // Bytes of a request body, or of a stream's client, start nothing.
        activity.read();
        assert!(activity.deadline(&settings).is_none());
        drop(request);
        let (_, phase) = activity.deadline(&settings).unwrap();
        assert_eq!(phase, "idle");
        activity.read();
        let (_, phase) = activity.deadline(&settings).unwrap();
        assert_eq!(phase, "headers");
    }
}
