//! Per-key rate limits on issuing and revoking: over the limit, `429 rate_limited` with
//! `Retry-After`, counted in a metric; each key has its own budget; unknown keys are refused
//! before they can cost a budget entry; other routes are not limited.

use std::time::Instant;

use futures_util::future::join_all;
use revocast_authority::Scope;
use revocast_tests::TestAuthority;
use serde_json::{Value, json};

/// Fire `n` identical admin POSTs at once; return the statuses and the first 429's answer.
async fn burst(
    a: &TestAuthority,
    key: &str,
    path: &str,
    body: impl Fn(usize) -> Value,
    n: usize,
) -> (Vec<u16>, Option<(Option<String>, Value)>) {
    let answers = join_all((0..n).map(|i| {
        a.http
            .post(format!("{}{path}", a.base))
            .bearer_auth(key)
            .json(&body(i))
            .send()
    }))
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for resp in answers {
        let resp = resp.expect("request");
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 && limited.is_none() {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            limited = Some((retry_after, resp.json().await.unwrap()));
        }
    }
    (statuses, limited)
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_per_key() {
    let a = TestAuthority::start_with(|c| {
        c.rate_limit_tokens = 1;
        c.rate_limit_revocations = 1;
    })
    .await;
    let started = Instant::now();
    let (statuses, limited) = burst(
        &a,
        &a.admin_key,
        "/v1/tokens",
        |i| json!({ "sub": format!("u{i}") }),
        10,
    )
    .await;
    let ok = statuses.iter().filter(|&&s| s == 201).count();
    // One per second per key, bursts of one: however slow this machine, most were refused.
    assert!(
        ok >= 1 && ok as u64 <= 1 + started.elapsed().as_secs(),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 429),
        "{statuses:?}"
    );
    let (retry_after, body) = limited.expect("a 429");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("tokens")
    );
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // Another key has its own budget.
    let other = a.create_key(Scope::Admin).await;
    let (statuses, _) = burst(&a, &other, "/v1/tokens", |_| json!({ "sub": "v" }), 1).await;
    assert_eq!(statuses, [201]);

    // Every revoke endpoint shares the revocation budget.
    let started = Instant::now();
    let (sessions, _) = burst(
        &a,
        &a.admin_key,
        "/v1/revoke/session",
        |i| json!({ "sid": format!("s{i}") }),
        5,
    )
    .await;
    let (subjects, limited) = burst(
        &a,
        &a.admin_key,
        "/v1/revoke/subject",
        |i| json!({ "sub": format!("x{i}") }),
        5,
    )
    .await;
    let ok = sessions
        .iter()
        .chain(&subjects)
        .filter(|&&s| s == 200)
        .count();
    assert!(
        ok >= 1 && ok as u64 <= 1 + started.elapsed().as_secs(),
        "{sessions:?} {subjects:?}"
    );
    let (_, body) = limited.expect("a 429 on the subject revoke");
    assert_eq!(body["error"], "rate_limited");

    // Unknown keys are refused by authentication, not by the limiter.
    let (statuses, _) = burst(
        &a,
        "rvc_not_a_key",
        "/v1/tokens",
        |_| json!({ "sub": "z" }),
        3,
    )
    .await;
    assert_eq!(statuses, [401, 401, 401]);

    // Verification is not limited.
    let third = a.create_key(Scope::Admin).await;
    let issued: Value = a
        .http
        .post(format!("{}/v1/tokens", a.base))
        .bearer_auth(&third)
        .json(&json!({ "sub": "w" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().expect("token").to_string();
    let (statuses, _) = burst(
        &a,
        &a.admin_key,
        "/v1/verify",
        |_| json!({ "token": token }),
        20,
    )
    .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains(r#"revocast_rate_limited_total{limit="tokens"}"#)
            && metrics.contains(r#"revocast_rate_limited_total{limit="revocations"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn zero_turns_a_limit_off() {
    let a = TestAuthority::start_with(|c| {
        c.rate_limit_revocations = 0;
    })
    .await;
    let (statuses, _) = burst(
        &a,
        &a.admin_key,
        "/v1/revoke/session",
        |i| json!({ "sid": format!("s{i}") }),
        50,
    )
    .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}
