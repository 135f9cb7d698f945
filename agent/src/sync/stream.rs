//! A stream connection to the authority, WebSocket or SSE, yielding the protocol's messages one
//! WebSocket frame (which may hold a JSON array of several) or one SSE read at a time. When
//! the agent verifies the transparency log, each event comes with the leaf hash of the exact
//! bytes received (an SSE `data` line; a frame's text, or one element of a batch) and each
//! heartbeat with the checkpoint it carries.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use revocast_shared::event::{Control, Message};
use revocast_shared::tlog::{TreeHash, leaf_hash};
use revocast_shared::{Epoch, Seq};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::config::Transport;
use crate::error::Error;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct Connection {
    transport: Link,
    /// Hash each event's bytes and read each heartbeat's checkpoint (log verification on).
    log: bool,
    /// How the stream ended, met while gathering frames after messages to hand over first:
    /// the next call of [`Connection::next`] returns it.
    ended: Option<Error>,
}

/// [`Connection::next`] stops gathering frames already received once it holds this many
/// messages: the frame that passes it is the last. The copy's write lock is held while they
/// are applied (verifies wait for it), so a long backlog is applied in slices of about this
/// many, each well under a millisecond; one write of the authority under sustained load (at
/// most two 16 KiB frames, ~400 events) is one slice.
const GATHER_MESSAGES: usize = 512;

enum Link {
    WebSocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Sse {
        body: ByteStream,
        parser: SseParser,
        /// Posts acknowledgments, if the authority gave the connection a handle.
        acks: Option<AckPoster>,
    },
}

/// One message as received.
#[derive(Debug)]
pub struct Received {
    pub message: Message,
    /// An event's leaf hash, SHA-256(0x00 ‖ the bytes received), when verifying the log.
    pub leaf: Option<TreeHash>,
    /// The signed checkpoint note a heartbeat carries, when verifying the log.
    pub checkpoint: Option<String>,
}

/// Who subscribes: the key it authenticates with, and what it says it is (`name` and
/// `version` on the stream URL).
pub struct Identity<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub version: &'a str,
}

/// An acknowledgment: the `seq` applied, its epoch, and the resyncs so far.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ack {
    #[serde(rename = "type")]
    kind: &'static str,
    pub seq: Seq,
    pub epoch: Epoch,
    pub resyncs: u64,
}

impl Ack {
    pub fn new(seq: Seq, epoch: Epoch, resyncs: u64) -> Self {
        Self {
            kind: "ack",
            seq,
            epoch,
            resyncs,
        }
    }
}

/// Posts the latest acknowledgment of an SSE connection to `POST /v1/ack`, one request at a
/// time: acks that arrive while one is in flight are coalesced into the next. Stops when
/// dropped.
pub struct AckPoster {
    latest: tokio::sync::watch::Sender<Option<Ack>>,
    task: tokio::task::AbortHandle,
}

impl Drop for AckPoster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AckPoster {
    fn start(http: reqwest::Client, base: &str, key: &str, conn: String) -> Self {
        let (latest, mut rx) = tokio::sync::watch::channel(None::<Ack>);
        let url = format!("{base}/v1/ack");
        let key = zeroize::Zeroizing::new(key.to_string());
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(ack) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let body = serde_json::json!({
                    "conn": conn,
                    "seq": ack.seq,
                    "epoch": ack.epoch,
                    "resyncs": ack.resyncs,
                });
                match http
                    .post(&url)
                    .bearer_auth(key.as_str())
                    .json(&body)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => {}
                    Ok(resp) => {
                        tracing::debug!(status = resp.status().as_u16(), "acknowledgment refused")
                    }
                    Err(e) => tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "acknowledgment failed"
                    ),
                }
            }
        })
        .abort_handle();
        Self { latest, task }
    }
}

/// Why connecting failed, as far as the sync loop cares.
#[derive(Debug)]
pub enum ConnectError {
    /// `400`: our position is beyond this authority's head (its log is not ours, or it is a
    /// replica that is behind): resync from its snapshot.
    BadPosition,
    /// The WebSocket upgrade was refused in a way SSE might get past (e.g. a proxy).
    UpgradeRefused(Error),
    Other(Error),
}

