//! `refresh-reuse`: a stolen refresh token comes back, and every agent of the fleet must stop
//! accepting the session's access token. Timed from sending the reuse to the moment the last
//! of N agents (in another process) rejects the session's current access token — beside, in
//! the same run and measured the same way, a plain `POST /v1/revoke/session` of a session made
//! the same way, so the figure reads as a ratio and survives a noisy shared machine.
//!
//! Arrival is detected as `propagation` detects it: on each change of an agent's applied `seq`
//! (`Agent::watch_applied`), stamped with the clock both processes share. Instead of matching
//! a `seq` (the reuse answers `400 invalid_grant`, which names none), each agent verifies the
//! watched token at each change; the first `token_revoked` is that agent's moment.
//!
//! The agents child's protocol (`revocast-bench agents --watch`), one line each way after its
//! `ready`: `watch TOKEN` → `watching` once every agent accepts TOKEN and watches it, then
//! `rejected [MICROS, …]` once every agent rejects it (or `error WHY`).

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_agent::{Agent, Rejection};
use revocast_shared::VerifyError;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use crate::children::{ChildAgents, http_client};
use crate::scenarios::{Setup, admin_post};
use crate::stats::{percentile, round3, unix_micros};

/// How long every agent has to reject a watched token before the run fails.
const ENFORCEMENT_LIMIT: Duration = Duration::from_secs(60);

/// One session's tokens after log-in and one rotation.
struct Session {
    /// The access token issued by the rotation: the one a client is using right now.
    access: String,
    /// The refresh token the rotation consumed: what the attacker copied.
    used_refresh: String,
    /// The refresh token the rotation handed out: the legitimate client's.
    live_refresh: String,
    sid: String,
}

/// How a round ends the session.
#[derive(Clone, Copy)]
enum Trigger {
    /// The attacker presents the used refresh token to `POST /oauth2/token`.
    Reuse,
    /// An operator calls `POST /v1/revoke/session`.
    SessionRevoke,
}

/// The figures of one trigger over all rounds, in microseconds.
#[derive(Default)]
struct Samples {
    /// Per round: until the last agent rejected.
    fleet: Vec<u64>,
    /// Every (agent, round) pair.
    pairs: Vec<u64>,
    /// Per round: until the trigger's HTTP answer arrived.
    answer: Vec<u64>,
}

impl Samples {
    fn figures(mut self) -> Value {
        self.fleet.sort_unstable();
        self.pairs.sort_unstable();
        self.answer.sort_unstable();
        let ms = |v: &[u64], p: f64| round3(percentile(v, p) as f64 / 1000.0);
        json!({
            "fleet_p50_ms": ms(&self.fleet, 50.0),
            "fleet_p99_ms": ms(&self.fleet, 99.0),
            "fleet_max_ms": ms(&self.fleet, 100.0),
            "pairs": self.pairs.len(),
            "pair_p50_ms": ms(&self.pairs, 50.0),
            "pair_p99_ms": ms(&self.pairs, 99.0),
            "answer_p50_ms": ms(&self.answer, 50.0),
        })
    }
}

/// `rounds` sessions ended by refresh-token reuse and `rounds` by a session revocation,
/// alternating so both see the same load. With `database_url` the requests go to one replica
/// and the agents follow the other.
pub async fn refresh_reuse(
    agents: usize,
    rounds: usize,
    database_url: Option<&str>,
) -> anyhow::Result<Value> {
    let setup = Setup::new(database_url).await?;
    let authority = &setup.replicas[0];
    let followed = setup.replicas.last().unwrap_or(authority);
    let http = http_client()?;
    let mut fleet =
        ChildAgents::start_watching(&followed.base, &followed.subscriber_key, agents).await?;
    let mut reuse = Samples::default();
    let mut direct = Samples::default();
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other's burst.
        let order = if round % 2 == 0 {
            [Trigger::Reuse, Trigger::SessionRevoke]
        } else {
            [Trigger::SessionRevoke, Trigger::Reuse]
        };
        for trigger in order {
            let session = log_in_and_refresh(&http, authority, &format!("rr{round}")).await?;
            let samples = match trigger {
                Trigger::Reuse => &mut reuse,
                Trigger::SessionRevoke => &mut direct,
            };
            end_and_time(&http, authority, &mut fleet, &session, trigger, samples).await?;
        }
    }
    drop(fleet);
    let ratio = |a: &Samples, b: &Samples, p: f64| {
        let mut a = a.fleet.clone();
        let mut b = b.fleet.clone();
        a.sort_unstable();
        b.sort_unstable();
        round3(percentile(&a, p) as f64 / percentile(&b, p).max(1) as f64)
    };
    let reuse_over_direct_p50 = ratio(&reuse, &direct, 50.0);
    let reuse_over_direct_p99 = ratio(&reuse, &direct, 99.0);
    Ok(json!({ "refresh_reuse": {
        "backend": setup.backend(),
        "agents": agents,
        "rounds": rounds,
        "reuse": reuse.figures(),
        "session_revoke": direct.figures(),
        "fleet_p50_reuse_over_session_revoke": reuse_over_direct_p50,
        "fleet_p99_reuse_over_session_revoke": reuse_over_direct_p99,
    }}))
}

