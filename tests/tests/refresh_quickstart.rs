//! README's "A session's whole life" against a real authority and the sidecar, step by step:
//! log in with a refresh token, refresh, reuse the old refresh token, and the resource server
//! behind the agent answers 401. Each step's command is taken from README.md, and must be found
//! there in this order, so the quickstart cannot drift from what the authority does.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use revocast_agent::{Agent, AgentConfig};
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::Value;

const README: &str = include_str!("../../README.md");

// The README's commands, verbatim.
const LOG_IN: &str =
    r#"LOGIN=$(curl -s -X POST $A/v1/tokens -H "$AUTH" -d '{"sub":"carol","refresh":true}')"#;
const LOGGED_IN: &str =
    r#"# {"rid":"…","kid":"…","jti":"…","iat":…,"exp":…,"refresh_expires_in":1209600}"#;
const REFRESH: &str = r#"PAIR=$(curl -s -X POST $A/oauth2/token -d grant_type=refresh_token --data-urlencode "refresh_token=$R1")"#;
const REFRESHED: &str = r#"# {"token_type":"Bearer","expires_in":3600}"#;
const VERIFY: &str = r#"curl -si http://127.0.0.1:8081/verify -H "Authorization: Bearer $ACCESS""#;
const LET_IN: &str = "# HTTP/1.1 200 OK\n# x-auth-subject: carol";
const REUSE: &str = r#"curl -s -X POST $A/oauth2/token -d grant_type=refresh_token --data-urlencode "refresh_token=$R1""#;
const INVALID_GRANT: &str = r#"# {"error":"invalid_grant",…}"#;
const REFUSED: &str = "# HTTP/1.1 401 Unauthorized\n# www-authenticate: Bearer error=\"invalid_token\", error_description=\"token_revoked\"";
const LEGITIMATE: &str = r#"curl -s -X POST $A/oauth2/token -d grant_type=refresh_token --data-urlencode "refresh_token=$R2""#;

/// Where README.md has `text` at or after `from`; panics if it has not.
fn readme_at(text: &str, from: usize) -> usize {
    README[from..]
        .find(text)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("README.md no longer has, at this step:\n{text}"))
}

/// The JSON body of a `curl … -d '{…}'` line.
fn json_body(line: &str) -> Value {
    let body = line
        .split_once("-d '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(body, _)| body)
        .expect("a -d '…' body");
    serde_json::from_str(body).expect("JSON body")
}

/// A string claim of `token`'s payload.
fn claim(token: &str, name: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWS");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims[name].clone()
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// `POST /oauth2/token` with `grant_type=refresh_token`, as the README's `curl -d … --data-urlencode`.
async fn refresh(a: &TestAuthority, refresh_token: &str) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/oauth2/token", a.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// The sidecar's `/verify` for `token`: the status and the two headers the README shows.
async fn verify(http: &reqwest::Client, sidecar: &str, token: &str) -> (u16, String, String) {
    let resp = http
        .get(format!("{sidecar}/verify"))
        .bearer_auth(token)
        .send()
        .await
        .expect("verify request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let subject = header("x-auth-subject");
    let challenge = header("www-authenticate");
    (resp.status().as_u16(), subject, challenge)
}

#[tokio::test]
async fn the_readme_session_life_ends_at_the_resource_server_when_a_refresh_token_is_reused() {
    let a = TestAuthority::start().await;
    let agent = Agent::start(AgentConfig::new(&a.base, a.subscriber_key.clone())).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    let sidecar = serve(revocast_agent::sidecar::router(agent)).await;
    let http = reqwest::Client::new();

    // Log in.
    let at = readme_at(LOG_IN, 0);
    let resp = a
        .http
        .post(format!("{}/v1/tokens", a.base))
        .bearer_auth(&a.admin_key)
        .json(&json_body(LOG_IN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let login: Value = resp.json().await.unwrap();
    let first_access = login["token"].as_str().expect("token").to_string();
    let r1 = login["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let at = readme_at(LOGGED_IN, at);
    // 14 days, `--refresh-ttl`'s default.
    assert_eq!(login["refresh_expires_in"], 1_209_600, "{login}");
    for field in ["rid", "kid", "jti", "iat", "exp"] {
        assert!(!login[field].is_null(), "{field} missing from {login}");
    }
    let sid = claim(&first_access, "sid");
    assert!(sid.is_string(), "the log-in starts a session: {sid}");

    // Refresh: a new pair, same session.
    let at = readme_at(REFRESH, at);
    let at = readme_at(REFRESHED, at);
    let (status, pair) = refresh(&a, &r1).await;
    assert_eq!(status, 200, "{pair}");
    assert_eq!(pair["token_type"], "Bearer");
    // 3600 (the default ttl), or 3599 when a second ticked between signing and answering.
    let expires_in = pair["expires_in"].as_i64().expect("expires_in");
    assert!((3599..=3600).contains(&expires_in), "{pair}");
    let access = pair["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let r2 = pair["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    assert_ne!(r2, r1, "the refresh token rotates");
    assert_eq!(claim(&access, "sid"), sid);
    assert_eq!(claim(&access, "sub"), "carol");

    // The resource server lets the client in.
    let at = readme_at(VERIFY, at);
    let at = readme_at(LET_IN, at);
    for token in [&access, &first_access] {
        let (status, subject, _) = verify(&http, &sidecar, token).await;
        assert_eq!((status, subject.as_str()), (200, "carol"));
    }

    // The attacker replays R1.
    let at = readme_at(REUSE, at);
    let at = readme_at(INVALID_GRANT, at);
    let (status, answer) = refresh(&a, &r1).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_grant");

    // The resource server starts answering 401, for every access token of the session.
    let at = readme_at(VERIFY, at);
    let at = readme_at(REFUSED, at);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _, challenge) = verify(&http, &sidecar, &access).await;
        if status == 401 {
            assert_eq!(
                challenge,
                r#"Bearer error="invalid_token", error_description="token_revoked""#
            );
            break;
        }
        assert_eq!(status, 200, "only 200 until the revocation arrives");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session's revocation never reached the sidecar"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, challenge) = verify(&http, &sidecar, &first_access).await;
    assert_eq!(status, 401, "the log-in's access token too");
    assert!(challenge.contains("token_revoked"), "{challenge}");

    // The legitimate client's refresh token is dead too.
    let at = readme_at(LEGITIMATE, at);
    readme_at(INVALID_GRANT, at);
    let (status, answer) = refresh(&a, &r2).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_grant");
}
