//! The scenarios. Each returns `{"<scenario>": {figures…}}` with the key names of issue 5.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_agent::{Agent, AgentConfig};
use revocast_shared::crypto;
use revocast_shared::event::Revocation;
use revocast_shared::revset::RevocationSet;
use revocast_shared::{RevocationId, VerifyingKey};
use revocast_tests::postgres::TestDatabase;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::children::{ChildAgents, ChildAuthority, http_client};
use crate::side_by_side;
use crate::stats::{Resident, cpu_seconds, percentile, resident, round3, rss_bytes, unix_micros};

pub(crate) async fn admin_post(
    http: &reqwest::Client,
    authority: &ChildAuthority,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    post_with_key(http, &authority.base, &authority.admin_key, path, body).await
}

/// POST `body` to `base` + `path` with `key` as the bearer; the JSON answer, or an error
/// naming the status.
pub(crate) async fn post_with_key(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let resp = http
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {answer}");
    }
    Ok(answer)
}

/// The authorities a scenario measures: one on its embedded SQLite file, or two replicas on a
/// fresh PostgreSQL database made on the server `database_url` names (dropped afterwards).
pub(crate) struct Setup {
    pub(crate) replicas: Vec<ChildAuthority>,
    database: Option<TestDatabase>,
}

impl Setup {
    pub(crate) async fn new(database_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(match database_url {
            None => Self {
                replicas: vec![ChildAuthority::start(0).await?],
                database: None,
            },
            Some(server) => {
                let database = TestDatabase::create_on(server, "bench")
                    .await
                    .context("creating the bench database")?;
                Self {
                    replicas: ChildAuthority::replicas(&database.url, 2).await?,
                    database: Some(database),
                }
            }
        })
    }

    pub(crate) fn backend(&self) -> Value {
        let name = if self.database.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        json!({ "store": name, "replicas": self.replicas.len() })
    }
}

