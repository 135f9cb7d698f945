//! One-shot requests to the authority: the JWKS and the snapshot.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use revocast_shared::event::RevocationEvent;
use revocast_shared::revset::RevocationSet;
use revocast_shared::{Epoch, JwkSet, Seq, VerifyingKey};
use serde::Deserialize;

use crate::error::Error;

/// The verifying keys of `/.well-known/jwks.json`. A JWK whose `kid` is not its thumbprint, or
/// that is not an ML-DSA-65 key, is skipped with a warning: one bad entry must not stop
/// verification with the good ones.
pub async fn jwks(
    http: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> Result<Vec<VerifyingKey>, Error> {
    let resp = http
        .get(format!("{base}/.well-known/jwks.json"))
        .timeout(timeout)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            what: "the JWKS request",
            status: resp.status().as_u16(),
        });
    }
    let set: JwkSet = resp.json().await?;
    Ok(set
        .keys
        .iter()
        .filter_map(|jwk| match VerifyingKey::from_jwk(jwk) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(kid = %jwk.kid, error = &e as &dyn std::error::Error, "skipping an unusable JWK");
                None
            }
        })
        .collect())
}

/// A snapshot loaded into a revocation set.
pub struct Loaded {
    pub epoch: Epoch,
    pub seq: Seq,
    pub revset: RevocationSet,
}

/// `GET /v1/snapshot`, asked for as NDJSON (a revocast extension) so that each chunk is parsed
/// and applied as it arrives: the authority's read and the agent's parse overlap, and the ~150
/// MB a million entries take as JSON are never held at once. An authority that answers with
/// the contract's single JSON document is understood too.
pub async fn snapshot(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    timeout: Duration,
) -> Result<Loaded, Error> {
    let resp = http
        .get(format!("{base}/v1/snapshot"))
        .bearer_auth(key)
        .header(ACCEPT, "application/x-ndjson, application/json;q=0.5")
        .timeout(timeout)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            what: "the snapshot request",
            status: resp.status().as_u16(),
        });
    }
    let ndjson = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    if !ndjson {
        let whole: Snapshot = serde_json::from_slice(&resp.bytes().await?)
            .map_err(|e| Error::Protocol(format!("snapshot: {e}")))?;
        let mut revset = RevocationSet::new();
        revset.reserve_tokens(whole.events.len());
        for event in &whole.events {
            check_within(event.seq, whole.seq)?;
            revset.apply(&event.revocation);
        }
        return Ok(Loaded {
            epoch: whole.epoch,
            seq: whole.seq,
            revset,
        });
    }
    let mut parser = NdjsonSnapshot::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        parser.feed(&chunk?)?;
    }
    parser.finish()
}

/// The contract's single-document snapshot.
#[derive(Debug, Deserialize)]
struct Snapshot {
    epoch: Epoch,
    seq: Seq,
    events: Vec<RevocationEvent>,
}

/// First line of an NDJSON snapshot.
#[derive(Deserialize)]
struct Head {
    epoch: Epoch,
    seq: Seq,
}

/// Last line of an NDJSON snapshot: `{"end":{"events":N}}`. Without it the body was cut short.
#[derive(Deserialize)]
struct EndLine {
    end: EndCount,
}

#[derive(Deserialize)]
struct EndCount {
    events: u64,
}

fn check_within(seq: Seq, head: Seq) -> Result<(), Error> {
    if seq > head {
        return Err(Error::Protocol(format!(
            "snapshot: event seq {seq} is beyond the snapshot's seq {head}"
        )));
    }
    Ok(())
}

/// Incremental parser of an NDJSON snapshot: feed it the body in chunks of any size.
#[derive(Default)]
struct NdjsonSnapshot {
    /// A line split across chunks, waiting for the rest.
    partial: Vec<u8>,
    head: Option<Head>,
    revset: RevocationSet,
    events: u64,
    ended: bool,
}

