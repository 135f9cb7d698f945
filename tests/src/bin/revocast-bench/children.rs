//! The bench's child processes: an authority (`revocast-bench authority`) and a fleet of agents
//! (`revocast-bench agents`), each talking to the parent over stdin/stdout lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use revocast_agent::{Agent, AgentConfig, Transport};
use revocast_authority::config::DatabaseUrl;
use revocast_authority::store::{RevokeToken, TokenRevocation};
use revocast_authority::{Authority, Config, StoreError};
use revocast_shared::{RevocationId, UnixSeconds};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinSet;

use crate::stats::{percentile, unix_micros};

#[derive(Debug, Args)]
pub struct AuthorityArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Token revocations (live for an hour) committed before serving.
    #[arg(long, default_value_t = 0)]
    preload: usize,
    /// Run as a replica on this PostgreSQL database instead of the embedded SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// `--max-ttl` of the authority, in seconds (how long revocations stay in force).
    #[arg(long)]
    max_ttl: Option<u64>,
}

/// Serve an authority on 127.0.0.1:0; print `listening ADDR`; stop when stdin closes.
pub async fn run_authority(args: AuthorityArgs) -> anyhow::Result<()> {
    // `REVOCAST_*` variables tune the benchmark's authority as they would a deployment.
    let mut config = Config::for_data_dir_with_env(&args.data_dir)?;
    if let Some(secs) = args.max_ttl {
        config.max_ttl_secs = i64::try_from(secs.max(1))?;
        config.default_ttl_secs = config.default_ttl_secs.min(config.max_ttl_secs);
    }
    // Every subscriber the bench runs connects from 127.0.0.1: the per-address cap that
    // protects a deployment from one flooding host would refuse the fleet beyond it.
    if std::env::var_os("REVOCAST_MAX_CONNECTIONS_PER_IP").is_none() {
        config.max_connections_per_ip = config.max_connections;
    }
    if let Some(url) = &args.database_url {
        config.database_url =
            Some(DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--database-url {e}"))?);
    }
    let authority = Authority::open(config).await?;
    preload(&authority, args.preload).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let stdin_closed = async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    authority.serve(listener, stdin_closed).await?;
    Ok(())
}

/// Commit `n` token revocations in-process, many in flight so they group-commit.
async fn preload(authority: &Authority, n: usize) -> anyhow::Result<()> {
    let handle = authority.handle();
    let exp = UnixSeconds::now().saturating_add_secs(3600);
    let mut inflight = JoinSet::new();
    for i in 0..n {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("random: {e}"))?;
        let revoke = RevokeToken {
            rid: RevocationId::of_signature(&random),
            sub: format!("bench-{i}"),
            exp,
            reason: None,
        };
        let handle = handle.clone();
        inflight.spawn(async move { handle.revoke_token(revoke).await });
        if inflight.len() >= 8192 {
            check(inflight.join_next().await)?;
        }
    }
    while let Some(done) = inflight.join_next().await {
        check(Some(done))?;
    }
    Ok(())
}

fn check(
    done: Option<Result<Result<TokenRevocation, StoreError>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    if let Some(done) = done {
        done??;
    }
    Ok(())
}

/// A child authority process.
pub struct ChildAuthority {
    pub base: String,
    pub admin_key: String,
    pub subscriber_key: String,
    pub pid: u32,
    _child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
}

impl ChildAuthority {
    /// An authority on its own embedded SQLite file, with `preload` revocations.
    pub async fn start(preload: usize) -> anyhow::Result<Self> {
        Self::start_on(preload, None, None, &[]).await
    }

    /// An authority on its own SQLite file whose revocations stay in force `max_ttl` seconds.
    pub async fn start_with_max_ttl(max_ttl: u64) -> anyhow::Result<Self> {
        Self::start_on(0, None, None, &["--max-ttl".into(), max_ttl.to_string()]).await
    }

    /// `n` replicas sharing the PostgreSQL database at `database_url`. The first one
    /// initialises it; the others use its API keys.
    pub async fn replicas(database_url: &str, n: usize) -> anyhow::Result<Vec<Self>> {
        let first = Self::start_on(0, Some(database_url), None, &[]).await?;
        let mut replicas = Vec::with_capacity(n);
        for _ in 1..n {
            replicas.push(Self::start_on(0, Some(database_url), Some(&first), &[]).await?);
        }
        replicas.insert(0, first);
        Ok(replicas)
    }