/// With `database_url`, revocations go to one replica and the agents follow the other, so the
/// figure includes the hop through PostgreSQL. With `fleet_wait`, every revocation asks to
/// wait for the fleet, and the authority's own per-revocation figure (from the agents'
/// acknowledgments) is compared with this bench's.
pub async fn propagation(
    agents: usize,
    events: usize,
    rate: u32,
    fleet_wait: bool,
    verify_log: bool,
    database_url: Option<&str>,
) -> anyhow::Result<Value> {
    let setup = Setup::new(database_url).await?;
    let authority = &setup.replicas[0];
    let followed = setup.replicas.last().unwrap_or(authority);
    let http = http_client()?;
    // Tokens to revoke, issued before the clock starts.
    let mut tokens = Vec::with_capacity(events * 2);
    for i in 0..events * 2 {
        let answer = admin_post(
            &http,
            authority,
            "/v1/tokens",
            json!({ "sub": format!("p{i}") }),
        )
        .await?;
        tokens.push(answer["token"].as_str().context("token")?.to_string());
    }
    let fleet = ChildAgents::start_with(
        &followed.base,
        &followed.subscriber_key,
        agents,
        true,
        verify_log,
    )
    .await?;
    let body = |token: &str| {
        if fleet_wait {
            json!({ "token": token, "wait": "fleet", "wait_timeout_ms": 30_000 })
        } else {
            json!({ "token": token })
        }
    };
    // (seq, sent at in µs, the authority's propagation answer when waiting for the fleet)
    let mut sent: Vec<(u64, u64, Value)> = Vec::with_capacity(events * 2);
    // One after another…
    for token in &tokens[..events] {
        let at = unix_micros();
        let answer = admin_post(&http, authority, "/v1/revoke", body(token)).await?;
        let seq = answer["seq"].as_u64().context("seq")?;
        sent.push((seq, at, answer["propagation"].clone()));
    }
    let back_to_back = sent.len();
    if fleet_wait {
        // The fleet acknowledged the last one just now, and agents acknowledge at most every
        // 50 ms: without a pause the first paced revocation's figure would include that wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …then at a steady rate, each in its own task so that a wait for the fleet does not hold
    // back the next one.
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut paced = tokio::task::JoinSet::new();
    for (i, token) in tokens[events..].iter().enumerate() {
        tick.tick().await;
        let (http, body) = (Arc::clone(&http), body(token));
        let (base, key) = (authority.base.clone(), authority.admin_key.clone());
        paced.spawn(async move {
            let at = unix_micros();
            let answer = post_with_key(&http, &base, &key, "/v1/revoke", body).await?;
            let seq = answer["seq"].as_u64().context("seq")?;
            anyhow::Ok((i, (seq, at, answer["propagation"].clone())))
        });
    }
    let mut rest: Vec<_> = paced
        .join_all()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    rest.sort_by_key(|(i, _)| *i);
    sent.extend(rest.into_iter().map(|(_, s)| s));
    let final_seq = sent.iter().map(|(s, _, _)| *s).max().unwrap_or(0);
    let times: Vec<(u64, u64)> = sent.iter().map(|(s, at, _)| (*s, *at)).collect();
    let summary = fleet.finish(final_seq, &times).await?;
    let ms = |key: &str| round3(summary[key].as_u64().unwrap_or(0) as f64 / 1000.0);
    let mut report = json!({ "propagation": {
        "backend": setup.backend(),
        "agents": agents,
        "events": sent.len(),
        "agents_verify_log": verify_log,
        "pairs": summary["pairs"],
        "reconnects": summary["reconnects"],
        "p50_ms": ms("p50_us"),
        "p99_ms": ms("p99_us"),
        "max_ms": ms("max_us"),
    }});
    if fleet_wait {
        let (first, second) = sent.split_at(back_to_back);
        report["propagation"]["fleet"] = json!({
            "back_to_back": fleet_agreement(first, &summary["fleet_us_by_seq"]),
            "paced": fleet_agreement(second, &summary["fleet_us_by_seq"]),
        });
    }
    Ok(report)
}

/// The fleet latency of each revocation in `sent` as the authority reported it (its
/// `propagation.slowest_ms`, from the commit to the last acknowledgment) beside this bench's
/// (from sending the request to the last agent applying it), and their difference.
fn fleet_agreement(sent: &[(u64, u64, Value)], bench_us_by_seq: &Value) -> Value {
    let mut authority_ms = Vec::new();
    let mut bench_ms = Vec::new();
    let mut difference_ms = Vec::new();
    let mut incomplete = 0u64;
    for (seq, _, propagation) in sent {
        let applied = propagation["applied"].as_u64();
        if applied.is_none() || applied != propagation["of"].as_u64() {
            incomplete += 1;
            continue;
        }
        let (Some(theirs), Some(ours)) = (
            propagation["slowest_ms"].as_f64(),
            bench_us_by_seq[seq.to_string()].as_f64(),
        ) else {
            incomplete += 1;
            continue;
        };
        authority_ms.push(theirs);
        bench_ms.push(ours / 1000.0);
        difference_ms.push(theirs - ours / 1000.0);
    }
    let quantiles = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .map(round3)
        };
        json!({ "p50": at(0.5), "p99": at(0.99), "max": v.last().copied().map(round3) })
    };
    json!({
        "revocations": authority_ms.len(),
        "incomplete": incomplete,
        "authority_ms": quantiles(&mut authority_ms),
        "bench_ms": quantiles(&mut bench_ms),
        "authority_minus_bench_ms": quantiles(&mut difference_ms),
    })
}

/// Nanoseconds per call of `f`, measured in batches of `batch` calls (the clock is read once
/// per batch, so its own cost hardly counts); returns the sorted per-batch means.
fn per_call_ns(iterations: usize, batch: usize, mut f: impl FnMut()) -> Vec<u64> {
    let mut out = Vec::with_capacity(iterations / batch + 1);
    for _ in 0..(iterations / batch).max(1) {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        out.push((start.elapsed().as_nanos() / batch as u128) as u64);
    }
    out.sort_unstable();
    out
}

/// Microseconds of each single call, sorted.
async fn each_us<F: std::future::Future<Output = anyhow::Result<()>>>(
    iterations: usize,
    mut f: impl FnMut(usize) -> F,
) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        f(i).await?;
        out.push(start.elapsed().as_micros() as u64);
    }
    out.sort_unstable();
    Ok(out)
}

