//! Several authority replicas on one real PostgreSQL database (`REVOCAST_TEST_DATABASE_URL`,
//! set by `.ci/run`; each test makes its own database): one gap-free log in commit order under
//! concurrent writers on every replica, shared keys and generations, an agent failing over
//! between replicas with nothing lost, and the database's connections dying or becoming
//! unreachable under load. Without the variable every test says it is skipped and passes.

use std::collections::BTreeSet;
use std::time::Duration;

use revocast_agent::{Agent, AgentConfig};
use revocast_authority::config::DatabaseUrl;
use revocast_tests::postgres::TestDatabase;
use revocast_tests::proxy::{FaultyProxy, Mode};
use revocast_tests::stream_client::{Subscriber, Transport};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

async fn verify(a: &TestAuthority, token: &str) -> Value {
    a.try_admin_post("/v1/verify", json!({ "token": token }))
        .await
        .1
}

/// A WebSocket subscriber from `since=0`, past its `hello`.
async fn subscriber(a: &TestAuthority) -> Subscriber {
    let mut s = Subscriber::connect(
        Transport::WebSocket,
        &a.base,
        Some(&a.subscriber_key),
        "since=0",
    )
    .await
    .expect("subscribe");
    assert_eq!(s.next().await.expect("hello")["type"], "hello");
    s
}

/// The `seq`s of the log as stored, and the stored head.
async fn stored_log(db: &TestDatabase) -> (Vec<u64>, u64) {
    let mut conn = db.connect().await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM revocations ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_state")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (seqs.into_iter().map(|s| s as u64).collect(), head as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_gap_free_log_in_commit_order() {
    let Some(db) = TestDatabase::create("gapfree").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 3, |_| {}).await;
    let epochs: BTreeSet<String> = replicas.iter().map(|r| r.epoch().to_string()).collect();
    assert_eq!(epochs.len(), 1, "one epoch for the whole database");
    let kids: BTreeSet<String> = replicas
        .iter()
        .map(|r| r.active_kid().to_string())
        .collect();
    assert_eq!(
        kids.len(),
        1,
        "replicas racing to initialise agree on one signing key"
    );
    let mut subscribers = Vec::new();
    for r in &replicas {
        subscribers.push(subscriber(r).await);
    }

    // 3 replicas × 6 writers × 40 revocations, all at once; every writer also raises the
    // generation of one shared subject now and then.
    let (writers, each) = (6, 40);
    let mut tasks = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        for w in 0..writers {
            let (base, key, http) = (r.base.clone(), r.admin_key.clone(), r.http.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..each {
                    let (path, body) = if n % 10 == 0 {
                        ("/v1/revoke/subject", json!({ "sub": "shared-subject" }))
                    } else {
                        (
                            "/v1/revoke/session",
                            json!({ "sid": format!("r{i}-w{w}-{n}") }),
                        )
                    };
                    let answer: Value = http
                        .post(format!("{base}{path}"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    got.push((answer["seq"].as_u64().unwrap(), answer["gen"].as_u64()));
                }
                got
            }));
        }
    }
    let mut seqs = Vec::new();
    let mut gens = Vec::new();
    for t in tasks {
        for (seq, r#gen) in t.await.unwrap() {
            seqs.push(seq);
            gens.extend(r#gen);
        }
    }
    let total = (replicas.len() * writers * each) as u64;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "gap-free and unique");
    gens.sort_unstable();
    assert_eq!(
        gens,
        (1..=gens.len() as u64).collect::<Vec<_>>(),
        "every subject revocation raised the shared generation by exactly one"
    );
    assert_eq!(stored_log(&db).await, ((1..=total).collect(), total));

    // Every replica streams the whole log in order, its own events and the others' alike.
    for s in &mut subscribers {
        assert_eq!(
            s.events_through(total).await,
            (1..=total).collect::<Vec<_>>()
        );
    }
    for r in &replicas {
        eventually("every replica's view reached the head", || async {
            r.head() == total
        })
        .await;
    }
    let mut snapshots: Vec<Value> =
        futures_util::future::join_all(replicas.iter().map(|r| r.snapshot())).await;
    // The same on every replica, frontier included, but for `at` (when each was read) and
    // `checkpoint` (each replica signs its own, at its own time).
    for s in &mut snapshots {
        s.as_object_mut().unwrap().remove("at");
        s.as_object_mut().unwrap().remove("checkpoint");
    }
    assert!(snapshots.iter().all(|s| s == &snapshots[0]));
    assert_eq!(snapshots[0]["seq"], total);
}

