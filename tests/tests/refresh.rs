//! Sessions with refresh tokens: `POST /v1/tokens` with `"refresh": true`, rotation at
//! `POST /oauth2/token` (RFC 6749 §6), reuse detection that revokes the whole session (its
//! refresh tokens, and its access tokens through the stream), the reuse interval, every
//! revocation covering refresh tokens, RFC 7009/7662 for refresh tokens, bad input in RFC 6749
//! §5.2's shape, and exactly-once rotation under races — on one authority, and on two replicas
//! of one PostgreSQL database (skipped visibly without `REVOCAST_TEST_DATABASE_URL`).

use std::time::Duration;

use revocast_authority::config::Config;
use revocast_shared::UnixMillis;
use revocast_tests::postgres::TestDatabase;
use revocast_tests::stream_client::{Subscriber, Transport};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

/// A session: the first answer of `POST /v1/tokens` with `"refresh": true`.
async fn login(a: &TestAuthority, body: Value) -> Value {
    let mut body = body;
    body["refresh"] = json!(true);
    let (status, answer) = a.try_admin_post("/v1/tokens", body).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// `POST /oauth2/token` with a raw form body and content type, no API key: status, body.
async fn token_raw(a: &TestAuthority, content_type: Option<&str>, body: String) -> (u16, Value) {
    let mut req = a
        .http
        .post(format!("{}/oauth2/token", a.base))
        .body(body)
        .timeout(PATIENCE);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn enc(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("string pairs encode")
}

/// Rotate `refresh_token`: status and answer.
async fn refresh(a: &TestAuthority, refresh_token: &str) -> (u16, Value) {
    let form = enc(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ]);
    token_raw(a, Some("application/x-www-form-urlencoded"), form).await
}

/// Rotate, expecting success: the new pair.
async fn rotated(a: &TestAuthority, refresh_token: &str) -> (String, String) {
    let (status, v) = refresh(a, refresh_token).await;
    assert_eq!(status, 200, "{v}");
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

fn assert_oauth_error(status: u16, v: &Value, code: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
}

/// `/v1/verify`: the claims, or the error code.
async fn verify(a: &TestAuthority, token: &str) -> Result<Value, String> {
    let (status, v) = a
        .try_admin_post("/v1/verify", json!({ "token": token }))
        .await;
    assert_eq!(status, 200, "{v}");
    if v["valid"] == true {
        Ok(v["claims"].clone())
    } else {
        Err(v["error"].as_str().unwrap().to_string())
    }
}

/// An RFC 7009/7662 form POST with the admin key: status and body text.
async fn admin_form(a: &TestAuthority, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let resp = a
        .http
        .post(format!("{}{path}", a.base))
        .bearer_auth(&a.admin_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(enc(form))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("request");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn introspect(a: &TestAuthority, token: &str) -> Value {
    let (status, text) = admin_form(a, "/oauth2/introspect", &[("token", token)]).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

/// A WebSocket subscriber from `since=0`, past its `hello`.
async fn subscriber(a: &TestAuthority) -> Subscriber {
    let mut sub = Subscriber::connect(
        Transport::WebSocket,
        &a.base,
        Some(&a.subscriber_key),
        "since=0",
    )
    .await
    .expect("subscribe");
    assert_eq!(sub.next().await.expect("hello")["type"], "hello");
    sub
}

/// The next revocation event on `sub` (heartbeats skipped).
async fn next_event(sub: &mut Subscriber) -> Value {
    loop {
        let m = sub.next().await.expect("a message");
        if m.get("seq").is_some() && m["type"] != "heartbeat" {
            return m;
        }
    }
}

#[tokio::test]
async fn a_session_rotates_into_new_pairs_of_the_same_session() {
    let a = TestAuthority::start().await;
    let first = login(
        &a,
        json!({ "sub": "ann", "ttl": 600, "aud": "api", "claims": { "role": "reader" } }),
    )
    .await;
    assert_eq!(first["refresh_expires_in"], 14 * 24 * 3600, "{first}");
    let r1 = s(&first["refresh_token"]);
    assert!(r1.starts_with("rvr_") && r1.len() >= 47, "{r1}");
    let claims = verify(&a, first["token"].as_str().unwrap()).await.unwrap();
    let sid = s(&claims["sid"]);
    assert!(!sid.is_empty());
    // Without "refresh", the answer is today's.
    let (_, plain) = a
        .try_admin_post("/v1/tokens", json!({ "sub": "ann" }))
        .await;
    assert!(plain.get("refresh_token").is_none() && plain.get("refresh_expires_in").is_none());

    let resp = a
        .http
        .post(format!("{}/oauth2/token", a.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(enc(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    let expires_in = v["expires_in"].as_i64().unwrap();
    assert!((590..=600).contains(&expires_in), "{v}");
    let (a2, r2) = (s(&v["access_token"]), s(&v["refresh_token"]));
    assert_ne!(r2, r1);
    let c2 = verify(&a, &a2).await.unwrap();
    assert_eq!(c2["sid"], sid.as_str());
    assert_eq!(c2["sub"], "ann");
    assert_eq!(c2["aud"], "api");
    assert_eq!(c2["role"], "reader");
    assert_eq!(c2["gen"], claims["gen"]);

    // The chain goes on; each token works once.
    let (a3, r3) = rotated(&a, &r2).await;
    assert_eq!(verify(&a, &a3).await.unwrap()["sid"], sid.as_str());
    assert!(introspect(&a, &r3).await["active"] == true);

    // The metadata names the endpoint and the grant.
    let meta: Value = a
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["token_endpoint"], "http://revocast.test/oauth2/token");
    assert_eq!(meta["grant_types_supported"], json!(["refresh_token"]));
}

/// A used refresh token presented again is theft: `400 invalid_grant`, and the session is
/// revoked at once — the event is on the stream, every access token of the session is
/// rejected, every refresh token of the family is dead — with a metric.
#[tokio::test]
async fn reuse_revokes_the_whole_session() {
    let a = TestAuthority::start().await;
    let mut sub = subscriber(&a).await;
    let first = login(&a, json!({ "sub": "bob" })).await;
    let sid = s(&verify(&a, first["token"].as_str().unwrap()).await.unwrap()["sid"]);
    let r1 = s(&first["refresh_token"]);
    let (a2, r2) = rotated(&a, &r1).await;
    let (a3, r3) = rotated(&a, &r2).await;
    assert!(verify(&a, &a3).await.is_ok());

    let (status, v) = refresh(&a, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");

    let event = next_event(&mut sub).await;
    assert_eq!(event["type"], "session", "{event}");
    assert_eq!(event["sid"], sid.as_str());
    for access in [s(&first["token"]), a2, a3] {
        assert_eq!(verify(&a, &access).await.unwrap_err(), "token_revoked");
    }
    for token in [&r1, &r2, &r3] {
        let (status, v) = refresh(&a, token).await;
        assert_oauth_error(status, &v, "invalid_grant");
        assert_eq!(introspect(&a, token).await, json!({ "active": false }));
    }
    // The session is revoked once: the refusals that followed wrote nothing more.
    assert_eq!(a.head(), event["seq"].as_u64().unwrap());
    assert_eq!(a.metric("revocast_refresh_token_reuse_total").await, 1);
    // Another session of the same subject is untouched.
    let other = login(&a, json!({ "sub": "bob" })).await;
    rotated(&a, other["refresh_token"].as_str().unwrap()).await;
}

/// With a reuse interval, the immediately preceding token presented again within it gets the
/// same pair; an older one — three generations back — is reuse all the same, as is the
/// preceding one after the interval.
#[tokio::test]
async fn the_reuse_interval_covers_only_the_immediately_preceding_token() {
    let a = TestAuthority::start_with(|c| c.refresh_reuse_interval = Duration::from_secs(30)).await;
    let first = login(&a, json!({ "sub": "cy" })).await;
    let r1 = s(&first["refresh_token"]);
    let (a2, r2) = rotated(&a, &r1).await;
    // A retry of the lost answer: the very same pair, and the session goes on.
    assert_eq!(rotated(&a, &r1).await, (a2.clone(), r2.clone()));
    assert_eq!(rotated(&a, &r1).await, (a2.clone(), r2.clone()));
    assert!(verify(&a, &a2).await.is_ok());
    let (_, r3) = rotated(&a, &r2).await;
    // r1 is two generations back now.
    let (status, v) = refresh(&a, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    let (status, v) = refresh(&a, &r3).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(verify(&a, &a2).await.unwrap_err(), "token_revoked");

    // Three generations back.
    let second = login(&a, json!({ "sub": "cy" })).await;
    let q1 = s(&second["refresh_token"]);
    let (_, q2) = rotated(&a, &q1).await;
    let (_, q3) = rotated(&a, &q2).await;
    let (q4a, q4) = rotated(&a, &q3).await;
    let (status, v) = refresh(&a, &q1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    let (status, v) = refresh(&a, &q4).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(verify(&a, &q4a).await.unwrap_err(), "token_revoked");
    assert_eq!(a.metric("revocast_refresh_token_reuse_total").await, 2);

    // After the interval, the preceding token is reuse too.
    let b =
        TestAuthority::start_with(|c| c.refresh_reuse_interval = Duration::from_millis(300)).await;
    let third = login(&b, json!({ "sub": "cy" })).await;
    let p1 = s(&third["refresh_token"]);
    let (_, p2) = rotated(&b, &p1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, v) = refresh(&b, &p1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    let (status, v) = refresh(&b, &p2).await;
    assert_oauth_error(status, &v, "invalid_grant");
}

/// With the default interval (0) even an immediate retry is reuse.
#[tokio::test]
async fn by_default_every_reuse_is_theft() {
    let a = TestAuthority::start().await;
    let first = login(&a, json!({ "sub": "dee" })).await;
    let r1 = s(&first["refresh_token"]);
    let (_, r2) = rotated(&a, &r1).await;
    let (status, v) = refresh(&a, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    let (status, v) = refresh(&a, &r2).await;
    assert_oauth_error(status, &v, "invalid_grant");
}

/// Revoking a session or a subject ends its refresh tokens; a revoked sid never starts a
/// session with refresh tokens again, nor does one that has them already.
#[tokio::test]
async fn session_and_subject_revocations_end_refresh_tokens() {
    let a = TestAuthority::start().await;
    let first = login(&a, json!({ "sub": "eve", "sid": "eve-1" })).await;
    let r1 = s(&first["refresh_token"]);
    let (_, r2) = rotated(&a, &r1).await;
    a.revoke_session("eve-1").await;
    let (status, v) = refresh(&a, &r2).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(introspect(&a, &r2).await, json!({ "active": false }));
    let (status, v) = a
        .try_admin_post(
            "/v1/tokens",
            json!({ "sub": "eve", "sid": "eve-1", "refresh": true }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    let taken = login(&a, json!({ "sub": "eve", "sid": "eve-2" })).await;
    let (status, v) = a
        .try_admin_post(
            "/v1/tokens",
            json!({ "sub": "eve", "sid": "eve-2", "refresh": true }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    rotated(&a, taken["refresh_token"].as_str().unwrap()).await;

    let s1 = login(&a, json!({ "sub": "fay" })).await;
    let s2 = login(&a, json!({ "sub": "fay" })).await;
    let (_, t1) = rotated(&a, s1["refresh_token"].as_str().unwrap()).await;
    a.try_admin_post("/v1/revoke/subject", json!({ "sub": "fay" }))
        .await;
    for token in [t1, s(&s2["refresh_token"])] {
        let (status, v) = refresh(&a, &token).await;
        assert_oauth_error(status, &v, "invalid_grant");
        assert_eq!(introspect(&a, &token).await, json!({ "active": false }));
    }
    // A session started after the subject revocation works.
    let later = login(&a, json!({ "sub": "fay" })).await;
    let (access, _) = rotated(&a, later["refresh_token"].as_str().unwrap()).await;
    assert!(verify(&a, &access).await.is_ok());
}

/// RFC 7009 with a refresh token, with or without `token_type_hint`, revokes its family —
/// the session, access tokens included; RFC 7662 answers for refresh tokens.
#[tokio::test]
async fn oauth_revoke_and_introspect_answer_for_refresh_tokens() {
    let a = TestAuthority::start().await;
    let first = login(&a, json!({ "sub": "gus", "sid": "gus-1" })).await;
    let r1 = s(&first["refresh_token"]);
    let v = introspect(&a, &r1).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(
        (v["sub"].clone(), v["sid"].clone()),
        (json!("gus"), json!("gus-1"))
    );
    assert!(v["exp"].as_i64().unwrap() > v["iat"].as_i64().unwrap());
    let access = introspect(&a, first["token"].as_str().unwrap()).await;
    assert_eq!(access["token_type"], "Bearer");

    let (a2, r2) = rotated(&a, &r1).await;
    assert_eq!(
        introspect(&a, &r1).await,
        json!({ "active": false }),
        "used"
    );
    assert_eq!(introspect(&a, &r2).await["active"], true);

    let (status, _) = admin_form(
        &a,
        "/oauth2/revoke",
        &[("token", &r2), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(introspect(&a, &r2).await, json!({ "active": false }));
    let (status, v) = refresh(&a, &r2).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(verify(&a, &a2).await.unwrap_err(), "token_revoked");
    // Again: nothing more is written.
    let head = a.head();
    let (status, _) = admin_form(&a, "/oauth2/revoke", &[("token", &r2)]).await;
    assert_eq!(status, 200);
    assert_eq!(a.head(), head);

    // Without a hint (or with the wrong one), and for an unknown refresh token.
    let second = login(&a, json!({ "sub": "gus", "sid": "gus-2" })).await;
    let q1 = s(&second["refresh_token"]);
    let (status, _) = admin_form(
        &a,
        "/oauth2/revoke",
        &[("token", &q1), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = refresh(&a, &q1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(
        verify(&a, second["token"].as_str().unwrap())
            .await
            .unwrap_err(),
        "token_revoked"
    );
    let unknown = format!("rvr_{}", "A".repeat(43));
    let (status, _) = admin_form(&a, "/oauth2/revoke", &[("token", &unknown)]).await;
    assert_eq!(status, 200);
    assert_eq!(introspect(&a, &unknown).await, json!({ "active": false }));
}

/// Bad input gets RFC 6749 §5.2's shape with a 400, never a 5xx, and changes nothing.
#[tokio::test]
async fn bad_token_requests_get_the_oauth_error_shape() {
    let a = TestAuthority::start().await;
    let session = login(&a, json!({ "sub": "hal" })).await;
    let live = s(&session["refresh_token"]);
    let access = s(&session["token"]);
    let form = Some("application/x-www-form-urlencoded");
    let big = format!(
        "grant_type=refresh_token&refresh_token={live}&pad={}",
        "x".repeat(70 * 1024)
    );
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        ("empty body", form, String::new(), "invalid_request"),
        (
            "no grant_type",
            form,
            enc(&[("refresh_token", &live)]),
            "invalid_request",
        ),
        (
            "no refresh_token",
            form,
            enc(&[("grant_type", "refresh_token")]),
            "invalid_request",
        ),
        (
            "empty refresh_token",
            form,
            enc(&[("grant_type", "refresh_token"), ("refresh_token", "")]),
            "invalid_request",
        ),
        (
            "password grant",
            form,
            enc(&[("grant_type", "password"), ("username", "hal")]),
            "unsupported_grant_type",
        ),
        (
            "code grant",
            form,
            enc(&[("grant_type", "authorization_code"), ("code", "x")]),
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            form,
            format!("grant_type=refresh_token&grant_type=refresh_token&refresh_token={live}"),
            "invalid_request",
        ),
        (
            "JSON body",
            Some("application/json"),
            json!({ "grant_type": "refresh_token", "refresh_token": live }).to_string(),
            "invalid_request",
        ),
        (
            "no content type",
            None,
            enc(&[("grant_type", "refresh_token"), ("refresh_token", &live)]),
            "invalid_request",
        ),
        ("body too large", form, big, "invalid_request"),
        // Decoded lossily (as form decoding does): not a refresh token.
        (
            "not UTF-8",
            form,
            "grant_type=refresh_token&refresh_token=%ff%fe".into(),
            "invalid_grant",
        ),
        (
            "malformed token",
            form,
            enc(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
            ]),
            "invalid_grant",
        ),
        (
            "an access token",
            form,
            enc(&[("grant_type", "refresh_token"), ("refresh_token", &access)]),
            "invalid_grant",
        ),
        (
            "unknown token",
            form,
            enc(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &format!("rvr_{}", "b".repeat(43))),
            ]),
            "invalid_grant",
        ),
        (
            "a token too long",
            form,
            enc(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &format!("{live}x")),
            ]),
            "invalid_grant",
        ),
    ];
    for (what, content_type, body, code) in cases {
        let (status, v) = token_raw(&a, content_type, body).await;
        assert!(status < 500, "{what}: {status} {v}");
        assert_eq!(status, 400, "{what}: {v}");
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(v["error_description"].is_string(), "{what}: {v}");
    }
    // None of it touched the session.
    assert_eq!(a.head(), 0);
    rotated(&a, &live).await;
}

/// Many refreshes of one token at once: exactly one new pair, the losers are reuse, and the
/// session ends up revoked.
#[tokio::test]
async fn racing_refreshes_of_one_token_rotate_exactly_once() {
    let a = TestAuthority::start().await;
    for round in 0..4 {
        let first = login(&a, json!({ "sub": format!("race-{round}") })).await;
        let r1 = s(&first["refresh_token"]);
        let answers = futures_util::future::join_all((0..16).map(|_| refresh(&a, &r1))).await;
        let won: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        for (status, v) in answers.iter().filter(|(status, _)| *status != 200) {
            assert_oauth_error(*status, v, "invalid_grant");
        }
        let (access, next) = (s(&won[0]["access_token"]), s(&won[0]["refresh_token"]));
        assert_eq!(verify(&a, &access).await.unwrap_err(), "token_revoked");
        let (status, v) = refresh(&a, &next).await;
        assert_oauth_error(status, &v, "invalid_grant");
    }
    assert_eq!(a.metric("revocast_refresh_token_reuse_total").await, 4);
}

/// The same race across two replicas of one PostgreSQL database: exactly one new pair in
/// all, the session revoked on both.
#[tokio::test]
async fn racing_refreshes_on_two_replicas_rotate_exactly_once() {
    let Some(db) = TestDatabase::create("refresh_race").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 2, |_| {}).await;
    let (x, y) = (&replicas[0], &replicas[1]);
    for round in 0..4 {
        let first = login(x, json!({ "sub": format!("pg-race-{round}") })).await;
        let r1 = s(&first["refresh_token"]);
        // A rotation on one replica is known to the other at once: the shared store decides.
        let (_, r2) = rotated(y, &r1).await;
        let answers = futures_util::future::join_all(
            (0..16).map(|i| refresh(if i % 2 == 0 { x } else { y }, &r2)),
        )
        .await;
        let won: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        for (status, v) in answers.iter().filter(|(status, _)| *status != 200) {
            assert_oauth_error(*status, v, "invalid_grant");
        }
        let access = s(&won[0]["access_token"]);
        for r in [x, y] {
            eventually("the session is revoked on both replicas", || async {
                verify(r, &access).await.err().as_deref() == Some("token_revoked")
            })
            .await;
            let (status, v) = refresh(r, won[0]["refresh_token"].as_str().unwrap()).await;
            assert_oauth_error(status, &v, "invalid_grant");
        }
    }
    // Reuse across replicas: rotated on one, the old one presented on the other.
    let first = login(x, json!({ "sub": "pg-reuse" })).await;
    let r1 = s(&first["refresh_token"]);
    let (a2, _) = rotated(x, &r1).await;
    let (status, v) = refresh(y, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(verify(y, &a2).await.unwrap_err(), "token_revoked");
    eventually(
        "the other replica applies the reuse's revocation",
        || async { verify(x, &a2).await.err().as_deref() == Some("token_revoked") },
    )
    .await;
}

/// A session revocation's log row lasts only as long as the access tokens it covers; the
/// session's refresh tokens live on, and stay dead: the store remembers every revoked session.
#[tokio::test]
async fn a_revoked_session_stays_dead_after_its_revocation_lapses() {
    let a = TestAuthority::start_with(|c| {
        c.max_ttl_secs = 2;
        c.default_ttl_secs = 1;
    })
    .await;
    let first = login(&a, json!({ "sub": "ida", "sid": "ida-1", "ttl": 1 })).await;
    let r1 = s(&first["refresh_token"]);
    a.revoke_session("ida-1").await;
    // Past the revocation's `until` (now + max-ttl): the view no longer holds it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, v) = refresh(&a, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    assert_eq!(introspect(&a, &r1).await, json!({ "active": false }));
    let (status, v) = a
        .try_admin_post(
            "/v1/tokens",
            json!({ "sub": "ida", "sid": "ida-1", "ttl": 1, "refresh": true }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
}

/// The sids of the rows of `refresh_sessions`, `refresh_tokens` (one per token) and
/// `revoked_sessions`, each sorted, read straight from the store: the SQLite file in `a`'s
/// data directory, or the PostgreSQL database `db`.
async fn refresh_rows(a: &TestAuthority, db: Option<&TestDatabase>) -> [Vec<String>; 3] {
    use sqlx::Connection;
    const QUERIES: [&str; 3] = [
        "SELECT sid FROM refresh_sessions",
        "SELECT sid FROM refresh_tokens",
        "SELECT sid FROM revoked_sessions",
    ];
    let mut rows: [Vec<String>; 3] = Default::default();
    match db {
        Some(db) => {
            let mut conn = db.connect().await;
            for (q, r) in QUERIES.iter().zip(&mut rows) {
                *r = sqlx::query_scalar(q).fetch_all(&mut conn).await.unwrap();
            }
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(a.config().data_dir.join("revocast.db"))
                .read_only(true);
            let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
                .await
                .expect("open the SQLite file");
            for (q, r) in QUERIES.iter().zip(&mut rows) {
                *r = sqlx::query_scalar(q).fetch_all(&mut conn).await.unwrap();
            }
        }
    }
    // Sorted here: a PostgreSQL collation may order `-` otherwise.
    rows.iter_mut().for_each(|r| r.sort());
    rows
}

fn sids(sids: &[&str]) -> Vec<String> {
    sids.iter().map(|s| s.to_string()).collect()
}

/// Sessions that are over leave nothing behind: pruning deletes them with their refresh
/// tokens once their absolute end has passed (whether revoked, rotated, reused or idle), and
/// a `revoked_sessions` row once its session is gone and its session revocation has left the
/// log — while a live session, and the revocation of a live session, stay.
async fn ended_sessions_are_pruned(mut a: TestAuthority, db: Option<&TestDatabase>) {
    let start = UnixMillis::now();
    // Idle, rotated, revoked, and reused (which revokes): all of a 10-second lifetime.
    login(&a, json!({ "sub": "ann", "sid": "gone-idle" })).await;
    let first = login(&a, json!({ "sub": "ann", "sid": "gone-rotated" })).await;
    let (_, r2) = rotated(&a, &s(&first["refresh_token"])).await;
    rotated(&a, &r2).await;
    login(&a, json!({ "sub": "ann", "sid": "gone-revoked" })).await;
    a.revoke_session("gone-revoked").await;
    let first = login(&a, json!({ "sub": "ann", "sid": "gone-reused" })).await;
    let r1 = s(&first["refresh_token"]);
    rotated(&a, &r1).await;
    let (status, v) = refresh(&a, &r1).await;
    assert_oauth_error(status, &v, "invalid_grant");
    // Then sessions of the default (30-day) lifetime: one live, one revoked.
    a.restart_with(|c| {
        c.session_max_lifetime_secs = 30 * 86_400;
        c.refresh_ttl_secs = 14 * 86_400;
    })
    .await;
    let live = login(&a, json!({ "sub": "bob", "sid": "live" })).await;
    let live_revoked = login(&a, json!({ "sub": "bob", "sid": "live-revoked" })).await;
    a.revoke_session("live-revoked").await;
    let [sessions, tokens, revoked] = refresh_rows(&a, db).await;
    assert_eq!(sessions.len(), 6, "{sessions:?}");
    assert_eq!(tokens.len(), 9, "{tokens:?}");
    assert_eq!(
        revoked,
        sids(&["gone-reused", "gone-revoked", "live-revoked"])
    );

    // Past the short sessions' end (and the expiry grace), before the revocations' `until`
    // (commit time + max-ttl): the short sessions and their tokens go; their revocations'
    // log rows are still there, so the sids stay revoked.
    let later = |secs: i64| UnixMillis::new(start.as_millis() + secs * 1000);
    a.handle
        .prune_log_at(later(120), Duration::from_secs(1))
        .await;
    let [sessions, tokens, revoked] = refresh_rows(&a, db).await;
    let both = sids(&["live", "live-revoked"]);
    assert_eq!((&sessions, &tokens), (&both, &both));
    assert_eq!(
        revoked,
        sids(&["gone-reused", "gone-revoked", "live-revoked"])
    );

    // Past the revocations' `until` too: their log rows are pruned, and with them the rows of
    // the revoked sids that have no session left. The live revoked session keeps its row.
    a.handle
        .prune_log_at(later(2 * 86_400), Duration::from_secs(1))
        .await;
    let [sessions, tokens, revoked] = refresh_rows(&a, db).await;
    assert_eq!((&sessions, &tokens), (&both, &both));
    assert_eq!(revoked, sids(&["live-revoked"]));

    // The live session still rotates; the revoked one is still refused.
    rotated(&a, &s(&live["refresh_token"])).await;
    let (status, v) = refresh(&a, &s(&live_revoked["refresh_token"])).await;
    assert_oauth_error(status, &v, "invalid_grant");
    a.stop().await;
}

/// Short sessions: 10 seconds, refresh tokens as long.
fn short_sessions(c: &mut Config) {
    c.session_max_lifetime_secs = 10;
    c.refresh_ttl_secs = 10;
}

#[tokio::test]
async fn ended_refresh_sessions_are_pruned() {
    ended_sessions_are_pruned(TestAuthority::start_with(short_sessions).await, None).await;
}

#[tokio::test]
async fn ended_refresh_sessions_are_pruned_on_postgres() {
    let Some(db) = TestDatabase::create("refresh_prune").await else {
        return;
    };
    let mut replicas = TestAuthority::start_replicas(&db, 1, short_sessions).await;
    let a = replicas.pop().expect("one replica");
    ended_sessions_are_pruned(a, Some(&db)).await;
}
