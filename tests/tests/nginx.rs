//! A real nginx in front of a tiny upstream, with `auth_request` to the sidecar: a valid token
//! passes with the subject header, a revoked or missing one gets 401. The configuration here
//! is the one README.md shows.
//!
//! Needs the `nginx` binary (Debian package `nginx-light`, installed by `.ci/run`). Without it
//! the test is skipped with a message, unless `REVOCAST_REQUIRE_NGINX` is set (CI sets it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::http::HeaderMap;
use revocast_agent::{Agent, AgentConfig};
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::json;

fn nginx_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REVOCAST_NGINX") {
        return Some(path.into());
    }
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn nginx_conf(dir: &std::path::Path, port: u16, sidecar: &str, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_revocast;
      auth_request_set $auth_subject $upstream_http_x_auth_subject;
      auth_request_set $auth_token_id $upstream_http_x_auth_token_id;
      proxy_set_header X-Auth-Subject $auth_subject;
      proxy_set_header X-Auth-Token-Id $auth_token_id;
      proxy_pass http://{upstream};
    }}
    location = /_revocast {{
      internal;
      proxy_pass http://{sidecar}/verify$request_uri;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }}
  }}
}}
"#
    )
}

#[tokio::test]
async fn nginx_auth_request_through_the_sidecar() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var_os("REVOCAST_REQUIRE_NGINX").is_none(),
            "REVOCAST_REQUIRE_NGINX is set but no nginx binary was found"
        );
        eprintln!(
            "SKIPPED nginx_auth_request_through_the_sidecar: no nginx binary (apt-get install nginx-light)"
        );
        return;
    };
    let a = TestAuthority::start().await;
    let agent = Agent::start(AgentConfig::new(&a.base, a.subscriber_key.clone())).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    let sidecar = serve(revocast_agent::sidecar::router(agent.clone())).await;
    // The upstream answers with what nginx told it about the caller.
    let upstream = serve(
        axum::Router::new().fallback(|headers: HeaderMap| async move {
            let get = |h: &str| {
                headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            format!(
                "hello {} ({})",
                get("x-auth-subject"),
                get("x-auth-token-id")
            )
        }),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.path().join("nginx.conf"),
        nginx_conf(
            dir.path(),
            port,
            &sidecar.to_string(),
            &upstream.to_string(),
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(&nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while http.get(format!("{base}/")).send().await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let answer = a
        .admin_post("/v1/tokens", json!({ "sub": "alice", "sid": "s-nginx" }))
        .await;
    let token = answer["token"].as_str().unwrap();
    let jti = answer["jti"].as_str().unwrap();
    for path in ["/orders/42", "/", "/?q=1"] {
        let resp = http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), format!("hello alice ({jti})"));
    }

    let resp = http.get(format!("{base}/orders/42")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "missing token");
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = http
        .get(format!("{base}/orders/42"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "invalid token");

    a.revoke_session("s-nginx").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let resp = http
            .get(format!("{base}/orders/42"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if resp.status() == 401 {
            let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.contains("token_revoked"), "{challenge}");
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "revocation never reached nginx"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
}