impl NdjsonSnapshot {
    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Error> {
        if !self.partial.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', chunk) else {
                self.partial.extend_from_slice(chunk);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&chunk[..nl]);
            self.line(&line)?;
            line.clear();
            self.partial = line;
            chunk = &chunk[nl + 1..];
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            self.line(&chunk[start..nl])?;
            start = nl + 1;
        }
        self.partial.extend_from_slice(&chunk[start..]);
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), Error> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if self.ended {
            return Err(Error::Protocol("snapshot: data after the end line".into()));
        }
        let Some(head) = &self.head else {
            let head: Head = serde_json::from_slice(line)
                .map_err(|e| Error::Protocol(format!("snapshot head: {e}")))?;
            self.head = Some(head);
            return Ok(());
        };
        match serde_json::from_slice::<RevocationEvent>(line) {
            Ok(event) => {
                check_within(event.seq, head.seq)?;
                self.revset.apply(&event.revocation);
                self.events += 1;
                Ok(())
            }
            Err(event_error) => {
                let end: EndLine = serde_json::from_slice(line)
                    .map_err(|_| Error::Protocol(format!("snapshot event: {event_error}")))?;
                if end.end.events != self.events {
                    return Err(Error::Protocol(format!(
                        "snapshot: the end line counts {} events, {} arrived",
                        end.end.events, self.events
                    )));
                }
                self.ended = true;
                Ok(())
            }
        }
    }

    fn finish(mut self) -> Result<Loaded, Error> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line)?;
        }
        match (self.head, self.ended) {
            (Some(head), true) => Ok(Loaded {
                epoch: head.epoch,
                seq: head.seq,
                revset: self.revset,
            }),
            _ => Err(Error::Protocol(
                "snapshot: the body ended before its end line".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = concat!(
        r#"{"epoch":"e1","seq":7}"#,
        "\n",
        r#"{"seq":3,"type":"session","sid":"s1","until":99999999999,"at":1}"#,
        "\n",
        r#"{"seq":7,"type":"subject","sub":"kim","gen":2,"until":99999999999,"at":2}"#,
        "\n",
        r#"{"end":{"events":2}}"#,
        "\n"
    );

    fn parse_in_chunks(body: &[u8], size: usize) -> Result<Loaded, Error> {
        let mut parser = NdjsonSnapshot::default();
        for chunk in body.chunks(size) {
            parser.feed(chunk)?;
        }
        parser.finish()
    }

    #[test]
    fn any_chunking_gives_the_same_set() {
        for size in 1..=BODY.len() {
            let loaded = parse_in_chunks(BODY.as_bytes(), size).unwrap();
            assert_eq!(loaded.seq, Seq::new(7));
            assert_eq!(loaded.epoch, Epoch::new("e1".to_string()));
            assert_eq!(loaded.revset.len(), 2, "chunk size {size}");
            assert!(loaded.revset.is_session_revoked("s1", 0));
        }
    }

    #[test]
    fn a_body_cut_anywhere_is_refused() {
        let cut_at_line_ends = BODY.match_indices('\n').map(|(i, _)| i + 1);
        for end in (0..BODY.len() - 1).chain(cut_at_line_ends.filter(|&i| i < BODY.len())) {
            assert!(
                parse_in_chunks(&BODY.as_bytes()[..end], 5).is_err(),
                "a body cut at {end} was accepted"
            );
        }
    }

    #[test]
    fn a_wrong_count_or_trailing_data_or_future_event_is_refused() {
        let wrong_count = BODY.replace(r#""events":2"#, r#""events":3"#);
        assert!(parse_in_chunks(wrong_count.as_bytes(), 64).is_err());
        let trailing = format!("{BODY}{}\n", r#"{"seq":1,"type":"key","kid":"x","at":1}"#);
        assert!(parse_in_chunks(trailing.as_bytes(), 64).is_err());
        let future = BODY.replace(r#""seq":7,"type""#, r#""seq":8,"type""#);
        assert!(parse_in_chunks(future.as_bytes(), 64).is_err());
        assert!(parse_in_chunks(b"garbage\n", 64).is_err());
    }
}
