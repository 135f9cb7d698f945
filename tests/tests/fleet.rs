//! The fleet: agents name themselves and acknowledge what they applied; `GET /v1/fleet` lists
//! them; bad acknowledgments are ignored and counted; a revocation can wait for the fleet and
//! says who is missing. Real agents over both transports, and raw subscribers for what an
//! agent would never send. Waits are bounded polls, never fixed sleeps.

use std::time::Duration;

use revocast_agent::{Agent, AgentConfig, Transport};
use revocast_tests::proxy::FaultyProxy;
use revocast_tests::stream_client::{Subscriber, Transport as Raw};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

fn config(base: &str, a: &TestAuthority, name: &str, transport: Transport) -> AgentConfig {
    let mut c = AgentConfig::new(base, a.subscriber_key.clone());
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.name = name.to_string();
    c.transport = transport;
    c
}

async fn synced(config: AgentConfig) -> Agent {
    let agent = Agent::start(config).unwrap();
    assert!(
        agent.wait_until_synced(PATIENCE).await,
        "agent never synced"
    );
    agent
}

async fn fleet(a: &TestAuthority) -> Value {
    a.admin_get("/v1/fleet").await
}

/// The fleet's entry named `name`, if listed.
fn entry<'a>(fleet: &'a Value, name: &str) -> Option<&'a Value> {
    fleet["subscribers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

async fn until_listed_at(a: &TestAuthority, names: &[&str], seq: u64) {
    eventually(&format!("{names:?} acknowledged {seq}"), || async {
        let f = fleet(a).await;
        names
            .iter()
            .all(|n| entry(&f, n).is_some_and(|e| e["applied"] == seq))
    })
    .await;
}

async fn revoke(a: &TestAuthority, sid: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({ "sid": sid });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    let resp = a
        .http
        .post(format!("{}/v1/revoke/session", a.base))
        .bearer_auth(&a.admin_key)
        .json(&body)
        .send()
        .await
        .expect("revoke");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn named_agents_are_listed_with_the_head_applied_over_both_transports() {
    let a = TestAuthority::start().await;
    let ws = synced(config(&a.base, &a, "edge-ws", Transport::Websocket)).await;
    let sse = synced(config(&a.base, &a, "edge-sse", Transport::Sse)).await;
    // Both acknowledge where they start: the head.
    until_listed_at(&a, &["edge-ws", "edge-sse"], a.head()).await;
    for i in 0..3 {
        a.revoke_session(&format!("s-{i}")).await;
    }
    let head = a.head();
    until_listed_at(&a, &["edge-ws", "edge-sse"], head).await;
    let f = fleet(&a).await;
    assert_eq!(f["head"], head);
    assert_eq!(f["totals"]["subscribers"], 2, "{f}");
    assert_eq!(f["totals"]["acknowledging"], 2, "{f}");
    assert_eq!(f["totals"]["current"], 2, "{f}");
    assert_eq!(f["totals"]["never_acknowledged"], 0, "{f}");
    for (name, transport) in [("edge-ws", "websocket"), ("edge-sse", "sse")] {
        let e = entry(&f, name).unwrap();
        assert_eq!(e["transport"], transport, "{e}");
        assert_eq!(e["version"], env!("CARGO_PKG_VERSION"), "{e}");
        assert_eq!(e["lag_events"], 0, "{e}");
        assert_eq!(e["lag_ms"], 0, "{e}");
        assert_eq!(e["resyncs"], 1, "the first snapshot load: {e}");
        assert!(
            e["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{e}"
        );
        assert!(e["last_heard"].is_number(), "{e}");
        assert_eq!(e["acks_ignored"], 0, "{e}");
    }
    // The fleet is admin-only.
    let resp = a
        .http
        .get(format!("{}/v1/fleet", a.base))
        .bearer_auth(&a.subscriber_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    drop((ws, sse));
    eventually("gone agents leave the fleet", || async {
        fleet(&a).await["totals"]["subscribers"] == 0
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_never_acknowledges_is_listed_as_such_and_keeps_receiving() {
    let a = TestAuthority::start().await;
    let mut silent = Subscriber::connect(
        Raw::WebSocket,
        &a.base,
        Some(&a.subscriber_key),
        "name=quiet%20one&version=0.0.1",
    )
    .await
    .expect("connects");
    hello_conn(&mut silent).await;
    let seq = a.revoke_session("s-1").await;
    assert_eq!(silent.events_through(seq).await, vec![seq]);
    let f = fleet(&a).await;
    let e = entry(&f, "quiet one").expect("listed");
    assert_eq!(e["version"], "0.0.1");
    assert!(e["applied"].is_null(), "{e}");
    assert!(e["lag_events"].is_null(), "{e}");
    assert_eq!(f["totals"]["never_acknowledged"], 1, "{f}");
    assert_eq!(f["totals"]["acknowledging"], 0, "{f}");
    // And it keeps receiving.
    let seq = a.revoke_session("s-2").await;
    assert_eq!(silent.events_through(seq).await, vec![seq]);
    // A revocation waiting for the fleet names it.
    let (status, answer) =
        revoke(&a, "s-3", json!({"wait": "fleet", "wait_timeout_ms": 300})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["propagation"]["applied"], 0, "{answer}");
    assert_eq!(answer["propagation"]["of"], 1, "{answer}");
    assert_eq!(
        answer["propagation"]["missing"],
        json!(["quiet one"]),
        "{answer}"
    );
}

#[tokio::test]
async fn bad_acknowledgments_are_ignored_and_counted() {
    let a = TestAuthority::start().await;
    let epoch = a.epoch().to_string();
    let mut ws = Subscriber::connect(Raw::WebSocket, &a.base, Some(&a.subscriber_key), "name=raw")
        .await
        .expect("connects");
    hello_conn(&mut ws).await;
    let seq = a.revoke_session("s-1").await;
    assert_eq!(ws.events_through(seq).await, vec![seq]);
    let ack =
        |seq: u64, epoch: &str| json!({"type": "ack", "seq": seq, "epoch": epoch}).to_string();
    // A genuine ack, then one above the head, one from another epoch, one unreadable.
    ws.send_text(&ack(seq, &epoch)).await;
    eventually("the genuine ack is taken", || async {
        entry(&fleet(&a).await, "raw").is_some_and(|e| e["applied"] == seq)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the flood budget refill
    ws.send_text(&ack(seq + 100, &epoch)).await;
    ws.send_text(&ack(seq, "another-epoch")).await;
    ws.send_text(r#"{"type":"ack","seq":"many"}"#).await;
    // A flood: far more acks than one per 50 ms allows.
    for _ in 0..100 {
        ws.send_text(&ack(seq, &epoch)).await;
    }
    eventually("the bad acks are counted", || async {
        a.metric(r#"revocast_fleet_acks_ignored_total{reason="above_head"}"#)
            .await
            == 1
            && a.metric(r#"revocast_fleet_acks_ignored_total{reason="epoch"}"#)
                .await
                == 1
            && a.metric(r#"revocast_fleet_acks_ignored_total{reason="malformed"}"#)
                .await
                == 1
            && a.metric(r#"revocast_fleet_acks_ignored_total{reason="flood"}"#)
                .await
                >= 40
    })
    .await;
    let f = fleet(&a).await;
    let e = entry(&f, "raw").unwrap();
    assert_eq!(e["applied"], seq, "nothing bad was trusted: {e}");
    assert!(e["acks_ignored"].as_u64().unwrap() >= 43, "{e}");
    // The connection still works.
    let next = a.revoke_session("s-2").await;
    assert_eq!(ws.events_through(next).await, vec![next]);
}

/// The `conn` handle an SSE subscriber's `hello` carries.
async fn hello_conn(sub: &mut Subscriber) -> String {
    let hello = sub.next().await.expect("hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    hello["conn"].as_str().expect("conn in hello").to_string()
}

#[tokio::test]
async fn sse_subscribers_acknowledge_with_a_post_for_their_own_connection_only() {
    let a = TestAuthority::start().await;
    let epoch = a.epoch().to_string();
    let mut sse = Subscriber::connect(Raw::Sse, &a.base, Some(&a.subscriber_key), "name=poster")
        .await
        .expect("connects");
    let conn = hello_conn(&mut sse).await;
    let seq = a.revoke_session("s-1").await;
    assert_eq!(sse.events_through(seq).await, vec![seq]);
    let post = |key: String, body: Value| {
        let a = &a;
        async move {
            a.http
                .post(format!("{}/v1/ack", a.base))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Another subscriber key cannot acknowledge for this connection.
    let other = a.create_key(revocast_authority::Scope::Subscribe).await;
    let body = json!({"conn": conn, "seq": seq, "epoch": epoch});
    assert_eq!(post(other, body.clone()).await, 404);
    assert_eq!(
        post(
            a.subscriber_key.clone(),
            json!({"conn": "1.00", "seq": seq, "epoch": epoch})
        )
        .await,
        404
    );
    assert!(entry(&fleet(&a).await, "poster").unwrap()["applied"].is_null());
    assert_eq!(post(a.subscriber_key.clone(), body).await, 204);
    let f = fleet(&a).await;
    assert_eq!(entry(&f, "poster").unwrap()["applied"], seq, "{f}");
    assert_eq!(entry(&f, "poster").unwrap()["transport"], "sse", "{f}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let above = json!({"conn": conn, "seq": seq + 1, "epoch": epoch});
    assert_eq!(post(a.subscriber_key.clone(), above).await, 400);
    let wrong = json!({"conn": conn, "seq": seq, "epoch": "nope"});
    assert_eq!(post(a.subscriber_key.clone(), wrong).await, 400);
    assert_eq!(
        a.metric(r#"revocast_fleet_acks_ignored_total{reason="unknown_connection"}"#)
            .await,
        2
    );
    assert_eq!(entry(&fleet(&a).await, "poster").unwrap()["applied"], seq);
    // Once the stream ends, its handle is dead.
    drop(sse);
    eventually("the SSE subscriber leaves", || async {
        entry(&fleet(&a).await, "poster").is_none()
    })
    .await;
    let late = json!({"conn": conn, "seq": seq, "epoch": epoch});
    assert_eq!(post(a.subscriber_key.clone(), late).await, 404);
}

#[tokio::test]
async fn a_revocation_waiting_for_the_fleet_answers_once_every_agent_applied_it() {
    let a = TestAuthority::start().await;
    let names = ["a-1", "a-2", "a-3"];
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let transport = if i == 2 {
            Transport::Sse
        } else {
            Transport::Websocket
        };
        agents.push(synced(config(&a.base, &a, name, transport)).await);
    }
    until_listed_at(&a, &names, a.head()).await;
    let (status, answer) = revoke(&a, "s-1", json!({"wait": "fleet"})).await;
    assert_eq!(status, 200, "{answer}");
    let seq = answer["seq"].as_u64().unwrap();
    let p = &answer["propagation"];
    assert_eq!(p["applied"], 3, "{answer}");
    assert_eq!(p["of"], 3, "{answer}");
    assert_eq!(p["missing"], json!([]), "{answer}");
    assert!(
        p["slowest_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "{answer}"
    );
    // What the answer says holds: every agent has applied it.
    for agent in &agents {
        assert!(agent.status().applied.get() >= seq);
    }
    // The default wait is today's: no propagation.
    let (status, answer) = revoke(&a, "s-2", json!({})).await;
    assert_eq!(status, 200);
    assert!(answer.get("propagation").is_none(), "{answer}");
    // The histograms saw the revocations reach the whole fleet.
    eventually("the propagation histograms have samples", || async {
        let text = a.metrics().await;
        ["0.5", "0.99", "1"].iter().all(|share| {
            text.lines().any(|l| {
                l.starts_with(&format!(
                    "revocast_fleet_applied_seconds_count{{share=\"{share}\"}} "
                )) && !l.ends_with(" 0")
            })
        })
    })
    .await;
}

#[tokio::test]
async fn a_stalled_agent_is_named_missing_when_the_wait_times_out() {
    let a = TestAuthority::start().await;
    let proxy = FaultyProxy::start(a.addr).await;
    let _fast = synced(config(&a.base, &a, "fast", Transport::Websocket)).await;
    let mut c = config(&proxy.base(), &a, "stuck", Transport::Websocket);
    // Long enough that the stalled agent does not reconnect during the test.
    c.idle_timeout = Some(Duration::from_secs(60));
    c.max_staleness = Duration::from_secs(60);
    let _stuck = synced(c).await;
    until_listed_at(&a, &["fast", "stuck"], a.head()).await;
    proxy.stall(true);
    let started = std::time::Instant::now();
    let (status, answer) =
        revoke(&a, "s-1", json!({"wait": "fleet", "wait_timeout_ms": 2000})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(2000));
    let p = &answer["propagation"];
    assert_eq!(p["applied"], 1, "{answer}");
    assert_eq!(p["of"], 2, "{answer}");
    assert_eq!(p["missing"], json!(["stuck"]), "{answer}");
    // The fleet shows it behind by one.
    let f = fleet(&a).await;
    let e = entry(&f, "stuck").unwrap();
    assert_eq!(e["lag_events"], 1, "{e}");
    assert!(e["lag_ms"].as_i64().unwrap() >= 0, "{e}");
    proxy.stall(false);
    until_listed_at(&a, &["fast", "stuck"], a.head()).await;
}

#[tokio::test]
async fn bad_wait_values_are_refused_before_anything_is_committed() {
    let a = TestAuthority::start().await;
    let head = a.head();
    for extra in [
        json!({"wait": "forever"}),
        json!({"wait": "fleet", "wait_timeout_ms": 0}),
        json!({"wait": "fleet", "wait_timeout_ms": 60_001}),
        json!({"wait": "fleet", "wait_timeout_ms": -1}),
    ] {
        let (status, answer) = revoke(&a, "s-1", extra.clone()).await;
        assert_eq!(status, 400, "{extra} → {answer}");
        assert_eq!(answer["error"], "invalid_request", "{answer}");
    }
    assert_eq!(a.head(), head, "nothing was revoked");
    // Subject and token revocations take the same options.
    let answer = a
        .admin_post(
            "/v1/revoke/subject",
            json!({"sub": "alice", "wait": "fleet", "wait_timeout_ms": 100}),
        )
        .await;
    assert_eq!(answer["propagation"]["of"], 0, "{answer}");
    let token = a.issue("bob", 60).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = a
        .admin_post(
            "/v1/revoke",
            json!({"token": token, "wait": "fleet", "wait_timeout_ms": 100}),
        )
        .await;
    assert_eq!(answer["propagation"]["of"], 0, "{answer}");
}

#[tokio::test]
async fn bad_names_are_refused() {
    let a = TestAuthority::start().await;
    let long = "x".repeat(129);
    for query in ["name=", "name=a%0Ab", &format!("name={long}")] {
        let refused = Subscriber::connect(Raw::Sse, &a.base, Some(&a.subscriber_key), query)
            .await
            .err()
            .unwrap_or_else(|| panic!("{query} was accepted"));
        assert_eq!(refused.status, 400, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_answer_for_the_whole_fleet_through_the_database() {
    let Some(db) = revocast_tests::postgres::TestDatabase::create("fleet").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 2, |_| {}).await;
    let (one, two) = (&replicas[0], &replicas[1]);
    let proxy = FaultyProxy::start(two.addr).await;
    let _here = synced(config(&one.base, one, "on-one", Transport::Websocket)).await;
    let mut c = config(&proxy.base(), two, "on-two", Transport::Sse);
    c.idle_timeout = Some(Duration::from_secs(60));
    c.max_staleness = Duration::from_secs(60);
    let _there = synced(c).await;
    // Either replica lists both, each on its own replica.
    let id = |f: Value| f["replica"].as_str().unwrap().to_string();
    let (id_one, id_two) = (id(fleet(one).await), id(fleet(two).await));
    assert_ne!(id_one, id_two);
    for r in [one, two] {
        eventually("a replica lists the other replica's agent too", || async {
            let f = fleet(r).await;
            f["totals"]["subscribers"] == 2
                && entry(&f, "on-one").is_some_and(|e| e["replica"] == id_one.as_str())
                && entry(&f, "on-two").is_some_and(|e| e["replica"] == id_two.as_str())
        })
        .await;
    }
    until_listed_at(one, &["on-one", "on-two"], one.head()).await;
    // A revocation on one replica waits for the agent on the other.
    let (status, answer) = revoke(one, "s-1", json!({"wait": "fleet"})).await;
    assert_eq!(status, 200, "{answer}");
    let p = &answer["propagation"];
    assert_eq!(
        (p["applied"].clone(), p["of"].clone()),
        (json!(2), json!(2)),
        "{answer}"
    );
    assert_eq!(p["missing"], json!([]), "{answer}");
    // Stalled, the other replica's agent is named missing.
    proxy.stall(true);
    let (status, answer) = revoke(
        one,
        "s-2",
        json!({"wait": "fleet", "wait_timeout_ms": 3000}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["propagation"]["missing"],
        json!(["on-two"]),
        "{answer}"
    );
    assert_eq!(answer["propagation"]["applied"], 1, "{answer}");
    proxy.stall(false);
}
