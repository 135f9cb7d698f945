//! The link between agent and authority under attack: a fault-injecting proxy cuts, resets,
//! truncates, refuses and stalls connections at random while 10,000 revocations stream
//! through. The agent must end with exactly the authority's set, every `seq` applied once; a
//! stalled link must make it unavailable within `max_staleness` plus one heartbeat, and
//! healing must make it fresh again.

use std::time::Duration;

use futures_util::future::join_all;
use revocast_agent::{Agent, AgentConfig, Transport};
use revocast_shared::event::RevocationEvent;
use revocast_shared::revset::RevocationSet;
use revocast_tests::TestAuthority;
use revocast_tests::proxy::{FaultyProxy, Mode};
use serde_json::{Value, json};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);
const REVOCATIONS: usize = 10_000;
const WRITERS: usize = 16;

/// A number in `0..n` from the OS: every run injects a different sequence of faults.
fn random(n: u64) -> u64 {
    getrandom::u64().unwrap() % n
}

/// The authority's set, rebuilt from its snapshot.
async fn authority_set(a: &TestAuthority) -> (u64, RevocationSet) {
    let snapshot = a.snapshot().await;
    let mut set = RevocationSet::new();
    for event in snapshot["events"].as_array().unwrap() {
        let event: RevocationEvent = serde_json::from_value(event.clone()).unwrap();
        set.apply(&event.revocation);
    }
    (snapshot["seq"].as_u64().unwrap(), set)
}