    async fn start_on(
        preload: usize,
        database_url: Option<&str>,
        keys_from: Option<&ChildAuthority>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // A profiler to run the authority under, e.g. `heaptrack` or `perf record --`.
        let mut command = match std::env::var("REVOCAST_BENCH_AUTHORITY_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut words = wrapper.split_whitespace();
                let mut command = Command::new(words.next().unwrap_or_default());
                command.args(words).arg(std::env::current_exe()?);
                command
            }
            _ => Command::new(std::env::current_exe()?),
        };
        command
            .arg("authority")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--preload")
            .arg(preload.to_string());
        if let Some(url) = database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(extra);
        let mut child = command
            .env("REVOCAST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the authority child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let addr = listening_addr(stdout).await?;
        let read = |f: &str| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(dir.path().join(f))?
                .trim()
                .to_string())
        };
        let (admin_key, subscriber_key) = match keys_from {
            Some(peer) => (peer.admin_key.clone(), peer.subscriber_key.clone()),
            None => (read("admin.key")?, read("subscriber.key")?),
        };
        Ok(Self {
            base: format!("http://{addr}"),
            admin_key,
            subscriber_key,
            pid: child.id().context("child pid")?,
            _child: child,
            _stdin: stdin,
            _dir: dir,
        })
    }
}

/// The address from the authority child's `listening ADDR` line; lines before it (a
/// profiler's, say) are skipped.
async fn listening_addr(stdout: ChildStdout) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("listening ") {
                return Ok(addr.to_string());
            }
        }
        bail!("the authority child exited before it was ready")
    };
    tokio::time::timeout(Duration::from_secs(600), find)
        .await
        .context("the authority child was not ready within 10 minutes")?
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[arg(long)]
    authority: String,
    #[arg(long)]
    key: String,
    #[arg(long)]
    count: usize,
    /// Do not record when each seq was applied (long runs: the soak).
    #[arg(long)]
    no_record: bool,
    /// Lean subscribers (raw WebSocket clients checking every `seq`) instead of agents,
    /// following from this `seq`.
    #[arg(long)]
    lean_since: Option<u64>,
    /// Lean subscribers acknowledge what they read (PROTOCOL.md, "Acknowledgments").
    #[arg(long)]
    lean_ack: bool,
    /// Watch tokens instead of timing seqs: the `refresh-reuse` scenario's protocol
    /// (`refresh.rs`).
    #[arg(long)]
    watch: bool,
    /// Agents that do not verify the transparency log (`--verify-log false`): the `log-verify`
    /// scenario's baseline.
    #[arg(long)]
    no_verify_log: bool,
    /// Only answer `status` lines (no per-agent watcher of the applied `seq`): the
    /// `agent-cpu` scenario, whose CPU figures are the agents' alone.
    #[arg(long)]
    status_only: bool,
}