/// Log in (issue with a refresh token) as `sub`, then refresh once.
async fn log_in_and_refresh(
    http: &reqwest::Client,
    authority: &crate::children::ChildAuthority,
    sub: &str,
) -> anyhow::Result<Session> {
    let login = admin_post(
        http,
        authority,
        "/v1/tokens",
        json!({ "sub": sub, "refresh": true }),
    )
    .await?;
    let first_refresh = login["refresh_token"]
        .as_str()
        .context("POST /v1/tokens with \"refresh\": true answered no refresh_token")?
        .to_string();
    let (status, rotated) = refresh(http, authority, &first_refresh).await?;
    if status != 200 {
        bail!("the first refresh answered {status}: {rotated}");
    }
    let access = rotated["access_token"]
        .as_str()
        .context("access_token")?
        .to_string();
    let live_refresh = rotated["refresh_token"]
        .as_str()
        .context("refresh_token")?
        .to_string();
    let sid = claim(&access, "sid")?;
    Ok(Session {
        access,
        used_refresh: first_refresh,
        live_refresh,
        sid,
    })
}

/// `POST /oauth2/token` with `grant_type=refresh_token`: the status and the JSON answer.
async fn refresh(
    http: &reqwest::Client,
    authority: &crate::children::ChildAuthority,
    refresh_token: &str,
) -> anyhow::Result<(u16, Value)> {
    let resp = http
        .post(format!("{}/oauth2/token", authority.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

/// A string claim of `token`, read from its payload (the signature is the agents' business).
fn claim(token: &str, name: &str) -> anyhow::Result<String> {
    let payload = token.split('.').nth(1).context("not a JWS")?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    Ok(claims[name]
        .as_str()
        .with_context(|| format!("the access token has no {name}"))?
        .to_string())
}

/// Have every agent watch the session's access token, end the session by `trigger`, and
/// record how long until each agent rejects the token.
async fn end_and_time(
    http: &reqwest::Client,
    authority: &crate::children::ChildAuthority,
    fleet: &mut ChildAgents,
    session: &Session,
    trigger: Trigger,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    fleet
        .send_line(&format!("watch {}", session.access))
        .await?;
    let line = fleet.read_line(Duration::from_secs(120)).await?;
    if line != "watching" {
        bail!("the agents did not watch the token: {line}");
    }
    let sent = unix_micros();
    match trigger {
        Trigger::Reuse => {
            let (status, answer) = refresh(http, authority, &session.used_refresh).await?;
            if status != 400 || answer["error"] != "invalid_grant" {
                bail!("reusing a used refresh token answered {status}: {answer}");
            }
        }
        Trigger::SessionRevoke => {
            admin_post(
                http,
                authority,
                "/v1/revoke/session",
                json!({ "sid": session.sid }),
            )
            .await?;
        }
    }
    samples.answer.push(unix_micros().saturating_sub(sent));
    let line = fleet
        .read_line(ENFORCEMENT_LIMIT + Duration::from_secs(10))
        .await?;
    let Some(times) = line.strip_prefix("rejected ") else {
        bail!("the agents did not all reject the session's access token: {line}");
    };
    let times: Vec<u64> = serde_json::from_str(times)?;
    let latencies: Vec<u64> = times.iter().map(|t| t.saturating_sub(sent)).collect();
    samples
        .fleet
        .push(latencies.iter().copied().max().unwrap_or(0));
    samples.pairs.extend(latencies);
    // Either way the whole family is dead: the legitimate client's refresh token too.
    let (status, answer) = refresh(http, authority, &session.live_refresh).await?;
    if status != 400 || answer["error"] != "invalid_grant" {
        bail!("the session's live refresh token still answered {status}: {answer}");
    }
    Ok(())
}

/// The agents child's side, once every agent is synced: say `ready`, then answer `watch TOKEN`
/// lines until stdin closes.
pub async fn serve_watch(agents: &[Agent]) -> anyhow::Result<()> {
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(token) = line.strip_prefix("watch ") else {
            bail!("unexpected line {line:?}");
        };
        match watch(agents, token).await {
            Ok(watchers) => {
                println!("watching");
                match tokio::time::timeout(ENFORCEMENT_LIMIT, collect(watchers)).await {
                    Ok(Ok(times)) => println!("rejected {}", json!(times)),
                    Ok(Err(e)) => println!("error {e:#}"),
                    Err(_) => {
                        println!("error not every agent rejected it within {ENFORCEMENT_LIMIT:?}")
                    }
                }
            }
            Err(e) => println!("error {e:#}"),
        }
    }
    Ok(())
}

/// Check that every agent accepts `token` now, and start one watcher per agent that answers
/// when that agent first rejects it as revoked.
async fn watch(agents: &[Agent], token: &str) -> anyhow::Result<JoinSet<anyhow::Result<u64>>> {
    let mut watchers = JoinSet::new();
    for agent in agents {
        // Subscribed before the check, so a change between the two is not missed.
        let mut applied = agent.watch_applied();
        applied.borrow_and_update();
        // A token the agent has not seen needs its key; an agent may not have the key yet.
        agent
            .verify_or_refresh_keys(token)
            .await
            .map_err(|r| anyhow::anyhow!("an agent does not accept the token: {r}"))?;
        let agent = agent.clone();
        let token = token.to_string();
        watchers.spawn(async move {
            loop {
                applied
                    .changed()
                    .await
                    .context("the agent stopped before it rejected the token")?;
                // Stamped at the change, as `propagation` stamps it.
                let at = unix_micros();
                applied.borrow_and_update();
                match agent.verify(&token) {
                    Ok(_) => {}
                    Err(Rejection::Invalid(VerifyError::Revoked)) => return Ok(at),
                    Err(other) => bail!("an agent rejected the token as {other}, not revoked"),
                }
            }
        });
    }
    Ok(watchers)
}

/// Every watcher's moment, once all have answered.
async fn collect(mut watchers: JoinSet<anyhow::Result<u64>>) -> anyhow::Result<Vec<u64>> {
    let mut times = Vec::with_capacity(watchers.len());
    while let Some(done) = watchers.join_next().await {
        times.push(done??);
    }
    Ok(times)
}