async fn chaos_run(transport: Transport) {
    let a = TestAuthority::start().await;
    let proxy = FaultyProxy::start(a.addr).await;
    let mut config = AgentConfig::new(proxy.base(), a.subscriber_key.clone());
    config.transport = transport;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await, "never synced");
    let start_seq = agent.status().applied.get();

    // A token per 1,000th session, to check verdicts at the end, and one never revoked.
    let mut tokens = Vec::new();
    for i in (0..REVOCATIONS).step_by(1000) {
        let answer = a
            .admin_post(
                "/v1/tokens",
                json!({ "sub": "chaos", "sid": format!("s{i}") }),
            )
            .await;
        tokens.push(answer["token"].as_str().unwrap().to_string());
    }
    let control = a.issue("control", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Writers go straight to the authority; only the agent's link is attacked.
    let writers = tokio::spawn({
        let (http, base, admin) = (a.http.clone(), a.base.clone(), a.admin_key.clone());
        async move {
            join_all((0..WRITERS).map(|w| {
                let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
                async move {
                    for i in (w..REVOCATIONS).step_by(WRITERS) {
                        let resp = http
                            .post(format!("{base}/v1/revoke/session"))
                            .bearer_auth(&admin)
                            .json(&json!({ "sid": format!("s{i}") }))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 200);
                    }
                }
            }))
            .await;
        }
    });
    let mut faults = [0u32; 5];
    while !writers.is_finished() {
        tokio::time::sleep(Duration::from_millis(20 + random(100))).await;
        let fault = random(5) as usize;
        faults[fault] += 1;
        match fault {
            0 => proxy.cut(),
            1 => proxy.reset(),
            2 => proxy.truncate(),
            3 => {
                proxy.set_mode(Mode::Refuse);
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(random(150))).await;
                proxy.set_mode(Mode::Forward);
            }
            _ => {
                proxy.stall(true);
                tokio::time::sleep(Duration::from_millis(random(300))).await;
                proxy.stall(false);
            }
        }
    }
    writers.await.unwrap();
    eprintln!("{transport:?}: faults injected (cut, reset, truncate, refuse, stall): {faults:?}");

    // Healed: the agent catches up with exactly the authority's set, and is fresh again once
    // a checkpoint has verified it.
    let deadline = Instant::now() + PATIENCE;
    while agent.status().applied.get() < a.head() || !agent.status().fresh {
        assert!(Instant::now() < deadline, "the agent never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (head, expected) = authority_set(&a).await;
    let status = agent.status();
    assert_eq!(status.applied.get(), head);
    assert_eq!(agent.revocations(), expected, "the agent's set differs");
    // Every seq applied exactly once: resumed by seq after each fault, never re-snapshotted.
    assert_eq!(
        status.resyncs,
        1,
        "the agent had to resync; log checks:\n{}",
        agent
            .render_metrics()
            .lines()
            .filter(|l| l.starts_with("revocast_agent_log_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(status.events_applied, head - start_seq);
    assert!(status.reconnects > 0, "no fault reached the agent");
    for token in &tokens {
        assert_eq!(agent.verify(token).unwrap_err().code(), "token_revoked");
    }
    assert!(agent.verify_or_refresh_keys(&control).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_websocket_link_loses_nothing() {
    chaos_run(Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_sse_link_loses_nothing() {
    chaos_run(Transport::Sse).await;
}

/// With `max_staleness` 1 s and heartbeats every second, a stalled link makes verify answer
/// `unavailable` within 2 s (plus slack for scheduling), and healing makes it fresh again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_fails_closed_in_time_and_heals() {
    let a = TestAuthority::start().await;
    let proxy = FaultyProxy::start(a.addr).await;
    let max_staleness = Duration::from_secs(1);
    let heartbeat = a.config().heartbeat_interval;
    let mut config = AgentConfig::new(proxy.base(), a.subscriber_key.clone());
    config.max_staleness = max_staleness;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    let token: Value = a.issue("stall", 600).await;
    let token = token["token"].as_str().unwrap();
    assert!(agent.verify_or_refresh_keys(token).await.is_ok());

    proxy.stall(true);
    let stalled = Instant::now();
    while agent.verify(token).is_ok() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(stalled.elapsed() < PATIENCE, "never became unavailable");
    }
    let took = stalled.elapsed();
    assert_eq!(agent.verify(token).unwrap_err().code(), "unavailable");
    assert!(
        // The bound, plus a second for a loaded CI machine to schedule this polling task.
        took <= max_staleness + heartbeat + Duration::from_secs(1),
        "unavailable only after {took:?}"
    );

    proxy.stall(false);
    let healed = Instant::now();
    while agent.verify(token).is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(healed.elapsed() < PATIENCE, "never fresh again");
    }
    assert!(agent.status().fresh);
}

fn code(agent: &Agent, token: &str) -> &'static str {
    match agent.verify(token) {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

/// A relay that forwards every byte, in order, but holds each chunk back a little longer
/// every second (+1 s per second, up to 10 s): the stream never falls silent, so arrival
/// says nothing. The agent judges by the authority's own time stamps: once the delay passes
/// `max_staleness` it answers `unavailable` within `max_staleness` + skew + one heartbeat,
/// it never answers `valid` for a token revoked meanwhile beyond that bound, and it is fresh
/// and exact again once the delay ends.
async fn delay_run(transport: Transport) {
    let a = TestAuthority::start().await;
    let proxy = FaultyProxy::start(a.addr).await;
    let max_staleness = Duration::from_secs(3);
    let heartbeat = a.config().heartbeat_interval;
    let mut config = AgentConfig::new(proxy.base(), a.subscriber_key.clone());
    config.transport = transport;
    config.max_staleness = max_staleness;
    let skew = config.max_clock_skew;
    // Under the ramp, heartbeats arrive (1 + rate) s apart: with the default idle timeout the
    // agent would reconnect now and then (through the same relay, so to no avail), and the old
    // arrival-only rule would sometimes go stale by accident. A long one keeps the agent on one
    // held-back connection, as a relay that ramps more gently would.
    config.idle_timeout = Some(Duration::from_secs(60));
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await, "never synced");
    let victim = a
        .admin_post("/v1/tokens", json!({ "sub": "victim", "sid": "s-victim" }))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = a.issue("other", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    for t in [&victim, &other] {
        assert!(agent.verify_or_refresh_keys(t).await.is_ok());
    }

    proxy.delay_ramp(1.0, Duration::from_secs(10));
    let ramp = Instant::now();
    // The victim is revoked 6 s into the ramp, when the relay holds new bytes back by 6 s.
    let revoke_at = Duration::from_secs(6);
    let mut revoked = None;
    // A verify may still say `valid` while the agent's newest authority time is older than
    // the revocation but within `max_staleness` + skew; never after (a little slack for the
    // wall clock the agent reads against the monotonic one the test reads).
    let valid_for = max_staleness + skew + Duration::from_millis(50);
    let bound = max_staleness + skew + heartbeat;
    // When the delay (as the agent sees it) first passed `max_staleness`, and when the agent
    // first answered `unavailable`.
    let mut passed = None;
    let mut unavailable = None;
    // Until well after the delay has grown to its cap (10 s for bytes read 10 s into the ramp).
    while ramp.elapsed() < Duration::from_secs(14) {
        if revoked.is_none() && ramp.elapsed() >= revoke_at {
            a.revoke_session("s-victim").await;
            revoked = Some(Instant::now());
        }
        let held = proxy.held();
        if held > max_staleness {
            passed.get_or_insert(Instant::now());
        }
        // Held back by more than max_staleness + skew: every stamp the agent holds is older
        // than that, whatever arrives next.
        let beyond = held > max_staleness + skew;
        let now = Instant::now();
        match code(&agent, &victim) {
            "ok" => {
                if let Some(revoked) = revoked {
                    assert!(
                        now - revoked < valid_for,
                        "a token revoked {:?} ago is valid",
                        now - revoked
                    );
                }
            }
            "unavailable" => {
                unavailable.get_or_insert(now);
            }
            other => panic!("the agent answered {other} while the relay held the stream back"),
        }
        if beyond {
            assert!(unavailable.is_some());
            assert_eq!(code(&agent, &victim), "unavailable");
            assert_eq!(code(&agent, &other), "unavailable");
            assert!(!agent.status().fresh);
        }
        if let (Some(passed), None) = (passed, unavailable) {
            assert!(
                now - passed <= bound + Duration::from_secs(2),
                "still fresh {:?} after the delay passed max_staleness",
                now - passed
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let passed = passed.expect("the delay never passed max_staleness");
    let took = unavailable
        .expect("never unavailable")
        .saturating_duration_since(passed);
    eprintln!(
        "{transport:?}: unavailable {took:?} after the delay passed {max_staleness:?} (bound {bound:?})"
    );
    // The bound, plus a second for a loaded CI machine to schedule this polling task.
    assert!(
        took <= bound + Duration::from_secs(1),
        "unavailable only after {took:?}"
    );
    let status = agent.status();
    assert!(!status.fresh);
    assert!(
        status.authority_age_ms.unwrap() > 5_000,
        "{:?}",
        status.authority_age_ms
    );
    assert!(proxy.held() > max_staleness + skew);

    proxy.end_delay();
    let ended = Instant::now();
    while !agent.status().fresh {
        assert!(ended.elapsed() < PATIENCE, "never fresh again");
        assert_ne!(code(&agent, &victim), "ok");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{transport:?}: fresh again {:?} after the delay ended",
        ended.elapsed()
    );
    assert_eq!(code(&agent, &victim), "token_revoked");
    assert_eq!(code(&agent, &other), "ok");
    assert_eq!(agent.status().applied.get(), a.head());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_delays_ever_more_cannot_keep_a_websocket_agent_fresh() {
    delay_run(Transport::Websocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_delays_ever_more_cannot_keep_an_sse_agent_fresh() {
    delay_run(Transport::Sse).await;
}
