//! `revocast-bench floor`: revocast's propagation beside the floor of this machine, measured
//! by the same subscriber processes in the same run, so each figure is a ratio that does not
//! depend on the day's box.
//!
//! The floor is a broadcaster of the bench's own (`revocast-bench floor-server`, a child
//! process like the authority): the least a WebSocket fan-out can do — no storage, no auth,
//! one prebuilt frame per event shared by every connection, one write per connection per
//! event (per wake-up, when several are already queued: it never waits to batch). A third process (`revocast-bench floor-fleet`) holds the subscribers — lean ones
//! (frame readers, `lean.rs`) or, with `--agents`, full agents: it follows revocast, then the
//! floor, with the same code on the same runtime, and reports when each event reached (lean)
//! or was applied by (agents) each subscriber. For full agents the floor also serves what an
//! agent needs before it streams — a JWKS, an empty snapshot — and a heartbeat a second.
//!
//! Each target gets two phases: isolated revocations (one at a time, 50–600 ms apart: the
//! urgent case, where nothing should wait) and sustained load (a steady rate, where batching
//! may trade latency for throughput). Latency is from just before the bench asks for the
//! event (revocast: the revoke request, which includes the durable commit; floor: the line to
//! its stdin) until a subscriber read its frame, over every (subscriber, event) pair.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, Bytes};
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::children::{ChildAuthority, http_client};
use revocast_agent::{Agent, AgentConfig, Transport};

use crate::lean::{FollowOptions, Followed, follow};
use crate::scenarios::post_with_key;
use crate::stats::{percentile, round3, unix_micros};

/// The two kinds of load each target is measured under.
const PHASES: [&str; 2] = ["isolated", "sustained"];