/// The agent's verify against the alternatives: a cached and a first-seen token, the raw
/// ML-DSA-65 verify underneath, a Redis blocklist lookup and token introspection over HTTP,
/// then cached verifies on every core for a second. The first-seen and raw figures are taken
/// for every crypto backend compiled in, side by side (one agent per backend).
pub async fn verify(iterations: usize, redis: &str) -> anyhow::Result<Value> {
    let authority = ChildAuthority::start(0).await?;
    let http = http_client()?;
    let mut config = AgentConfig::new(&authority.base, authority.subscriber_key.clone());
    config.verdict_cache_capacity = iterations + 16;
    // One agent per backend, the default's first: it is the one the other figures measure.
    let mut agents = Vec::new();
    for backend in crypto::backends() {
        config.crypto_backend = *backend;
        agents.push(Agent::start(config.clone())?);
    }
    for agent in &agents {
        if !agent.wait_until_synced(Duration::from_secs(60)).await {
            bail!("the agent did not sync");
        }
    }
    let agent = &agents[0];
    let tokens = issue_tokens(&http, &authority, (iterations / 20).clamp(20, 2000)).await?;
    let cached_token = tokens[0].clone();
    agent
        .verify(&cached_token)
        .map_err(|r| anyhow::anyhow!("verify: {r}"))?;

    // Cached: the same token again and again (signature skipped, revocation checked).
    let cached = per_call_ns(iterations, 64, || {
        let _ = std::hint::black_box(agent.verify(std::hint::black_box(&cached_token)));
    });
    let first_seen = first_seen_ns(&agents, &tokens[1..]);
    let public_key = authority_public_key(&http, &authority).await?;
    let mldsa = side_by_side::mldsa_verify_ns(&public_key, &tokens[1..])?;
    let redis_us = redis_exists_us(redis, &cached_token, iterations.min(20_000)).await?;
    let introspection =
        introspection_us(&http, &authority, &cached_token, iterations.min(2000)).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let throughput = cached_verifies_in_a_second(agent, &cached_token, cores);

    let cached_p50 = percentile(&cached, 50.0);
    let redis_p50 = redis_us.as_ref().map(|v| percentile(v, 50.0));
    let intro_p50 = percentile(&introspection, 50.0);
    let speedup = |other_us: u64| round3(other_us as f64 * 1000.0 / cached_p50.max(1) as f64);
    let mut figures = side_by_side::header();
    for (i, backend) in crypto::backends().iter().enumerate() {
        let first_seen_p50 = percentile(&first_seen[i], 50.0) as f64;
        let mldsa_p50 = percentile(&mldsa[i], 50.0) as f64;
        let b = *backend;
        side_by_side::insert(
            &mut figures,
            "first_seen_us_p50",
            b,
            round3(first_seen_p50 / 1000.0),
        );
        side_by_side::insert(
            &mut figures,
            "mldsa_verify_us_p50",
            b,
            round3(mldsa_p50 / 1000.0),
        );
        let over = round3(first_seen_p50 / mldsa_p50.max(1.0));
        side_by_side::insert(&mut figures, "first_seen_over_mldsa", b, over);
    }
    side_by_side::insert_ratio(&mut figures, "first_seen_us_p50");
    side_by_side::insert_ratio(&mut figures, "mldsa_verify_us_p50");
    let rest = json!({
        "cached_ns_p50": cached_p50,
        "cached_ns_p99": percentile(&cached, 99.0),
        "redis_exists_us_p50": redis_p50,
        "introspection_us_p50": intro_p50,
        "cached_speedup_vs_redis": redis_p50.map(speedup),
        "cached_speedup_vs_introspection": speedup(intro_p50),
        "throughput_cached_per_s": throughput,
        "threads": cores,
    });
    if let Value::Object(rest) = rest {
        figures.extend(rest);
    }
    Ok(json!({ "verify": figures }))
}

/// `count` tokens from the authority, for subjects `v0`, `v1`, …
async fn issue_tokens(
    http: &reqwest::Client,
    authority: &ChildAuthority,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let answer = admin_post(
            http,
            authority,
            "/v1/tokens",
            json!({ "sub": format!("v{i}") }),
        )
        .await?;
        tokens.push(answer["token"].as_str().context("token")?.to_string());
    }
    Ok(tokens)
}