fn query(since: Seq, epoch: Option<&Epoch>, who: &Identity<'_>) -> String {
    let since = since.to_string();
    let mut pairs = vec![("since", since.as_str())];
    if let Some(epoch) = epoch {
        pairs.push(("epoch", epoch.as_str()));
    }
    pairs.extend([("name", who.name), ("version", who.version)]);
    // Encoding a list of string pairs cannot fail.
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

/// Connect to `base` with the preferred transport, resuming after `since`.
#[allow(clippy::too_many_arguments)]
pub async fn connect(
    http: &reqwest::Client,
    tls: Option<&Arc<rustls::ClientConfig>>,
    base: &str,
    transport: Transport,
    since: Seq,
    epoch: Option<&Epoch>,
    who: &Identity<'_>,
    log: bool,
) -> Result<Connection, ConnectError> {
    let key = who.key;
    let link = match transport {
        Transport::Sse => connect_sse(http, base, key, since, epoch, who).await,
        Transport::Websocket => connect_ws(tls, base, key, since, epoch, who).await,
        Transport::Auto => match connect_ws(tls, base, key, since, epoch, who).await {
            Err(ConnectError::UpgradeRefused(e)) => {
                tracing::info!(
                    error = &e as &dyn std::error::Error,
                    "WebSocket refused; falling back to SSE"
                );
                connect_sse(http, base, key, since, epoch, who).await
            }
            other => other,
        },
    }?;
    Ok(Connection {
        transport: link,
        log,
        ended: None,
    })
}

async fn connect_ws(
    tls: Option<&Arc<rustls::ClientConfig>>,
    base: &str,
    key: &str,
    since: Seq,
    epoch: Option<&Epoch>,
    who: &Identity<'_>,
) -> Result<Link, ConnectError> {
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.trim_start_matches("http://"))
    };
    let url = format!("{ws_base}/v1/stream?{}", query(since, epoch, who));
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(Error::WebSocket(Box::new(e))))?;
    // A key that cannot be a header value fails the request being built, as reqwest's
    // `bearer_auth` does for SSE.
    let auth = format!("Bearer {key}").parse().map_err(|e| {
        let e = tungstenite::Error::HttpFormat(tungstenite::http::Error::from(e));
        ConnectError::Other(Error::WebSocket(Box::new(e)))
    })?;
    request.headers_mut().insert("authorization", auth);
    // Events are small: no need for tungstenite's 128 KiB default buffers. tungstenite also
    // zero-fills the free part of its read buffer before every read, so a small one is cheaper
    // per message too; a larger batch just takes a few reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let connector = tls.map(|tls| Connector::Rustls(Arc::clone(tls)));
    match tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
        .await
    {
        Ok((ws, _)) => Ok(Link::WebSocket(Box::new(ws))),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let error = Error::Status {
                what: "the WebSocket upgrade",
                status,
            };
            Err(match status {
                400 => ConnectError::BadPosition,
                401 | 403 | 429 | 500..=599 => ConnectError::Other(error),
                _ => ConnectError::UpgradeRefused(error),
            })
        }
        Err(e @ tungstenite::Error::Protocol(_)) => {
            Err(ConnectError::UpgradeRefused(Error::WebSocket(Box::new(e))))
        }
        Err(e) => Err(ConnectError::Other(Error::WebSocket(Box::new(e)))),
    }
}

async fn connect_sse(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    since: Seq,
    epoch: Option<&Epoch>,
    who: &Identity<'_>,
) -> Result<Link, ConnectError> {
    let resp = http
        .get(format!("{base}/v1/events?{}", query(since, epoch, who)))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| ConnectError::Other(e.into()))?;
    match resp.status().as_u16() {
        200 => {
            // An authority that tracks its fleet names the connection for acknowledgments.
            let acks = resp
                .headers()
                .get(CONNECTION_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(|conn| AckPoster::start(http.clone(), base, key, conn.to_string()));
            Ok(Link::Sse {
                body: Box::pin(resp.bytes_stream()),
                parser: SseParser::new(MAX_SSE_EVENT),
                acks,
            })
        }
        400 => Err(ConnectError::BadPosition),
        status => Err(ConnectError::Other(Error::Status {
            what: "the SSE request",
            status,
        })),
    }
}