/// Run the scenario: `subscribers` lean subscribers; `isolated` revocations one at a time;
/// then `rate` a second for `seconds`.
pub async fn floor(
    subscribers: usize,
    agents: bool,
    verify_log: bool,
    isolated: usize,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Value> {
    let authority = ChildAuthority::start(0).await?;
    let mut broadcaster = ChildFloor::start().await?;
    let mut fleet = ChildFleet::start(subscribers, agents, verify_log).await?;
    let http = http_client()?;
    let mut revocast_head = 0;
    let mut floor_head = 0;
    let mut targets = serde_json::Map::new();

    // revocast: session revocations, whose events are the size of the floor's frame.
    fleet
        .connect(&authority.base, &authority.subscriber_key, revocast_head)
        .await?;
    let mut next = 0u64;
    let revoke = |sid: u64| {
        let (http, base, key) = (
            Arc::clone(&http),
            authority.base.clone(),
            authority.admin_key.clone(),
        );
        async move {
            let body = json!({ "sid": format!("floor-bench-{sid}") });
            let answer = post_with_key(&http, &base, &key, "/v1/revoke/session", body).await?;
            answer["seq"].as_u64().context("seq")
        }
    };
    let mut sent = Vec::new();
    // How long each isolated revoke took to answer (a durable commit and its HTTP round
    // trip): the part of revocast's latency the floor has no counterpart for.
    let mut answered_us = Vec::with_capacity(isolated);
    for pause in isolated_pauses(isolated) {
        tokio::time::sleep(pause).await;
        let at = unix_micros();
        next += 1;
        sent.push((revoke(next).await?, at, 0));
        answered_us.push(unix_micros().saturating_sub(at));
    }
    answered_us.sort_unstable();
    let mut paced = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    for _ in 0..u64::from(rate) * seconds {
        tick.tick().await;
        next += 1;
        let revoking = revoke(next);
        paced.spawn(async move {
            let at = unix_micros();
            anyhow::Ok((revoking.await?, at, 1))
        });
    }
    for done in paced.join_all().await {
        sent.push(done?);
    }
    revocast_head = sent
        .iter()
        .map(|(seq, _, _)| *seq)
        .max()
        .unwrap_or(revocast_head);
    let mut revocast = fleet.finish(revocast_head, &sent).await?;
    revocast["isolated"]["revoke_answered_p50_ms"] =
        json!(round3(percentile(&answered_us, 50.0) as f64 / 1000.0));
    targets.insert("revocast".into(), revocast);

    // The floor: the same counts, written to its stdin.
    // The floor checks no key; an agent insists on having one.
    fleet
        .connect(&broadcaster.base, "floor-checks-no-key", floor_head)
        .await?;
    let mut sent = Vec::new();
    for pause in isolated_pauses(isolated) {
        tokio::time::sleep(pause).await;
        floor_head += 1;
        sent.push((floor_head, unix_micros(), 0));
        broadcaster.send(floor_head).await?;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    for _ in 0..u64::from(rate) * seconds {
        tick.tick().await;
        floor_head += 1;
        sent.push((floor_head, unix_micros(), 1));
        broadcaster.send(floor_head).await?;
    }
    let floor = fleet.finish(floor_head, &sent).await?;
    targets.insert("floor".into(), floor);

    let ratios = ratios(&targets);
    Ok(json!({ "floor": {
        "subscribers": subscribers,
        "kind": if agents { "agent" } else { "lean" },
        "agents_verify_log": agents && verify_log,
        "isolated": isolated,
        "sustained_rate": rate,
        "sustained_seconds": seconds,
        "targets": targets,
        "ratio_to_floor": ratios,
    }}))
}

/// revocast's p50 and p99 over the floor's, per phase.
fn ratios(targets: &serde_json::Map<String, Value>) -> Value {
    let mut out = serde_json::Map::new();
    for phase in PHASES {
        let ratio = |q: &str| {
            let ours = targets["revocast"][phase][q].as_f64()?;
            let floor = targets["floor"][phase][q].as_f64()?;
            (floor > 0.0).then(|| round3(ours / floor))
        };
        out.insert(
            phase.into(),
            json!({ "p50": ratio("p50_ms"), "p99": ratio("p99_ms") }),
        );
    }
    Value::Object(out)
}

/// Pauses before each isolated event: 50–600 ms, spread evenly but not in order, so nothing
/// lines up with the authority's heartbeat or pacing intervals.
fn isolated_pauses(n: usize) -> Vec<Duration> {
    // A fixed permutation of the range (multiplying by a number coprime to the count).
    (0..n)
        .map(|i| {
            let spot = (i * 37 + 11) % n.max(1);
            let ms = 50 + spot * 550 / n.max(1);
            Duration::from_millis(ms as u64)
        })
        .collect()
}

// --- the floor broadcaster ------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct FloorServerArgs {}

/// What every connection of the floor shares: the broadcast of prebuilt frames, the head (for
/// a full agent's snapshot) and the JWKS a full agent insists on fetching.
struct Floor {
    frames: broadcast::Sender<Bytes>,
    head: AtomicU64,
    jwks: String,
}

/// Serve the floor broadcaster on 127.0.0.1:0: print `listening ADDR`, then for every line
/// `event SEQ` on stdin write one event frame to every connection; stop when stdin closes.
///
/// Full agents need a little more than a frame reader, and get no more than that: a JWKS
/// (one token key, made at start), an empty snapshot at the head, and a heartbeat a second
/// so that an idle stream is not taken for a dead one.
pub async fn serve_floor(_args: FloorServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let key = revocast_shared::SigningKey::generate()?;
    let jwks = revocast_shared::JwkSet {
        keys: vec![key.verifying_key().to_jwk()],
    };
    let floor = Arc::new(Floor {
        // Deep enough that a sustained phase never lags a reader: a lagging one is dropped.
        frames: broadcast::channel::<Bytes>(1 << 16).0,
        head: AtomicU64::new(0),
        jwks: serde_json::to_string(&jwks)?,
    });
    let accepting = {
        let floor = Arc::clone(&floor);
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let floor = Arc::clone(&floor);
                tokio::spawn(async move {
                    let _ = serve_connection(tcp, &floor).await;
                });
            }
        }
    };
    let heartbeats = {
        let floor = Arc::clone(&floor);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let seq = floor.head.load(Ordering::Acquire);
                let at = unix_micros() / 1000;
                let text = format!(
                    r#"{{"type":"heartbeat","seq":{seq},"at":{}.{:03}}}"#,
                    at / 1000,
                    at % 1000
                );
                let _ = floor.frames.send(text_frame(text.as_bytes()));
            }
        }
    };
    let commands = async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(seq) = line.strip_prefix("event ").and_then(|s| s.parse().ok()) {
                floor.head.store(seq, Ordering::Release);
                let _ = floor.frames.send(event_frame(seq));
            }
        }
    };
    tokio::select! {
        () = accepting => {}
        () = heartbeats => {}
        () = commands => {}
    }
    Ok(())
}