/// Nanoseconds of each agent's verify of each token, every one seen for the first time by
/// that agent: one sorted list per agent. The agents take turns token by token.
fn first_seen_ns(agents: &[Agent], tokens: &[String]) -> Vec<Vec<u64>> {
    let mut times = vec![Vec::with_capacity(tokens.len()); agents.len()];
    for t in tokens {
        for (agent, times) in agents.iter().zip(&mut times) {
            let start = Instant::now();
            let _ = std::hint::black_box(agent.verify(t));
            times.push(start.elapsed().as_nanos() as u64);
        }
    }
    for t in &mut times {
        t.sort_unstable();
    }
    times
}

/// The authority's signing key from its JWKS, checked to be one an agent would accept.
async fn authority_public_key(
    http: &reqwest::Client,
    authority: &ChildAuthority,
) -> anyhow::Result<Vec<u8>> {
    let jwks: Value = http
        .get(format!("{}/.well-known/jwks.json", authority.base))
        .send()
        .await?
        .json()
        .await?;
    let jwk = serde_json::from_value(jwks["keys"][0].clone())?;
    VerifyingKey::from_jwk(&jwk)?;
    key_bytes(&jwks)
}

/// Microseconds of each of `iterations` Redis `EXISTS` calls on `token`'s blocklist key (the
/// blocklist alternative: one round trip per request), sorted; `None` without a Redis.
async fn redis_exists_us(
    redis: &str,
    token: &str,
    iterations: usize,
) -> anyhow::Result<Option<Vec<u64>>> {
    let mut conn = match tokio::net::TcpStream::connect(redis).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("revocast-bench: no Redis at {redis} ({e}); redis_exists_us_p50 is null");
            return Ok(None);
        }
    };
    conn.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    let rid = RevocationId::of_signature(token.as_bytes()).to_string();
    let command = format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n{rid}\r\n", rid.len() + 10);
    let command = command.replace(&rid, &format!("blocklist:{rid}"));
    let mut v = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        conn.write_all(command.as_bytes()).await?;
        let read = conn.read(&mut buf).await?;
        v.push(start.elapsed().as_micros() as u64);
        if read == 0 || buf[0] != b':' {
            bail!("unexpected Redis reply");
        }
    }
    v.sort_unstable();
    Ok(Some(v))
}

/// Microseconds of each of `iterations` introspections of `token` (`POST /v1/verify`, an HTTP
/// round trip to the authority per request), after one that must succeed; sorted.
async fn introspection_us(
    http: &reqwest::Client,
    authority: &ChildAuthority,
    token: &str,
    iterations: usize,
) -> anyhow::Result<Vec<u64>> {
    let url = format!("{}/v1/verify", authority.base);
    let resp = http
        .post(&url)
        .bearer_auth(&authority.admin_key)
        .json(&json!({ "token": token }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("introspection failed: {}", resp.status());
    }
    each_us(iterations, |_| {
        let request = http
            .post(&url)
            .bearer_auth(&authority.admin_key)
            .json(&json!({ "token": token }));
        async move {
            request.send().await?.bytes().await?;
            Ok(())
        }
    })
    .await
}

/// Cached verifies of `token` done in one second by `threads` threads.
fn cached_verifies_in_a_second(agent: &Agent, token: &str, threads: usize) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (agent, token, done, count) = (
                agent.clone(),
                token.to_string(),
                Arc::clone(&done),
                Arc::clone(&count),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let _ = std::hint::black_box(agent.verify(&token));
                    }
                    n += 256;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    for t in handles {
        let _ = t.join();
    }
    count.load(Ordering::Relaxed)
}

/// The first JWK's raw public key bytes.
fn key_bytes(jwks: &Value) -> anyhow::Result<Vec<u8>> {
    let public = jwks["keys"][0]["pub"].as_str().context("JWK pub")?;
    Ok(URL_SAFE_NO_PAD.decode(public)?)
}

