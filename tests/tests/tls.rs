//! Transport security with certificates made in the test: the authority serves HTTPS, agents
//! sync over `https` + `wss` (and SSE over `https`) trusting a given CA, refuse an authority
//! their CA did not sign, and, with `--client-ca`, the stream and snapshot need a client
//! certificate while the admin routes do not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use revocast_agent::{Agent, AgentConfig, TlsOptions, Transport};
use revocast_authority::tls::{TlsFiles, server_config};
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::json;
use zeroize::Zeroizing;

/// A CA with one server certificate (127.0.0.1, localhost) and one client certificate, as PEM
/// files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{stem}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["agent.test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn server(&self, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// An HTTP client trusting this CA, with or without the client certificate.
    fn http(&self, with_client_cert: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap());
        if with_client_cert {
            let mut pem = self.read("client.pem");
            pem.extend(self.read("client.key"));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    fn agent_tls(&self, with_client_cert: bool) -> TlsOptions {
        TlsOptions {
            ca_pem: Some(self.ca_pem.clone().into_bytes()),
            client_cert_pem: with_client_cert.then(|| self.read("client.pem")),
            client_key_pem: with_client_cert.then(|| Zeroizing::new(self.read("client.key"))),
        }
    }
}

async fn tls_authority(pki: &Pki, client_ca: bool) -> TestAuthority {
    let files = pki.server(client_ca);
    let mut a = TestAuthority::start_with(|c| {
        c.tls = Some(server_config(&files).unwrap());
        c.subscriber_client_cert = client_ca;
    })
    .await;
    assert!(a.base.starts_with("https://"), "{}", a.base);
    a.http = pki.http(false);
    a
}

fn agent_config(a: &TestAuthority, tls: TlsOptions, transport: Transport) -> AgentConfig {
    let mut c = AgentConfig::new(&a.base, a.subscriber_key.clone());
    c.tls = tls;
    c.transport = transport;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

async fn until_revoked(agent: &Agent, token: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while agent.verify(token).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never reached the agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.verify(token).unwrap_err().code(), "token_revoked");
}

#[tokio::test]
async fn agents_sync_and_follow_over_https_and_wss() {
    let pki = Pki::new();
    let a = tls_authority(&pki, false).await;
    for transport in [Transport::Websocket, Transport::Sse] {
        let agent = Agent::start(agent_config(&a, pki.agent_tls(false), transport)).unwrap();
        assert!(
            agent.wait_until_synced(PATIENCE).await,
            "{transport:?}: never synced"
        );
        let token = a.issue("tls-user", 300).await["token"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(agent.verify_or_refresh_keys(&token).await.is_ok());
        a.admin_post("/v1/revoke", json!({ "token": token })).await;
        until_revoked(&agent, &token).await;
    }
}

#[tokio::test]
async fn an_agent_refuses_an_authority_its_ca_did_not_sign() {
    let pki = Pki::new();
    let other = Pki::new();
    let a = tls_authority(&pki, false).await;
    let agent = Agent::start(agent_config(&a, other.agent_tls(false), Transport::Auto)).unwrap();
    assert!(!agent.wait_until_synced(Duration::from_secs(2)).await);
    assert!(agent.status().reconnects > 0);
    // Fails closed: nothing verifies.
    let token = a.issue("x", 60).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(agent.verify(&token).unwrap_err().code(), "unavailable");
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_refused_and_the_server_keeps_serving() {
    let pki = Pki::new();
    let a = tls_authority(&pki, false).await;
    let plain = a.base.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/healthz")).await.is_err(),
        "a plaintext request must not get an HTTP answer"
    );
    let resp = a
        .http
        .get(format!("{}/healthz", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn mutual_tls_guards_the_stream_but_not_the_admin_routes() {
    let pki = Pki::new();
    let a = tls_authority(&pki, true).await;
    let snapshot = |client: reqwest::Client| {
        let url = format!("{}/v1/snapshot", a.base);
        let key = a.subscriber_key.clone();
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    // Without a client certificate: the handshake succeeds, the subscribe routes say 403.
    let refused = snapshot(pki.http(false)).await;
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{body}"
    );
    assert_eq!(snapshot(pki.http(true)).await.status(), 200);
    // Admin routes need only the key.
    let token = a.issue("mtls-user", 300).await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let without = Agent::start(agent_config(&a, pki.agent_tls(false), Transport::Auto)).unwrap();
    assert!(!without.wait_until_synced(Duration::from_secs(2)).await);

    let agent = Agent::start(agent_config(&a, pki.agent_tls(true), Transport::Websocket)).unwrap();
    assert!(
        agent.wait_until_synced(PATIENCE).await,
        "never synced with a client certificate"
    );
    assert!(agent.verify_or_refresh_keys(&token).await.is_ok());
    a.admin_post("/v1/revoke", json!({ "token": token })).await;
    until_revoked(&agent, &token).await;
}

#[test]
fn bad_tls_files_are_configuration_errors() {
    let pki = Pki::new();
    let missing = Path::new("/nonexistent/revocast.pem").to_path_buf();
    let cases = [
        TlsFiles {
            cert: missing.clone(),
            ..pki.server(false)
        },
        TlsFiles {
            key: missing,
            ..pki.server(false)
        },
        // A certificate where the key should be.
        TlsFiles {
            key: pki.path("server.pem"),
            ..pki.server(false)
        },
        // The client's key does not match the server's certificate.
        TlsFiles {
            key: pki.path("client.key"),
            ..pki.server(false)
        },
        // A key where the client CA should be.
        TlsFiles {
            client_ca: Some(pki.path("server.key")),
            ..pki.server(false)
        },
    ];
    for files in cases {
        match server_config(&files) {
            Err(revocast_authority::Error::Config(msg)) => assert!(!msg.is_empty()),
            other => panic!("{files:?} gave {:?}", other.map(|_| "a config")),
        }
    }
    assert!(server_config(&pki.server(true)).is_ok());
}
