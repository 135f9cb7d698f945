//! API tests: a real authority on 127.0.0.1:0 driven over HTTP, one row of the contract table
//! at a time, plus the semantics behind each row.

use std::time::Duration;

use reqwest::StatusCode;
use revocast_authority::{Authority, Config, Scope};
use revocast_shared::crypto::SigningSeed;
use revocast_shared::token::issue;
use revocast_shared::{Claims, SigningKey, UnixMillis, VerifyingKey};
use serde_json::{Value, json};

mod common;

use common::{Server, start};

impl Server {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post(path, Some(&self.admin.clone()), body).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn issue(&self, body: Value) -> Value {
        let (status, v) = self.admin("/v1/tokens", body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    async fn token_for(&self, sub: &str) -> String {
        self.issue(json!({ "sub": sub })).await["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `Ok(claims)` or `Err(code)`.
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let (status, v) = self.admin("/v1/verify", json!({ "token": token })).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if v["valid"] == true {
            Ok(v["claims"].clone())
        } else {
            Err(v["error"].as_str().unwrap().to_string())
        }
    }

    async fn form(&self, path: &str, key: &str, body: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }
}

fn assert_error_shape(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn issue_verify_revoke_and_revoke_again() {
    let (s, handle) = start().await;
    let issued = s.issue(json!({ "sub": "alice", "aud": ["api", "web"], "sid": "s1", "claims": { "role": "admin" } })).await;
    for field in ["token", "rid", "kid", "jti", "iat", "exp"] {
        assert!(!issued[field].is_null(), "missing {field} in {issued}");
    }
    assert_eq!(
        issued["exp"].as_i64().unwrap() - issued["iat"].as_i64().unwrap(),
        3600
    );
    let token = issued["token"].as_str().unwrap();
    let (_, v) = s.admin("/v1/verify", json!({ "token": token })).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["rid"], issued["rid"]);
    let claims = &v["claims"];
    assert_eq!(
        (
            claims["sub"].clone(),
            claims["sid"].clone(),
            claims["role"].clone()
        ),
        (json!("alice"), json!("s1"), json!("admin"))
    );
    assert_eq!(claims["aud"], json!(["api", "web"]));
    assert_eq!(claims["gen"], 0);
    assert_eq!(claims["jti"], issued["jti"]);

    let (status, first) = s
        .admin("/v1/revoke", json!({ "token": token, "reason": "logout" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["revoked"], true);
    assert_eq!(first["already_revoked"], false);
    assert_eq!(first["rid"], issued["rid"]);
    assert_eq!(first["sub"], "alice");
    assert_eq!(first["exp"], issued["exp"]);
    assert_eq!(first["seq"], 1);
    assert!(first["revoked_at"].as_f64().unwrap() > 1.7e9);
    assert_eq!(s.verify(token).await, Err("token_revoked".into()));

    let (status, again) = s.admin("/v1/revoke", json!({ "token": token })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["already_revoked"], true);
    assert_eq!(
        (again["seq"].clone(), again["revoked_at"].clone()),
        (first["seq"].clone(), first["revoked_at"].clone())
    );
    assert_eq!(handle.head().get(), 1, "nothing written twice");

    // Another token with identical claims is a different token.
    let other = s.token_for("alice").await;
    assert!(s.verify(&other).await.is_ok());
}

#[tokio::test]
async fn revoking_expired_or_foreign_tokens_is_refused() {
    let (s, handle) = start().await;
    let short = s.issue(json!({ "sub": "a", "ttl": 1 })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Bounded poll, no fixed sleep: wait for the one-second token to expire.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.verify(&short).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.verify(&short).await, Err("token_expired".into()));
    let (status, v) = s.admin("/v1/revoke", json!({ "token": short })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&v, "token_expired");

    // A well-formed token signed by a key the authority does not have.
    let foreign = SigningKey::from_seed(SigningSeed::from_bytes([3; 32]));
    let now = UnixMillis::now().as_secs();
    let claims = Claims {
        iss: "http://revocast.test".into(),
        sub: "a".into(),
        iat: now,
        exp: now + 60,
        nbf: None,
        aud: None,
        jti: "j".into(),
        sid: None,
        r#gen: 0,
        custom: Default::default(),
    };
    let forged = issue(&claims, &foreign).unwrap().token;
    assert_eq!(s.verify(&forged).await, Err("unknown_key".into()));
    for bad in [forged.as_str(), "garbage", ""] {
        let (status, v) = s.admin("/v1/revoke", json!({ "token": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error_shape(&v, "invalid_token");
    }
    assert_eq!(handle.head().get(), 0, "nothing was logged");
}

#[tokio::test]
async fn subject_revocation_is_exact_within_the_same_second() {
    let (s, _) = start().await;
    let before = s.token_for("bob").await;
    let bystander = s.token_for("carol").await;
    let (status, v) = s
        .admin(
            "/v1/revoke/subject",
            json!({ "sub": "bob", "reason": "offboarded" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["sub"].clone(), v["gen"].clone(), v["seq"].clone()),
        (json!("bob"), json!(1), json!(1))
    );
    assert!(v["revoked_at"].as_f64().is_some());
    // Issued right after the call returned, very likely within the same second: valid.
    let after = s.token_for("bob").await;
    assert_eq!(s.verify(&before).await, Err("token_revoked".into()));
    assert_eq!(s.verify(&after).await.unwrap()["gen"], 1);
    assert!(s.verify(&bystander).await.is_ok());

    let (_, v) = s.admin("/v1/revoke/subject", json!({ "sub": "bob" })).await;
    assert_eq!((v["gen"].clone(), v["seq"].clone()), (json!(2), json!(2)));
    assert_eq!(s.verify(&after).await, Err("token_revoked".into()));
    assert!(s.verify(&s.token_for("bob").await).await.is_ok());
}

#[tokio::test]
async fn session_revocation_rejects_tokens_and_blocks_issuing() {
    let (s, _) = start().await;
    let t1 = s.issue(json!({ "sub": "u", "sid": "sess-1" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let t2 = s.issue(json!({ "sub": "u", "sid": "sess-2" })).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = s
        .admin("/v1/revoke/session", json!({ "sid": "sess-1" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["sid"].clone(), v["seq"].clone()),
        (json!("sess-1"), json!(1))
    );
    assert_eq!(s.verify(&t1).await, Err("token_revoked".into()));
    assert!(s.verify(&t2).await.is_ok());
    let (status, v) = s
        .admin("/v1/tokens", json!({ "sub": "u", "sid": "sess-1" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&v, "invalid_request");
    s.issue(json!({ "sub": "u", "sid": "sess-3" })).await;
}

#[tokio::test]
async fn key_rotation_and_key_revocation() {
    let (s, _) = start().await;
    let (_, jwks) = s.get("/.well-known/jwks.json").await;
    // The token keys (the transparency log's key is published beside them, apart by `use`).
    let token_keys = |jwks: &Value| -> Vec<Value> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["use"] != "revocast-log")
            .cloned()
            .collect()
    };
    let keys = token_keys(&jwks);
    assert_eq!(keys.len(), 1);
    let first_kid = keys[0]["kid"].as_str().unwrap().to_string();
    for k in &keys {
        let jwk: revocast_shared::Jwk = serde_json::from_value(k.clone()).unwrap();
        assert_eq!(
            (jwk.kty.as_str(), jwk.alg.as_str(), jwk.use_.as_deref()),
            ("AKP", "ML-DSA-65", Some("sig"))
        );
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).unwrap().kid().to_string(),
            jwk.kid,
            "kid is the thumbprint"
        );
    }
    let old = s.token_for("a").await;

    let (status, v) = s.admin("/v1/keys/rotate", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let second_kid = v["kid"].as_str().unwrap().to_string();
    assert_ne!(second_kid, first_kid);
    let new = s.issue(json!({ "sub": "a" })).await;
    assert_eq!(new["kid"], second_kid.as_str());
    assert!(s.verify(&old).await.is_ok(), "old keys keep verifying");
    let (_, jwks) = s.get("/.well-known/jwks.json").await;
    assert_eq!(token_keys(&jwks).len(), 2);

    let (status, v) = s
        .admin(&format!("/v1/keys/{first_kid}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["kid"].clone(), v["seq"].clone()),
        (json!(first_kid), json!(1))
    );
    assert_eq!(s.verify(&old).await, Err("token_revoked".into()));
    assert!(s.verify(new["token"].as_str().unwrap()).await.is_ok());
    let (_, jwks) = s.get("/.well-known/jwks.json").await;
    let kids: Vec<_> = token_keys(&jwks).iter().map(|k| k["kid"].clone()).collect();
    assert_eq!(kids, vec![json!(second_kid)]);
    // Idempotent.
    let (_, again) = s
        .admin(&format!("/v1/keys/{first_kid}/revoke"), json!({}))
        .await;
    assert_eq!(again["seq"], 1);

    // Revoking the active key hands signing to a fresh key.
    let (status, v) = s
        .admin(&format!("/v1/keys/{second_kid}/revoke"), json!({}))
        .await;
    assert_eq!((status, v["seq"].clone()), (StatusCode::OK, json!(2)));
    let third = s.issue(json!({ "sub": "a" })).await;
    assert!(third["kid"] != second_kid.as_str() && third["kid"] != first_kid.as_str());
    assert!(s.verify(third["token"].as_str().unwrap()).await.is_ok());

    for unknown in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not-a-kid"] {
        let (status, v) = s
            .admin(&format!("/v1/keys/{unknown}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error_shape(&v, "unknown_key");
    }
    // A path segment that is not percent-encoded UTF-8 gets our error shape, not plain text.
    let (status, v) = s.admin("/v1/keys/%ff%fe/revoke", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&v, "invalid_request");
}

#[tokio::test]
async fn concurrent_revocations_get_gap_free_seqs() {
    let (s, _) = start().await;
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, base, key) = (s.http.clone(), s.base.clone(), s.admin.clone());
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "subject" } else { "session" };
            let field = if i % 2 == 0 { "sub" } else { "sid" };
            let v: Value = http
                .post(format!("{base}/v1/revoke/{path}"))
                .bearer_auth(key)
                .json(&json!({ field: format!("x{i}") }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["seq"].as_u64().unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<u64>>());
    let (_, ready) = s.get("/readyz").await;
    assert_eq!(ready["seq"], n);
}

#[tokio::test]
async fn oauth_revoke_and_introspect() {
    let (s, handle) = start().await;
    let token = s.token_for("dave").await;
    let introspector = handle
        .create_api_key(Scope::Introspect, Some("test"))
        .await
        .unwrap();

    let (status, body) = s
        .form(
            "/oauth2/introspect",
            &introspector,
            &format!("token={token}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["active"].clone(), v["sub"].clone()),
        (json!(true), json!("dave"))
    );

    let (status, body) = s
        .form("/oauth2/introspect", &introspector, "token=garbage")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "active": false })
    );

    for junk in [
        "token=garbage",
        "token=",
        &format!("token={token}&token_type_hint=access_token"),
    ] {
        let (status, _) = s.form("/oauth2/revoke", &s.admin, junk).await;
        assert_eq!(status, StatusCode::OK, "{junk}");
    }
    assert_eq!(s.verify(&token).await, Err("token_revoked".into()));
    let (_, body) = s
        .form(
            "/oauth2/introspect",
            &introspector,
            &format!("token={token}"),
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "active": false })
    );

    let (status, body) = s
        .form("/oauth2/introspect", &introspector, "nothing=here")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&serde_json::from_str(&body).unwrap(), "invalid_request");
}

#[tokio::test]
async fn every_route_checks_its_scope() {
    let (s, handle) = start().await;
    let introspector = handle
        .create_api_key(Scope::Introspect, None)
        .await
        .unwrap();
    let token = s.token_for("e").await;
    let admin_routes = [
        ("/v1/tokens", json!({ "sub": "x" })),
        ("/v1/revoke", json!({ "token": token })),
        ("/v1/revoke/subject", json!({ "sub": "x" })),
        ("/v1/revoke/session", json!({ "sid": "x" })),
        ("/v1/keys/rotate", json!({})),
        (
            "/v1/keys/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/revoke",
            json!({}),
        ),
        ("/oauth2/revoke", json!({})),
    ];
    let introspect_routes = [
        ("/v1/verify", json!({ "token": token })),
        ("/oauth2/introspect", json!({})),
    ];
    for (path, body) in admin_routes.iter().chain(&introspect_routes) {
        for key in [None, Some("rvc_wrong"), Some("")] {
            let (status, v) = s.post(path, key, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {key:?}");
            assert_error_shape(&v, "invalid_client");
        }
        let (status, v) = s.post(path, Some(&s.subscriber), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_error_shape(&v, "insufficient_scope");
    }
    for (path, body) in &admin_routes {
        let (status, _) = s.post(path, Some(&introspector), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    // The subscribe routes: snapshot and both stream transports.
    for path in ["/v1/snapshot", "/v1/events", "/v1/stream"] {
        for (key, expected) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("rvc_wrong"), StatusCode::UNAUTHORIZED),
            (Some(introspector.as_str()), StatusCode::FORBIDDEN),
        ] {
            let mut req = s.http.get(format!("{}{path}", s.base));
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), expected, "{path} {key:?}");
            let v: Value = resp.json().await.unwrap();
            assert!(v["error"].is_string(), "{path}: {v}");
        }
    }
    let (status, v) = s
        .post("/v1/verify", Some(&introspector), json!({ "token": token }))
        .await;
    assert_eq!((status, v["valid"].clone()), (StatusCode::OK, json!(true)));

    let resp = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let resp = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .header("authorization", format!("Basic {}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    for open in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/healthz",
        "/readyz",
    ] {
        assert_eq!(s.get(open).await.0, StatusCode::OK, "{open}");
    }
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("revocast_tokens_issued_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_in_the_contract_shape() {
    let (s, handle) = start().await;
    let raw = |path: &'static str, body: Vec<u8>| {
        let req = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&s.admin)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/tokens", b"{".to_vec()),
        ("/v1/tokens", b"".to_vec()),
        ("/v1/tokens", b"[]".to_vec()),
        ("/v1/tokens", br#"{"sub":5}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":""}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","ttl":0}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","ttl":-5}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","ttl":86401}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","ttl":1e99}"#.to_vec()),
        (
            "/v1/tokens",
            br#"{"sub":"a","ttl":18446744073709551616}"#.to_vec(),
        ),
        ("/v1/tokens", br#"{"sub":"a","claims":{"exp":1}}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","claims":{"gen":1}}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","claims":[1]}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","aud":[]}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","aud":7}"#.to_vec()),
        ("/v1/tokens", br#"{"sub":"a","tll":60}"#.to_vec()),
        (
            "/v1/tokens",
            format!(r#"{{"sub":"{}"}}"#, "x".repeat(600)).into_bytes(),
        ),
        (
            "/v1/tokens",
            format!(
                r#"{{"sub":"a","claims":{{"blob":"{}"}}}}"#,
                "x".repeat(20_000)
            )
            .into_bytes(),
        ),
        ("/v1/tokens", b"{\"sub\":\"\xff\xfe\"}".to_vec()),
        (
            "/v1/tokens",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        ("/v1/verify", br#"{}"#.to_vec()),
        ("/v1/verify", br#"{"token":null}"#.to_vec()),
        ("/v1/revoke", br#"{"token":1}"#.to_vec()),
        ("/v1/revoke/subject", br#"{"sub":"a","reason":7}"#.to_vec()),
        (
            "/v1/revoke/subject",
            format!(r#"{{"sub":"a","reason":"{}"}}"#, "r".repeat(2000)).into_bytes(),
        ),
        ("/v1/revoke/session", br#"{"sid":""}"#.to_vec()),
        ("/v1/revoke/session", b"sid=x".to_vec()),
    ];
    for (path, body) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let (status, v) = raw(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {shown} → {v}");
        assert_error_shape(&v, "invalid_request");
    }

    let (status, v) = raw("/v1/tokens", vec![b' '; 70 * 1024]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&v, "payload_too_large");

    // Oversized and malformed tokens are verdicts, not request errors.
    for token in [
        "x".repeat(40_000),
        "a.b.c".into(),
        "...".into(),
        "\u{0}".into(),
    ] {
        assert_eq!(s.verify(&token).await, Err("malformed".into()));
    }

    let (status, v) = s.get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&v, "not_found");
    let (status, v) = s.get("/v1/tokens").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&v, "method_not_allowed");
    assert_eq!(handle.head().get(), 0);
}

#[tokio::test]
async fn metadata_names_the_endpoints() {
    let (s, _) = start().await;
    let (_, v) = s.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(v["issuer"], "http://revocast.test");
    assert_eq!(v["jwks_uri"], "http://revocast.test/.well-known/jwks.json");
    assert_eq!(
        v["revocation_endpoint"],
        "http://revocast.test/oauth2/revoke"
    );
    assert_eq!(
        v["introspection_endpoint"],
        "http://revocast.test/oauth2/introspect"
    );
    let (_, v) = s.get("/readyz").await;
    assert_eq!(v["status"], "ready");
    assert_eq!(v["seq"], 0);
    assert_eq!(v["epoch"].as_str().unwrap().len(), 32);
}

/// Every JWS malformation, sent through `/v1/verify` and `/oauth2/introspect`: a verdict with
/// the right code (or `active: false`), never a request error, never a 5xx, never valid.
#[tokio::test]
async fn every_jws_malformation_is_a_clear_verdict() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let (s, handle) = start().await;
    let token = s.token_for("mallory").await;
    let parts: Vec<&str> = token.split('.').collect();
    let kid = handle.active_kid().to_string();
    let with_header = |header: Value| {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            parts[1],
            parts[2]
        )
    };
    let header = |extra: Value| {
        let mut h = json!({ "alg": "ML-DSA-65", "typ": "at+jwt", "kid": kid });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        with_header(h)
    };
    let mut flipped_sig = parts[2].to_string().into_bytes();
    flipped_sig[10] = if flipped_sig[10] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(String, &str)> = vec![
        (header(json!({ "alg": "none" })), "unsupported_algorithm"),
        (header(json!({ "alg": "HS256" })), "unsupported_algorithm"),
        (
            header(json!({ "alg": "ML-DSA-44" })),
            "unsupported_algorithm",
        ),
        (
            with_header(json!({ "typ": "at+jwt", "kid": kid })),
            "unsupported_algorithm",
        ),
        (header(json!({ "kid": "not-a-thumbprint" })), "malformed"),
        (
            header(json!({ "kid": "Suiu29qbfuaBaR4Ats-c6XQBePB_OpAxAwcTR_0KXVM" })),
            "unknown_key",
        ),
        (header(json!({ "typ": "JWT" })), "malformed"),
        (header(json!({ "crit": ["exp"] })), "malformed"),
        (header(json!({ "jwk": {} })), "malformed"),
        (
            header(json!({ "jku": "https://evil.test/jwks" })),
            "malformed",
        ),
        (
            header(json!({ "x5u": "https://evil.test/cert" })),
            "malformed",
        ),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "malformed",
        ),
        (
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            "malformed",
        ),
        (format!("{token}.extra"), "malformed"),
        (format!("{}.{}", parts[0], parts[1]), "malformed"),
        (format!("{}.{}.", parts[0], parts[1]), "malformed"),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 8]
            ),
            "invalid_signature",
        ),
        (
            format!("{}.{}.{}AAAA", parts[0], parts[1], parts[2]),
            "invalid_signature",
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(flipped_sig).unwrap()
            ),
            "invalid_signature",
        ),
        (
            format!("{}.{}.{}", parts[0], B64.encode("not json"), parts[2]),
            "invalid_signature",
        ),
        (
            format!("{}.{}.{}", parts[0], parts[1], "*".repeat(40)),
            "malformed",
        ),
        (format!(" {token}"), "malformed"),
    ];
    let mut wrong = Vec::new();
    for (i, (bad, want)) in cases.iter().enumerate() {
        let got = s.verify(bad).await;
        if got.as_ref().err().map(String::as_str) != Some(*want) {
            wrong.push(format!("case {i}: {got:?}, want {want}"));
        }
        let (status, body) = s
            .form(
                "/oauth2/introspect",
                &s.admin,
                &format!("token={}", bad.replace('=', "%3D").replace(' ', "%20")),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["active"],
            false
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // And the untouched token still verifies: the cases above were the only difference.
    assert!(s.verify(&token).await.is_ok());
}

/// The form endpoints and object nesting, with the same rules as the JSON ones. (An empty
/// `token=` is not among them: RFC 7009 answers an invalid token with `200`.)
#[tokio::test]
async fn bad_forms_and_deep_objects_get_a_clear_400() {
    let (s, handle) = start().await;
    for (path, body) in [
        ("/oauth2/revoke", ""),
        ("/oauth2/revoke", "token=a&token=b"),
        ("/oauth2/revoke", "%ff%fe=1"),
        ("/oauth2/introspect", ""),
        ("/oauth2/introspect", "nottoken=x"),
    ] {
        let (status, text) = s.form(path, &s.admin, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?} → {text}");
        assert_error_shape(&serde_json::from_str(&text).unwrap(), "invalid_request");
    }
    let deep = format!(
        r#"{{"sub":"a","claims":{}1{}}}"#,
        r#"{"k":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    let (status, v) = s
        .post("/v1/tokens", Some(&s.admin.clone()), Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let resp = s
        .http
        .post(format!("{}/v1/tokens", s.base))
        .bearer_auth(&s.admin)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_error_shape(&resp.json().await.unwrap(), "invalid_request");
    assert_eq!(handle.head().get(), 0, "nothing was revoked by any of it");
}

/// A data directory remembers the issuer of its first start: reopened with another one (as a
/// changed `--listen` changes the default), it refuses to start and names both; with the same
/// one it opens.
#[tokio::test]
async fn a_data_directory_reopened_with_another_issuer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with_issuer = |issuer: &str| {
        let mut config = Config::for_data_dir(dir.path());
        config.issuer = issuer.into();
        config
    };
    drop(
        Authority::open(with_issuer("https://a.example"))
            .await
            .unwrap(),
    );
    let refused = Authority::open(with_issuer("https://b.example"))
        .await
        .err()
        .expect("another issuer was accepted");
    let message = refused.to_string();
    assert!(
        matches!(refused, revocast_authority::Error::IssuerMismatch { .. })
            && message.contains("https://a.example")
            && message.contains("https://b.example"),
        "{message}"
    );
    drop(
        Authority::open(with_issuer("https://a.example"))
            .await
            .unwrap(),
    );
}