pub async fn memory(subscribers: usize, entries: usize) -> anyhow::Result<Value> {
    // Agent side: bytes per revoked-token entry in the revocation set the agent holds.
    let me = std::process::id();
    let before = rss_bytes(me)?;
    let mut set = RevocationSet::new();
    let exp = i64::MAX / 2;
    let mut random = [0u8; 32];
    for i in 0..entries {
        random[..8].copy_from_slice(&(i as u64).to_le_bytes());
        set.apply(&Revocation::Token {
            rid: RevocationId::of_signature(&random),
            exp,
        });
    }
    let after = rss_bytes(me)?;
    let per_entry = (after.saturating_sub(before)) as f64 / entries.max(1) as f64;
    std::hint::black_box(&set);
    drop(set);

    // Authority side: RSS growth of the authority process per idle WebSocket subscriber.
    let authority = ChildAuthority::start(0).await?;
    let url = format!(
        "{}/v1/stream",
        authority.base.replacen("http://", "ws://", 1)
    );
    // Warm up, so one-time allocations are not counted.
    let mut conns = Vec::with_capacity(subscribers + 16);
    for _ in 0..16 {
        conns.push(ws_connect(&url, &authority.subscriber_key).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let auth_before = rss_bytes(authority.pid)?;
    for _ in 0..subscribers {
        conns.push(ws_connect(&url, &authority.subscriber_key).await?);
    }
    // Let hello and a few heartbeats flow, as on an idle fleet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let auth_after = rss_bytes(authority.pid)?;
    let per_subscriber = auth_after.saturating_sub(auth_before) as f64 / subscribers.max(1) as f64;
    drop(conns);
    Ok(json!({ "memory": {
        "agent_entries": entries,
        "agent_bytes_per_token_entry": round3(per_entry),
        "authority_subscribers": subscribers,
        "authority_bytes_per_idle_subscriber": round3(per_subscriber),
    }}))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, key: &str) -> anyhow::Result<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(ws)
}

/// With `database_url`, the clients are spread over two replicas.
pub async fn ingest(
    clients: usize,
    seconds: u64,
    database_url: Option<&str>,
) -> anyhow::Result<Value> {
    let setup = Setup::new(database_url).await?;
    let replicas: Vec<Arc<(String, String)>> = setup
        .replicas
        .iter()
        .map(|r| Arc::new((r.base.clone(), r.admin_key.clone())))
        .collect();
    let http = http_client()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let http = Arc::clone(&http);
        let authority = Arc::clone(&replicas[c % replicas.len()]);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                let ok = http
                    .post(format!("{}/v1/revoke/session", authority.0))
                    .bearer_auth(&authority.1)
                    .json(&json!({ "sid": format!("c{c}-{i}") }))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                latencies.push(start.elapsed().as_micros() as u64);
                errors += u64::from(!ok);
                i += 1;
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let ms = |us: u64| round3(us as f64 / 1000.0);
    Ok(json!({ "ingest": {
        "backend": setup.backend(),
        "clients": clients,
        "seconds": seconds,
        "revocations": latencies.len() as u64 - errors,
        "errors": errors,
        "per_second": round3((latencies.len() as u64 - errors) as f64 / seconds.max(1) as f64),
        "p50_ms": ms(percentile(&latencies, 50.0)),
        "p99_ms": ms(percentile(&latencies, 99.0)),
    }}))
}

pub async fn bootstrap(entries: usize) -> anyhow::Result<Value> {
    let authority = ChildAuthority::start(entries).await?;
    let start = Instant::now();
    let agent = Agent::start(AgentConfig::new(
        &authority.base,
        authority.subscriber_key.clone(),
    ))?;
    if !agent.wait_until_synced(Duration::from_secs(600)).await {
        bail!("the agent did not sync within 10 minutes");
    }
    let elapsed = start.elapsed();
    let status = agent.status();
    if status.entries < entries {
        bail!(
            "the agent holds {} entries, expected {entries}",
            status.entries
        );
    }
    Ok(json!({ "bootstrap": {
        "entries": status.entries,
        "seconds": round3(elapsed.as_secs_f64()),
    }}))
}

/// Requests the soak keeps in flight at most, each on its own HTTP/1.1 connection: a client
/// fleet's connection pools, not one connection per queued request. Bounded, because during a
/// stall every queued request would open a connection, and their buffers would show up in the
/// authority's memory as steps that have nothing to do with the stream. Not lower, because the
/// bound must not cap the offered rate: 1,000 revocations/s answered in ~0.25 s under this
/// load need ~250 in flight, and this leaves twice that (BENCHMARKS.md has the runs that
/// set it).
const SOAK_MAX_IN_FLIGHT: usize = 512;

/// Mixed traffic for `seconds` against an authority holding `subscribers` agent connections
/// (in another process): revocations at `rate`/s, plus token issuance and introspection at a
/// tenth of that each. Counts errors, checks that every agent ends at the last `seq` holding
/// the authority's entry count (nothing lost), and samples the authority's memory.
pub async fn soak(
    subscribers: usize,
    rate: u32,
    seconds: u64,
    lean: bool,
    ack: bool,
    max_ttl: Option<u64>,
) -> anyhow::Result<Value> {
    if ack && !lean {
        bail!("--ack is for lean subscribers: agents always acknowledge");
    }
    let authority = Arc::new(match max_ttl {
        Some(secs) => ChildAuthority::start_with_max_ttl(secs).await?,
        None => ChildAuthority::start(0).await?,
    });
    let http = http_client()?;
    let fleet = if lean {
        ChildAgents::start_lean(
            &authority.base,
            &authority.subscriber_key,
            subscribers,
            0,
            ack,
        )
        .await?
    } else {
        ChildAgents::start(
            &authority.base,
            &authority.subscriber_key,
            subscribers,
            false,
        )
        .await?
    };
    let token =
        admin_post(&http, &authority, "/v1/tokens", json!({ "sub": "soak" })).await?["token"]
            .as_str()
            .context("token")?
            .to_string();

    let load = SoakLoad::run(&http, &authority, fleet.pid(), &token, rate, seconds).await?;
    let final_seq = load.counts.last_seq.load(Ordering::Relaxed);
    let summary = fleet.finish(final_seq, &[]).await?;
    let held = revocation_entries(&http, &authority).await?;
    check_nothing_lost(lean, &summary, final_seq, held)?;
    let acks = fleet_ack_counts(&http, &authority).await?;
    let kind = match (lean, ack) {
        (false, _) => "agent",
        (true, false) => "lean",
        (true, true) => "lean, acknowledging",
    };
    let mut report = load.report(subscribers, kind, max_ttl, rate, held, &summary);
    report["soak"]["fleet_acks"] = acks;
    Ok(report)
}

/// The authority's acknowledgment counters from `/metrics`: how many it took and how many
/// it ignored, by reason (a soak whose subscribers acknowledge should ignore none).
async fn fleet_ack_counts(
    http: &reqwest::Client,
    authority: &ChildAuthority,
) -> anyhow::Result<Value> {
    let text = http
        .get(format!("{}/metrics", authority.base))
        .bearer_auth(&authority.admin_key)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut ignored = serde_json::Map::new();
    let mut taken = 0u64;
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        if name == "revocast_fleet_acks_total" {
            taken = value;
        } else if let Some(reason) = name
            .strip_prefix("revocast_fleet_acks_ignored_total{reason=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            ignored.insert(reason.to_string(), value.into());
        }
    }
    Ok(json!({ "taken": taken, "ignored": ignored }))
}

