//! One-shot requests to the authority: the JWKS (token keys and log keys) and the snapshot
//! (with its checkpoint, frontier and seal, which `sync::log` checks).

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use revocast_shared::crypto::MlDsa65Backend;
use revocast_shared::event::RevocationEvent;
use revocast_shared::revset::RevocationSet;
use revocast_shared::tlog::snapshot::parse_end_line;
use revocast_shared::tlog::{Frontier, Mismatch, SnapshotDigest, SnapshotSeal};
use revocast_shared::{Epoch, JwkSet, LogVerifyingKey, Seq, UnixMillis, VerifyingKey};
use serde::Deserialize;

use crate::error::Error;

/// Largest JWKS read: an ML-DSA-65 public key is about 2.6 KB in a JWK, so this is hundreds
/// of keys.
pub const MAX_JWKS: usize = 1024 * 1024;

/// The keys of a JWKS, by role.
pub struct Keys {
    /// `"use":"sig"`: verify tokens.
    pub token: Vec<VerifyingKey>,
    /// `"use":"revocast-log"`: verify checkpoints and snapshot seals.
    pub log: Vec<LogVerifyingKey>,
}

/// The verifying keys of `/.well-known/jwks.json`, by role, verifying with `backend`. A JWK
/// whose `kid` is not its thumbprint, that is not an ML-DSA-65 key, whose `use` is unknown,
/// or that is published in both roles, is skipped with a warning: one bad entry must not stop
/// verification with the good ones.
pub async fn jwks(
    http: &reqwest::Client,
    base: &str,
    timeout: Duration,
    backend: &dyn MlDsa65Backend,
) -> Result<Keys, Error> {
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
    // A key set is a few KiB; read at most `MAX_JWKS` of it.
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if bytes.len() + chunk.len() > MAX_JWKS {
            return Err(Error::Protocol(format!(
                "the JWKS exceeds {MAX_JWKS} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let set: JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("the JWKS: {e}")))?;
    let keys = set.by_role_with(backend);
    for (kid, e) in &keys.skipped {
        tracing::warn!(%kid, error = e as &dyn std::error::Error, "skipping an unusable JWK");
    }
    Ok(Keys {
        token: keys.token,
        log: keys.log,
    })
}

/// A snapshot loaded into a revocation set.
pub struct Loaded {
    pub epoch: Epoch,
    pub seq: Seq,
    /// The authority's time just before it read the snapshot: the set is current as of then.
    /// `None` from an authority that does not send it (older versions): such a snapshot says
    /// nothing about how old it is, so it does not make the agent fresh by itself.
    pub at: Option<UnixMillis>,
    pub revset: RevocationSet,
    /// What the snapshot says about the transparency log: `None` from an authority that does
    /// not sign its log.
    pub log: Option<SnapshotLog>,
}

/// A snapshot's log members, unchecked (`sync::log` checks them).
pub struct SnapshotLog {
    /// The signed checkpoint note the snapshot is served as of.
    pub checkpoint: String,
    /// The tree's frontier at the snapshot's `seq`; `None` if the snapshot left it out.
    pub frontier: Option<Frontier>,
    /// The end line's seal: `Ok(None)` when the end line has none, or when the body is the
    /// single-document form, which is never sealed; `Err` when it is malformed.
    pub seal: Result<Option<SnapshotSeal>, Mismatch>,
    /// SHA-256 of the body before the end line, as received (NDJSON only).
    pub digest: Option<[u8; 32]>,
}

/// Longest line of an NDJSON snapshot, and longest member or event of a JSON one. An event is
/// a few hundred bytes; a peer that sends more in one piece is not one to buffer for.
pub const MAX_SNAPSHOT_ITEM: usize = 1024 * 1024;

/// `GET /v1/snapshot`, asked for as NDJSON (a revocast extension) so that each chunk is parsed
/// and applied as it arrives: the authority's read and the agent's parse overlap, and the ~150
/// MB a million entries take as JSON are never held at once. An authority that answers with
/// the contract's single JSON document is understood too, and parsed just as incrementally
/// ([`JsonSnapshot`]): either way the agent holds the set being built plus at most one item of
/// [`MAX_SNAPSHOT_ITEM`] bytes, never the body.
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
    let mut body = resp.bytes_stream();
    if !ndjson {
        let mut parser = JsonSnapshot::default();
        while let Some(chunk) = body.next().await {
            parser.feed(&chunk?)?;
        }
        return parser.finish();
    }
    let mut parser = NdjsonSnapshot::default();
    while let Some(chunk) = body.next().await {
        parser.feed(&chunk?)?;
    }
    parser.finish()
}

/// First line of an NDJSON snapshot.
#[derive(Deserialize)]
struct Head {
    epoch: Epoch,
    seq: Seq,
    #[serde(default)]
    at: Option<UnixMillis>,
    #[serde(default)]
    checkpoint: Option<String>,
    #[serde(default)]
    frontier: Option<Frontier>,
}

/// Last line of an NDJSON snapshot: `{"end":{"events":N}}`, perhaps with a seal. Without it
/// the body was cut short.
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

/// Incremental parser of an NDJSON snapshot: feed it the body in chunks of any size. It also
/// digests every line before the end line, for the seal.
#[derive(Default)]
struct NdjsonSnapshot {
    /// A line split across chunks, waiting for the rest.
    partial: Vec<u8>,
    head: Option<Head>,
    revset: RevocationSet,
    events: u64,
    ended: bool,
    digest: SnapshotDigest,
    seal: Option<Result<Option<SnapshotSeal>, Mismatch>>,
}

impl NdjsonSnapshot {
    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Error> {
        if !self.partial.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', chunk) else {
                self.keep(chunk)?;
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
        self.keep(&chunk[start..])
    }

    /// Keep the start of a line that continues in the next chunk, within the bound.
    fn keep(&mut self, part: &[u8]) -> Result<(), Error> {
        if self.partial.len() + part.len() > MAX_SNAPSHOT_ITEM {
            return Err(Error::Protocol(format!(
                "snapshot: a line exceeds {MAX_SNAPSHOT_ITEM} bytes"
            )));
        }
        self.partial.extend_from_slice(part);
        Ok(())
    }

    /// One line, without its newline (the digest adds it back: every line but the end line
    /// ended in one, or the body would be refused).
    fn line(&mut self, line: &[u8]) -> Result<(), Error> {
        if self.ended {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            return Err(Error::Protocol("snapshot: data after the end line".into()));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            self.digest.update(line);
            self.digest.update(b"\n");
            return Ok(());
        }
        let Some(head) = &self.head else {
            let head: Head = serde_json::from_slice(line)
                .map_err(|e| Error::Protocol(format!("snapshot head: {e}")))?;
            self.head = Some(head);
            self.digest.update(line);
            self.digest.update(b"\n");
            return Ok(());
        };
        match serde_json::from_slice::<RevocationEvent>(line) {
            Ok(event) => {
                check_within(event.seq, head.seq)?;
                self.revset.insert(event.revocation);
                self.events += 1;
                self.digest.update(line);
                self.digest.update(b"\n");
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
                // A seal that does not parse is kept as a mismatch for the log check: only a
                // verifying agent cares.
                self.seal = Some(parse_end_line(line).map(|(_, seal)| seal));
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
                at: head.at,
                revset: self.revset,
                log: head.checkpoint.map(|checkpoint| SnapshotLog {
                    checkpoint,
                    frontier: head.frontier,
                    seal: self.seal.unwrap_or(Ok(None)),
                    digest: Some(self.digest.finish()),
                }),
            }),
            _ => Err(Error::Protocol(
                "snapshot: the body ended before its end line".into(),
            )),
        }
    }
}

/// Incremental parser of the contract's single-document snapshot,
/// `{"epoch":…,"seq":…,"at":…,"events":[…]}`: it walks the top-level object byte by byte,
/// cuts out one member value or one element of `events` at a time (each at most
/// [`MAX_SNAPSHOT_ITEM`] bytes), and hands that to serde. Events are applied as they come, in
/// whatever order the members are; that each is within the snapshot's `seq` is checked at the
/// end if `seq` comes after them.
#[derive(Default)]
struct JsonSnapshot {
    at: Place,
    /// The item being cut out: a key, a member's value, or one event.
    item: Vec<u8>,
    scan: ValueScan,
    /// The member whose key or value is being read.
    key: String,
    epoch: Option<Epoch>,
    seq: Option<Seq>,
    stamped: Option<UnixMillis>,
    checkpoint: Option<String>,
    frontier: Option<Frontier>,
    /// Highest event `seq` seen, for the check against the snapshot's `seq`.
    highest: Option<Seq>,
    saw_events: bool,
    revset: RevocationSet,
}

/// Where in the document the parser is.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    #[default]
    Start,
    /// After `{` (`first`: no member yet) or after a `,` between members.
    KeyOrEnd {
        first: bool,
    },
    Key,
    Colon,
    Value,
    AfterMember,
    EventsOpen,
    /// After `[` (`first`: no event yet) or after a `,` between events.
    EventOrClose {
        first: bool,
    },
    Event,
    AfterEvent,
    Done,
}

/// Finds where one JSON value ends, a byte at a time: strings with their escapes, nesting,
/// and scalars (which end at the first byte that cannot be part of them).
#[derive(Default)]
struct ValueScan {
    started: bool,
    in_string: bool,
    escaped: bool,
    depth: u32,
}

enum Scanned {
    More,
    /// The value ended with this byte (a closing quote or bracket).
    EndedWith,
    /// The value ended just before this byte (a scalar), which belongs to what follows.
    EndedBefore,
}

impl ValueScan {
    fn step(&mut self, b: u8) -> Scanned {
        if !self.started {
            self.started = true;
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = 1,
                _ => {}
            }
            return Scanned::More;
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    return Scanned::EndedWith;
                }
            }
            return Scanned::More;
        }
        if self.depth == 0 {
            // A scalar: numbers, true, false, null.
            return if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.') {
                Scanned::More
            } else {
                Scanned::EndedBefore
            };
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Scanned::EndedWith;
                }
            }
            _ => {}
        }
        Scanned::More
    }
}

