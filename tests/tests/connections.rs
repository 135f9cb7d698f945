//! Idle and slow connections cannot exhaust the authority: one source address flooding it
//! with idle connections and stalled TLS handshakes hits its per-address cap (refused at once,
//! counted) while an admin and a reconnecting agent from another address get in; a keep-alive connection
//! left idle, a fresh one that sends nothing and one whose headers never end are closed after
//! their timeouts, and so is one whose request body stops coming, while streams with
//! heartbeats flowing stay open.

use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use revocast_agent::{Agent, AgentConfig, TlsOptions, Transport};
use revocast_authority::tls::{TlsFiles, server_config};
use revocast_tests::proxy::FaultyProxy;
use revocast_tests::stream_client::{self, Subscriber};
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The attacking address (loopback, but not the 127.0.0.1 everyone else comes from).
const ATTACKER: &str = "127.0.0.2:0";
const IDLE_CONNECTIONS: usize = 2_000;
const STALLED_HANDSHAKES: usize = 200;
/// The cap per address in the flood test: below the flood, so refusals happen.
const PER_IP: usize = 1_000;

/// A TLS record header announcing a 512-byte handshake message (a ClientHello) that never
/// comes: the start of a handshake, stalled.
const PARTIAL_CLIENT_HELLO: [u8; 5] = [0x16, 0x03, 0x01, 0x02, 0x00];

/// A CA and a server certificate for 127.0.0.1, as PEM files.
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
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn server(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("server.pem"),
            key: self.dir.path().join("server.key"),
            client_ca: None,
        }
    }

    /// A new client (so a new connection) trusting the CA.
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

/// Raise this process's open file limit to its hard limit; `false` (with a visible message)
/// if even that leaves fewer than `needed` descriptors.
fn enough_descriptors(needed: u64) -> bool {
    let (_, after) = revocast_authority::raise_descriptor_limit();
    match after {
        Some(limit) if limit < needed => {
            eprintln!(
                "SKIPPED: the open file limit is {limit} (hard); this test needs {needed} \
                 descriptors"
            );
            false
        }
        _ => true,
    }
}

/// Connect from the attacker's address; `None` if the connection did not complete within a
/// second (the authority's accept queue is full, say): the whole flood must be in place well
/// within the TLS handshake timeout, or an authority that stalls accepting while handshakes
/// are pending would have recovered before the admin tries.
async fn attacker_connect(to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(ATTACKER.parse().unwrap()).ok()?;
    tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_idle_connections_and_stalled_handshakes_locks_no_one_out() {
    // Attacker sockets, the authority's ends of those it holds, and everything else.
    if !enough_descriptors((IDLE_CONNECTIONS + STALLED_HANDSHAKES) as u64 + PER_IP as u64 + 1_000) {
        return;
    }
    let pki = Pki::new();
    let files = pki.server();
    let mut a = TestAuthority::start_with(|c| {
        c.tls = Some(server_config(&files).unwrap());
        c.max_connections_per_ip = PER_IP;
    })
    .await;
    a.http = pki.http();
    // An agent following the authority through a proxy, so its connection can be cut.
    let proxy = FaultyProxy::start(a.addr).await;
    let base = proxy.base().replace("http://", "https://");
    let mut config = AgentConfig::new(&base, a.subscriber_key.clone());
    config.tls = TlsOptions {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        client_cert_pem: None,
        client_key_pem: None,
    };
    config.transport = Transport::Websocket;
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await, "never synced");
    let token = a.issue("flooded", 300).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(agent.verify(&token).is_ok());

    // The flood: connections that send nothing (on a TLS port, handshakes that never start)
    // and handshakes stalled after the first bytes, all from one address.
    // In waves no larger than the accept queue: beyond it, a connection the client sees
    // established may wait in the kernel for a retransmitted SYN-ACK, and reach the authority
    // seconds later, after the places of the first wave have been freed.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut next = 0;
    while next < IDLE_CONNECTIONS + STALLED_HANDSHAKES {
        let wave = (next..(next + 200).min(IDLE_CONNECTIONS + STALLED_HANDSHAKES)).map(|i| {
            let to = a.addr;
            async move {
                let mut stream = attacker_connect(to).await?;
                if i >= IDLE_CONNECTIONS {
                    stream.write_all(&PARTIAL_CLIENT_HELLO).await.ok()?;
                }
                Some(stream)
            }
        });
        next += 200;
        held.extend(
            futures_util::future::join_all(wave)
                .await
                .into_iter()
                .flatten(),
        );
    }
    eprintln!("flood: {} attacker connections established", held.len());

    // The agent loses its connection and reconnects, behind the whole flood.
    proxy.cut();
    // An admin from another address, on a fresh connection (queued behind the whole flood).
    let admin = pki.http();
    let started = tokio::time::Instant::now();
    let revoked = tokio::time::timeout(
        Duration::from_secs(1),
        admin
            .post(format!("{}/v1/revoke", a.base))
            .bearer_auth(&a.admin_key)
            .json(&json!({ "token": token }))
            .send(),
    )
    .await
    .expect("the revocation was not answered within 1 s")
    .expect("revocation request");
    assert_eq!(revoked.status(), 200);
    eprintln!("revocation answered in {:?}", started.elapsed());
    // The agent got back in: it learns of the revocation.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while agent.verify(&token).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never got back in to learn of the revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.verify(&token).unwrap_err().code(), "token_revoked");

    // The flood beyond the cap was refused, and counted; the cap held.
    let over_the_cap = held.len().saturating_sub(PER_IP) as i64;
    let refused = r#"revocast_connections_refused_total{reason="max_connections_per_ip"}"#;
    revocast_tests::eventually("the flood over the cap is refused and counted", || async {
        a.metric(refused).await >= over_the_cap
    })
    .await;
    let open = a.metric("revocast_connections_open").await;
    assert!(
        open <= PER_IP as i64 + 10,
        "{open} connections open with a cap of {PER_IP} for the flood"
    );
    drop(held);
}