/// One event as a WebSocket text frame: a session revocation shaped like revocast's.
fn event_frame(seq: u64) -> Bytes {
    let until = unix_micros() / 1_000_000 + 3600;
    let text = format!(
        r#"{{"seq":{seq},"type":"session","sid":"floor-bench-{seq}","until":{until},"at":{}.0}}"#,
        until - 3600
    );
    text_frame(text.as_bytes())
}

/// An unmasked server text frame.
fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.push(0x81);
    match u16::try_from(payload.len()) {
        Ok(len) if len < 126 => frame.push(len as u8),
        Ok(len) => {
            frame.push(126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            frame.push(127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A JWKS or snapshot request answered and closed; or the upgrade, a `hello`, then every
/// broadcast frame, one write each.
async fn serve_connection(mut tcp: TcpStream, floor: &Floor) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    // Subscribed before anything is read, so no event after the head it reports is missed.
    let mut rx = floor.frames.subscribe();
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 || head.len() + n > 8 * 1024 {
            bail!("no request head");
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or_default();
    let document = if path.starts_with("/.well-known/jwks.json") {
        Some(floor.jwks.clone())
    } else if path.starts_with("/v1/snapshot") {
        let seq = floor.head.load(Ordering::Acquire);
        let at = unix_micros() / 1000;
        Some(format!(
            r#"{{"epoch":"floor","seq":{seq},"at":{}.{:03},"events":[]}}"#,
            at / 1000,
            at % 1000
        ))
    } else {
        None
    };
    if let Some(body) = document {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .context("no Sec-WebSocket-Key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await?;
    let hello = format!(
        r#"{{"type":"hello","epoch":"floor","seq":{}}}"#,
        floor.head.load(Ordering::Acquire)
    );
    tcp.write_all(&text_frame(hello.as_bytes())).await?;
    loop {
        let mut frames = VecDeque::new();
        match rx.recv().await {
            Ok(frame) => frames.push_back(frame),
            Err(broadcast::error::RecvError::Lagged(_)) => bail!("lagged"),
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
        // Whatever else is queued already goes in the same write: under sustained load a
        // broadcaster that wrote each event on its own would measure the syscall, not the
        // fan-out. An isolated event is one frame, one write; nothing ever waits for more.
        while frames.len() < MAX_FRAMES_PER_WRITE {
            match rx.try_recv() {
                Ok(frame) => frames.push_back(frame),
                Err(broadcast::error::TryRecvError::Lagged(_)) => bail!("lagged"),
                Err(_) => break,
            }
        }
        write_all_vectored(&mut tcp, frames).await?;
    }
}

/// Frames coalesced into one write at most: about what revocast's batch carries.
const MAX_FRAMES_PER_WRITE: usize = 256;

/// Write every frame with vectored writes, straight from the shared bytes.
async fn write_all_vectored(
    tcp: &mut TcpStream,
    mut frames: VecDeque<Bytes>,
) -> anyhow::Result<()> {
    while !frames.is_empty() {
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
        let mut written = tcp.write_vectored(&slices).await?;
        if written == 0 {
            bail!("the connection took nothing");
        }
        while written > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                frames.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

/// The floor broadcaster child, from the parent's side.
struct ChildFloor {
    base: String,
    stdin: ChildStdin,
    _child: Child,
}

impl ChildFloor {
    async fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("floor-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the floor child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the floor child did not start")??
            .context("the floor child exited")?;
        let addr = line
            .strip_prefix("listening ")
            .with_context(|| format!("unexpected line from the floor child: {line:?}"))?;
        Ok(Self {
            base: format!("http://{addr}"),
            stdin,
            _child: child,
        })
    }

    async fn send(&mut self, seq: u64) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("event {seq}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

// --- the lean fleet -------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[arg(long)]
    count: usize,
    /// Full agents (parse, verify and apply every event) instead of lean subscribers.
    #[arg(long)]
    agents: bool,
    /// Full agents that do not verify the transparency log (the floor signs none, so its
    /// agents have nothing to verify either way).
    #[arg(long)]
    no_verify_log: bool,
}

/// The subscribers following one target, and what each of them saw when.
enum Followers {
    Lean(JoinSet<Followed>),
    Agents {
        agents: Vec<Agent>,
        watchers: JoinSet<Vec<(u64, u64)>>,
    },
}

impl Followers {
    /// Start `count` subscribers of the kind asked for on `base` from `since`; returns once
    /// every one is connected (lean) or synced (agents).
    async fn start(
        args: &FleetArgs,
        base: &str,
        key: &str,
        since: u64,
        stop: &tokio::sync::watch::Receiver<Option<u64>>,
    ) -> anyhow::Result<Self> {
        if !args.agents {
            let connected = Arc::new(tokio::sync::Semaphore::new(0));
            let mut set = JoinSet::new();
            for i in 0..args.count {
                let options = FollowOptions {
                    name: format!("lean-{i}"),
                    ack: false,
                    record: true,
                };
                let (base, key, stop) = (base.to_string(), key.to_string(), stop.clone());
                let first = Some(Arc::clone(&connected));
                set.spawn(follow(base, key, since, stop, first, options));
            }
            let all = u32::try_from(args.count).unwrap_or(u32::MAX);
            tokio::time::timeout(Duration::from_secs(600), connected.acquire_many(all))
                .await
                .context("lean subscribers did not all connect within 10 minutes")??
                .forget();
            return Ok(Self::Lean(set));
        }
        let mut agents = Vec::with_capacity(args.count);
        for _ in 0..args.count {
            let mut config = AgentConfig::new(base, key.to_string());
            config.transport = Transport::Websocket;
            config.verify_log = !args.no_verify_log;
            agents.push(Agent::start(config)?);
        }
        for agent in &agents {
            if !agent.wait_until_synced(Duration::from_secs(600)).await {
                bail!("an agent did not sync within 10 minutes");
            }
        }
        let mut watchers = JoinSet::new();
        for agent in &agents {
            let (mut applied, mut stop) = (agent.watch_applied(), stop.clone());
            watchers.spawn(async move {
                let mut last = applied.borrow_and_update().get();
                let mut seen = Vec::new();
                loop {
                    if stop.borrow().is_some_and(|f| last >= f) {
                        return seen;
                    }
                    tokio::select! {
                        changed = applied.changed() => {
                            if changed.is_err() { return seen; }
                            let (now, seq) = (unix_micros(), applied.borrow_and_update().get());
                            seen.extend((last + 1..=seq).map(|s| (s, now)));
                            last = last.max(seq);
                        }
                        changed = stop.changed() => {
                            if changed.is_err() { return seen; }
                        }
                    }
                }
            });
        }
        Ok(Self::Agents { agents, watchers })
    }

    /// Wait until every subscriber reached the stop `seq`: each one's receipts, and the
    /// reconnects and faults (lost, repeated or reordered events; an agent's resyncs) of all.
    async fn finish(self) -> anyhow::Result<(Vec<Vec<(u64, u64)>>, u64, u64)> {
        let mut receipts = Vec::new();
        match self {
            Self::Lean(mut set) => {
                let (mut reconnects, mut faults) = (0, 0);
                while let Some(seen) = set.join_next().await {
                    let seen = seen?;
                    reconnects += seen.tally.reconnects;
                    faults += seen.tally.faults;
                    receipts.push(seen.receipts);
                }
                Ok((receipts, reconnects, faults))
            }
            Self::Agents {
                agents,
                mut watchers,
            } => {
                while let Some(seen) = watchers.join_next().await {
                    receipts.push(seen?);
                }
                let statuses: Vec<_> = agents.iter().map(Agent::status).collect();
                let reconnects = statuses.iter().map(|s| s.reconnects).sum();
                let resyncs = statuses.iter().map(|s| s.resyncs.saturating_sub(1)).sum();
                Ok((receipts, reconnects, resyncs))
            }
        }
    }
}

/// Hold `count` subscribers that follow one target at a time, driven by stdin lines:
/// `connect BASE KEY SINCE` (answered `ready` once all are connected or synced), then
/// `sent SEQ MICROS PHASE` lines and `final SEQ` (answered with the latency summary as JSON
/// once every subscriber reached it, after which they disconnect).
pub async fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["connect", base, key, since] = words[..] else {
            bail!("expected `connect BASE KEY SINCE`, got {line:?}");
        };
        let since: u64 = since.parse()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<u64>);
        let followers = Followers::start(&args, base, key, since, &stop_rx).await?;
        println!("ready");

        let mut phase_of = HashMap::new();
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["sent", seq, micros, phase] => {
                    let sent = (micros.parse::<u64>()?, phase.parse::<usize>()?);
                    phase_of.insert(seq.parse::<u64>()?, sent);
                }
                ["final", seq] => {
                    stop_tx.send_replace(Some(seq.parse()?));
                    break;
                }
                _ => bail!("unexpected line {line:?}"),
            }
        }
        let (receipts, reconnects, faults) = followers.finish().await?;
        let mut latencies = [Vec::new(), Vec::new()];
        for (seq, at) in receipts.into_iter().flatten() {
            if let Some(&(sent, phase)) = phase_of.get(&seq)
                && let Some(phase) = latencies.get_mut(phase)
            {
                phase.push(at.saturating_sub(sent));
            }
        }
        let mut summary = json!({ "reconnects": reconnects, "faults": faults });
        for (name, mut us) in PHASES.into_iter().zip(latencies) {
            us.sort_unstable();
            let ms = |p: f64| round3(percentile(&us, p) as f64 / 1000.0);
            summary[name] = json!({
                "pairs": us.len(),
                "p50_ms": ms(50.0),
                "p99_ms": ms(99.0),
                "max_ms": round3(us.last().copied().unwrap_or(0) as f64 / 1000.0),
            });
        }
        println!("{summary}");
    }
    Ok(())
}

/// The subscribers' child, from the parent's side.
struct ChildFleet {
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl ChildFleet {
    async fn start(count: usize, agents: bool, verify_log: bool) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?);
        child.args(["floor-fleet", "--count", &count.to_string()]);
        if agents {
            child.arg("--agents");
        }
        if !verify_log {
            child.arg("--no-verify-log");
        }
        let mut child = child
            .env("REVOCAST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the lean fleet child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        Ok(Self {
            stdin,
            lines,
            _child: child,
        })
    }

    async fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.stdin.write_all(text.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn answer(&mut self, limit: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .context("the subscribers did not answer in time")??
            .context("the subscribers' child exited")
    }

    /// Connect every subscriber to `base` from `since`, and let the connections settle.
    async fn connect(&mut self, base: &str, key: &str, since: u64) -> anyhow::Result<()> {
        self.line(&format!("connect {base} {key} {since}\n"))
            .await?;
        let ready = self.answer(Duration::from_secs(900)).await?;
        if ready != "ready" {
            bail!("the subscribers did not get ready: {ready:?}");
        }
        // The last connections' backlogs and first heartbeats out of the way.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }

    /// Report the send times; wait until every subscriber read `last`; the summary.
    async fn finish(&mut self, last: u64, sent: &[(u64, u64, usize)]) -> anyhow::Result<Value> {
        let mut text = String::new();
        for (seq, at, phase) in sent {
            text.push_str(&format!("sent {seq} {at} {phase}\n"));
        }
        text.push_str(&format!("final {last}\n"));
        self.line(&text).await?;
        Ok(serde_json::from_str(
            &self.answer(Duration::from_secs(600)).await?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolated_pauses_cover_the_range_once_each() {
        let pauses = isolated_pauses(50);
        assert_eq!(pauses.len(), 50);
        let mut ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert!(ms.iter().all(|&m| (50..=600).contains(&m)));
        ms.sort_unstable();
        ms.dedup();
        assert_eq!(ms.len(), 50, "a permutation: no pause twice");
    }

    #[test]
    fn frames_use_the_shortest_length_form() {
        assert_eq!(&text_frame(b"abc")[..], b"\x81\x03abc");
        let long = text_frame(&[b'x'; 200]);
        assert_eq!(&long[..4], b"\x81\x7e\x00\xc8");
        let frame = event_frame(7);
        assert_eq!(frame[0], 0x81);
        assert!(frame[2..].starts_with(br#"{"seq":7,"type":"session""#));
    }
}