#[tokio::test]
async fn tokens_keys_and_generations_are_shared_by_every_replica() {
    let Some(db) = TestDatabase::create("shared").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 3, |_| {}).await;
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);

    // Issued by one, verified by another.
    let t = a.issue("ann", 600).await;
    let token = t["token"].as_str().unwrap();
    assert_eq!(verify(b, token).await["valid"], true);

    // Revoked on a third: the others learn it by themselves.
    assert_eq!(
        c.try_admin_post("/v1/revoke", json!({ "token": token }))
            .await
            .0,
        200
    );
    for r in [a, b] {
        eventually("the revocation reached every replica", || async {
            verify(r, token).await["error"] == "token_revoked"
        })
        .await;
    }
    // A second revoke on another replica is the same revocation.
    let (status, again) = b
        .try_admin_post("/v1/revoke", json!({ "token": token }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["already_revoked"], true);

    // A subject revoked on B: a token issued afterwards on A carries the new generation and
    // is valid everywhere; the old one is revoked everywhere.
    let old = a.issue("bob", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r#gen = b
        .try_admin_post("/v1/revoke/subject", json!({ "sub": "bob" }))
        .await
        .1["gen"]
        .as_u64()
        .unwrap();
    // A knows bob's new generation once the tokens it issues carry it.
    eventually("A knows bob's new generation", || async {
        let token = a.issue("bob", 600).await;
        verify(a, token["token"].as_str().unwrap()).await["claims"]["gen"] == r#gen
    })
    .await;
    let new = a.issue("bob", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(verify(c, &new).await["valid"], true);
    assert_eq!(verify(c, &old).await["error"], "token_revoked");

    // A key rotated on B signs on B and verifies on A and C once they re-read the keys.
    let kid = b.try_admin_post("/v1/keys/rotate", json!({})).await.1["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let rotated = b.issue("cat", 600).await;
    assert_eq!(rotated["kid"], kid.as_str());
    for r in [a, c] {
        eventually("the rotated key reached every replica", || async {
            verify(r, rotated["token"].as_str().unwrap()).await["valid"] == true
        })
        .await;
        eventually("every replica signs with the rotated key", || async {
            r.active_kid().to_string() == kid
        })
        .await;
    }

    // That key revoked on C: every replica stops accepting and publishing it.
    assert_eq!(
        c.try_admin_post(&format!("/v1/keys/{kid}/revoke"), json!({}))
            .await
            .0,
        200
    );
    for r in [a, b] {
        eventually("the key revocation reached every replica", || async {
            verify(r, rotated["token"].as_str().unwrap()).await["error"] == "token_revoked"
                && r.active_kid().to_string() != kid
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_fails_over_to_a_live_replica_and_loses_nothing() {
    let Some(db) = TestDatabase::create("failover").await else {
        return;
    };
    let mut replicas = TestAuthority::start_replicas(&db, 2, |_| {}).await;
    let b = replicas.pop().unwrap();
    let mut a = replicas.pop().unwrap();
    // The agent reaches A through a proxy, so A can be made to vanish as a killed process
    // does: every connection reset, every new one refused.
    let to_a = FaultyProxy::start(a.addr).await;
    let mut config =
        AgentConfig::new(to_a.base(), a.subscriber_key.clone()).with_authority(b.base.clone());
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    let epoch = agent.status().epoch.clone();

    // Revocations on both replicas while the agent follows A…
    let writer = |r: &TestAuthority, prefix: &'static str, n: usize| {
        let (base, key, http) = (r.base.clone(), r.admin_key.clone(), r.http.clone());
        tokio::spawn(async move {
            let mut sids = Vec::new();
            for i in 0..n {
                let sid = format!("{prefix}{i}");
                let resp = http
                    .post(format!("{base}/v1/revoke/session"))
                    .bearer_auth(&key)
                    .json(&json!({ "sid": sid }))
                    .send()
                    .await;
                if resp.is_ok_and(|r| r.status() == 200) {
                    sids.push(sid);
                }
            }
            sids
        })
    };
    let on_b = writer(&b, "b", 300);
    let mut acked = writer(&a, "a", 100).await.unwrap();
    // …then A dies mid-stream, while B's writer is still going.
    to_a.set_mode(Mode::Refuse);
    to_a.reset();
    a.stop().await;
    acked.extend(on_b.await.unwrap());

    let head = b.head();
    eventually("the agent applied the head through B", || async {
        agent.status().applied.get() == head
    })
    .await;
    let status = agent.status();
    assert_eq!(status.authority, b.base, "failed over to the live replica");
    assert_eq!(status.epoch, epoch, "same database, same epoch");
    assert_eq!(
        status.resyncs, 1,
        "resumed by seq at B: no snapshot after the first"
    );
    let set = agent.revocations();
    let now = revocast_shared::UnixMillis::now().as_secs();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|sid| !set.is_session_revoked(sid, now))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not at the agent: {missing:?}"
    );
    assert_eq!(
        acked.len() as u64,
        head,
        "every revocation was acknowledged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_ride_out_a_database_restart() {
    let Some(db) = TestDatabase::create("restart").await else {
        return;
    };
    // A polls only once a minute: what it learns quickly, it learns through notifications,
    // which must come back after the restart by themselves.
    let mut replicas = TestAuthority::start_replicas(&db, 2, |c| {
        c.database_poll_interval = Duration::from_secs(60);
    })
    .await;
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    let mut on_a = subscriber(&a).await;
    for i in 0..10 {
        b.revoke_session(&format!("before{i}")).await;
    }
    assert_eq!(on_a.events_through(10).await, (1..=10).collect::<Vec<_>>());

    // Every server connection of both replicas dies, as in a PostgreSQL restart.
    assert!(db.terminate_connections().await > 0);

    // Requests right after fail cleanly (503) or succeed; soon they all succeed again.
    let mut acked = BTreeSet::new();
    for (r, name) in [(&a, "a"), (&b, "b")] {
        let mut ok = 0;
        let mut attempts = 0;
        while ok < 10 {
            attempts += 1;
            assert!(attempts < 200, "{name} never recovered");
            let (status, answer) = r
                .try_admin_post(
                    "/v1/revoke/session",
                    json!({ "sid": format!("{name}{ok}") }),
                )
                .await;
            match status {
                200 => {
                    acked.insert(answer["seq"].as_u64().unwrap());
                    ok += 1;
                }
                503 => {
                    assert_eq!(answer["error"], "temporarily_unavailable");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("{name}: {other} {answer}"),
            }
        }
    }
    let head = b.head().max(a.head());
    let (stored, stored_head) = stored_log(&db).await;
    assert_eq!(
        stored,
        (1..=stored_head).collect::<Vec<_>>(),
        "still gap-free"
    );
    assert!(
        acked.iter().all(|s| stored.contains(s)),
        "nothing acknowledged was lost"
    );
    // B's revocations after the restart reach A's subscriber well within A's poll interval:
    // A's doorbell reconnected and A caught up by itself.
    let seen = tokio::time::timeout(Duration::from_secs(20), on_a.events_through(stored_head))
        .await
        .expect("A's subscriber saw B's revocations without waiting for the poll");
    assert_eq!(seen, (11..=stored_head).collect::<Vec<_>>());
    assert!(head <= stored_head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_database_fails_requests_cleanly_and_loses_nothing() {
    let Some(db) = TestDatabase::create("outage").await else {
        return;
    };
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let to_pg = FaultyProxy::start(pg).await;
    // A reaches the database through the proxy; B directly.
    let via_proxy = db
        .url
        .replacen("127.0.0.1:5432", &to_pg.addr.to_string(), 1);
    assert_ne!(via_proxy, db.url, "the test URL names 127.0.0.1:5432");
    let a_url = Some(DatabaseUrl::parse(&via_proxy).unwrap());
    let b = TestAuthority::start_replicas(&db, 1, |c| {
        c.database_poll_interval = Duration::from_millis(200);
    })
    .await
    .remove(0);
    let a = TestAuthority::start_with_keys(&b, |c| {
        c.database_url = a_url.clone();
        c.database_poll_interval = Duration::from_millis(200);
    })
    .await;
    let token = a.issue("dee", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut on_a = subscriber(&a).await;

    // The database vanishes for A: connections reset, new ones refused.
    to_pg.set_mode(Mode::Refuse);
    to_pg.reset();
    let (status, answer) = a
        .try_admin_post("/v1/revoke/session", json!({ "sid": "during" }))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let ready = a
        .http
        .get(format!("{}/readyz", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Verification answers from memory only while A may still vouch for its view, then
    // fails closed (tests/tests/replica_lag.rs covers it in depth).
    eventually("A stops vouching for tokens", || async {
        let (status, answer) = a
            .try_admin_post("/v1/verify", json!({ "token": token }))
            .await;
        assert!(
            status == 503 || answer["valid"] == true,
            "{status} {answer}"
        );
        status == 503
    })
    .await;
    // B goes on.
    for i in 0..5 {
        b.revoke_session(&format!("b{i}")).await;
    }

    // The database comes back: A serves writes again and catches up on B's revocations.
    to_pg.set_mode(Mode::Forward);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let head = loop {
        let (status, answer) = a
            .try_admin_post("/v1/revoke/session", json!({ "sid": "after" }))
            .await;
        match status {
            200 => break answer["seq"].as_u64().unwrap(),
            503 => assert!(tokio::time::Instant::now() < deadline, "A never recovered"),
            other => panic!("{other} {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seen = on_a.events_through(head).await;
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    let (stored, stored_head) = stored_log(&db).await;
    assert_eq!(stored, (1..=stored_head).collect::<Vec<_>>());
}

/// Replicas of one database must share its issuer: one started with another refuses to start,
/// naming both, before it serves anything.
#[tokio::test]
async fn a_replica_with_another_issuer_refuses_to_start() {
    let Some(db) = TestDatabase::create("replicas_issuer").await else {
        return;
    };
    let mut replicas = TestAuthority::start_replicas(&db, 2, |c| {
        c.issuer = "https://auth.example".into();
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = revocast_authority::Config::for_data_dir(dir.path());
    config.database_url = Some(DatabaseUrl::parse(&db.url).expect("database URL"));
    config.issuer = "https://other.example".into();
    let refused = revocast_authority::Authority::open(config)
        .await
        .err()
        .expect("a replica with another issuer started");
    let message = refused.to_string();
    assert!(
        matches!(refused, revocast_authority::Error::IssuerMismatch { .. })
            && message.contains("https://auth.example")
            && message.contains("https://other.example"),
        "{message}"
    );
    for r in &mut replicas {
        r.stop().await;
    }
}
