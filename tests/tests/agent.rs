//! Authority and agents in one test, on 127.0.0.1:0: every kind of revocation reaches the
//! agent; cuts, restarts, outages and fail-over lose nothing; staleness fails closed; the
//! verdict cache never serves a revoked token; entries expire; the layer and the sidecar answer
//! per contract. Waits are bounded polls, never fixed sleeps.

use std::time::Duration;

use revocast_agent::{Agent, AgentConfig, OnStale, Rejection, Transport, VerifyLayer};
use revocast_shared::VerifyError;
use revocast_tests::proxy::{FaultyProxy, Mode};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

fn config(base: &str, a: &TestAuthority) -> AgentConfig {
    let mut c = AgentConfig::new(base, a.subscriber_key.clone());
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
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

async fn token(a: &TestAuthority, body: Value) -> String {
    a.admin_post("/v1/tokens", body).await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn code(agent: &Agent, token: &str) -> &'static str {
    match agent.verify(token) {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

async fn until_code(agent: &Agent, token: &str, want: &'static str) {
    eventually(&format!("verify answers {want}"), || async {
        code(agent, token) == want
    })
    .await;
}

async fn until_caught_up(agent: &Agent, a: &TestAuthority) {
    eventually("the agent has applied the head", || async {
        agent.status().applied.get() == a.head()
    })
    .await;
}

fn metric(agent: &Agent, name: &str) -> f64 {
    let text = agent.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test]
async fn every_kind_of_revocation_reaches_the_agent_over_both_transports() {
    for transport in [Transport::Websocket, Transport::Sse] {
        let a = TestAuthority::start().await;
        let alice = token(&a, json!({ "sub": "alice" })).await;
        let bob = token(&a, json!({ "sub": "bob" })).await;
        let carol = token(&a, json!({ "sub": "carol", "sid": "s-1" })).await;
        let dave = token(&a, json!({ "sub": "dave" })).await;
        let mut c = config(&a.base, &a);
        c.transport = transport;
        let agent = synced(c).await;
        for t in [&alice, &bob, &carol, &dave] {
            assert_eq!(code(&agent, t), "ok", "{transport:?}");
        }
        a.admin_post("/v1/revoke", json!({ "token": alice })).await;
        until_code(&agent, &alice, "token_revoked").await;
        a.admin_post("/v1/revoke/subject", json!({ "sub": "bob" }))
            .await;
        until_code(&agent, &bob, "token_revoked").await;
        let bob_again = token(&a, json!({ "sub": "bob" })).await;
        assert_eq!(
            code(&agent, &bob_again),
            "ok",
            "issued after the revocation"
        );
        a.admin_post("/v1/revoke/session", json!({ "sid": "s-1" }))
            .await;
        until_code(&agent, &carol, "token_revoked").await;
        let kid = agent.verify(&dave).unwrap().kid();
        a.admin_post(&format!("/v1/keys/{kid}/revoke"), json!({}))
            .await;
        until_code(&agent, &dave, "token_revoked").await;
        // The authority now signs with a new key: the agent fetches it on first sight.
        let erin = token(&a, json!({ "sub": "erin" })).await;
        let verified = agent.verify_or_refresh_keys(&erin).await.unwrap();
        assert_ne!(verified.kid(), kid);
        assert_eq!(metric(&agent, "revocast_agent_resyncs_total"), 1.0);
    }
}

#[tokio::test]
async fn the_verdict_cache_never_serves_a_revoked_token() {
    let a = TestAuthority::start().await;
    let agent = synced(config(&a.base, &a)).await;
    let t = token(&a, json!({ "sub": "frank", "sid": "s-f" })).await;
    assert_eq!(code(&agent, &t), "ok");
    assert_eq!(code(&agent, &t), "ok");
    assert_eq!(
        agent.cached_verdicts(),
        1,
        "the second verify was a cache hit"
    );
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-f" }))
        .await;
    until_code(&agent, &t, "token_revoked").await;
    assert_eq!(agent.cached_verdicts(), 1, "rejected although cached");
    // A different token never hits another's entry.
    let mut forged = t.clone();
    let dot = forged.find('.').unwrap() + 2;
    forged.replace_range(dot..dot + 1, if &t[dot..=dot] == "A" { "B" } else { "A" });
    assert_ne!(code(&agent, &forged), "ok");
}

/// Cached verdicts do not outlive the state they rest on. After a resync to another log
/// (another epoch, other keys) behind the same URL, a token verified and cached before is not
/// valid from the cache: its key is gone. After its key is revoked, a cached token is
/// rejected and the cache is emptied.
#[tokio::test]
async fn cached_verdicts_do_not_survive_a_resync_or_their_key() {
    use revocast_authority::Scope;
    use revocast_authority::store::{SqliteStore, Store};
    use revocast_shared::{RevocationId, UnixSeconds};

    let first = TestAuthority::start().await;
    let second = TestAuthority::start().await;
    // The second authority accepts the first's subscriber key (stored by its SHA-256), so
    // one agent can follow either.
    let store = SqliteStore::open(&second.config().data_dir).await.unwrap();
    let digest = RevocationId::of_signature(first.subscriber_key.as_bytes());
    store
        .insert_api_key(
            digest.as_bytes(),
            Scope::Subscribe,
            Some("the first authority's"),
            UnixSeconds::now(),
        )
        .await
        .unwrap();
    let proxy = FaultyProxy::start(first.addr).await;
    let agent = synced(config(&proxy.base(), &first)).await;
    let t = token(&first, json!({ "sub": "olga" })).await;
    assert_eq!(code(&agent, &t), "ok");
    assert_eq!(code(&agent, &t), "ok");
    assert_eq!(agent.cached_verdicts(), 1);

    // Another log behind the same URL: the agent sees another epoch and resyncs.
    proxy.set_target(second.addr);
    proxy.cut();
    eventually("the agent follows the other log", || async {
        let s = agent.status();
        s.epoch == Some(second.epoch()) && s.fresh
    })
    .await;
    assert_eq!(
        code(&agent, &t),
        "unknown_key",
        "its key is not the new log's"
    );
    assert_eq!(agent.cached_verdicts(), 0, "the resync emptied the cache");

    // A key revoked: its cached tokens are rejected and the cache emptied.
    let u = token(&second, json!({ "sub": "pia" })).await;
    let kid = agent.verify_or_refresh_keys(&u).await.unwrap().kid();
    assert_eq!(code(&agent, &u), "ok");
    assert_eq!(agent.cached_verdicts(), 1);
    second
        .admin_post(&format!("/v1/keys/{kid}/revoke"), json!({}))
        .await;
    until_code(&agent, &u, "token_revoked").await;
    assert_eq!(
        agent.cached_verdicts(),
        0,
        "the key's removal emptied the cache"
    );
}

#[tokio::test]
async fn a_cut_connection_resumes_by_seq_with_nothing_lost() {
    let a = TestAuthority::start().await;
    let proxy = FaultyProxy::start(a.addr).await;
    let agent = synced(config(&proxy.base(), &a)).await;
    let tokens: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..20 {
            v.push(
                token(
                    &a,
                    json!({ "sub": format!("u{i}"), "sid": format!("cut-{i}") }),
                )
                .await,
            );
        }
        v
    };
    for round in 0..3 {
        proxy.set_mode(Mode::Refuse);
        proxy.cut();
        // Revocations made while the agent is cut off.
        for i in 0..20 {
            if i % 4 == round {
                a.revoke_session(&format!("cut-{i}")).await;
            }
        }
        proxy.set_mode(Mode::Forward);
        until_caught_up(&agent, &a).await;
    }
    for (i, t) in tokens.iter().enumerate() {
        let want = if i % 4 == 3 { "ok" } else { "token_revoked" };
        assert_eq!(code(&agent, t), want, "token {i}");
    }
    assert_eq!(
        metric(&agent, "revocast_agent_resyncs_total"),
        1.0,
        "resumed by seq, never re-snapshotted"
    );
    assert!(metric(&agent, "revocast_agent_reconnects_total") >= 3.0);
}

#[tokio::test]
async fn agents_recover_when_the_authority_restarts() {
    let mut a = TestAuthority::start().await;
    let agents = [
        synced(config(&a.base, &a)).await,
        synced({
            let mut c = config(&a.base, &a);
            c.transport = Transport::Sse;
            c
        })
        .await,
    ];
    let t = token(&a, json!({ "sub": "gina", "sid": "s-g" })).await;
    a.revoke_session("before").await;
    a.restart().await;
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-g" }))
        .await;
    for agent in &agents {
        until_code(agent, &t, "token_revoked").await;
        until_caught_up(agent, &a).await;
        assert_eq!(
            metric(agent, "revocast_agent_resyncs_total"),
            1.0,
            "same epoch: resumed"
        );
    }
}

#[tokio::test]
async fn a_silent_authority_makes_the_agent_unavailable_then_fresh_again() {
    let a = TestAuthority::start_with(|c| c.heartbeat_interval = Duration::from_millis(100)).await;
    let proxy = FaultyProxy::start(a.addr).await;
    let mut c = config(&proxy.base(), &a);
    c.max_staleness = Duration::from_millis(500);
    c.idle_timeout = Some(Duration::from_millis(300));
    let agent = synced(c).await;
    let t = token(&a, json!({ "sub": "hank" })).await;
    assert_eq!(code(&agent, &t), "ok");
    // Connections stay open but nothing moves: no error anywhere, only silence.
    proxy.stall(true);
    until_code(&agent, &t, "unavailable").await;
    assert!(!agent.status().fresh);
    proxy.stall(false);
    until_code(&agent, &t, "ok").await;
    assert!(agent.status().fresh);

    // Opt-in fail-open: stale, yet verifying, and counted.
    let mut c = config(&proxy.base(), &a);
    c.max_staleness = Duration::from_millis(500);
    c.on_stale = OnStale::Allow;
    let open = synced(c).await;
    proxy.stall(true);
    eventually("the fail-open agent is stale", || async {
        !open.status().fresh
    })
    .await;
    assert_eq!(code(&open, &t), "ok");
    assert!(metric(&open, "revocast_agent_stale_allowed_total") >= 1.0);
    proxy.stall(false);
}

#[tokio::test]
async fn nothing_verifies_before_the_first_sync() {
    let a = TestAuthority::start().await;
    let t = token(&a, json!({ "sub": "ivy" })).await;
    let proxy = FaultyProxy::start(a.addr).await;
    proxy.set_mode(Mode::Refuse);
    let agent = Agent::start(config(&proxy.base(), &a)).unwrap();
    assert_eq!(agent.verify(&t).err(), Some(Rejection::Unavailable));
    proxy.set_mode(Mode::Forward);
    assert!(agent.wait_until_synced(PATIENCE).await);
    assert_eq!(code(&agent, &t), "ok");
}

#[tokio::test]
async fn the_agent_fails_over_to_the_next_authority_url_and_resumes_there() {
    let a = TestAuthority::start().await;
    let first = FaultyProxy::start(a.addr).await;
    let second = FaultyProxy::start(a.addr).await;
    let agent = synced(config(&first.base(), &a).with_authority(second.base())).await;
    assert_eq!(agent.status().authority, first.base());
    let t = token(&a, json!({ "sub": "jack", "sid": "s-j" })).await;
    first.set_mode(Mode::Refuse);
    first.cut();
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-j" }))
        .await;
    until_code(&agent, &t, "token_revoked").await;
    assert_eq!(agent.status().authority, second.base());
    assert_eq!(metric(&agent, "revocast_agent_resyncs_total"), 1.0);
}

#[tokio::test]
async fn expired_entries_leave_the_agent() {
    let a = TestAuthority::start_with(|c| {
        c.max_ttl_secs = 4;
        c.default_ttl_secs = 1;
        c.expiry_grace_secs = 0;
    })
    .await;
    let mut c = config(&a.base, &a);
    c.purge_interval = Duration::from_millis(100);
    c.leeway_secs = 0;
    let agent = synced(c).await;
    // A 3 s token: long enough that a loaded CI machine cannot let it expire before the revoke.
    let t = token(&a, json!({ "sub": "kim", "ttl": 3 })).await;
    a.admin_post("/v1/revoke", json!({ "token": t })).await;
    a.revoke_session("short").await;
    until_caught_up(&agent, &a).await;
    assert_eq!(agent.status().entries, 2);
    eventually("expired entries are dropped", || async {
        agent.status().entries == 0
    })
    .await;
    assert_eq!(code(&agent, &t), "token_expired");
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_authority() {
    let a = TestAuthority::start().await;
    let mut c = config(&a.base, &a);
    c.jwks_min_interval = Duration::from_secs(3600);
    let agent = synced(c).await;
    let real = token(&a, json!({ "sub": "leo" })).await;
    // The same token with a kid nobody has: refused, and refetches are rate-limited.
    let header = json!({ "alg": "ML-DSA-65", "typ": "at+jwt", "kid": "A".repeat(43) });
    let header = base64_url(&serde_json::to_vec(&header).unwrap());
    let forged = format!("{header}{}", &real[real.find('.').unwrap()..]);
    for _ in 0..50 {
        assert_eq!(
            agent.verify_or_refresh_keys(&forged).await.err(),
            Some(Rejection::Invalid(VerifyError::UnknownKey))
        );
    }
    assert!(metric(&agent, "revocast_agent_jwks_fetches_total") <= 2.0);
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn the_layer_protects_an_axum_router() {
    use revocast_agent::Authenticated;
    let a = TestAuthority::start().await;
    let agent = synced(config(&a.base, &a)).await;
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|Authenticated(t): Authenticated| async move {
                format!("hello {}", t.claims().sub)
            }),
        )
        .layer(VerifyLayer::new(agent));
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let get = |token: Option<String>| {
        let mut req = http.get(format!("{base}/hello"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = get(None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let t = token(&a, json!({ "sub": "mia", "sid": "s-m" })).await;
    let resp = get(Some(t.clone())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello mia");
    let resp = get(Some("garbage".into())).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"malformed\""
    );
    a.revoke_session("s-m").await;
    eventually("the layer rejects the revoked token", || async {
        get(Some(t.clone())).await.unwrap().status() == 401
    })
    .await;
    let resp = get(Some(t.clone())).await.unwrap();
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("token_revoked")
    );

    // An agent that never synced answers 503, never 200.
    let dead = Agent::start(config("http://127.0.0.1:9", &a)).unwrap();
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .layer(VerifyLayer::new(dead));
    let base = serve(app).await;
    let resp = http
        .get(format!("{base}/hello"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn the_sidecar_answers_per_the_forward_auth_contract() {
    let a = TestAuthority::start().await;
    let agent = synced(config(&a.base, &a)).await;
    let base = serve(revocast_agent::sidecar::router(agent)).await;
    let http = reqwest::Client::new();
    let t = token(&a, json!({ "sub": "noah", "sid": "s-n" })).await;
    for (method, path) in [
        (reqwest::Method::GET, "/verify"),
        (reqwest::Method::GET, "/verify/"),
        (reqwest::Method::POST, "/verify/some/original/path"),
        (reqwest::Method::DELETE, "/verify/x"),
    ] {
        let resp = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-auth-subject"], "noah");
        assert!(!resp.headers()["x-auth-token-id"].is_empty());
    }
    let resp = http.get(format!("{base}/verify")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["max_staleness_seconds"], 5.0);
    assert_eq!(health["max_clock_skew_seconds"], 2.0);
    assert_eq!(health["authority_clock_ahead"], false);
    assert!(
        health["authority_age_seconds"].as_f64().unwrap() < 7.0,
        "{health}"
    );
    assert!(
        health["authority_clock_offset_seconds"].is_number(),
        "{health}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "revocast_agent_applied_seq",
        "revocast_agent_lag",
        "revocast_agent_staleness_milliseconds",
        "revocast_agent_authority_clock_offset_milliseconds",
        "revocast_agent_reconnects_total",
        "revocast_agent_entries",
        "revocast_agent_verifications_total{result=\"ok\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}
