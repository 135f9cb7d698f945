//! The WebSocket upgrade (an axum extractor that checks the request and answers `101`) and
//! the [`Socket`] it leaves: shared frames written in one vectored write, client frames read
//! through a [`Reader`].

use std::io::IoSlice;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{Inbound, ReadEnd, Reader, close_frame, pong_frame};
use crate::error::ApiError;

/// A WebSocket upgrade request, checked: answer it with [`Upgrade::respond`].
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let not_an_upgrade =
            |what: &str| ApiError::bad_request(format!("not a WebSocket upgrade: {what}"));
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(not_an_upgrade("the Connection header must include upgrade"));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(not_an_upgrade("the Upgrade header must be websocket"));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(not_an_upgrade("Sec-WebSocket-Version must be 13"));
        }
        // The key is 16 random bytes in base64 (RFC 6455 §4.1).
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k.as_bytes())
                    .is_ok_and(|raw| raw.len() == 16)
            })
            .ok_or_else(|| not_an_upgrade("Sec-WebSocket-Key must be 16 bytes in base64"))?;
        let accept = HeaderValue::from_str(&accept_key(key.as_bytes()))
            .map_err(|e| ApiError::internal(&e))?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "invalid_request",
                "this connection cannot be upgraded (HTTP/1.1 required)",
            )
        })?;
        Ok(Self { accept, on_upgrade })
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

impl Upgrade {
    /// Answer `101 Switching Protocols` and, once the connection is switched, run `serve` on it.
    pub fn respond<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(Socket::new(TokioIo::new(upgraded))).await,
                Err(e) => tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "WebSocket upgrade failed"
                ),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, self.accept),
            ],
        )
            .into_response()
    }
}

/// A switched connection.
pub struct Socket {
    io: TokioIo<hyper::upgrade::Upgraded>,
    reader: Reader,
}

impl Socket {
    fn new(io: TokioIo<hyper::upgrade::Upgraded>) -> Self {
        Self {
            io,
            reader: Reader::default(),
        }
    }

    /// The next thing the client said that needs an answer. Cancel-safe: what was read stays
    /// buffered for the next call.
    pub async fn recv(&mut self) -> Result<Inbound, ReadEnd> {
        loop {
            if let Some(inbound) = self.reader.parse()? {
                return Ok(inbound);
            }
            let inbound = self.reader.buffer();
            if inbound.capacity() - inbound.len() < 256 {
                inbound.reserve(1024);
            }
            match self.io.read_buf(inbound).await {
                Ok(0) | Err(_) => return Err(ReadEnd::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Write `frames` (whole server frames, shared with other connections) in as few writes
    /// as the transport allows, and flush.
    pub async fn send_frames(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        if !tokio::io::AsyncWrite::is_write_vectored(&self.io) {
            // TLS and friends: one copy into a buffer dropped after the write.
            let mut joined = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for frame in frames {
                joined.extend_from_slice(frame);
            }
            self.io.write_all(&joined).await?;
            return self.io.flush().await;
        }
        let (mut index, mut offset) = (0, 0);
        while index < frames.len() {
            let slices: Vec<IoSlice<'_>> = frames[index..]
                .iter()
                .take(64)
                .enumerate()
                .map(|(i, f)| IoSlice::new(if i == 0 { &f[offset..] } else { f }))
                .collect();
            let mut written = self.io.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            // Advance past what was written (and past any empty frame).
            while index < frames.len() && written >= frames[index].len() - offset {
                written -= frames[index].len() - offset;
                index += 1;
                offset = 0;
            }
            offset += written;
        }
        self.io.flush().await
    }

    /// Answer a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_frames(&[pong_frame(payload)]).await
    }

    /// Send a close frame with `code` and `reason` (cut to the 123 bytes a control frame
    /// leaves for it, on a character boundary), then end our side of the connection.
    pub async fn close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        self.send_frames(&[close_frame(code, reason)]).await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_in_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
