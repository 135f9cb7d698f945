//! A stream connection to the authority, WebSocket or SSE, yielding the protocol's messages one
//! frame at a time (a WebSocket frame may hold a JSON array of several).

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use revocast_shared::event::Message;
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

pub enum Connection {
    WebSocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Sse { body: ByteStream, buf: Vec<u8> },
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

fn query(since: Seq, epoch: Option<&Epoch>) -> String {
    match epoch {
        Some(epoch) => format!("since={since}&epoch={epoch}"),
        None => format!("since={since}"),
    }
}

/// Connect to `base` with the preferred transport, resuming after `since`.
pub async fn connect(
    http: &reqwest::Client,
    tls: Option<&Arc<rustls::ClientConfig>>,
    base: &str,
    key: &str,
    transport: Transport,
    since: Seq,
    epoch: Option<&Epoch>,
) -> Result<Connection, ConnectError> {
    match transport {
        Transport::Sse => connect_sse(http, base, key, since, epoch).await,
        Transport::Websocket => connect_ws(tls, base, key, since, epoch).await,
        Transport::Auto => match connect_ws(tls, base, key, since, epoch).await {
            Err(ConnectError::UpgradeRefused(e)) => {
                tracing::info!(
                    error = &e as &dyn std::error::Error,
                    "WebSocket refused; falling back to SSE"
                );
                connect_sse(http, base, key, since, epoch).await
            }
            other => other,
        },
    }
}

async fn connect_ws(
    tls: Option<&Arc<rustls::ClientConfig>>,
    base: &str,
    key: &str,
    since: Seq,
    epoch: Option<&Epoch>,
) -> Result<Connection, ConnectError> {
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.trim_start_matches("http://"))
    };
    let url = format!("{ws_base}/v1/stream?{}", query(since, epoch));
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
        Ok((ws, _)) => Ok(Connection::WebSocket(Box::new(ws))),
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
) -> Result<Connection, ConnectError> {
    let resp = http
        .get(format!("{base}/v1/events?{}", query(since, epoch)))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| ConnectError::Other(e.into()))?;
    match resp.status().as_u16() {
        200 => Ok(Connection::Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }),
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

/// Parse one JSON message; `Ok(None)` for a control message of an unknown type.
fn parse_one(json: &[u8]) -> Result<Option<Message>, Error> {
    match serde_json::from_slice::<Message>(json) {
        Ok(m) => Ok(Some(m)),
        Err(e) => match serde_json::from_slice::<Unknown>(json) {
            Ok(Unknown { seq: None, kind }) => {
                tracing::debug!(?kind, "ignoring an unknown control message");
                Ok(None)
            }
            _ => Err(Error::Protocol(format!("undecodable message: {e}"))),
        },
    }
}

/// Parse a WebSocket text frame: one object or an array of them.
fn parse_frame(text: &[u8], out: &mut Vec<Message>) -> Result<(), Error> {
    if text.first() == Some(&b'[') {
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(text)
            .map_err(|e| Error::Protocol(format!("undecodable batch: {e}")))?;
        for item in items {
            out.extend(parse_one(item.get().as_bytes())?);
        }
        Ok(())
    } else {
        out.extend(parse_one(text)?);
        Ok(())
    }
}

impl Connection {
    /// The messages of the next frame (possibly none, e.g. for a ping); `Err(Ended)` when the
    /// server closed the stream.
    pub async fn next(&mut self, out: &mut Vec<Message>) -> Result<(), Error> {
        match self {
            Connection::WebSocket(ws) => match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => parse_frame(text.as_bytes(), out),
                Some(Ok(WsMessage::Close(_))) | None => Err(Error::Ended),
                // Pings (answered by the library), pongs, binary: nothing to apply.
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(Error::WebSocket(Box::new(e))),
            },
            Connection::Sse { body, buf } => loop {
                if let Some(end) = frame_end(buf) {
                    let frame: Vec<u8> = buf.drain(..end).collect();
                    if let Some(data) = sse_data(&frame) {
                        out.extend(parse_one(&data)?);
                    }
                    if !out.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Error::Ended),
                }
            },
        }
    }
}

/// Length of the first complete SSE frame in `buf` (including its blank line), if any.
fn frame_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data` of one SSE frame (several `data:` lines join with `\n`); comments and other
/// fields are ignored.
fn sse_data(frame: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in frame.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use revocast_shared::event::Control;

    use super::*;

    #[test]
    fn sse_frames_are_split_and_joined() {
        let buf = b"id: 1\nevent: session\ndata: {\"a\":\ndata: 1}\n\n: comment\n\nrest";
        let end = frame_end(buf).unwrap();
        assert_eq!(sse_data(&buf[..end]).unwrap(), b"{\"a\":\n1}");
        let end2 = frame_end(&buf[end..]).unwrap();
        assert_eq!(sse_data(&buf[end..end + end2]), None);
        assert_eq!(frame_end(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(frame_end(b"data: x\n"), None);
    }

    #[test]
    fn frames_hold_one_message_or_an_array() {
        let mut out = Vec::new();
        parse_frame(br#"{"type":"heartbeat","seq":3,"at":1.5}"#, &mut out).unwrap();
        parse_frame(
            br#"[{"type":"hello","epoch":"e","seq":0},{"type":"future","x":1},{"seq":1,"type":"key","kid":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","at":1.0}]"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3, "the unknown control message is skipped");
        assert!(matches!(out[1], Message::Control(Control::Hello { .. })));
        assert!(matches!(out[2], Message::Event(_)));
        assert!(parse_frame(br#"{"seq":9,"type":"future"}"#, &mut out).is_err());
        assert!(parse_frame(b"not json", &mut out).is_err());
    }
}