/// Read one HTTP/1.1 response with a `content-length` from `stream`; its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "the connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return head[9..12].parse().unwrap();
        }
    }
}

/// Whether the peer closes `stream` within [`PATIENCE`] (reading and discarding meanwhile).
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_but_streams_stay_open() {
    let a = TestAuthority::start_with(|c| {
        c.header_read_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_millis(500);
        c.heartbeat_interval = Duration::from_millis(100);
    })
    .await;

    // A keep-alive connection, idle after one request.
    let mut idle = TcpStream::connect(a.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, 200);
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(a.addr).await.unwrap();
    // A request whose body stops coming after its first bytes.
    let mut stalled_body = TcpStream::connect(a.addr).await.unwrap();
    let head = format!(
        "POST /v1/revoke/session HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"sid\":",
        a.admin_key
    );
    stalled_body.write_all(head.as_bytes()).await.unwrap();
    // Streams, open much longer than the timeouts while their heartbeats flow.
    let mut streams = Vec::new();
    for transport in stream_client::BOTH {
        let subscriber = Subscriber::connect(transport, &a.base, Some(&a.subscriber_key), "")
            .await
            .expect("subscribed");
        streams.push((transport, subscriber));
    }

    // Headers that never end, although a byte comes every 100 ms (so no read stays idle).
    let mut slow = TcpStream::connect(a.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let dripping = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 64];
        loop {
            tokio::select! {
                read = slow.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => panic!("an answer to headers that never ended"),
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        dripping.is_ok(),
        "headers that never end kept the connection"
    );
    assert!(
        closed_by_peer(&mut idle).await,
        "the idle keep-alive was kept"
    );
    assert!(
        closed_by_peer(&mut silent).await,
        "the silent connection was kept"
    );
    assert!(
        closed_by_peer(&mut stalled_body).await,
        "the request whose body stopped was kept"
    );

    // By now every stream has been open for several timeouts; heartbeats still come.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    for (transport, subscriber) in &mut streams {
        while tokio::time::Instant::now() < until {
            let message = subscriber.next().await;
            assert!(message.is_some(), "{transport:?}: the stream was closed");
        }
    }
    let timed_out = |phase| format!(r#"revocast_connections_timed_out_total{{phase="{phase}"}}"#);
    assert!(a.metric(&timed_out("idle")).await >= 1);
    assert!(a.metric(&timed_out("headers")).await >= 2);
    assert_eq!(
        a.metric(r#"revocast_stream_subscribers{transport="sse"}"#)
            .await,
        1
    );
}