fn bad(what: &str) -> Error {
    Error::Protocol(format!("snapshot: {what}"))
}

impl JsonSnapshot {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut i = 0;
        while i < chunk.len() {
            if self.byte(chunk[i])? {
                i += 1;
            }
        }
        Ok(())
    }

    /// Take in one byte; `false` if it must be looked at again in the new place (the byte
    /// that ended a scalar).
    fn byte(&mut self, b: u8) -> Result<bool, Error> {
        let space = b.is_ascii_whitespace();
        match self.at {
            Place::Key | Place::Event => return self.cut(b),
            Place::Value if self.scan.started || !space => return self.cut(b),
            _ if space => {}
            Place::Start if b == b'{' => self.at = Place::KeyOrEnd { first: true },
            Place::KeyOrEnd { first: true } if b == b'}' => self.at = Place::Done,
            Place::KeyOrEnd { .. } if b == b'"' => {
                self.at = Place::Key;
                return self.cut(b);
            }
            Place::Colon if b == b':' => {
                self.at = if self.key == "events" {
                    Place::EventsOpen
                } else {
                    Place::Value
                };
            }
            Place::AfterMember if b == b',' => self.at = Place::KeyOrEnd { first: false },
            Place::AfterMember if b == b'}' => self.at = Place::Done,
            Place::EventsOpen if b == b'[' => {
                if std::mem::replace(&mut self.saw_events, true) {
                    return Err(bad("two event lists"));
                }
                self.at = Place::EventOrClose { first: true };
            }
            Place::EventOrClose { first: true } if b == b']' => self.at = Place::AfterMember,
            Place::EventOrClose { .. } => {
                self.at = Place::Event;
                return self.cut(b);
            }
            Place::AfterEvent if b == b',' => self.at = Place::EventOrClose { first: false },
            Place::AfterEvent if b == b']' => self.at = Place::AfterMember,
            _ => {
                return Err(bad(&format!(
                    "unexpected {:?} in the document",
                    char::from(b)
                )));
            }
        }
        Ok(true)
    }

    /// Add `b` to the item being cut out; act on the item once it is complete.
    fn cut(&mut self, b: u8) -> Result<bool, Error> {
        let consumed = match self.scan.step(b) {
            Scanned::More => {
                self.push(b)?;
                return Ok(true);
            }
            Scanned::EndedWith => {
                self.push(b)?;
                true
            }
            Scanned::EndedBefore => false,
        };
        self.scan = ValueScan::default();
        let mut item = std::mem::take(&mut self.item);
        let done = self.item_done(&item);
        item.clear();
        self.item = item;
        done?;
        Ok(consumed)
    }

    fn push(&mut self, b: u8) -> Result<(), Error> {
        if self.item.len() >= MAX_SNAPSHOT_ITEM {
            return Err(bad(&format!("an item exceeds {MAX_SNAPSHOT_ITEM} bytes")));
        }
        self.item.push(b);
        Ok(())
    }

    fn item_done(&mut self, item: &[u8]) -> Result<(), Error> {
        let json = |e: serde_json::Error| bad(&e.to_string());
        match self.at {
            Place::Key => {
                self.key = serde_json::from_slice(item).map_err(json)?;
                self.at = Place::Colon;
            }
            Place::Value => {
                match self.key.as_str() {
                    "epoch" => self.epoch = Some(serde_json::from_slice(item).map_err(json)?),
                    "seq" => self.seq = Some(serde_json::from_slice(item).map_err(json)?),
                    "at" => self.stamped = Some(serde_json::from_slice(item).map_err(json)?),
                    "checkpoint" => {
                        self.checkpoint = Some(serde_json::from_slice(item).map_err(json)?);
                    }
                    "frontier" => {
                        self.frontier = Some(serde_json::from_slice(item).map_err(json)?);
                    }
                    // Unknown members are ignored, as the protocol asks.
                    _ => {}
                }
                self.at = Place::AfterMember;
            }
            Place::Event => {
                let event: RevocationEvent =
                    serde_json::from_slice(item).map_err(|e| bad(&format!("event: {e}")))?;
                if let Some(seq) = self.seq {
                    check_within(event.seq, seq)?;
                }
                self.highest = self.highest.max(Some(event.seq));
                self.revset.insert(event.revocation);
                self.at = Place::AfterEvent;
            }
            place => return Err(bad(&format!("an item ended at {place:?}"))),
        }
        Ok(())
    }

    fn finish(self) -> Result<Loaded, Error> {
        if self.at != Place::Done {
            return Err(bad("the body ended before the document did"));
        }
        let (Some(epoch), Some(seq), true) = (self.epoch, self.seq, self.saw_events) else {
            return Err(bad("`epoch`, `seq` or `events` is missing"));
        };
        if let Some(highest) = self.highest {
            check_within(highest, seq)?;
        }
        Ok(Loaded {
            epoch,
            seq,
            at: self.stamped,
            revset: self.revset,
            log: self.checkpoint.map(|checkpoint| SnapshotLog {
                checkpoint,
                frontier: self.frontier,
                seal: Ok(None),
                digest: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = concat!(
        r#"{"epoch":"e1","seq":7,"at":1767222000.123}"#,
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
            assert_eq!(loaded.at, Some(UnixMillis::new(1_767_222_000_123)));
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

    #[test]
    fn an_unstamped_snapshot_has_no_time_and_an_overlong_line_is_refused() {
        let old = BODY.replace(r#","at":1767222000.123"#, "");
        let loaded = parse_in_chunks(old.as_bytes(), 7).unwrap();
        assert_eq!(loaded.at, None, "an older authority's snapshot");
        assert_eq!(loaded.revset.len(), 2);
        // A line that never ends is refused once it passes the bound, not buffered.
        let mut parser = NdjsonSnapshot::default();
        parser.feed(b"{\"epoch\":\"e\",\"seq\":1}\n").unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut fed = 0;
        while parser.feed(&chunk).is_ok() {
            fed += chunk.len();
            assert!(fed <= MAX_SNAPSHOT_ITEM, "buffered {fed} bytes of one line");
        }
    }

    /// The same snapshot as `BODY`, as the contract's single document, with extra spacing
    /// and an unknown member.
    const DOCUMENT: &str = concat!(
        r#"{ "epoch" : "e1", "seq":7, "at": 1767222000.123, "new": {"a":[1,"]}"]},"#,
        "\n",
        r#" "events" : [ {"seq":3,"type":"session","sid":"s\"1","until":99999999999,"at":1},"#,
        r#"{"seq":7,"type":"subject","sub":"kim","gen":2,"until":99999999999,"at":2} ] }"#,
        "\n"
    );

    fn parse_document(body: &[u8], size: usize) -> Result<Loaded, Error> {
        let mut parser = JsonSnapshot::default();
        for chunk in body.chunks(size) {
            parser.feed(chunk)?;
        }
        parser.finish()
    }

    #[test]
    fn the_json_document_is_parsed_incrementally_however_it_is_cut() {
        for size in 1..=DOCUMENT.len() {
            let loaded = parse_document(DOCUMENT.as_bytes(), size).unwrap();
            assert_eq!(loaded.seq, Seq::new(7), "chunk size {size}");
            assert_eq!(loaded.epoch, Epoch::new("e1".to_string()));
            assert_eq!(loaded.at, Some(UnixMillis::new(1_767_222_000_123)));
            assert_eq!(loaded.revset.len(), 2, "chunk size {size}");
            assert!(loaded.revset.is_session_revoked("s\"1", 0));
        }
        // Members in another order, no `at`, no events.
        let reordered = r#"{"events":[{"seq":2,"type":"session","sid":"x","until":99999999999,"at":1}],"seq":2,"epoch":"e"}"#;
        let loaded = parse_document(reordered.as_bytes(), 3).unwrap();
        assert_eq!(
            (loaded.seq, loaded.at, loaded.revset.len()),
            (Seq::new(2), None, 1)
        );
        let empty = parse_document(br#"{"epoch":"e","seq":0,"events":[]}"#, 1).unwrap();
        assert_eq!(empty.revset.len(), 0);
    }

    #[test]
    fn a_bad_or_cut_or_oversized_json_document_is_refused() {
        for end in 0..DOCUMENT.trim_end().len() {
            assert!(
                parse_document(&DOCUMENT.as_bytes()[..end], 5).is_err(),
                "a document cut at {end} was accepted"
            );
        }
        for bad in [
            // An event beyond the snapshot's seq, before or after `seq` is known.
            r#"{"epoch":"e","seq":1,"events":[{"seq":2,"type":"session","sid":"x","until":9,"at":1}]}"#,
            r#"{"events":[{"seq":2,"type":"session","sid":"x","until":9,"at":1}],"epoch":"e","seq":1}"#,
            r#"{"epoch":"e","seq":1}"#,
            r#"{"epoch":"e","seq":1,"events":[]}x"#,
            r#"{"epoch":"e","seq":1,"events":[],}"#,
            r#"{"epoch":"e","seq":1,"events":[,]}"#,
            r#"{"epoch":"e","seq":1,"events":{}}"#,
            r#"{"epoch":"e","seq":1,"events":[],"events":[]}"#,
            r#"{"epoch":"e","seq":1x,"events":[]}"#,
            r#"["epoch"]"#,
            "garbage",
        ] {
            assert!(
                parse_document(bad.as_bytes(), 4).is_err(),
                "{bad} was accepted"
            );
        }
        // One event larger than the bound is refused once it passes the bound.
        let mut parser = JsonSnapshot::default();
        parser
            .feed(br#"{"epoch":"e","seq":1,"events":[{"sid":""#)
            .unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut fed = 0;
        while parser.feed(&chunk).is_ok() {
            fed += chunk.len();
            assert!(
                fed <= MAX_SNAPSHOT_ITEM,
                "buffered {fed} bytes of one event"
            );
        }
    }
}
