//! A tampering HTTP proxy for tests: sits between an agent and an authority, forwards every
//! request, and hands each Server-Sent Event of `/v1/events` to a [`Rewrite`], which may pass
//! it, change it, drop it, hold it, or add others — what an attacker on the path (a TLS
//! terminator, a relay, a mirror) could do to the stream. WebSocket upgrades are refused
//! (`404`), so an agent with `Transport::Auto` falls back to SSE; everything else (JWKS,
//! snapshot, acknowledgments) passes through unchanged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// One SSE event as the authority wrote it: its lines (`id: …`, `event: …`, `data: …`),
/// without the blank line that ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub lines: Vec<String>,
}

impl SseEvent {
    /// The `data` line's text: the JSON message.
    pub fn data(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("data: "))
    }

    /// The message parsed, for looking at (never re-encode it to forward it: that is a
    /// change of its bytes).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.data()?).ok()
    }

    /// The `seq` of a revocation event (`None` for control messages).
    pub fn event_seq(&self) -> Option<u64> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("id: "))
            .and_then(|id| id.parse().ok())
    }

    /// The message's `type`.
    pub fn kind(&self) -> Option<String> {
        Some(self.json()?.get("type")?.as_str()?.to_owned())
    }

    /// Replace the `data` line (and the `id` line, if `seq` is given) — the bytes the agent
    /// hashes.
    pub fn with_data(mut self, data: &str, seq: Option<u64>) -> Self {
        for line in &mut self.lines {
            if line.starts_with("data: ") {
                *line = format!("data: {data}");
            } else if let (Some(seq), true) = (seq, line.starts_with("id: ")) {
                *line = format!("id: {seq}");
            }
        }
        self
    }

    /// A revocation event of `kind` with `data`, as the authority frames one.
    pub fn event(seq: u64, kind: &str, data: &str) -> Self {
        Self {
            lines: vec![
                format!("id: {seq}"),
                format!("event: {kind}"),
                format!("data: {data}"),
            ],
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.lines.join("\n").into_bytes();
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// What the proxy does to the events it relays. One value serves every connection, in turn.
pub trait Rewrite: Send + 'static {
    /// What to send instead of `event`: itself for a pass-through, nothing to drop it (or to
    /// hold it back for later), several to add some.
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent>;
}

/// Pass everything through.
pub struct PassThrough;

impl Rewrite for PassThrough {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        vec![event]
    }
}

struct Shared {
    target: String,
    http: reqwest::Client,
    rewrite: Mutex<Box<dyn Rewrite>>,
}

pub struct TamperProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: AbortHandle,
}

impl Drop for TamperProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TamperProxy {
    /// Proxy from a new port on 127.0.0.1 to the authority at `target` (`http://…`).
    pub async fn start(target: &str, rewrite: impl Rewrite) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tamper proxy");
        let addr = listener.local_addr().expect("tamper proxy addr");
        let shared = Arc::new(Shared {
            target: target.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rewrite: Mutex::new(Box::new(rewrite)),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Self {
            addr,
            shared,
            server,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change what the proxy does from now on.
    pub fn set(&self, rewrite: impl Rewrite) {
        *self
            .shared
            .rewrite
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Box::new(rewrite);
    }
}

/// Request headers worth forwarding (hop-by-hop ones and `host` are the proxy's own).
const FORWARDED: [&str; 5] = [
    "authorization",
    "accept",
    "content-type",
    "last-event-id",
    "accept-encoding",
];

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.headers().contains_key("upgrade") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let events = request.uri().path() == "/v1/events";
    let method = request.method().clone();
    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = request.headers().get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), 1 << 20).await {
        Ok(body) => body,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let upstream = shared
        .http
        .request(method, format!("{}{path}", shared.target))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut response = axum::http::Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response = response.header(name, value);
        }
    }
    let body = if events && upstream.status().is_success() {
        rewritten(shared, upstream)
    } else {
        Body::from_stream(upstream.bytes_stream())
    };
    response
        .body(body)
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// The SSE body, event by event through the rewrite.
fn rewritten(shared: Arc<Shared>, upstream: reqwest::Response) -> Body {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut body = upstream.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block[..end]).into_owned();
                let event = SseEvent {
                    lines: text.split('\n').map(str::to_owned).collect(),
                };
                let replaced = shared
                    .rewrite
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .event(event);
                for e in replaced {
                    out.extend(e.to_bytes());
                }
            }
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
