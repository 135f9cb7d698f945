//! API keys across replicas sharing one PostgreSQL database (`REVOCAST_TEST_DATABASE_URL`;
//! skipped, visibly, without it): a key revoked through one replica stops working on every
//! other within one second, although each had it cached as valid.

use std::time::{Duration, Instant};

use revocast_authority::Scope;
use revocast_tests::postgres::TestDatabase;
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::{Value, json};

/// `POST /v1/verify` of a token that is not one, with `key`: 200 for a key allowed to verify,
/// 401 for an unknown or revoked one.
async fn verify_with(a: &TestAuthority, key: &str) -> u16 {
    a.http
        .post(format!("{}/v1/verify", a.base))
        .bearer_auth(key)
        .json(&json!({ "token": "a.b.c" }))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("verify request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second() {
    let Some(db) = TestDatabase::create("apikeys").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 2, |_| {}).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    // Created through A, used on B (and on A): both have it cached as valid.
    let key = a
        .handle
        .create_api_key(Scope::Introspect, Some("gateway"))
        .await
        .expect("create key")
        .to_string();
    for _ in 0..5 {
        assert_eq!(verify_with(b, &key).await, 200);
        assert_eq!(verify_with(a, &key).await, 200);
    }
    // A fleet sharing the key costs B one store query per refresh, not one per request.
    let before = b
        .metric("revocast_api_key_lookups_total{outcome=\"found\"}")
        .await;
    assert!(before > 0, "B counted its store queries");
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (http, base, key) = (b.http.clone(), b.base.clone(), key.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/v1/verify"))
                    .bearer_auth(key)
                    .json(&json!({ "token": "a.b.c" }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let queries = b
        .metric("revocast_api_key_lookups_total{outcome=\"found\"}")
        .await
        - before;
    assert!(queries <= 5, "50 requests cost {queries} store queries");

    let list: Value = b
        .http
        .get(format!("{}/v1/api-keys", b.base))
        .bearer_auth(&b.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "gateway")
        .and_then(|k| k["id"].as_str())
        .expect("listed on B too")
        .to_string();

    let revoked = a
        .admin_post(&format!("/v1/api-keys/{id}/revoke"), json!({}))
        .await;
    let at = Instant::now();
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    assert_eq!(verify_with(a, &key).await, 401, "at once on A");
    loop {
        match verify_with(b, &key).await {
            401 => break,
            200 => assert!(
                at.elapsed() < Duration::from_secs(1),
                "B still accepts the revoked key {:?} after the revocation",
                at.elapsed()
            ),
            other => panic!("B answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = at.elapsed();
    assert!(refused_after < Duration::from_secs(1), "{refused_after:?}");
    eprintln!("B refused the revoked key {refused_after:?} after A revoked it");
    // And it stays refused; the other keys are untouched.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(verify_with(b, &key).await, 401);
    assert_eq!(verify_with(b, &b.admin_key).await, 200);
}