/// Start `count` agents, print `ready` once all are synced; then read `final SEQ` and
/// `sent SEQ MICROS` lines until stdin closes, wait until every agent applied `final`, and
/// print the latency summary over all (agent, event) pairs as JSON.
pub async fn run_agents(args: AgentsArgs) -> anyhow::Result<()> {
    if let Some(since) = args.lean_since {
        return crate::lean::run(&args.authority, &args.key, args.count, since, args.lean_ack)
            .await;
    }
    let mut agents = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let mut config = AgentConfig::new(&args.authority, args.key.clone());
        config.transport = Transport::Websocket;
        config.verify_log = !args.no_verify_log;
        agents.push(Agent::start(config)?);
    }
    for agent in &agents {
        if !agent.wait_until_synced(Duration::from_secs(600)).await {
            bail!("an agent did not sync within 10 minutes");
        }
    }
    if args.watch {
        return crate::refresh::serve_watch(&agents).await;
    }
    if args.status_only {
        println!("ready");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            match line.trim() {
                "status" => println!("{}", fleet_status(&agents)?),
                _ => bail!("unexpected line {line:?}"),
            }
        }
        return Ok(());
    }
    let reconnects_before: u64 = agents.iter().map(|a| a.status().reconnects).sum();
    let record = !args.no_record;
    let (final_tx, final_rx) = tokio::sync::watch::channel(None::<u64>);
    let mut watchers = JoinSet::new();
    for agent in &agents {
        let mut applied = agent.watch_applied();
        let mut final_rx = final_rx.clone();
        let mut last = applied.borrow_and_update().get();
        watchers.spawn(async move {
            let mut seen: Vec<(u64, u64)> = Vec::new();
            loop {
                if final_rx.borrow().is_some_and(|f| last >= f) {
                    return seen;
                }
                tokio::select! {
                    changed = applied.changed() => {
                        if changed.is_err() { return seen; }
                        let now = unix_micros();
                        let seq = applied.borrow_and_update().get();
                        if record {
                            seen.extend((last + 1..=seq).map(|s| (s, now)));
                        }
                        last = last.max(seq);
                    }
                    changed = final_rx.changed() => {
                        if changed.is_err() { return seen; }
                    }
                }
            }
        });
    }
    println!("ready");

    let mut sent = std::collections::HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("final"), Some(seq), None) => {
                final_tx.send_replace(Some(seq.parse()?));
            }
            (Some("status"), None, None) => println!("{}", fleet_status(&agents)?),
            (Some("sent"), Some(seq), Some(micros)) => {
                sent.insert(seq.parse::<u64>()?, micros.parse::<u64>()?);
            }
            _ => bail!("unexpected line {line:?}"),
        }
    }
    let mut latencies = Vec::new();
    // Per revocation, the time until the last agent applied it: the fleet's latency, as the
    // authority's acknowledgments measure it too (`propagation --fleet-wait`).
    let mut fleet_us: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    while let Some(seen) = watchers.join_next().await {
        for (seq, at) in seen? {
            if let Some(sent_at) = sent.get(&seq) {
                let latency = at.saturating_sub(*sent_at);
                latencies.push(latency);
                let slowest = fleet_us.entry(seq).or_default();
                *slowest = (*slowest).max(latency);
            }
        }
    }
    latencies.sort_unstable();
    // Connections lost after the clock started: each one delays that agent's events by its
    // reconnect backoff, which shows in the tail.
    let reconnects: u64 = agents
        .iter()
        .map(|a| a.status().reconnects)
        .sum::<u64>()
        .saturating_sub(reconnects_before);
    let statuses: Vec<_> = agents.iter().map(Agent::status).collect();
    let summary = serde_json::json!({
        "reconnects": reconnects,
        // Snapshot loads beyond each agent's first: a reset, a gap or an epoch change.
        "resyncs": statuses.iter().map(|s| s.resyncs.saturating_sub(1)).sum::<u64>(),
        "entries_min": statuses.iter().map(|s| s.entries).min().unwrap_or(0),
        "entries_max": statuses.iter().map(|s| s.entries).max().unwrap_or(0),
        "pairs": latencies.len(),
        "p50_us": percentile(&latencies, 50.0),
        "p99_us": percentile(&latencies, 99.0),
        "max_us": latencies.last().copied().unwrap_or(0),
        "fleet_us_by_seq": fleet_us,
    });
    println!("{summary}");
    drop(agents);
    Ok(())
}