/// A message of a type this agent does not know. Only its `seq` matters: an unknown *event*
/// cannot be applied, so it forces an error rather than being skipped.
#[derive(Deserialize)]
struct Unknown {
    seq: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A heartbeat's `checkpoint`, read apart from the message: heartbeats come about once a
/// second, so the second parse costs nothing on the event path.
#[derive(Deserialize)]
struct CheckpointField {
    #[serde(default)]
    checkpoint: Option<String>,
}

/// One message's JSON: an SSE `data` (bytes) or a WebSocket text frame or batch element
/// (text the WebSocket layer has already checked is UTF-8, so not checked again).
#[derive(Clone, Copy)]
enum Json<'a> {
    Bytes(&'a [u8]),
    Text(&'a str),
}

impl<'a> Json<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Self::Bytes(b) => b,
            Self::Text(t) => t.as_bytes(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        match self {
            Self::Bytes(b) => serde_json::from_slice(b),
            Self::Text(t) => serde_json::from_str(t),
        }
    }
}

/// Parse one JSON message; `Ok(None)` for a control message of an unknown type. With `log`,
/// an event gets the leaf hash of `json` (the exact bytes received) and a heartbeat its
/// checkpoint. Decoded with [`Message::from_json`], straight from the text (serde's
/// `untagged` decoding of [`Message`] would buffer every message into a tree first).
fn parse_one(json: Json<'_>, log: bool) -> Result<Option<Received>, Error> {
    let decoded = match json {
        Json::Bytes(b) => Message::from_json(b),
        Json::Text(t) => Message::from_json_str(t),
    };
    match decoded {
        Ok(message) => {
            let mut received = Received {
                leaf: None,
                checkpoint: None,
                message,
            };
            if log {
                match received.message {
                    Message::Event(_) => received.leaf = Some(leaf_hash(json.bytes())),
                    Message::Control(Control::Heartbeat { .. }) => {
                        received.checkpoint = json
                            .decode::<CheckpointField>()
                            .map_err(|e| Error::Protocol(format!("undecodable heartbeat: {e}")))?
                            .checkpoint;
                    }
                    Message::Control(_) => {}
                }
            }
            Ok(Some(received))
        }
        Err(e) => match json.decode::<Unknown>() {
            Ok(Unknown { seq: None, kind }) => {
                tracing::debug!(?kind, "ignoring an unknown control message");
                Ok(None)
            }
            _ => Err(Error::Protocol(format!("undecodable message: {e}"))),
        },
    }
}

/// Parse a WebSocket text frame: one object or an array of them. A batch's elements are cut
/// out one after another as `RawValue`s, borrowed from the frame: each is exactly the bytes
/// the authority wrote for that message, which is what its leaf hash is over.
fn parse_frame(text: &str, log: bool, out: &mut Vec<Received>) -> Result<(), Error> {
    if !text.starts_with('[') {
        out.extend(parse_one(Json::Text(text), log)?);
        return Ok(());
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let batch = Batch {
        log,
        out,
        failed: &mut failed,
    };
    let read = serde::Deserializer::deserialize_seq(&mut de, batch).and_then(|()| de.end());
    match (failed, read) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(Error::Protocol(format!("undecodable batch: {e}"))),
        (None, Ok(())) => Ok(()),
    }
}

/// Reads a batch's elements as they come, each parsed by [`parse_one`] into `out`; the first
/// error `parse_one` returns stops the batch and is kept in `failed`.
struct Batch<'o> {
    log: bool,
    out: &'o mut Vec<Received>,
    failed: &'o mut Option<Error>,
}

impl<'de> serde::de::Visitor<'de> for Batch<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            match parse_one(Json::Text(item.get()), self.log) {
                Ok(received) => self.out.extend(received),
                Err(e) => {
                    *self.failed = Some(e);
                    return Err(serde::de::Error::custom("a message of the batch"));
                }
            }
        }
        Ok(())
    }
}

/// The SSE response header naming the connection for `POST /v1/ack`.
const CONNECTION_HEADER: &str = "revocast-connection";

impl Connection {
    /// Acknowledge `ack`: a text message on the WebSocket; over SSE, handed to the poster
    /// (which coalesces while a POST is in flight).
    pub async fn ack(&mut self, ack: &Ack) -> Result<(), Error> {
        match &mut self.transport {
            Link::WebSocket(ws) => {
                let text = serde_json::to_string(ack)
                    .map_err(|e| Error::Protocol(format!("encoding an ack: {e}")))?;
                futures_util::SinkExt::send(ws.as_mut(), WsMessage::Text(text.into()))
                    .await
                    .map_err(|e| Error::WebSocket(Box::new(e)))
            }
            Link::Sse { acks, .. } => {
                if let Some(poster) = acks {
                    poster.latest.send_replace(Some(ack.clone()));
                }
                Ok(())
            }
        }
    }

