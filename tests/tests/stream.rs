//! The revocation stream over real connections on 127.0.0.1:0, with both transports: live
//! delivery, exact resume from every position (also while revocations are being committed),
//! reset, slow subscribers, access, snapshot + resume, and expiry.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use revocast_authority::config::{Pacing, WRITE_BURST};
use revocast_shared::UnixMillis;
use revocast_tests::TestAuthority;
use revocast_tests::stream_client::{BOTH, Subscriber, Transport, event_seq};
use serde_json::{Value, json};

async fn connect(a: &TestAuthority, t: Transport, query: &str) -> Subscriber {
    Subscriber::connect(t, &a.base, Some(&a.subscriber_key), query)
        .await
        .expect("subscriber connects")
}

/// Expect `hello` first, and return its head.
async fn hello(s: &mut Subscriber, a: &TestAuthority) -> u64 {
    let m = s.next().await.expect("hello");
    assert_eq!(m["type"], "hello", "first message is hello: {m}");
    assert_eq!(m["epoch"], a.epoch().to_string());
    m["seq"].as_u64().expect("hello seq")
}

async fn revoke_sessions(a: &TestAuthority, prefix: &str, n: usize) {
    for i in 0..n {
        a.revoke_session(&format!("{prefix}-{i}")).await;
    }
}

#[tokio::test]
async fn live_events_arrive_in_order_once_with_heartbeats() {
    let a = TestAuthority::start_with(|c| c.heartbeat_interval = Duration::from_millis(100)).await;
    for t in BOTH {
        let before = a.head();
        let mut s = connect(&a, t, "").await;
        assert_eq!(hello(&mut s, &a).await, before, "{t:?}");
        // Concurrent revocations: several commit groups, delivered in seq order.
        let sids: Vec<String> = (0..40).map(|i| format!("{t:?}-{i}")).collect();
        join_all(sids.iter().map(|sid| a.revoke_session(sid))).await;
        let seqs = s.events_through(before + 40).await;
        assert_eq!(
            seqs,
            (before + 1..=before + 40).collect::<Vec<_>>(),
            "{t:?}"
        );
        // An idle stream still hears heartbeats carrying the head.
        loop {
            let m = s.next().await.expect("heartbeat");
            assert_eq!(m["type"], "heartbeat", "{t:?}: {m}");
            if m["seq"] == before + 40 {
                assert!(m["at"].as_f64().is_some());
                break;
            }
        }
        s.close().await;
    }
}

#[tokio::test]
async fn websocket_batches_are_arrays_of_events_in_order() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "b", 50).await;
    // A resume from 0 has 50 events waiting: they come batched.
    let mut s = connect(&a, Transport::WebSocket, "since=0").await;
    assert_eq!(hello(&mut s, &a).await, 50);
    assert_eq!(s.events_through(50).await, (1..=50).collect::<Vec<_>>());
    assert!(s.saw_batch, "a backlog is sent as JSON arrays");
}

#[tokio::test]
async fn linger_sends_isolated_events_at_once_and_holds_back_sustained_ones() {
    let linger = Duration::from_millis(250);
    assert_lingers(linger, |pacing| pacing.min_linger = linger).await;
}

#[tokio::test]
async fn the_linger_grows_with_the_fleet() {
    // No minimum, four writes a second for the whole fleet: the one subscriber alone may
    // write once every 250 ms on average.
    assert_lingers(Duration::from_millis(250), |pacing| {
        pacing.min_linger = Duration::ZERO;
        pacing.writes_per_second = 4;
    })
    .await;
}