/// What the soak's requests count, shared by every request task.
#[derive(Default)]
struct SoakCounts {
    errors: AtomicU64,
    revoked: AtomicU64,
    issued: AtomicU64,
    verified: AtomicU64,
    /// The highest `seq` an answer carried.
    last_seq: AtomicU64,
}

/// The soak's load, offered and answered.
struct SoakLoad {
    counts: Arc<SoakCounts>,
    /// Revocation latencies in microseconds, sorted.
    latencies: Vec<u64>,
    /// The authority's memory: before the load, once a second, and at the end.
    rss: Vec<Resident>,
    /// Seconds from the first request to the last answer.
    elapsed: f64,
    /// CPU seconds (user + system) the authority and the subscribers' process used meanwhile.
    authority_cpu: f64,
    subscribers_cpu: Option<f64>,
}

impl SoakLoad {
    /// Offer the mixed traffic for `seconds` at `rate` requests/s, at most
    /// [`SOAK_MAX_IN_FLIGHT`] at a time, and wait for every answer.
    async fn run(
        http: &Arc<reqwest::Client>,
        authority: &Arc<ChildAuthority>,
        subscribers_pid: Option<u32>,
        token: &str,
        rate: u32,
        seconds: u64,
    ) -> anyhow::Result<Self> {
        let counts = Arc::new(SoakCounts::default());
        let authority_cpu_before = cpu_seconds(authority.pid)?;
        let subscribers_cpu_before = subscribers_pid.and_then(|pid| cpu_seconds(pid).ok());
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds.max(1));
        let mut rss = vec![resident(authority.pid)?];
        let mut sample = tokio::time::interval(Duration::from_secs(1));
        sample.tick().await;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = tokio::task::JoinSet::new();
        let mut latencies: Vec<u64> = Vec::new();
        let mut n = 0u64;
        while Instant::now() < deadline {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sample.tick() => {
                    rss.push(resident(authority.pid)?);
                    continue;
                }
            }
            // Bounded: a saturated authority slows the offered load instead of piling up tasks.
            while inflight.len() >= SOAK_MAX_IN_FLIGHT {
                if let Some(Ok(Some(us))) = inflight.join_next().await {
                    latencies.push(us);
                }
            }
            inflight.spawn(soak_request(
                Arc::clone(http),
                Arc::clone(authority),
                Arc::clone(&counts),
                n,
                token.to_string(),
            ));
            n += 1;
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok(Some(us)) = done {
                latencies.push(us);
            }
        }
        latencies.sort_unstable();
        let elapsed = started.elapsed().as_secs_f64();
        let authority_cpu = cpu_seconds(authority.pid)? - authority_cpu_before;
        let subscribers_cpu = subscribers_pid
            .and_then(|pid| cpu_seconds(pid).ok())
            .zip(subscribers_cpu_before)
            .map(|(after, before)| after - before);
        rss.push(resident(authority.pid)?);
        Ok(Self {
            counts,
            latencies,
            rss,
            elapsed,
            authority_cpu,
            subscribers_cpu,
        })
    }

    /// The soak's figures.
    fn report(
        &self,
        subscribers: usize,
        subscriber_kind: &str,
        max_ttl: Option<u64>,
        rate: u32,
        held: u64,
        summary: &Value,
    ) -> Value {
        let Self {
            counts,
            latencies,
            rss,
            elapsed,
            authority_cpu,
            subscribers_cpu,
        } = self;
        let (elapsed, revoked) = (*elapsed, counts.revoked.load(Ordering::Relaxed));
        let mb = |b: u64| round3(b as f64 / (1024.0 * 1024.0));
        // Memory after the first quarter (warmed up) against the end: flat means close to zero.
        let warm = rss[rss.len() / 4];
        let end = rss.last().copied().unwrap_or_default();
        json!({ "soak": {
            "subscribers": subscribers,
            "subscriber_kind": subscriber_kind,
            "max_ttl_seconds": max_ttl,
            "seconds": round3(elapsed),
            "offered_per_second": rate,
            "max_in_flight": SOAK_MAX_IN_FLIGHT,
            "revocations": revoked,
            "revocations_per_second": round3(revoked as f64 / elapsed),
            "revoke_p50_ms": round3(percentile(latencies, 50.0) as f64 / 1000.0),
            "revoke_p99_ms": round3(percentile(latencies, 99.0) as f64 / 1000.0),
            // Per cent of one core over the load (the drain included): 200 is both cores.
            "authority_cpu_percent": round3(100.0 * authority_cpu / elapsed),
            "subscribers_cpu_percent": subscribers_cpu.map(|c| round3(100.0 * c / elapsed)),
            // CPU per revocation answered, in microseconds: comparable across runs whose
            // achieved rates differ.
            "authority_cpu_us_per_revocation": round3(1e6 * authority_cpu / (revoked.max(1) as f64)),
            "tokens_issued": counts.issued.load(Ordering::Relaxed),
            "verifications": counts.verified.load(Ordering::Relaxed),
            "errors": counts.errors.load(Ordering::Relaxed),
            "final_seq": counts.last_seq.load(Ordering::Relaxed),
            "authority_entries": held,
            "agent_entries_min": summary["entries_min"],
            "agent_entries_max": summary["entries_max"],
            "subscriber_events": summary["events"],
            "subscriber_faults": summary["faults"],
            "agent_reconnects": summary["reconnects"],
            "agent_resyncs": summary["resyncs"],
            "authority_rss_start_mb": mb(rss[0].total),
            "authority_rss_warm_mb": mb(warm.total),
            "authority_rss_end_mb": mb(end.total),
            "authority_rss_max_mb": mb(rss.iter().map(|r| r.total).max().unwrap_or(0)),
            // Private memory (heap, stacks) against mapped files, to tell a leak from a cache.
            "authority_rss_anon_warm_mb": mb(warm.anon),
            "authority_rss_anon_end_mb": mb(end.anon),
            "authority_rss_file_warm_mb": mb(warm.file),
            "authority_rss_file_end_mb": mb(end.file),
            // Least-squares slope of the samples after the first third (warm-up): flat is ~0.
            "authority_rss_slope_mb_per_minute": round3(slope_per_minute(&rss[rss.len() / 3..], |r| mb(r.total))),
            "authority_rss_anon_slope_mb_per_minute": round3(slope_per_minute(&rss[rss.len() / 3..], |r| mb(r.anon))),
            // One sample per second, the first before any load.
            "authority_rss_mb_by_second": rss.iter().map(|r| mb(r.total).round()).collect::<Vec<_>>(),
            "authority_rss_anon_mb_by_second": rss.iter().map(|r| mb(r.anon).round()).collect::<Vec<_>>(),
        }})
    }
}

