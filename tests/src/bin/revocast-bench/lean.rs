//! Lean subscribers for the soak: raw WebSocket clients that check every event's `seq` and
//! nothing else. A full agent parses and applies every event; 10,000 of them on the same two
//! cores as the authority need more CPU than the box has (see BENCHMARKS.md), so they cannot
//! tell whether the *authority* keeps up. These clients cost a byte scan per event, and still
//! prove what matters: each one sees every `seq` exactly once, in order, across reconnects.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::StreamExt;
use memchr::memmem;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

// The searchers, built once: building one per frame was a visible share of the fleet's CPU.
static RESET: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(br#""type":"reset""#));
static EVENT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(EVENT_PREFIX));

/// Check the events of one text frame (one message or a JSON array of them) against `tally`.
pub fn check_frame(frame: &[u8], tally: &mut Tally) {
    if RESET.find(frame).is_some() {
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

/// Follow `base`'s WebSocket stream from `since` until `stop` says a `seq` this subscriber
/// has reached; reconnect (resuming by `seq`) whenever the connection ends.
pub async fn follow(
    base: String,
    key: String,
    since: u64,
    mut stop: tokio::sync::watch::Receiver<Option<u64>>,
    mut first_connect: Option<std::sync::Arc<tokio::sync::Semaphore>>,
) -> Tally {
    let mut tally = Tally {
        last: since,
        ..Tally::default()
    };
    let url = format!("{}/v1/stream", base.replacen("http", "ws", 1));
    // Reads of up to 16 KiB: at 10,000 subscribers × 1,000 events/s the fleet reads ~1 GB/s,
    // and small reads would spend on syscalls the CPU the authority is being measured with.
    // Not larger: tungstenite zero-fills the free part of its read buffer before every read,
    // and with 64 KiB that memset was 18 % of this process's CPU; the authority writes at most
    // ~16 KiB at a time anyway.
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 16 * 1024;
    loop {
        if stop.borrow().is_some_and(|f| tally.last >= f) {
            return tally;
        }
        let Ok(mut request) = format!("{url}?since={}", tally.last).into_client_request() else {
            tally.faults += 1;
            return tally;
        };
        if let Ok(value) = format!("Bearer {key}").parse() {
            request.headers_mut().insert("authorization", value);
        }
        let attempt =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await;
        let Ok((mut ws, _)) = attempt else {
            tally.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(first) = first_connect.take() {
            first.add_permits(1);
        }
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => check_frame(text.as_bytes(), &mut tally),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                changed = stop.changed() => {
                    if changed.is_err() {
                        return tally;
                    }
                },
            }
            if stop.borrow().is_some_and(|f| tally.last >= f) {
                return tally;
            }
        }
        tally.reconnects += 1;
    }
}

/// Run `count` lean subscribers from `since` (the agents child's `--lean` mode): print
/// `ready` once every one has connected, read `final SEQ` from stdin, wait until every one
/// has reached it, and print the summary as JSON.
pub async fn run(base: &str, key: &str, count: usize, since: u64) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;

    let (final_tx, final_rx) = tokio::sync::watch::channel(None::<u64>);
    let connected = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (base, key, stop) = (base.to_string(), key.to_string(), final_rx.clone());
        let connected = std::sync::Arc::clone(&connected);
        set.spawn(async move {
            // Ready means connected once: the first connection's hello arrives with the
            // stream, so a connect that returned is enough.
            follow(base, key, since, stop, Some(connected)).await
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
}
