//! The transparency log (PROTOCOL.md "Transparency log"), from outside: the log key in the
//! JWKS, checkpoints on `/v1/checkpoint`, on heartbeats and in snapshots, the sealed NDJSON
//! snapshot, the audit proofs, a restart and two PostgreSQL replicas continuing one tree, the
//! log key's rotation, and a log changed at rest refusing the next start. Leaves are hashed
//! from the bytes received over SSE, as a subscriber must.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use revocast_authority::{Authority, Config};
use revocast_shared::jws::CompactJws;
use revocast_shared::tlog::snapshot::parse_end_line;
use revocast_shared::tlog::{
    Checkpoint, Frontier, SnapshotDigest, TreeHash, leaf_hash, origin, verify_checkpoint_note,
    verify_consistency, verify_inclusion,
};
use revocast_shared::{JwkSet, LogVerifyingKey, VerifyingKey};
use revocast_tests::postgres::TestDatabase;
use revocast_tests::{PATIENCE, TestAuthority, error_chain, eventually};
use serde_json::{Value, json};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An SSE subscriber that keeps each message's `data` exactly as received.
struct RawSse {
    body: ByteStream,
    buf: Vec<u8>,
}

/// One SSE message: its `event` and its `data` bytes.
struct RawMessage {
    event: String,
    data: String,
}