/// What the parent asks with a `status` line: this process's CPU time so far, the lowest
/// `seq` any agent applied, and the log checks of all agents (`log-verify`).
fn fleet_status(agents: &[Agent]) -> anyhow::Result<serde_json::Value> {
    let statuses: Vec<_> = agents.iter().map(Agent::status).collect();
    let counter = |agent: &Agent, series: &str| -> u64 {
        agent
            .render_metrics()
            .lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (user, system) = crate::stats::cpu_split(std::process::id())?;
    Ok(serde_json::json!({
        "cpu_seconds": user + system,
        "cpu_user_seconds": user,
        "cpu_system_seconds": system,
        "applied_min": statuses.iter().map(|s| s.applied.get()).min().unwrap_or(0),
        "verified_min": statuses.iter().map(|s| s.log_verified.map_or(0, |v| v.get())).min().unwrap_or(0),
        "checkpoints_verified": agents.iter().map(|a| counter(a, "revocast_agent_log_checkpoints_verified_total")).sum::<u64>(),
        "log_resyncs": agents.iter().map(|a| counter(a, "revocast_agent_log_resyncs_total")).sum::<u64>(),
        "resyncs": statuses.iter().map(|s| s.resyncs.saturating_sub(1)).sum::<u64>(),
        "reconnects": statuses.iter().map(|s| s.reconnects).sum::<u64>(),
    }))
}

/// The agents child, from the parent's side.
pub struct ChildAgents {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl ChildAgents {
    /// Start `count` agents against `authority` and wait until all are synced.
    pub async fn start(
        authority: &str,
        key: &str,
        count: usize,
        record: bool,
    ) -> anyhow::Result<Self> {
        Self::start_with(authority, key, count, record, true).await
    }

    /// [`start`](Self::start), with the agents verifying the transparency log or not.
    pub async fn start_with(
        authority: &str,
        key: &str,
        count: usize,
        record: bool,
        verify_log: bool,
    ) -> anyhow::Result<Self> {
        let mut extra = Vec::new();
        if !record {
            extra.push("--no-record");
        }
        if !verify_log {
            extra.push("--no-verify-log");
        }
        Self::spawn(authority, key, count, &extra).await
    }

    /// Start `count` agents, verifying the transparency log or not, that record nothing (the
    /// `log-verify` scenario asks them for their `status`).
    pub async fn start_verifying(
        authority: &str,
        key: &str,
        count: usize,
        verify_log: bool,
    ) -> anyhow::Result<Self> {
        Self::start_with(authority, key, count, false, verify_log).await
    }

    /// Start `count` agents, verifying the transparency log or not, that only answer
    /// `status` lines (the `agent-cpu` scenario: no watcher tasks of the bench's own).
    pub async fn start_status_only(
        authority: &str,
        key: &str,
        count: usize,
        verify_log: bool,
    ) -> anyhow::Result<Self> {
        let mut extra = vec!["--status-only"];
        if !verify_log {
            extra.push("--no-verify-log");
        }
        Self::spawn(authority, key, count, &extra).await
    }

    /// Ask a `start_verifying` or `start_status_only` child for its status (see
    /// `fleet_status`).
    pub async fn status(&mut self) -> anyhow::Result<serde_json::Value> {
        self.send_line("status").await?;
        let line = self.read_line(Duration::from_secs(60)).await?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Start `count` agents that watch tokens for the `refresh-reuse` scenario (see
    /// `refresh.rs`), and wait until all are synced.
    pub async fn start_watching(authority: &str, key: &str, count: usize) -> anyhow::Result<Self> {
        Self::spawn(authority, key, count, &["--watch"]).await
    }

    /// Start `count` lean subscribers (see `lean.rs`) following `authority` from `since`,
    /// acknowledging when `ack`, and wait until all are connected.
    pub async fn start_lean(
        authority: &str,
        key: &str,
        count: usize,
        since: u64,
        ack: bool,
    ) -> anyhow::Result<Self> {
        let since = since.to_string();
        let mut args = vec!["--lean-since", &since];
        if ack {
            args.push("--lean-ack");
        }
        Self::spawn(authority, key, count, &args).await
    }

    /// The child's process id (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn spawn(
        authority: &str,
        key: &str,
        count: usize,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?);
        child
            .args(["agents", "--authority", authority, "--key", key])
            .arg("--count")
            .arg(count.to_string())
            .args(extra);
        let mut child = child
            .env("REVOCAST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the agents child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        match tokio::time::timeout(Duration::from_secs(900), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => {}
            other => bail!("the agents child did not get ready: {other:?}"),
        }
        Ok(Self {
            child,
            stdin: Some(stdin),
            lines,
        })
    }

    /// Send one line to the child.
    pub async fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// The child's next line, within `limit`.
    pub async fn read_line(&mut self, limit: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .context("the agents child did not answer in time")??
            .context("the agents child exited")
    }

    /// Tell the child the send times and the last seq; return its latency summary.
    pub async fn finish(
        mut self,
        final_seq: u64,
        sent: &[(u64, u64)],
    ) -> anyhow::Result<serde_json::Value> {
        let mut stdin = self.stdin.take().context("stdin already closed")?;
        let mut text = format!("final {final_seq}\n");
        for (seq, micros) in sent {
            text.push_str(&format!("sent {seq} {micros}\n"));
        }
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
        let line = tokio::time::timeout(Duration::from_secs(600), self.lines.next_line())
            .await
            .context("the agents child never reported")??
            .context("the agents child exited without a report")?;
        let _ = self.child.wait().await;
        Ok(serde_json::from_str(&line)?)
    }
}

/// A shared HTTP client with enough idle connections for every bench task.
pub fn http_client() -> anyhow::Result<Arc<reqwest::Client>> {
    Ok(Arc::new(
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()?,
    ))
}