/// The soak's request number `n`: a token issued for every tenth (n % 10 == 3), an
/// introspection of `token` for every tenth (n % 10 == 7), a session revoked for the rest.
/// Counted in `counts`; the answer's latency in microseconds, `None` on an error.
async fn soak_request(
    http: Arc<reqwest::Client>,
    authority: Arc<ChildAuthority>,
    counts: Arc<SoakCounts>,
    n: u64,
    token: String,
) -> Option<u64> {
    let (path, body, counter) = match n % 10 {
        3 => (
            "/v1/tokens",
            json!({ "sub": format!("soak-{n}") }),
            &counts.issued,
        ),
        7 => ("/v1/verify", json!({ "token": token }), &counts.verified),
        _ => (
            "/v1/revoke/session",
            json!({ "sid": format!("soak-{n}") }),
            &counts.revoked,
        ),
    };
    let start = Instant::now();
    match admin_post(&http, &authority, path, body).await {
        Ok(answer) => {
            counter.fetch_add(1, Ordering::Relaxed);
            let seq = answer["seq"].as_u64()?;
            counts.last_seq.fetch_max(seq, Ordering::Relaxed);
            Some(start.elapsed().as_micros() as u64)
        }
        Err(e) => {
            if counts.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("soak: {e:#}");
            }
            None
        }
    }
}