/// With one subscriber and `pacing`: isolated events go out at once — even a burst of them
/// in quick succession, each committed after the last arrived — and once the burst is spent,
/// the ones committed right after wait until `linger` has passed since the first.
async fn assert_lingers(linger: Duration, pacing: impl FnOnce(&mut Pacing)) {
    let a = TestAuthority::start_with(|c| {
        pacing(&mut c.stream_pacing);
        c.heartbeat_interval = Duration::from_secs(60);
    })
    .await;
    let mut s = connect(&a, Transport::WebSocket, "").await;
    assert_eq!(hello(&mut s, &a).await, 0);
    let revoked = std::time::Instant::now();
    // Each waits for the one before to arrive, so each is a write of its own: the burst.
    let burst = u64::from(WRITE_BURST);
    for seq in 1..=burst {
        a.revoke_session(&format!("burst-{seq}")).await;
        assert_eq!(s.events_through(seq).await, vec![seq]);
    }
    // One after another, each answered before the next: three commits, all within the
    // linger of the first write, with the burst spent: they wait for the budget, then go
    // out together.
    revoke_sessions(&a, "then", 3).await;
    assert_eq!(
        s.events_through(burst + 3).await,
        (burst + 1..=burst + 3).collect::<Vec<_>>()
    );
    // The first write came after `revoked`; with the burst spent, the next one no sooner than
    // the linger after it. A lower bound only: a slow machine can only make it larger.
    // Without the linger this whole exchange takes a few milliseconds.
    let took = revoked.elapsed();
    assert!(
        took >= linger,
        "events after the burst arrived {took:?} after the first revocation"
    );
    s.close().await;
}

#[tokio::test]
async fn resume_from_every_position_is_exact() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "r", 30).await;
    for t in BOTH {
        for since in 0..=30u64 {
            let mut s = connect(&a, t, &format!("since={since}")).await;
            assert_eq!(hello(&mut s, &a).await, 30);
            let seqs = s.events_through(30).await;
            assert_eq!(
                seqs,
                (since + 1..=30).collect::<Vec<_>>(),
                "{t:?} since={since}"
            );
        }
    }
}

