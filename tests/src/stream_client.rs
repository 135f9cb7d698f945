//! A raw subscriber for tests: connects over WebSocket or SSE and yields the protocol's JSON
//! messages one by one, checking the framing (WebSocket arrays, SSE `id`/`event` lines) as it
//! goes. Deliberately independent of the agent, like a subscriber written in another language.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for any expected message: a bound, not a timing assertion.
use crate::PATIENCE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

pub const BOTH: [Transport; 2] = [Transport::WebSocket, Transport::Sse];

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

enum Inner {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Sse { body: ByteStream, buf: Vec<u8> },
}

pub struct Subscriber {
    inner: Inner,
    queue: VecDeque<Value>,
    /// Whether the last WebSocket frame held a JSON array (a batch).
    pub saw_batch: bool,
    /// The code and reason of the server's WebSocket close frame, once one came.
    pub closed_with: Option<(u16, String)>,
}

/// A refused connection: the HTTP status and the JSON error body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Subscriber {
    /// Connect with `key` to the stream endpoint of `transport`; `query` is appended as-is
    /// (e.g. `since=4`).
    pub async fn connect(
        transport: Transport,
        base: &str,
        key: Option<&str>,
        query: &str,
    ) -> Result<Self, Refused> {
        Self::connect_with(transport, base, key, query, None).await
    }

    /// Like [`connect`](Self::connect), for SSE with a `Last-Event-ID` header.
    pub async fn connect_with(
        transport: Transport,
        base: &str,
        key: Option<&str>,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, Refused> {
        let inner = match transport {
            Transport::WebSocket => {
                let url = format!("{}/v1/stream?{query}", base.replacen("http", "ws", 1));
                let mut request = url.into_client_request().expect("ws request");
                if let Some(key) = key {
                    request.headers_mut().insert(
                        "authorization",
                        format!("Bearer {key}").parse().expect("header"),
                    );
                }
                match tokio_tungstenite::connect_async(request).await {
                    Ok((ws, _)) => Inner::Ws(Box::new(ws)),
                    Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                        let body = resp
                            .body()
                            .as_deref()
                            .and_then(|b| serde_json::from_slice(b).ok())
                            .unwrap_or(Value::Null);
                        return Err(Refused {
                            status: resp.status().as_u16(),
                            body,
                        });
                    }
                    Err(e) => panic!("websocket connect failed: {e}"),
                }
            }
            Transport::Sse => {
                let mut req = reqwest::Client::new().get(format!("{base}/v1/events?{query}"));
                if let Some(key) = key {
                    req = req.bearer_auth(key);
                }
                if let Some(id) = last_event_id {
                    req = req.header("last-event-id", id);
                }
                let resp = req.send().await.expect("sse request");
                let status = resp.status().as_u16();
                if status != 200 {
                    let body = resp.json().await.unwrap_or(Value::Null);
                    return Err(Refused { status, body });
                }
                assert_eq!(
                    resp.headers()["content-type"],
                    "text/event-stream",
                    "SSE content type"
                );
                Inner::Sse {
                    body: Box::pin(resp.bytes_stream()),
                    buf: Vec::new(),
                }
            }
        };
        Ok(Self {
            inner,
            queue: VecDeque::new(),
            saw_batch: false,
            closed_with: None,
        })
    }

    /// A WebSocket subscriber with a 4 KiB socket receive buffer, for playing a subscriber that
    /// stops reading: the authority's writes block after a few kilobytes instead of after the
    /// megabytes loopback autotuning would otherwise absorb.
    pub async fn connect_small_buffer_ws(base: &str, key: &str) -> Self {
        let addr: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .expect("base is http://IP:PORT");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("connect");
        let mut request = format!("ws://{addr}/v1/stream")
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
        Self {
            inner: Inner::Ws(Box::new(ws)),
            queue: VecDeque::new(),
            saw_batch: false,
            closed_with: None,
        }
    }

    /// The next message, or `None` once the server has closed the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.queue.pop_front() {
                return Some(v);
            }
            let more = tokio::time::timeout(PATIENCE, self.read_more())
                .await
                .expect("no message from the authority within the patience bound");
            if !more {
                return None;
            }
        }
    }

    /// Read one frame (WebSocket) or chunk (SSE) into the queue; false at end of stream.
    async fn read_more(&mut self) -> bool {
        match &mut self.inner {
            Inner::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let v: Value = serde_json::from_str(&text).expect("frame is JSON");
                        match v {
                            Value::Array(items) => {
                                assert!(items.len() > 1, "a batch holds several messages");
                                self.saw_batch = true;
                                self.queue.extend(items);
                            }
                            v => self.queue.push_back(v),
                        }
                        return true;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        self.closed_with = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        return false;
                    }
                    None | Some(Err(_)) => return false,
                    Some(Ok(_)) => {}
                }
            },
            Inner::Sse { body, buf } => {
                while let Some(end) = find(buf, b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..end + 2).collect();
                    self.queue.push_back(parse_sse_frame(&frame));
                }
                if !self.queue.is_empty() {
                    return true;
                }
                match body.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        true
                    }
                    Some(Err(_)) | None => false,
                }
            }
        }
    }

    /// Read through the event with `seq == head`, returning the `seq`s of the events seen, in
    /// order. Control messages are checked and skipped; a heartbeat carrying `head` also ends
    /// the read, since heartbeats follow the events they count.
    pub async fn events_through(&mut self, head: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        if head == 0 {
            return seqs;
        }
        while let Some(m) = self.next().await {
            if let Some(seq) = event_seq(&m) {
                seqs.push(seq);
                if seq >= head {
                    return seqs;
                }
            } else {
                assert_eq!(m["type"], "heartbeat", "unexpected control message {m}");
                if m["seq"].as_u64().is_some_and(|s| s >= head) {
                    return seqs;
                }
            }
        }
        panic!("stream ended before seq {head}; saw {seqs:?}");
    }

    /// Send a WebSocket close and wait for the server's.
    pub async fn close(self) {
        if let Inner::Ws(mut ws) = self.inner {
            let _ = SinkExt::close(&mut ws).await;
            while let Some(Ok(_)) = ws.next().await {}
        }
    }

    /// Send a WebSocket text message (an acknowledgment, say).
    pub async fn send_text(&mut self, text: &str) {
        if let Inner::Ws(ws) = &mut self.inner {
            ws.send(Message::Text(text.to_string().into()))
                .await
                .expect("send text");
        }
    }

    /// Send a WebSocket ping; the pong comes back as a non-text frame (ignored by `next`).
    pub async fn ping(&mut self) {
        if let Inner::Ws(ws) = &mut self.inner {
            ws.send(Message::Ping(vec![1, 2, 3].into()))
                .await
                .expect("ping");
        }
    }
}

/// The `seq` of a revocation event; `None` for control messages.
pub fn event_seq(message: &Value) -> Option<u64> {
    match message["type"].as_str() {
        Some("hello" | "heartbeat" | "reset") => None,
        _ => Some(message["seq"].as_u64().expect("events carry a seq")),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parse one SSE frame and check that its `id` and `event` lines agree with its data.
fn parse_sse_frame(frame: &[u8]) -> Value {
    let text = std::str::from_utf8(frame).expect("SSE is UTF-8");
    let (mut id, mut event, mut data) = (None, None, None);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(": ").expect("field: value");
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => data = Some(serde_json::from_str::<Value>(value).expect("data is JSON")),
            other => panic!("unexpected SSE field {other}"),
        }
    }
    let data = data.expect("SSE frame with data");
    assert_eq!(
        event.as_deref(),
        data["type"].as_str(),
        "event line is the type"
    );
    match event_seq(&data) {
        Some(seq) => assert_eq!(id, Some(seq.to_string()), "id line is the seq"),
        None => assert_eq!(id, None, "control messages carry no id"),
    }
    data
}
