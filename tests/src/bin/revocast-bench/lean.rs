//! Lean subscribers for the soak: raw WebSocket clients that check every event's `seq` and
//! nothing else. A full agent parses and applies every event; 10,000 of them on the same two
//! cores as the authority need more CPU than the box has (see BENCHMARKS.md), so they cannot
//! tell whether the *authority* keeps up. These clients cost a byte scan per event, and still
//! prove what matters: each one sees every `seq` exactly once, in order, across reconnects.
//!
//! With acknowledgments on (`soak --ack`) each one also acknowledges what it has read the
//! way PROTOCOL.md asks a subscriber to (one right after connecting, then at most one every
//! 50 ms, at once after a frame when it has been quiet that long), so the soak can measure what
//! 10,000 acknowledging subscribers cost the authority.
//!
//! They speak just enough RFC 6455 to read the authority's stream (the upgrade, then
//! unmasked, unfragmented server frames) instead of going through tungstenite: that library
//! zero-fills its read buffer before every read and validates every text frame as UTF-8,
//! which together cost a large share of this process's CPU (BENCHMARKS.md) — CPU the
//! authority, on the same two cores, is being measured with. The agent and the tests use the
//! real client.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::stats::unix_micros;

/// What one lean subscriber saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// The last `seq` received.
    pub last: u64,
    pub events: u64,
    /// Events out of order, repeated or missing, and `reset`s: each is a lost-event error.
    pub faults: u64,
    pub reconnects: u64,
}

/// Event objects begin with their `seq` (PROTOCOL.md); control messages begin with `type`.
const EVENT_PREFIX: &[u8] = br#"{"seq":"#;
/// The authority sends `reset` as a message of its own, never inside a batch.
const RESET_PREFIX: &[u8] = br#"{"type":"reset""#;

// Built once: building one per frame would be a visible share of the fleet's CPU.
static EVENT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(EVENT_PREFIX));

