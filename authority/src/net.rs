//! The listener every connection comes through. It sets TCP_NODELAY (stream events are small
//! and latency-bound; Nagle would hold them back) and a write timeout, so a peer that stops
//! reading cannot pin a connection, its task and its buffers forever. With TLS configured it
//! also runs the handshakes — concurrently and each under a timeout, so a client that stalls
//! its handshake delays no one else's connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake that has not finished within this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, accepting waits (bounds their memory).
const MAX_HANDSHAKES: usize = 1024;

type Tcp = Pin<Box<TimeoutStream<TcpStream>>>;

pub struct TunedListener {
    inner: TcpListener,
    write_timeout: Duration,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(Conn, SocketAddr)>>,
}

impl TunedListener {
    pub fn new(
        inner: TcpListener,
        write_timeout: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        Self {
            inner,
            write_timeout,
            tls: tls.map(TlsAcceptor::from),
            handshakes: JoinSet::new(),
        }
    }

    fn tune(&self, stream: TcpStream) -> Tcp {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(
                error = &e as &dyn std::error::Error,
                "cannot set TCP_NODELAY"
            );
        }
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(self.write_timeout));
        Box::pin(io)
    }
}

impl axum::serve::Listener for TunedListener {
    type Io = Conn;
    type Addr = SocketAddr;

    // Cancel-safe, as axum needs: accepted sockets and finished handshakes wait in `self`.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.inner.accept(), if room => match accepted {
                    Ok((stream, addr)) => {
                        let io = self.tune(stream);
                        let Some(acceptor) = self.tls.clone() else {
                            return (Conn::Plain(io), addr);
                        };
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                                Ok(Ok(tls)) => Some((Conn::Tls(Box::pin(tls)), addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = &e as &dyn std::error::Error, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    // The peer gave up during the TCP handshake: nothing to do.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::ConnectionReset
                        ) => {}
                    // Out of file descriptors or similar: back off instead of spinning.
                    Err(e) => {
                        tracing::error!(error = &e as &dyn std::error::Error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
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

/// What the handlers may learn about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// A client certificate was presented and verified against `--client-ca`.
    pub client_cert: bool,
}

impl Connected<IncomingStream<'_, TunedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TunedListener>) -> Self {
        Peer {
            client_cert: stream.io().has_client_cert(),
        }
    }
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