impl RawMessage {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

impl RawSse {
    async fn connect(a: &TestAuthority, query: &str) -> Self {
        let resp = a
            .http
            .get(format!("{}/v1/events?{query}", a.base))
            .bearer_auth(&a.subscriber_key)
            .send()
            .await
            .expect("sse request");
        assert_eq!(resp.status(), 200);
        Self {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> RawMessage {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(frame).expect("UTF-8");
                let mut event = String::new();
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = d.to_owned();
                    }
                }
                return RawMessage { event, data };
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("a message within the patience bound")
                .expect("the stream stays open")
                .expect("body chunk");
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Read until the event `seq == head`, pushing the leaf hash of every event to `leaves`
    /// and handing every heartbeat to `beat`.
    async fn leaves_through(
        &mut self,
        head: u64,
        leaves: &mut Vec<TreeHash>,
        mut beat: impl FnMut(&Value, &[TreeHash]),
    ) {
        while (leaves.len() as u64) < head {
            let m = self.next().await;
            match m.event.as_str() {
                "hello" => {}
                "heartbeat" => beat(&m.json(), leaves),
                _ => {
                    let seq = m.json()["seq"].as_u64().expect("event seq");
                    assert_eq!(seq, leaves.len() as u64 + 1, "events in seq order");
                    leaves.push(leaf_hash(m.data.as_bytes()));
                }
            }
        }
    }
}

fn root_of(leaves: &[TreeHash]) -> TreeHash {
    Frontier::from_leaf_hashes(leaves.iter().copied()).root()
}

fn b64(value: &Value) -> TreeHash {
    TreeHash::from_base64(value.as_str().expect("a base64 string")).expect("a hash")
}

fn log_origin(a: &TestAuthority) -> String {
    origin(&a.config().issuer, &a.epoch()).expect("origin")
}

async fn jwks(a: &TestAuthority) -> JwkSet {
    a.http
        .get(format!("{}/.well-known/jwks.json", a.base))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JWKS JSON")
}

async fn log_keys(a: &TestAuthority) -> Vec<LogVerifyingKey> {
    jwks(a).await.by_role().log
}

async fn get_checkpoint(a: &TestAuthority) -> String {
    let resp = a
        .http
        .get(format!("{}/v1/checkpoint", a.base))
        .bearer_auth(&a.subscriber_key)
        .send()
        .await
        .expect("checkpoint");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    resp.text().await.expect("text")
}

/// The latest checkpoint, verified against the JWKS's log keys, once it covers `size`.
async fn checkpoint_of(a: &TestAuthority, size: u64) -> (Checkpoint, String) {
    let keys = log_keys(a).await;
    let origin = log_origin(a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let note = get_checkpoint(a).await;
        let checkpoint =
            verify_checkpoint_note(note.as_bytes(), &origin, &keys).expect("checkpoint verifies");
        if checkpoint.size >= size {
            return (checkpoint, note);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint of {size}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn revoke_sessions(a: &TestAuthority, prefix: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        last = a.revoke_session(&format!("{prefix}-{i}")).await;
    }
    last
}

fn fast(c: &mut Config) {
    c.heartbeat_interval = Duration::from_millis(100);
}

#[tokio::test]
async fn the_jwks_publishes_a_log_key_apart_from_the_token_keys() {
    let a = TestAuthority::start().await;
    let set = jwks(&a).await;
    let log: Vec<_> = set
        .keys
        .iter()
        .filter(|k| k.use_.as_deref() == Some("revocast-log"))
        .collect();
    assert_eq!(log.len(), 1, "{set:?}");
    let by_role = set.by_role();
    assert_eq!(by_role.log.len(), 1);
    assert!(!by_role.token.is_empty());
    assert!(by_role.skipped.is_empty(), "{:?}", by_role.skipped);
    for token in &by_role.token {
        assert_ne!(token.kid(), by_role.log[0].kid());
    }
}

#[tokio::test]
async fn token_keys_never_verify_a_checkpoint_and_log_keys_never_a_token() {
    let a = TestAuthority::start().await;
    a.revoke_session("s").await;
    let (_, note) = checkpoint_of(&a, 1).await;
    let set = jwks(&a).await;
    let by_role = set.by_role();
    let origin = log_origin(&a);
    // The token key's own material, taken as a log key, verifies no checkpoint.
    let token_as_log: Vec<LogVerifyingKey> = by_role
        .token
        .iter()
        .map(|k| LogVerifyingKey::from_public_key(k.public_key()).expect("key"))
        .collect();
    assert!(verify_checkpoint_note(note.as_bytes(), &origin, &token_as_log).is_err());
    assert!(verify_checkpoint_note(note.as_bytes(), &origin, &by_role.log).is_ok());
    // Neither JWK is accepted in the other role.
    for jwk in &set.keys {
        match jwk.use_.as_deref() {
            Some("revocast-log") => assert!(VerifyingKey::from_jwk(jwk).is_err()),
            _ => assert!(LogVerifyingKey::from_jwk(jwk).is_err()),
        }
    }
    // The log key's material, taken as a token key, verifies no token.
    let token = a.issue("alice", 60).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let jws = CompactJws::parse(&token).expect("a JWS");
    let log_as_token =
        VerifyingKey::from_public_key(by_role.log[0].public_key()).expect("key material");
    assert!(jws.verify(&log_as_token).is_err());
    assert!(
        by_role.token.iter().any(|k| jws.verify(k).is_ok()),
        "a token key verifies it"
    );
}

#[tokio::test]
async fn the_checkpoint_is_the_tree_of_the_events_streamed() {
    let a = TestAuthority::start_with(fast).await;
    let head = revoke_sessions(&a, "c", 5).await;
    let mut sse = RawSse::connect(&a, "since=0").await;
    let mut leaves = Vec::new();
    sse.leaves_through(head, &mut leaves, |_, _| {}).await;
    let (checkpoint, note) = checkpoint_of(&a, head).await;
    assert_eq!(checkpoint.size, head);
    assert_eq!(checkpoint.root, root_of(&leaves));
    assert!(note.starts_with(&format!("{}\n{head}\n", log_origin(&a))));
}

/// Checks every heartbeat of one connection: a checkpoint it carries verifies, is of the
/// leaves received, and is no larger than the heartbeat's seq; the first one carries one.
struct Beats {
    keys: Vec<LogVerifyingKey>,
    origin: String,
    first: bool,
    verified: Vec<u64>,
}

impl Beats {
    fn check(&mut self, beat: &Value, leaves: &[TreeHash]) {
        let seq = beat["seq"].as_u64().expect("heartbeat seq");
        assert_eq!(
            seq,
            leaves.len() as u64,
            "a heartbeat follows the events it counts"
        );
        let Some(note) = beat["checkpoint"].as_str() else {
            assert!(
                !self.first,
                "a connection's first heartbeat carries the latest checkpoint"
            );
            return;
        };
        self.first = false;
        let checkpoint =
            verify_checkpoint_note(note.as_bytes(), &self.origin, &self.keys).expect("verifies");
        assert!(checkpoint.size <= seq, "never beyond the heartbeat's seq");
        let size = usize::try_from(checkpoint.size).expect("size");
        assert_eq!(checkpoint.root, root_of(&leaves[..size]));
        self.verified.push(checkpoint.size);
    }
}

#[tokio::test]
async fn heartbeats_carry_checkpoints_that_verify_and_match() {
    let a = TestAuthority::start_with(fast).await;
    revoke_sessions(&a, "h", 3).await;
    let mut beats = Beats {
        keys: log_keys(&a).await,
        origin: log_origin(&a),
        first: true,
        verified: Vec::new(),
    };
    let mut sse = RawSse::connect(&a, "since=0").await;
    let mut leaves = Vec::new();
    sse.leaves_through(3, &mut leaves, |b, l| beats.check(b, l))
        .await;
    // More events while connected: later heartbeats carry checkpoints of them.
    let head = revoke_sessions(&a, "h2", 4).await;
    sse.leaves_through(head, &mut leaves, |b, l| beats.check(b, l))
        .await;
    while !beats.verified.contains(&head) {
        let m = sse.next().await;
        assert_eq!(m.event, "heartbeat");
        beats.check(&m.json(), &leaves);
    }
    // The heartbeat keeps `checkpoint` its last member.
    let member = r#","checkpoint":"#;
    loop {
        let m = sse.next().await;
        if let Some(at) = m.data.find(member) {
            assert!(m.data.ends_with("\"}"));
            assert_eq!(
                m.data[at..].matches("\":").count(),
                1,
                "nothing after checkpoint"
            );
            break;
        }
    }
}

#[tokio::test]
async fn a_resumed_connection_never_gets_a_checkpoint_below_its_since() {
    // Checkpoints are signed once a second, so the latest lags right after a burst.
    let a = TestAuthority::start().await;
    revoke_sessions(&a, "r", 2).await;
    checkpoint_of(&a, 2).await;
    let since = revoke_sessions(&a, "r2", 3).await;
    let keys = log_keys(&a).await;
    let origin = log_origin(&a);
    let mut sse = RawSse::connect(&a, &format!("since={since}")).await;
    let mut carried = 0;
    while carried == 0 {
        let m = sse.next().await;
        if m.event != "heartbeat" {
            continue;
        }
        if let Some(note) = m.json()["checkpoint"].as_str() {
            let checkpoint =
                verify_checkpoint_note(note.as_bytes(), &origin, &keys).expect("verifies");
            assert!(
                checkpoint.size >= since,
                "a checkpoint of {} sent to a connection resumed from {since}",
                checkpoint.size
            );
            carried += 1;
        }
    }
}

#[tokio::test]
async fn snapshots_carry_a_matching_checkpoint_and_frontier_and_ndjson_is_sealed() {
    let a = TestAuthority::start().await;
    let head = revoke_sessions(&a, "s", 6).await;
    let keys = log_keys(&a).await;
    let origin = log_origin(&a);
    let mut sse = RawSse::connect(&a, "since=0").await;
    let mut leaves = Vec::new();
    sse.leaves_through(head, &mut leaves, |_, _| {}).await;

    let check_head = |first: &Value| {
        let seq = first["seq"].as_u64().expect("seq");
        let note = first["checkpoint"].as_str().expect("checkpoint");
        let checkpoint = verify_checkpoint_note(note.as_bytes(), &origin, &keys).expect("verifies");
        let frontier: Frontier =
            serde_json::from_value(first["frontier"].clone()).expect("frontier");
        assert_eq!(checkpoint.size, seq);
        assert_eq!(frontier.size(), seq);
        assert_eq!(frontier.root(), checkpoint.root);
        let size = usize::try_from(seq).expect("size");
        assert_eq!(frontier.root(), root_of(&leaves[..size]));
    };
    let json = a.snapshot().await;
    check_head(&json);
    assert_eq!(json["seq"], head);

    let body = a
        .http
        .get(format!("{}/v1/snapshot", a.base))
        .bearer_auth(&a.subscriber_key)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("snapshot")
        .bytes()
        .await
        .expect("body")
        .to_vec();
    let first_end = body.iter().position(|b| *b == b'\n').expect("lines");
    check_head(&serde_json::from_slice(&body[..first_end]).expect("first line"));
    assert_eq!(body.last(), Some(&b'\n'));
    let end_start = body[..body.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .expect("an end line")
        + 1;
    let (events, seal) = parse_end_line(&body[end_start..body.len() - 1]).expect("end line");
    assert_eq!(events, head);
    let seal = seal.expect("the NDJSON snapshot is sealed");
    let digest = |bytes: &[u8]| {
        let mut d = SnapshotDigest::new();
        d.update(bytes);
        d.finish()
    };
    seal.verify(&digest(&body[..end_start]), &keys)
        .expect("the seal verifies");
    // One byte changed anywhere before the end line breaks it.
    let mut changed = body[..end_start].to_vec();
    let i = changed.len() - 5;
    changed[i] ^= 1;
    assert!(seal.verify(&digest(&changed), &keys).is_err());
}

async fn get_json(a: &TestAuthority, path: &str) -> (u16, Value) {
    let resp = a
        .http
        .get(format!("{}{path}", a.base))
        .bearer_auth(&a.subscriber_key)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_and_bad_parameters_are_refused() {
    let a = TestAuthority::start_with(fast).await;
    let head = revoke_sessions(&a, "p", 7).await;
    let mut sse = RawSse::connect(&a, "since=0").await;
    let mut leaves = Vec::new();
    sse.leaves_through(head, &mut leaves, |_, _| {}).await;
    let (checkpoint, _) = checkpoint_of(&a, head).await;
    assert_eq!(checkpoint.root, root_of(&leaves));
    for size in 1..=head {
        let root = root_of(&leaves[..size as usize]);
        for seq in 1..=size {
            let (status, proof) = get_json(
                &a,
                &format!("/v1/log/proof/inclusion?seq={seq}&size={size}"),
            )
            .await;
            assert_eq!(status, 200, "{proof}");
            assert_eq!(proof["seq"], seq);
            assert_eq!(proof["leaf_index"], seq - 1);
            assert_eq!(proof["tree_size"], size);
            let leaf = b64(&proof["leaf_hash"]);
            assert_eq!(leaf, leaves[seq as usize - 1]);
            let path: Vec<TreeHash> = proof["inclusion_path"]
                .as_array()
                .expect("path")
                .iter()
                .map(b64)
                .collect();
            assert!(verify_inclusion(&leaf, seq - 1, size, &path, &root));
        }
        for from in 0..=size {
            let (status, proof) = get_json(
                &a,
                &format!("/v1/log/proof/consistency?from={from}&to={size}"),
            )
            .await;
            assert_eq!(status, 200, "{proof}");
            assert_eq!(
                (proof["from"].clone(), proof["to"].clone()),
                (json!(from), json!(size))
            );
            let path: Vec<TreeHash> = proof["consistency_path"]
                .as_array()
                .expect("path")
                .iter()
                .map(b64)
                .collect();
            let old = root_of(&leaves[..from as usize]);
            assert!(verify_consistency(from, size, &old, &root, &path));
        }
    }
    let beyond = checkpoint.size + 100;
    for bad in [
        "/v1/log/proof/inclusion?seq=0&size=3".to_owned(),
        "/v1/log/proof/inclusion?seq=4&size=3".to_owned(),
        format!("/v1/log/proof/inclusion?seq=1&size={beyond}"),
        "/v1/log/proof/inclusion?seq=1".to_owned(),
        "/v1/log/proof/inclusion?seq=x&size=3".to_owned(),
        "/v1/log/proof/inclusion?seq=-1&size=3".to_owned(),
        "/v1/log/proof/inclusion?seq=1&size=3&extra=1".to_owned(),
        "/v1/log/proof/consistency?from=4&to=3".to_owned(),
        format!("/v1/log/proof/consistency?from=0&to={beyond}"),
        "/v1/log/proof/consistency?to=3".to_owned(),
        "/v1/log/proof/consistency?from=1&to=99999999999999999999999".to_owned(),
    ] {
        let (status, body) = get_json(&a, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request", "{bad}");
    }
    // Without a key: the usual 401.
    let status = a
        .http
        .get(format!("{}/v1/checkpoint", a.base))
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_restart_continues_the_same_tree() {
    let mut a = TestAuthority::start_with(fast).await;
    let first = revoke_sessions(&a, "a", 4).await;
    let (before, _) = checkpoint_of(&a, first).await;
    a.restart().await;
    let head = revoke_sessions(&a, "b", 3).await;
    let (after, _) = checkpoint_of(&a, head).await;
    let (status, proof) = get_json(
        &a,
        &format!(
            "/v1/log/proof/consistency?from={}&to={}",
            before.size, after.size
        ),
    )
    .await;
    assert_eq!(status, 200);
    let path: Vec<TreeHash> = proof["consistency_path"]
        .as_array()
        .expect("path")
        .iter()
        .map(b64)
        .collect();
    assert!(verify_consistency(
        before.size,
        after.size,
        &before.root,
        &after.root,
        &path
    ));
    let mut sse = RawSse::connect(&a, "since=0").await;
    let mut leaves = Vec::new();
    sse.leaves_through(after.size, &mut leaves, |_, _| {}).await;
    assert_eq!(after.root, root_of(&leaves));
}

#[tokio::test]
async fn a_new_log_key_is_published_before_it_signs_and_the_old_one_stays() {
    let a = TestAuthority::start_with(|c| {
        fast(c);
        c.log_key_lead = Duration::from_secs(3);
    })
    .await;
    let old = log_keys(&a).await;
    assert_eq!(old.len(), 1);
    let rotated = a.admin_post("/v1/log/keys/rotate", json!({})).await;
    let new_kid = rotated["kid"].as_str().expect("kid").to_owned();
    let published = log_keys(&a).await;
    assert_eq!(published.len(), 2);
    let new: Vec<LogVerifyingKey> = published
        .iter()
        .filter(|k| k.kid().to_string() == new_kid)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "the new key is published at once");
    let origin = log_origin(&a);
    // Until its lead has passed the old key signs, and the new one from then on.
    let signs_from = rotated["signs_from_ms"].as_i64().expect("signs_from_ms");
    a.revoke_session("x").await;
    let (checkpoint, note) = checkpoint_of(&a, 1).await;
    let (signer, other) = if checkpoint.time.as_millis() < signs_from {
        (&old, &new)
    } else {
        (&new, &old)
    };
    assert!(verify_checkpoint_note(note.as_bytes(), &origin, signer).is_ok());
    assert!(verify_checkpoint_note(note.as_bytes(), &origin, other).is_err());
    // Once its lead has passed, it signs; the old key is still published.
    eventually("the new log key signs", || async {
        let note = get_checkpoint(&a).await;
        verify_checkpoint_note(note.as_bytes(), &origin, &new).is_ok()
    })
    .await;
    let still: Vec<String> = log_keys(&a)
        .await
        .iter()
        .map(|k| k.kid().to_string())
        .collect();
    assert!(still.contains(&old[0].kid().to_string()), "{still:?}");
    assert!(still.contains(&new_kid));
}

/// Run `sql`, which must change exactly one row, on `a`'s SQLite file through a connection
/// of its own (WAL lets it in while `a` runs).
async fn tamper_sqlite(a: &TestAuthority, sql: &str) {
    use sqlx::Connection;
    let path = a.config().data_dir.join("revocast.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the database file");
    let changed = sqlx::query(sql)
        .execute(&mut conn)
        .await
        .expect("tamper")
        .rows_affected();
    assert_eq!(changed, 1, "{sql}");
    conn.close().await.expect("close");
}

/// Stop `a`, run `sql` on its SQLite file, and return the error the next start fails with.
async fn start_after_tampering(mut a: TestAuthority, sql: &str) -> String {
    a.stop().await;
    tamper_sqlite(&a, sql).await;
    match Authority::open(a.config().clone()).await {
        Ok(_) => panic!("an authority started on a log changed at rest ({sql})"),
        Err(e) => error_chain(&e),
    }
}

#[tokio::test]
async fn a_log_changed_at_rest_refuses_the_next_start_naming_the_seq() {
    for (sql, seq) in [
        ("DELETE FROM revocations WHERE seq = 3", 3),
        (
            "UPDATE revocations SET expires_at = expires_at + 1 WHERE seq = 2",
            2,
        ),
        // Rows and leaves both gone: the stored tree no longer gives the signed root.
        ("DELETE FROM log_leaves WHERE seq = 4", 4),
    ] {
        let a = TestAuthority::start().await;
        let head = revoke_sessions(&a, "t", 5).await;
        checkpoint_of(&a, head).await;
        let error = start_after_tampering(a, sql).await;
        assert!(
            error.contains("transparency log") && error.contains(&format!("seq {seq}")),
            "{sql}: {error}"
        );
    }
}

/// The audit a running authority repeats every `--log-audit-interval`.
fn audited(c: &mut Config) {
    fast(c);
    c.log_audit_interval = Duration::from_secs(1);
}

#[tokio::test]
async fn a_log_changed_under_a_running_authority_stops_it_naming_the_seq() {
    for (sql, seq) in [
        ("DELETE FROM revocations WHERE seq = 3", 3),
        (
            "UPDATE revocations SET expires_at = expires_at + 1 WHERE seq = 2",
            2,
        ),
    ] {
        let mut a = TestAuthority::start_with(audited).await;
        let head = revoke_sessions(&a, "t", 5).await;
        checkpoint_of(&a, head).await;
        tamper_sqlite(&a, sql).await;
        let error = a.stops_with_error().await;
        assert!(
            error.contains("transparency log") && error.contains(&format!("seq {seq}")),
            "{sql}: {error}"
        );
        // And it stays stopped: the next start refuses too.
        let refused = Authority::open(a.config().clone()).await;
        assert!(refused.is_err(), "{sql}: a tampered log started again");
    }
}

#[tokio::test]
async fn a_running_authority_that_prunes_is_not_taken_for_tampered() {
    // Rows its own prune deletes, below the floor it raised, are not tampering — nor while an
    // audit (every second here) is reading the log.
    let a = TestAuthority::start_with(|c| {
        audited(c);
        c.max_ttl_secs = 4;
        c.default_ttl_secs = 1;
        c.expiry_grace_secs = 0;
    })
    .await;
    for round in 0..6 {
        revoke_sessions(&a, &format!("p{round}"), 20).await;
        let later = revocast_shared::UnixMillis::new(
            revocast_shared::UnixMillis::now().as_millis() + 10_000,
        );
        a.handle.prune_log_at(later, Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(a.metric("revocast_log_rows_pruned_total").await, 120);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = get_json(&a, "/readyz").await;
    assert_eq!(status, 200, "still serving after audits of a pruned log");
}

#[tokio::test]
async fn a_row_changed_in_the_shared_database_stops_every_replica() {
    use sqlx::Connection;
    let Some(db) = TestDatabase::create("transparency_runtime_audit").await else {
        return;
    };
    let mut replicas = TestAuthority::start_replicas(&db, 2, audited).await;
    let mut head = 0;
    for i in 0..6 {
        head = replicas[i % 2].revoke_session(&format!("pg-{i}")).await;
    }
    for r in &replicas {
        checkpoint_of(r, head).await;
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let changed = sqlx::query("UPDATE revocations SET target = 'someone-else' WHERE seq = 4")
        .execute(&mut conn)
        .await
        .expect("tamper")
        .rows_affected();
    assert_eq!(changed, 1);
    conn.close().await.expect("close");
    for r in &mut replicas {
        let error = r.stops_with_error().await;
        assert!(
            error.contains("transparency log") && error.contains("seq 4"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn two_postgres_replicas_commit_interleaved_into_one_tree() {
    let Some(db) = TestDatabase::create("transparency_replicas").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 2, fast).await;
    let mut head = 0;
    for i in 0..8 {
        head = replicas[i % 2].revoke_session(&format!("pg-{i}")).await;
    }
    assert_eq!(head, 8);
    let mut leaves = Vec::new();
    let mut sse = RawSse::connect(&replicas[0], "since=0").await;
    sse.leaves_through(head, &mut leaves, |_, _| {}).await;
    for r in &replicas {
        let (checkpoint, _) = checkpoint_of(r, head).await;
        assert_eq!(checkpoint.size, head);
        assert_eq!(checkpoint.root, root_of(&leaves));
    }
    let (status, proof) = get_json(&replicas[1], "/v1/log/proof/inclusion?seq=3&size=8").await;
    assert_eq!(status, 200);
    let path: Vec<TreeHash> = proof["inclusion_path"]
        .as_array()
        .expect("path")
        .iter()
        .map(b64)
        .collect();
    assert!(verify_inclusion(&leaves[2], 2, 8, &path, &root_of(&leaves)));
}