#[tokio::test]
async fn resume_is_exact_while_revocations_are_committed() {
    // A tiny in-memory window forces most resumes through the store, the racy path.
    for recent in [4, 100_000] {
        let a = TestAuthority::start_with(|c| c.stream_recent_events = recent).await;
        revoke_sessions(&a, "pre", 20).await;
        let writer = {
            let base = a.base.clone();
            let key = a.admin_key.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..200 {
                    let resp = http
                        .post(format!("{base}/v1/revoke/session"))
                        .bearer_auth(&key)
                        .json(&json!({ "sid": format!("during-{i}") }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        };
        let mut subscribers = Vec::new();
        for since in 0..=20u64 {
            let t = BOTH[since as usize % 2];
            let mut s = connect(&a, t, &format!("since={since}")).await;
            let head = hello(&mut s, &a).await;
            assert!(head >= 20);
            subscribers.push((since, t, s));
        }
        writer.await.unwrap();
        let final_head = a.head();
        assert_eq!(final_head, 220);
        for (since, t, mut s) in subscribers {
            let seqs = s.events_through(final_head).await;
            assert_eq!(
                seqs,
                (since + 1..=final_head).collect::<Vec<_>>(),
                "{t:?} since={since} recent={recent}: every seq once, in order"
            );
        }
    }
}

#[tokio::test]
async fn last_event_id_wins_over_since() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "l", 10).await;
    let mut s = Subscriber::connect_with(
        Transport::Sse,
        &a.base,
        Some(&a.subscriber_key),
        "since=2",
        Some("7"),
    )
    .await
    .unwrap();
    assert_eq!(hello(&mut s, &a).await, 10);
    assert_eq!(s.events_through(10).await, vec![8, 9, 10]);
}

#[tokio::test]
async fn bad_positions_and_credentials_are_refused() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "x", 3).await;
    let introspect = a.create_key(revocast_authority::Scope::Introspect).await;
    for t in BOTH {
        for (key, query, status, code) in [
            (None, "", 401, "invalid_client"),
            (Some("rvc_wrong"), "", 401, "invalid_client"),
            (Some(introspect.as_str()), "", 403, "insufficient_scope"),
            (
                Some(a.subscriber_key.as_str()),
                "since=4",
                400,
                "invalid_request",
            ),
            (
                Some(a.subscriber_key.as_str()),
                "since=-1",
                400,
                "invalid_request",
            ),
            (
                Some(a.subscriber_key.as_str()),
                "since=abc",
                400,
                "invalid_request",
            ),
            (
                Some(a.subscriber_key.as_str()),
                "bogus=1",
                400,
                "invalid_request",
            ),
        ] {
            let refused = Subscriber::connect(t, &a.base, key, query)
                .await
                .err()
                .unwrap_or_else(|| panic!("{t:?} {query} with {key:?} must be refused"));
            assert_eq!(refused.status, status, "{t:?} {query}");
            assert_eq!(
                refused.body["error"], code,
                "{t:?} {query}: {:?}",
                refused.body
            );
        }
        // The admin key may subscribe too.
        let mut s = Subscriber::connect(t, &a.base, Some(&a.admin_key), "since=3")
            .await
            .unwrap();
        assert_eq!(hello(&mut s, &a).await, 3);
    }
    let refused = Subscriber::connect_with(
        Transport::Sse,
        &a.base,
        Some(&a.subscriber_key),
        "",
        Some("nope"),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused.status, 400);
    for key in [None, Some(a.admin_key.as_str())] {
        let mut req = a.http.get(format!("{}/v1/snapshot", a.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, if key.is_some() { 200 } else { 401 });
    }
    // A plain GET on the WebSocket endpoint is not an upgrade: a 4xx in our shape.
    let resp = a
        .http
        .get(format!("{}/v1/stream", a.base))
        .bearer_auth(&a.subscriber_key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_pruned_or_foreign_position_gets_reset() {
    let a = TestAuthority::start_with(|c| {
        c.log_retention = Duration::from_secs(1);
        c.stream_recent_events = 0;
    })
    .await;
    revoke_sessions(&a, "old", 5).await;
    // Every event is now older than the retention window.
    let later = UnixMillis::new(UnixMillis::now().as_millis() + 2_000);
    a.handle.prune_log_at(later, Duration::from_secs(1)).await;
    for t in BOTH {
        for since in [0, 4] {
            let mut s = connect(&a, t, &format!("since={since}")).await;
            assert_eq!(hello(&mut s, &a).await, a.head());
            let reset = s.next().await.expect("reset");
            assert_eq!(reset["type"], "reset", "{t:?} since={since}: {reset}");
            assert_eq!(reset["seq"], a.head());
            assert_eq!(reset["epoch"], a.epoch().to_string());
            assert!(s.next().await.is_none(), "the stream ends after reset");
        }
        // From the floor on, resume is still exact.
        let mut s = connect(&a, t, "since=5").await;
        hello(&mut s, &a).await;
        a.revoke_session(&format!("new-{t:?}")).await;
        let head = a.head();
        assert_eq!(s.events_through(head).await, (6..=head).collect::<Vec<_>>());
        // A since from another log (epoch) is meaningless here.
        let mut s = connect(&a, t, "since=5&epoch=someone-else").await;
        hello(&mut s, &a).await;
        assert_eq!(s.next().await.unwrap()["type"], "reset");
    }
}

#[tokio::test]
async fn the_fast_subscriber_sees_every_event_while_a_slow_one_is_dropped() {
    let a = TestAuthority::start_with(|c| c.write_timeout = Duration::from_millis(300)).await;
    let _slow = Subscriber::connect_small_buffer_ws(&a.base, &a.subscriber_key).await;
    let mut fast = connect(&a, Transport::Sse, "").await;
    hello(&mut fast, &a).await;
    let slow_disconnects =
        || a.metric(r#"revocast_stream_slow_disconnects_total{transport="websocket"}"#);
    // Long subjects make each event ~600 bytes, so the slow socket's buffers fill sooner.
    let long = "y".repeat(500);
    let mut rounds = 0;
    let mut seen = Vec::new();
    while slow_disconnects().await == 0 {
        rounds += 1;
        assert!(rounds < 2000, "the slow subscriber was never disconnected");
        join_all((0..32).map(|i| {
            a.admin_post(
                "/v1/revoke/subject",
                json!({ "sub": format!("{long}{rounds}-{i}") }),
            )
        }))
        .await;
        let head = a.head();
        seen.extend(fast.events_through(head).await);
    }
    assert_eq!(seen, (1..=a.head()).collect::<Vec<_>>());
}

#[tokio::test]
async fn snapshot_plus_resume_reconstructs_the_set() {
    let a = TestAuthority::start().await;
    let token = a.issue("alice", 600).await;
    a.admin_post("/v1/revoke", json!({ "token": token["token"] }))
        .await;
    a.admin_post("/v1/revoke/subject", json!({ "sub": "bob" }))
        .await;
    revoke_sessions(&a, "s", 3).await;
    let snap = a.snapshot().await;
    assert_eq!(snap["epoch"], a.epoch().to_string());
    let snap_seq = snap["seq"].as_u64().unwrap();
    assert_eq!(snap_seq, 5);
    let mut s = connect(&a, Transport::WebSocket, &format!("since={snap_seq}")).await;
    hello(&mut s, &a).await;

    // More of every kind after the snapshot.
    let token2 = a.issue("carol", 600).await;
    a.admin_post("/v1/revoke", json!({ "token": token2["token"] }))
        .await;
    a.admin_post("/v1/revoke/subject", json!({ "sub": "bob" }))
        .await;
    a.revoke_session("s-late").await;
    let kid = token["kid"].as_str().unwrap();
    a.admin_post(&format!("/v1/keys/{kid}/revoke"), json!({}))
        .await;
    let head = a.head();

    let mut reconstructed: Vec<Value> = snap["events"].as_array().unwrap().clone();
    while let Some(m) = s.next().await {
        if let Some(seq) = event_seq(&m) {
            reconstructed.push(m);
            if seq == head {
                break;
            }
        }
    }
    let now = a.snapshot().await;
    assert_eq!(now["seq"], head);
    assert_eq!(
        as_set(&reconstructed),
        as_set(now["events"].as_array().unwrap()),
        "snapshot + stream = the authority's set"
    );
    // The reconstructed set rejects what the authority rejects.
    let kinds: BTreeSet<String> = reconstructed
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), 4, "all four kinds: {kinds:?}");
    assert!(reconstructed.iter().any(|e| e["rid"] == token["rid"]));
    assert!(reconstructed.iter().any(|e| e["rid"] == token2["rid"]));
}

fn as_set(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(Value::to_string).collect()
}

#[tokio::test]
async fn expired_entries_leave_the_snapshot_and_the_store() {
    let a = TestAuthority::start_with(|c| {
        c.max_ttl_secs = 4;
        c.default_ttl_secs = 1;
        c.expiry_grace_secs = 0;
    })
    .await;
    // A 3 s token: long enough that a loaded CI machine cannot let it expire before the revoke.
    let token = a.issue("dave", 3).await;
    a.admin_post("/v1/revoke", json!({ "token": token["token"] }))
        .await;
    a.revoke_session("short").await;
    let kid = a.issue("erin", 1).await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    a.admin_post(&format!("/v1/keys/{kid}/revoke"), json!({}))
        .await;
    assert_eq!(a.snapshot().await["events"].as_array().unwrap().len(), 3);

    // Wait (bounded) for the token's exp and the session's until to pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snap = a.snapshot().await;
        let events = snap["events"].as_array().unwrap();
        if events.len() == 1 {
            assert_eq!(events[0]["type"], "key", "key revocations last forever");
            assert_eq!(snap["seq"], 3, "the head does not move back");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once also out of the retention window, the expired rows leave the store.
    let later = UnixMillis::new(UnixMillis::now().as_millis() + 10_000);
    a.handle.prune_log_at(later, Duration::from_secs(1)).await;
    assert_eq!(a.metric("revocast_log_rows_pruned_total").await, 2);
    assert_eq!(a.metric("revocast_log_floor").await, 3);
    assert_eq!(a.snapshot().await["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn snapshot_is_gzipped_when_asked() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "z", 3).await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw
        .get(format!("{}/v1/snapshot", a.base))
        .bearer_auth(&a.subscriber_key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // And it decodes to the same document as the plain one.
    let gzip = reqwest::Client::builder().gzip(true).build().unwrap();
    let decoded: Value = gzip
        .get(format!("{}/v1/snapshot", a.base))
        .bearer_auth(&a.subscriber_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The same but for `at`, the time each was read.
    let (mut decoded, mut plain) = (decoded, a.snapshot().await);
    for s in [&mut decoded, &mut plain] {
        assert!(s["at"].is_number(), "{s}");
        s.as_object_mut().unwrap().remove("at");
    }
    assert_eq!(decoded, plain);
    assert_eq!(decoded["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn ndjson_snapshot_holds_the_same_events_line_by_line() {
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "n", 4).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/snapshot", a.base))
        .bearer_auth(&a.subscriber_key)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let json = a.snapshot().await;
    let events = json["events"].as_array().unwrap();
    assert_eq!(lines.len(), events.len() + 2, "head, events, end: {text}");
    // The head carries the authority's time just before the read (an extension).
    let at = lines[0]["at"].as_f64().expect("the head's `at`");
    assert!(
        (at - json["at"].as_f64().unwrap()).abs() < 60.0,
        "{}",
        lines[0]
    );
    // Then the transparency log's checkpoint (each snapshot's own signature) and frontier.
    assert!(lines[0]["checkpoint"].is_string(), "{}", lines[0]);
    assert_eq!(
        lines[0],
        json!({ "epoch": json["epoch"], "seq": json["seq"], "at": lines[0]["at"],
                "checkpoint": lines[0]["checkpoint"], "frontier": json["frontier"] })
    );
    assert_eq!(&lines[1..=events.len()], &events[..]);
    // The end line counts the events and is sealed (tests/tests/transparency.rs checks the
    // seal itself).
    let end = &lines[events.len() + 1]["end"];
    assert_eq!(end["events"], 4);
    assert!(end["sha256"].is_string() && end["kid"].is_string() && end["sig"].is_string());
    assert!(text.ends_with('\n'));
}

#[tokio::test]
async fn subscribers_are_counted_by_transport() {
    let a = TestAuthority::start().await;
    let gauge = |t: &'static str| {
        let a = &a;
        async move {
            a.metric(&format!(
                r#"revocast_stream_subscribers{{transport="{t}"}}"#
            ))
            .await
        }
    };
    let mut ws = connect(&a, Transport::WebSocket, "").await;
    let mut sse = connect(&a, Transport::Sse, "").await;
    hello(&mut ws, &a).await;
    hello(&mut sse, &a).await;
    ws.ping().await;
    assert_eq!((gauge("websocket").await, gauge("sse").await), (1, 1));
    a.revoke_session("m").await;
    ws.events_through(1).await;
    sse.events_through(1).await;
    let text = a.metrics().await;
    assert!(
        text.contains(r#"revocast_stream_events_sent_total{transport="websocket"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"revocast_stream_subscribers{transport="sse"} 1"#));
    assert!(text.contains("revocast_head_seq 1"));
    ws.close().await;
    drop(sse);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gauge("websocket").await + gauge("sse").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges never went down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The authority's own WebSocket server side (its `websocket` module), driven by tungstenite's
/// client: pings are answered, a close is returned, and a message over the limit or a broken
/// upgrade is refused.
#[tokio::test]
async fn websocket_answers_pings_and_close_and_refuses_what_breaks_its_limits() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let a = TestAuthority::start().await;
    let open = || async {
        let url = format!("{}/v1/stream", a.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", a.subscriber_key).parse().unwrap(),
        );
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.status(), 101);
        let hello = ws.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains(r#""type":"hello""#));
        ws
    };
    // Until a close: the frames that are not text (pongs, the close itself).
    async fn until_close(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> (Vec<Message>, Option<CloseFrame>) {
        let mut seen = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Close(frame) => return (seen, frame),
                Message::Text(_) => {}
                other => seen.push(other),
            }
        }
        (seen, None)
    }

    // A ping is answered with its payload, text from the client is read and dropped, and the
    // stream goes on; the client's close comes back with its code.
    let mut ws = open().await;
    ws.send(Message::Ping(vec![7, 8, 9].into())).await.unwrap();
    ws.send(Message::Text("ignored".into())).await.unwrap();
    a.revoke_session("after-ping").await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let (seen, close) = until_close(&mut ws).await;
    assert_eq!(seen, vec![Message::Pong(vec![7, 8, 9].into())]);
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Normal));

    // Over 4 KiB: closed with 1009, Message Too Big.
    let mut ws = open().await;
    ws.send(Message::Binary(vec![0u8; 5000].into()))
        .await
        .unwrap();
    let (_, close) = until_close(&mut ws).await;
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Size));

    // Upgrades that are not: a 4xx in the contract's shape, never a switch.
    let bad_keys = [Some("short"), Some("not base64!"), None];
    for key in bad_keys {
        let mut req = a
            .http
            .get(format!("{}/v1/stream", a.base))
            .bearer_auth(&a.subscriber_key)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13");
        if let Some(key) = key {
            req = req.header("sec-websocket-key", key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "key {key:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|m| m.contains("Sec-WebSocket-Key")),
            "{body}"
        );
    }
    let resp = a
        .http
        .get(format!("{}/v1/stream", a.base))
        .bearer_auth(&a.subscriber_key)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