    /// The messages of the next frame (possibly none, e.g. for a ping), and of every frame
    /// already received after it: one call hands over a whole write of the authority, which
    /// under load is many frames, to be applied at once. `Err(Ended)` when the server closed
    /// the stream. A close or error met after messages to hand over is returned by the next
    /// call, and a frame that does not decode adds none of its messages, as when it comes
    /// first.
    pub async fn next(&mut self, out: &mut Vec<Received>) -> Result<(), Error> {
        if let Some(ended) = self.ended.take() {
            return Err(ended);
        }
        let log = self.log;
        match &mut self.transport {
            Link::WebSocket(ws) => {
                ws_frame(ws.next().await, log, out)?;
                while out.len() < GATHER_MESSAGES {
                    // Polled once, with this task's waker: ready now, or not gathered.
                    let polled = std::future::poll_fn(|cx| Poll::Ready(ws.poll_next_unpin(cx)));
                    let Poll::Ready(frame) = polled.await else {
                        break;
                    };
                    let before = out.len();
                    if let Err(e) = ws_frame(frame, log, out) {
                        out.truncate(before);
                        self.ended = Some(e);
                        break;
                    }
                }
                Ok(())
            }
            Link::Sse { body, parser, .. } => {
                // Comments and empty events are not news: read until a message arrives.
                while out.is_empty() {
                    match body.next().await {
                        Some(Ok(chunk)) => sse_chunk(parser, &chunk, log, out)?,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(Error::Ended),
                    }
                }
                while out.len() < GATHER_MESSAGES {
                    let polled = std::future::poll_fn(|cx| Poll::Ready(body.poll_next_unpin(cx)));
                    let Poll::Ready(chunk) = polled.await else {
                        break;
                    };
                    let before = out.len();
                    let fed = match chunk {
                        Some(Ok(chunk)) => sse_chunk(parser, &chunk, log, out),
                        Some(Err(e)) => Err(e.into()),
                        None => Err(Error::Ended),
                    };
                    if let Err(e) = fed {
                        out.truncate(before);
                        self.ended = Some(e);
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The messages of one WebSocket frame (or of none: the stream's end, an error).
fn ws_frame(
    frame: Option<Result<WsMessage, tungstenite::Error>>,
    log: bool,
    out: &mut Vec<Received>,
) -> Result<(), Error> {
    match frame {
        Some(Ok(WsMessage::Text(text))) => parse_frame(text.as_str(), log, out),
        Some(Ok(WsMessage::Close(_))) | None => Err(Error::Ended),
        // Pings (answered by the library), pongs, binary: nothing to apply.
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(Error::WebSocket(Box::new(e))),
    }
}

/// The messages of the SSE events one chunk of the body completes.
fn sse_chunk(
    parser: &mut SseParser,
    chunk: &[u8],
    log: bool,
    out: &mut Vec<Received>,
) -> Result<(), Error> {
    parser.feed(chunk, |data| {
        out.extend(parse_one(Json::Bytes(data), log)?);
        Ok(())
    })
}

/// Largest SSE event accepted, field lines and line ends included. The authority's events are
/// a few hundred bytes; a peer that sends more without ending the event is not one to buffer
/// for: the session ends with an error and the agent reconnects.
pub const MAX_SSE_EVENT: usize = 1024 * 1024;

/// An incremental `text/event-stream` parser: feed it the body in chunks of any size; every
/// byte is looked at once (no rescans of what earlier chunks left over), and what it holds is
/// bounded by the maximum event size. Lines end with LF, CRLF or a lone CR; a blank line ends
/// an event; `data` lines join with `\n`; comments and other fields are ignored.
pub struct SseParser {
    /// The line being received, without its end, while it spans chunks.
    line: Vec<u8>,
    /// The current event's `data` (lines joined with `\n`); `None` until a `data` line.
    data: Option<Vec<u8>>,
    /// Bytes of the current event so far, line ends included.
    event_len: usize,
    /// The last chunk ended in CR: an LF at the start of the next one is the same line end.
    after_cr: bool,
    max_event: usize,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        Self {
            line: Vec::new(),
            data: None,
            event_len: 0,
            after_cr: false,
            max_event,
        }
    }

    fn too_large(&self) -> Error {
        Error::Protocol(format!(
            "an SSE event exceeds {} bytes without ending",
            self.max_event
        ))
    }

    /// Feed the next chunk; `on_data` gets the `data` of every event it completes, in order.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        mut on_data: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
            chunk = &chunk[1..];
            self.event_len += 1;
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let terminator = if chunk[end] == b'\r' {
                match chunk.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        self.after_cr = true;
                        1
                    }
                }
            } else {
                1
            };
            self.event_len += self.line.len() + end + terminator;
            if self.event_len > self.max_event {
                return Err(self.too_large());
            }
            if self.line.is_empty() {
                self.line_done(&chunk[..end], &mut on_data)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..end]);
                self.line_done(&line, &mut on_data)?;
                line.clear();
                self.line = line;
            }
            chunk = &chunk[end + terminator..];
        }
        if self.event_len + self.line.len() + chunk.len() > self.max_event {
            return Err(self.too_large());
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    fn line_done(
        &mut self,
        line: &[u8],
        on_data: &mut impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if line.is_empty() {
            self.event_len = 0;
            if let Some(data) = self.data.take() {
                on_data(&data)?;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            match &mut self.data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => self.data = Some(value.to_vec()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::event::Control;

    use super::*;

    /// Every event's data, feeding `body` in chunks of `size`.
    fn events(body: &[u8], size: usize, max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in body.chunks(size) {
            parser.feed(chunk, |d| {
                out.push(d.to_vec());
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn sse_events_are_split_and_joined_however_the_body_is_cut() {
        let body: &[u8] =
            b"id: 1\nevent: session\ndata: {\"a\":\ndata: 1}\n\n: comment\n\ndata:x\n\n: c\ndata: y\n\nrest";
        for size in 1..=body.len() {
            let got = events(body, size, MAX_SSE_EVENT).unwrap();
            assert_eq!(
                got,
                vec![b"{\"a\":\n1}".to_vec(), b"x".to_vec(), b"y".to_vec()],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn sse_line_ends_may_be_crlf_lf_or_cr() {
        let body: &[u8] = b"data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\ndata: e\r\n\r\n";
        for size in 1..=body.len() {
            let got = events(body, size, MAX_SSE_EVENT).unwrap();
            assert_eq!(
                got,
                vec![
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"c".to_vec(),
                    b"d\ne".to_vec()
                ],
                "chunk size {size}"
            );
        }
        // A CR ending one chunk and the LF starting the next are one line end, not two (which
        // would end the event early).
        let mut parser = SseParser::new(MAX_SSE_EVENT);
        let mut out = Vec::new();
        for chunk in [&b"data: a\r"[..], b"\ndata: b\r", b"\n\r", b"\n"] {
            parser
                .feed(chunk, |d| {
                    out.push(d.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(out, vec![b"a\nb".to_vec()]);
    }

    #[test]
    fn an_oversized_sse_event_ends_the_session() {
        // One endless line, in small chunks: refused once it passes the bound, having held no
        // more than the bound.
        let mut parser = SseParser::new(1000);
        let chunk = [b'x'; 64];
        let mut fed = 0;
        let err = loop {
            if let Err(e) = parser.feed(&chunk, |_| Ok(())) {
                break e;
            }
            fed += chunk.len();
            assert!(fed <= 1000, "accepted {fed} bytes of one event");
        };
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert!(parser.line.capacity() <= 2048);
        // Many short lines of one event count too.
        let many = b"data: 0123456789\n".repeat(100);
        assert!(events(&many, 7, 1000).is_err());
        // Comments are part of the event they are in.
        let comments = b": 0123456789\n".repeat(100);
        assert!(events(&comments, 7, 1000).is_err());
        // The bound is per event: the same bytes as many events are fine.
        let separate = b"data: 0123456789\n\n".repeat(100);
        assert_eq!(events(&separate, 7, 1000).unwrap().len(), 100);
        // At the real bound, a 1 MiB + 1 line fails and a large valid event passes.
        let big = vec![b'y'; MAX_SSE_EVENT + 1];
        assert!(events(&big, 4096, MAX_SSE_EVENT).is_err());
        let mut ok = b"data: ".to_vec();
        ok.extend(vec![b'z'; MAX_SSE_EVENT - 16]);
        ok.extend(b"\n\n");
        assert_eq!(events(&ok, 4096, MAX_SSE_EVENT).unwrap().len(), 1);
    }

    #[test]
    fn frames_hold_one_message_or_an_array() {
        let mut out = Vec::new();
        parse_frame(r#"{"type":"heartbeat","seq":3,"at":1.5}"#, false, &mut out).unwrap();
        parse_frame(
            r#"[{"type":"hello","epoch":"e","seq":0},{"type":"future","x":1},{"seq":1,"type":"key","kid":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","at":1.0}]"#,
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3, "the unknown control message is skipped");
        assert!(matches!(
            out[1].message,
            Message::Control(Control::Hello { .. })
        ));
        assert!(matches!(out[2].message, Message::Event(_)));
        assert!(
            out.iter().all(|r| r.leaf.is_none()),
            "not verifying: no hashing"
        );
        assert!(parse_frame(r#"{"seq":9,"type":"future"}"#, false, &mut out).is_err());
        assert!(parse_frame("not json", false, &mut out).is_err());
    }

    /// The leaves are the exact bytes the authority wrote: a single frame's text, each element
    /// of a batch, an SSE data line — never a re-encoding of what was parsed.
    #[test]
    fn leaves_hash_the_bytes_received_in_every_framing() {
        let one = r#"{"seq":1,"type":"session","sid":"s-9","until":1767308400,"at":1767222001.0}"#;
        let two = r#"{"seq":2,"type":"key","kid":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","at":1767222002.25}"#;
        let beat = r#"{"type":"heartbeat","seq":2,"at":1.5,"checkpoint":"o/e\n2\n"}"#;
        let mut out = Vec::new();
        parse_frame(one, true, &mut out).unwrap();
        parse_frame(&format!("[{two},{beat}]"), true, &mut out).unwrap();
        let mut sse = SseParser::new(MAX_SSE_EVENT);
        let body = format!("id: 1\nevent: session\ndata: {one}\n\nevent: key\ndata: {two}\n\n");
        sse.feed(body.as_bytes(), |data| {
            out.extend(parse_one(Json::Bytes(data), true)?);
            Ok(())
        })
        .unwrap();
        let leaves: Vec<_> = out.iter().map(|r| r.leaf).collect();
        let (h1, h2) = (leaf_hash(one.as_bytes()), leaf_hash(two.as_bytes()));
        assert_eq!(leaves, [Some(h1), Some(h2), None, Some(h1), Some(h2)]);
        assert_eq!(out[2].checkpoint.as_deref(), Some("o/e\n2\n"));
        // The same event spelled another way is another leaf (a rewrite is caught).
        let mut spaced = Vec::new();
        parse_frame(&one.replace(':', ": "), true, &mut spaced).unwrap();
        assert_ne!(spaced[0].leaf, Some(h1));
    }
    fn sse_connection(chunks: &[&str]) -> Connection {
        let chunks: Vec<reqwest::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        Connection {
            transport: Link::Sse {
                body: Box::pin(futures_util::stream::iter(chunks)),
                parser: SseParser::new(MAX_SSE_EVENT),
                acks: None,
            },
            log: true,
            ended: None,
        }
    }

    /// One call hands over every message already received; an end or a bad frame met after
    /// them waits for the next call, and a bad frame adds none of its messages.
    #[tokio::test]
    async fn next_gathers_what_is_already_received() {
        let hello = r#"{"type":"hello","epoch":"e","seq":0}"#;
        let one = r#"{"seq":1,"type":"session","sid":"a","until":5,"at":1.0}"#;
        let two = r#"{"seq":2,"type":"session","sid":"b","until":5,"at":1.0}"#;
        let three = r#"{"seq":3,"type":"session","sid":"c","until":5,"at":1.0}"#;
        let (d1, d2) = (
            format!("data: {one}\n\n"),
            format!("data: {two}\n\ndata: {three}\n"),
        );
        let mut conn = sse_connection(&[
            ": comment\n\n",
            &format!("data: {hello}\n\n"),
            &d1,
            &d2,
            "\n",
        ]);
        let mut out = Vec::new();
        conn.next(&mut out).await.unwrap();
        assert_eq!(out.len(), 4, "hello and three events, in one call");
        assert_eq!(out[3].leaf, Some(leaf_hash(three.as_bytes())));
        out.clear();
        assert!(matches!(conn.next(&mut out).await, Err(Error::Ended)));
        assert!(out.is_empty());

        let bad = format!("data: {two}\n\ndata: not json\n\n");
        let mut conn = sse_connection(&[&d1, &bad, &d1]);
        let mut out = Vec::new();
        conn.next(&mut out).await.unwrap();
        assert_eq!(
            out.len(),
            1,
            "the bad chunk's good event is not handed over either"
        );
        out.clear();
        let err = conn.next(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("undecodable"), "{err}");
        assert!(out.is_empty());
    }
}
