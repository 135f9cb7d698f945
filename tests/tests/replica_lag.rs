//! A replica cut off from the shared PostgreSQL database (`REVOCAST_TEST_DATABASE_URL`; each
//! test makes its own database) while another one revokes: it must not answer as if its view
//! were current. Verification and introspection answer 503 — never `valid` or `active` for a
//! token revoked meanwhile — and issuance answers 503 too, until it reads the log again and
//! catches up. Without the variable the test says it is skipped and passes.

use std::time::Duration;

use revocast_authority::config::DatabaseUrl;
use revocast_tests::postgres::TestDatabase;
use revocast_tests::proxy::{FaultyProxy, Mode};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

async fn verify(a: &TestAuthority, token: &str) -> (u16, Value) {
    a.try_admin_post("/v1/verify", json!({ "token": token }))
        .await
}

async fn introspect(a: &TestAuthority, token: &str) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/oauth2/introspect", a.base))
        .bearer_auth(&a.admin_key)
        .form(&[("token", token)])
        .timeout(PATIENCE)
        .send()
        .await
        .expect("introspect request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn issue(a: &TestAuthority, sub: &str) -> (u16, Value) {
    a.try_admin_post("/v1/tokens", json!({ "sub": sub, "ttl": 600 }))
        .await
}

/// 503 in the error shape, as a replica behind the log answers.
fn behind(answer: &(u16, Value)) -> bool {
    answer.0 == 503 && answer.1["error"] == "temporarily_unavailable"
}

/// For a while, B's every answer about `token` (revoked on A while B cannot read the log) is
/// 503: never valid, never active; and B issues nothing.
async fn cut_off_answers_unavailable(b: &TestAuthority, token: &str) {
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        let verified = verify(b, token).await;
        assert!(
            behind(&verified),
            "verify on the cut-off replica: {verified:?}"
        );
        let introspected = introspect(b, token).await;
        assert!(
            behind(&introspected),
            "introspect on the cut-off replica: {introspected:?}"
        );
        let issued = issue(b, "fay").await;
        assert!(behind(&issued), "issue on the cut-off replica: {issued:?}");
        let ready = b
            .http
            .get(format!("{}/readyz", b.base))
            .timeout(PATIENCE)
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 503, "readyz on the cut-off replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_the_database_answers_503_never_valid() {
    let Some(db) = TestDatabase::create("lag").await else {
        return;
    };
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let to_pg = FaultyProxy::start(pg).await;
    // A reaches the database directly; B through the proxy.
    let via_proxy = db
        .url
        .replacen("127.0.0.1:5432", &to_pg.addr.to_string(), 1);
    assert_ne!(via_proxy, db.url, "the test URL names 127.0.0.1:5432");
    let b_url = Some(DatabaseUrl::parse(&via_proxy).unwrap());
    let fast = |c: &mut revocast_authority::Config| {
        c.database_poll_interval = Duration::from_millis(200);
    };
    let a = TestAuthority::start_replicas(&db, 1, fast).await.remove(0);
    let b = TestAuthority::start_with_keys(&a, |c| {
        fast(c);
        c.database_url = b_url.clone();
    })
    .await;
    let first = a.issue("eve", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = a.issue("gus", 600).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // B vouches for both while it reads the log (this also caches B's admin key).
    assert_eq!(verify(&b, &first).await.1["valid"], true);
    assert_eq!(introspect(&b, &second).await.1["active"], true);

    // 1. The database stalls for B: its connections stay open but nothing moves. Once its
    // last read is too old, B refuses to vouch; then A revokes, and B still never says valid.
    to_pg.stall(true);
    eventually("the stalled replica stops vouching", || async {
        behind(&verify(&b, &first).await)
    })
    .await;
    assert_eq!(
        a.try_admin_post("/v1/revoke", json!({ "token": first }))
            .await
            .0,
        200
    );
    cut_off_answers_unavailable(&b, &first).await;
    // The database moves again: B catches up and answers `revoked`.
    to_pg.stall(false);
    eventually("B caught up with the revocation", || async {
        verify(&b, &first).await.1["error"] == "token_revoked"
    })
    .await;
    assert_eq!(
        introspect(&b, &first).await,
        (200, json!({ "active": false }))
    );

    // 2. The database refuses B: connections reset, new ones refused. A revokes gus as a
    // subject; B answers 503 until it reads the log again, then `revoked`, and issues tokens
    // with gus's new generation.
    to_pg.set_mode(Mode::Refuse);
    to_pg.reset();
    eventually("the refused replica stops vouching", || async {
        behind(&verify(&b, &second).await)
    })
    .await;
    let (status, revoked) = a
        .try_admin_post("/v1/revoke/subject", json!({ "sub": "gus" }))
        .await;
    assert_eq!(status, 200);
    cut_off_answers_unavailable(&b, &second).await;
    to_pg.set_mode(Mode::Forward);
    eventually("B caught up with the subject revocation", || async {
        verify(&b, &second).await.1["error"] == "token_revoked"
    })
    .await;
    assert_eq!(
        introspect(&b, &second).await,
        (200, json!({ "active": false }))
    );
    let (status, fresh) = issue(&b, "gus").await;
    assert_eq!(status, 201, "{fresh}");
    let (_, fresh) = verify(&b, fresh["token"].as_str().unwrap()).await;
    assert_eq!(fresh["claims"]["gen"], revoked["gen"], "{fresh}");
    assert_eq!(fresh["valid"], true);
}