/// The authority's `revocation_entries` gauge, from its metrics.
async fn revocation_entries(
    http: &reqwest::Client,
    authority: &ChildAuthority,
) -> anyhow::Result<u64> {
    let metrics = http
        .get(format!("{}/metrics", authority.base))
        .send()
        .await?
        .text()
        .await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("revocast_revocation_entries "))
        .and_then(|v| v.trim().parse().ok())
        .context("revocation_entries gauge")
}

/// Fail unless every subscriber got everything: lean ones reached `final_seq` without a seq
/// fault, full agents hold the authority's `held` entries.
fn check_nothing_lost(
    lean: bool,
    summary: &Value,
    final_seq: u64,
    held: u64,
) -> anyhow::Result<()> {
    if lean {
        let (min, faults) = (
            summary["applied_min"].as_u64().unwrap_or(0),
            summary["faults"].as_u64().unwrap_or(u64::MAX),
        );
        if faults != 0 || min != final_seq {
            bail!(
                "lost events: {faults} seq faults; the slowest subscriber reached {min} of {final_seq}"
            );
        }
    } else {
        let (min, max) = (
            summary["entries_min"].as_u64().unwrap_or(0),
            summary["entries_max"].as_u64().unwrap_or(0),
        );
        if (min, max) != (held, held) {
            bail!("lost events: agents hold {min}..={max} entries, the authority {held}");
        }
    }
    Ok(())
}

/// Least-squares slope of `f` over one-second `samples`, per minute; 0 for fewer than two.
fn slope_per_minute<T>(samples: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = samples.iter().map(&f).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, sample) in samples.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (f(sample) - mean_y);
        den += dx * dx;
    }
    60.0 * num / den
}

#[cfg(test)]
mod tests {
    use super::slope_per_minute;

    #[test]
    fn slope_is_per_minute_and_zero_when_flat() {
        let rising: Vec<f64> = (0..120).map(|s| 100.0 + 0.5 * f64::from(s)).collect();
        assert!((slope_per_minute(&rising, |v| *v) - 30.0).abs() < 1e-9);
        assert_eq!(slope_per_minute(&[7.0; 10], |v| *v), 0.0);
        assert_eq!(slope_per_minute(&[1.0], |v| *v), 0.0);
    }
}