/// Check the events of one text frame (one message or a JSON array of them) against `tally`.
pub fn check_frame(frame: &[u8], tally: &mut Tally) {
    if frame.starts_with(RESET_PREFIX) {
        tally.faults += 1;
    }
    for at in EVENT.find_iter(frame) {
        let digits = &frame[at + EVENT_PREFIX.len()..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        let seq = std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        match seq {
            Some(seq) if seq == tally.last + 1 => {
                tally.last = seq;
                tally.events += 1;
            }
            _ => tally.faults += 1,
        }
    }
}

/// `hello` opens every connection; its `epoch` is what acknowledgments name, and its
/// `ack_interval_ms` how often to send them.
const HELLO_PREFIX: &[u8] = br#"{"type":"hello""#;
const EPOCH_FIELD: &[u8] = br#""epoch":""#;
const ACK_INTERVAL_FIELD: &[u8] = br#""ack_interval_ms":"#;

/// The `epoch` and announced acknowledgment interval of a `hello` frame, `None` for any
/// other frame.
fn hello_terms(frame: &[u8]) -> Option<(&str, Option<Duration>)> {
    if !frame.starts_with(HELLO_PREFIX) {
        return None;
    }
    let start = memmem::find(frame, EPOCH_FIELD)? + EPOCH_FIELD.len();
    let len = frame[start..].iter().position(|b| *b == b'"')?;
    let epoch = std::str::from_utf8(&frame[start..start + len]).ok()?;
    let interval = memmem::find(frame, ACK_INTERVAL_FIELD).and_then(|at| {
        let digits = &frame[at + ACK_INTERVAL_FIELD.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        let ms = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    });
    Some((epoch, interval))
}

/// The `ack_interval_ms` of a heartbeat that ends `frame` (one on its own, or the last of a
/// batch): heartbeats update the interval `hello` announced. Only the frame's tail is
/// searched, so the byte scan per event stays the only per-byte cost; a heartbeat missed in
/// mid-batch is followed by another within a second.
fn heartbeat_ack_interval(frame: &[u8]) -> Option<Duration> {
    let tail = &frame[frame.len().saturating_sub(160)..];
    let heartbeat = memmem::rfind(tail, br#""type":"heartbeat""#)?;
    let at = memmem::find(&tail[heartbeat..], ACK_INTERVAL_FIELD)? + heartbeat;
    let digits = &tail[at + ACK_INTERVAL_FIELD.len()..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    let ms = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// The protocol's least interval between acknowledgments, and the interval when `hello`
/// announces none (PROTOCOL.md, "Acknowledgments").
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Acknowledgments that may go at once after a quiet spell (as the agent does).
const ACK_BURST: u32 = 3;

/// A subscriber's acknowledgments on one connection, paced as the agent paces them: one per
/// announced interval on average, a few at once after a quiet spell.
struct Acks {
    epoch: Option<String>,
    interval: Duration,
    /// The last `seq` acknowledged on this connection.
    sent: Option<u64>,
    /// GCRA's theoretical time of the next ack.
    tat: Option<tokio::time::Instant>,
    /// Mask keys must vary per frame (RFC 6455 §5.3); a counter is enough for a bench client
    /// talking to its own authority.
    mask: u32,
}

impl Acks {
    fn new() -> Self {
        Self {
            epoch: None,
            interval: ACK_INTERVAL,
            sent: None,
            tat: None,
            mask: 0x9e37_79b9,
        }
    }

    /// Take the connection's terms from its `hello`.
    fn hello(&mut self, epoch: &str, interval: Option<Duration>) {
        self.epoch = Some(epoch.to_string());
        self.interval = interval.unwrap_or(ACK_INTERVAL).max(ACK_INTERVAL);
    }

    /// When the next acknowledgment is due for `last`: `None` when there is nothing new (or
    /// no `hello` yet), now when the budget allows one.
    fn due(&self, last: u64) -> Option<tokio::time::Instant> {
        self.epoch.as_ref()?;
        if self.sent.is_some_and(|sent| sent >= last) {
            return None;
        }
        let now = tokio::time::Instant::now();
        let early = self.interval * (ACK_BURST - 1);
        Some(
            self.tat
                .map_or(now, |tat| tat.checked_sub(early).unwrap_or(tat).max(now)),
        )
    }

    /// The masked client text frame acknowledging `seq`, recorded as sent.
    fn frame(&mut self, seq: u64) -> Vec<u8> {
        let epoch = self.epoch.as_deref().unwrap_or_default();
        let text = format!(r#"{{"type":"ack","seq":{seq},"epoch":"{epoch}"}}"#);
        self.mask = self
            .mask
            .wrapping_mul(0x0101_0101)
            .wrapping_add(0x6d2b_79f5);
        let mask = self.mask.to_be_bytes();
        let mut frame = Vec::with_capacity(text.len() + 8);
        frame.push(0x81);
        // Acks are far below 126 bytes (epochs are short); longer ones take the 16-bit form.
        match u16::try_from(text.len()) {
            Ok(len) if len < 126 => frame.push(0x80 | len as u8),
            _ => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let now = tokio::time::Instant::now();
        self.sent = Some(seq);
        self.tat = Some(self.tat.map_or(now, |tat| tat.max(now)) + self.interval);
        frame
    }
}

/// One frame from the server, parsed from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
enum ServerFrame {
    /// A whole text message: its payload is `payload` bytes after `header` bytes.
    Text { header: usize, payload: usize },
    /// Ping, pong or binary: skip `header + payload` bytes.
    Other { header: usize, payload: usize },
    /// Close, a fragment or a masked frame: this client stops here and reconnects.
    End,
}

/// Parse the frame at the front of `buf`; `None` until its header is complete.
fn parse_frame(buf: &[u8]) -> Option<ServerFrame> {
    let [first, second, ..] = *buf else {
        return None;
    };
    let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
    if second & 0x80 != 0 || !fin || opcode == 0 || opcode == 8 {
        return Some(ServerFrame::End);
    }
    let (header, payload) = match second & 0x7f {
        126 => (
            4,
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
        ),
        127 => {
            let len = u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
            (10, usize::try_from(len).ok()?)
        }
        len => (2, usize::from(len)),
    };
    Some(if opcode == 1 {
        ServerFrame::Text { header, payload }
    } else {
        ServerFrame::Other { header, payload }
    })
}

/// Open `/v1/stream?since=…` on `addr` (host:port) and return the connection with whatever
/// followed the `101` response in its first read.
async fn connect(
    addr: &str,
    key: &str,
    since: u64,
    name: &str,
) -> std::io::Result<(TcpStream, BytesMut)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let version = env!("CARGO_PKG_VERSION");
    let request = format!(
        "GET /v1/stream?since={since}&name={name}&version={version} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = memmem::find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(std::io::Error::other("the upgrade was refused"));
            }
            buf.advance(end + 4);
            return Ok((tcp, buf));
        }
        if buf.len() > 8 * 1024 {
            return Err(std::io::Error::other("oversized response head"));
        }
    }
}

/// Read size. At 10,000 subscribers × 1,000 events/s the fleet reads ~1 GB/s, so reads must
/// not be small; the authority writes at most a batch (~16 KiB) at a time anyway.
const READ_BYTES: usize = 32 * 1024;

/// Check every text frame of one connection until it ends or `stop` is reached;
/// acknowledge what was read when `acks` is given.
async fn read_frames(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    tally: &mut Tally,
    stop: &mut tokio::sync::watch::Receiver<Option<u64>>,
    mut acks: Option<&mut Acks>,
    mut receipts: Option<&mut Vec<(u64, u64)>>,
) -> Result<(), ()> {
    loop {
        while let Some(frame) = parse_frame(buf) {
            let (header, payload, text) = match frame {
                ServerFrame::Text { header, payload } => (header, payload, true),
                ServerFrame::Other { header, payload } => (header, payload, false),
                ServerFrame::End => return Err(()),
            };
            if buf.len() < header + payload {
                buf.reserve(header + payload - buf.len());
                break;
            }
            if text {
                let frame = &buf[header..header + payload];
                match acks.as_deref_mut() {
                    Some(acks) if acks.epoch.is_none() => {
                        if let Some((epoch, interval)) = hello_terms(frame) {
                            acks.hello(epoch, interval);
                        }
                    }
                    Some(acks) => {
                        if let Some(interval) = heartbeat_ack_interval(frame) {
                            acks.interval = interval.max(ACK_INTERVAL);
                        }
                    }
                    None => {}
                }
                let before = tally.last;
                check_frame(frame, tally);
                if let Some(receipts) = receipts.as_deref_mut()
                    && tally.last > before
                {
                    // One clock read per frame: a batch's events arrived together.
                    let now = unix_micros();
                    receipts.extend((before + 1..=tally.last).map(|seq| (seq, now)));
                }
            }
            buf.advance(header + payload);
        }
        if stop.borrow().is_some_and(|f| tally.last >= f) {
            return Ok(());
        }
        if buf.capacity() - buf.len() < READ_BYTES / 2 {
            buf.reserve(READ_BYTES);
        }
        let due = acks.as_deref().and_then(|a| a.due(tally.last));
        if let (Some(at), Some(acks)) = (due, acks.as_deref_mut())
            && at <= tokio::time::Instant::now()
        {
            tcp.write_all(&acks.frame(tally.last))
                .await
                .map_err(|_| ())?;
            continue;
        }
        let ack_timer = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = ack_timer => {}
            read = tcp.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Err(()),
                Ok(_) => {}
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            },
        }
    }
}

/// How one lean subscriber follows: its name on the stream, whether it acknowledges, and
/// whether it records when each event arrived.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub name: String,
    pub ack: bool,
    pub record: bool,
}

/// What one lean subscriber saw, and when (with [`FollowOptions::record`]): `(seq, Unix µs)`
/// for each event as its frame was read.
#[derive(Debug, Default)]
pub struct Followed {
    pub tally: Tally,
    pub receipts: Vec<(u64, u64)>,
}

/// Follow `base`'s WebSocket stream from `since` until `stop` says a `seq` this subscriber
/// has reached; reconnect (resuming by `seq`) whenever the connection ends.
pub async fn follow(
    base: String,
    key: String,
    since: u64,
    mut stop: tokio::sync::watch::Receiver<Option<u64>>,
    mut first_connect: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    options: FollowOptions,
) -> Followed {
    let mut seen = Followed {
        tally: Tally {
            last: since,
            ..Tally::default()
        },
        receipts: Vec::new(),
    };
    let Some(addr) = base
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
    else {
        // Plain HTTP only: the soak measures fan-out, not TLS.
        seen.tally.faults += 1;
        return seen;
    };
    let tally = &mut seen.tally;
    let mut receipts = options.record.then_some(&mut seen.receipts);
    loop {
        if stop.borrow().is_some_and(|f| tally.last >= f) {
            break;
        }
        let Ok((mut tcp, mut buf)) = connect(addr, &key, tally.last, &options.name).await else {
            tally.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(first) = first_connect.take() {
            first.add_permits(1);
        }
        // Each connection acknowledges afresh: the authority knows it by this connection.
        let mut acks = options.ack.then(Acks::new);
        let read = read_frames(
            &mut tcp,
            &mut buf,
            tally,
            &mut stop,
            acks.as_mut(),
            receipts.as_deref_mut(),
        )
        .await;
        if read.is_ok() {
            break;
        }
        tally.reconnects += 1;
    }
    seen
}

/// Run `count` lean subscribers from `since` (the agents child's `--lean` mode), named
/// `lean-0`, `lean-1`, … and acknowledging when `ack`: print `ready` once every one has
/// connected, read `final SEQ` from stdin, wait until every one has reached it, and print the
/// summary as JSON.
pub async fn run(base: &str, key: &str, count: usize, since: u64, ack: bool) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;

    let (final_tx, final_rx) = tokio::sync::watch::channel(None::<u64>);
    let connected = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut set = JoinSet::new();
    for i in 0..count {
        let (base, key, stop) = (base.to_string(), key.to_string(), final_rx.clone());
        let connected = std::sync::Arc::clone(&connected);
        set.spawn(async move {
            // Ready means connected once: the first connection's hello arrives with the
            // stream, so a connect that returned is enough.
            let options = FollowOptions {
                name: format!("lean-{i}"),
                ack,
                record: false,
            };
            follow(base, key, since, stop, Some(connected), options)
                .await
                .tally
        });
    }
    let all = u32::try_from(count).unwrap_or(u32::MAX);
    tokio::time::timeout(Duration::from_secs(600), connected.acquire_many(all))
        .await
        .map_err(|_| anyhow::anyhow!("lean subscribers did not all connect within 10 minutes"))??
        .forget();
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(seq) = line.strip_prefix("final ") {
            final_tx.send_replace(Some(seq.trim().parse()?));
        }
    }
    let mut tallies = Vec::with_capacity(count);
    while let Some(t) = set.join_next().await {
        tallies.push(t?);
    }
    let summary = serde_json::json!({
        "reconnects": tallies.iter().map(|t| t.reconnects).sum::<u64>(),
        "faults": tallies.iter().map(|t| t.faults).sum::<u64>(),
        "events": tallies.iter().map(|t| t.events).sum::<u64>(),
        "applied_min": tallies.iter().map(|t| t.last).min().unwrap_or(0),
        "applied_max": tallies.iter().map(|t| t.last).max().unwrap_or(0),
    });
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seq_counts_once_and_anything_else_is_a_fault() {
        let mut t = Tally {
            last: 4,
            ..Tally::default()
        };
        check_frame(
            br#"{"seq":5,"type":"session","sid":"a","until":1,"at":1}"#,
            &mut t,
        );
        check_frame(
            br#"[{"seq":6,"type":"token"},{"type":"heartbeat","seq":6,"at":1},{"seq":7,"type":"session"}]"#,
            &mut t,
        );
        assert_eq!((t.last, t.events, t.faults), (7, 3, 0));
        check_frame(br#"{"seq":9,"type":"session"}"#, &mut t);
        check_frame(br#"{"seq":7,"type":"session"}"#, &mut t);
        check_frame(br#"{"type":"reset","epoch":"e","seq":9}"#, &mut t);
        assert_eq!((t.last, t.faults), (7, 3));
    }

    #[test]
    fn hello_gives_the_terms_and_acks_are_masked_and_paced() {
        assert_eq!(
            hello_terms(br#"{"type":"hello","epoch":"e-1","seq":3,"conn":"c"}"#),
            Some(("e-1", None))
        );
        assert_eq!(
            hello_terms(
                br#"{"type":"hello","epoch":"e-1","seq":3,"conn":"c","ack_interval_ms":200}"#
            ),
            Some(("e-1", Some(Duration::from_millis(200))))
        );
        assert_eq!(hello_terms(br#"{"seq":5,"epoch":"x"}"#), None);
        assert_eq!(
            heartbeat_ack_interval(
                br#"[{"seq":6,"type":"token"},{"type":"heartbeat","seq":6,"at":1,"ack_interval_ms":2000}]"#
            ),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            heartbeat_ack_interval(br#"{"type":"heartbeat","seq":6,"at":1}"#),
            None
        );
        let mut acks = Acks::new();
        assert_eq!(acks.due(3), None, "nothing is acknowledged before hello");
        acks.hello("e-1", Some(Duration::from_millis(200)));
        assert!(
            acks.due(3)
                .is_some_and(|at| at <= tokio::time::Instant::now())
        );
        let frame = acks.frame(3);
        assert_eq!(frame[0], 0x81);
        let len = usize::from(frame[1] & 0x7f);
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let mask = &frame[2..6];
        let text: Vec<u8> = frame[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(len, text.len());
        assert_eq!(text, br#"{"type":"ack","seq":3,"epoch":"e-1"}"#);
        assert_eq!(acks.due(3), None, "already acknowledged");
        // The burst: two more at once, then one per announced interval.
        for seq in 4..=5 {
            assert!(
                acks.due(seq)
                    .is_some_and(|at| at <= tokio::time::Instant::now())
            );
            acks.frame(seq);
        }
        let next = acks.due(6).unwrap();
        assert!(next >= tokio::time::Instant::now() + Duration::from_millis(150));
    }

    #[test]
    fn server_frames_parse_by_their_length_form() {
        assert_eq!(parse_frame(b"\x81"), None);
        assert_eq!(
            parse_frame(b"\x81\x05hello"),
            Some(ServerFrame::Text {
                header: 2,
                payload: 5
            })
        );
        assert_eq!(
            parse_frame(b"\x81\x7e\x01\x00"),
            Some(ServerFrame::Text {
                header: 4,
                payload: 256
            })
        );
        assert_eq!(parse_frame(b"\x81\x7e\x01"), None);
        assert_eq!(
            parse_frame(b"\x81\x7f\0\0\0\0\0\x01\0\0"),
            Some(ServerFrame::Text {
                header: 10,
                payload: 65_536
            })
        );
        assert_eq!(
            parse_frame(b"\x89\x00"),
            Some(ServerFrame::Other {
                header: 2,
                payload: 0
            })
        );
        // Close, a fragment, a continuation and a masked frame all end the connection.
        for end in [
            &b"\x88\x00"[..],
            b"\x01\x01a",
            b"\x80\x01a",
            b"\x81\x81abcdx",
        ] {
            assert_eq!(parse_frame(end), Some(ServerFrame::End), "{end:?}");
        }
    }
}
