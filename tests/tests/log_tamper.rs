//! Tampering with the stream between a real authority and a real agent is caught by the
//! transparency log (PROTOCOL.md, "Transparency log"; SECURITY.md). A `TamperProxy` rewrites
//! the SSE stream on the way: a dropped event, a reordered pair, an invented revocation
//! (before a real event, and at the idle tail), a changed `exp`, a replayed old checkpoint,
//! and checkpoints signed by a key that is not a log key of the JWKS (a stranger's ML-DSA key,
//! and the authority's own token key). Each time the agent resyncs, counting the PROTOCOL.md
//! reason in `revocast_agent_log_resyncs_total`, and ends with the authority's state; and it
//! never reports a tampered state as verified: whenever its verified log covers the tampered
//! `seq` and it is fresh, it answers what the authority's log says. An untampered path
//! verifies with no resync at all.
//!
//! Each tamper is armed once the agent has synced and verified, and acts once: the resync
//! that follows goes through the same proxy, untampered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use revocast_agent::{Agent, AgentConfig, Transport};
use revocast_shared::LogSigningKey;
use revocast_shared::tlog::Checkpoint;
use revocast_shared::tlog::note::SignedNote;
use revocast_tests::tamper::{PassThrough, Rewrite, SseEvent, TamperProxy};
use revocast_tests::{PATIENCE, TestAuthority, eventually};
use serde_json::{Value, json};

async fn authority() -> TestAuthority {
    TestAuthority::start_with(|c| c.heartbeat_interval = Duration::from_millis(100)).await
}

fn config(proxy: &TamperProxy, a: &TestAuthority) -> AgentConfig {
    let mut c = AgentConfig::new(proxy.base(), a.subscriber_key.clone());
    c.transport = Transport::Sse;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.issuer = Some(a.config().issuer.clone());
    c
}

/// An agent behind a pass-through proxy, synced, fresh and verified up to the head.
async fn verified_agent(a: &TestAuthority) -> (TamperProxy, Agent) {
    let proxy = TamperProxy::start(&a.base, PassThrough).await;
    let agent = Agent::start(config(&proxy, a)).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await, "never synced");
    assert!(
        agent.status().verify_log,
        "log verification is on by default"
    );
    until_verified(&agent, a).await;
    (proxy, agent)
}

async fn until_verified(agent: &Agent, a: &TestAuthority) {
    eventually(
        "the agent is fresh with its log verified up to the head",
        || async {
            let s = agent.status();
            s.fresh
                && s.applied.get() == a.head()
                && s.log_verified.map(|v| v.get()) == Some(a.head())
        },
    )
    .await;
}

fn code(agent: &Agent, token: &str) -> &'static str {
    match agent.verify(token) {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

fn metric(agent: &Agent, series: &str) -> u64 {
    let text = agent.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {series} in\n{text}"))
}

fn log_resyncs(agent: &Agent, reason: &str) -> u64 {
    metric(
        agent,
        &format!("revocast_agent_log_resyncs_total{{reason=\"{reason}\"}}"),
    )
}

const REASONS: [&str; 7] = [
    "malformed",
    "wrong_origin",
    "unknown_key",
    "bad_signature",
    "size_mismatch",
    "root_mismatch",
    "older_than_seen",
];

/// Wait for a resync counted under `reason`, then for the agent to be verified and fresh at
/// the head again; no other reason may have been counted.
async fn refused_with(agent: &Agent, a: &TestAuthority, reason: &str) {
    eventually(&format!("a resync counted as {reason}"), || async {
        log_resyncs(agent, reason) >= 1
    })
    .await;
    eventually("the snapshot is loaded again", || async {
        agent.status().resyncs >= 2
    })
    .await;
    until_verified(agent, a).await;
    for other in REASONS.iter().filter(|r| **r != reason) {
        assert_eq!(log_resyncs(agent, other), 0, "resyncs counted as {other}");
    }
}

/// Samples the agent until dropped, counting every moment it is fresh with its verified log
/// covering `seq` while `token` does not answer `want`: a tampered state reported as current.
struct Watch {
    violations: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

impl Watch {
    fn start(agent: &Agent, seq: u64, token: &str, want: &'static str) -> Self {
        let violations = Arc::new(AtomicU64::new(0));
        let (agent, token, counted) = (agent.clone(), token.to_owned(), Arc::clone(&violations));
        let task = tokio::spawn(async move {
            loop {
                let s = agent.status();
                let covers = s.log_verified.is_some_and(|v| v.get() >= seq);
                if s.fresh && covers && code(&agent, &token) != want {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .abort_handle();
        Self { violations, task }
    }

    fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn issue(a: &TestAuthority, sub: &str) -> Value {
    a.admin_post("/v1/tokens", json!({ "sub": sub, "ttl": 3600 }))
        .await
}

fn token_of(issued: &Value) -> String {
    issued["token"].as_str().unwrap().to_owned()
}

/// A heartbeat's checkpoint note, if it carries one.
fn checkpoint_of(event: &SseEvent) -> Option<String> {
    Some(event.json()?.get("checkpoint")?.as_str()?.to_owned())
}

fn size_of(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

fn is_heartbeat(event: &SseEvent) -> bool {
    event.kind().as_deref() == Some("heartbeat")
}

/// A heartbeat with its `seq` or `checkpoint` replaced (heartbeats are not leaves: re-encoding
/// one changes nothing the log covers).
fn heartbeat_with(event: SseEvent, edit: impl FnOnce(&mut Value)) -> SseEvent {
    let mut json = event.json().unwrap();
    edit(&mut json);
    let data = json.to_string();
    event.with_data(&data, None)
}

/// An event's data with its `seq` member changed, byte for byte otherwise.
fn renumbered(data: &str, from: u64, to: u64) -> String {
    data.replacen(
        &format!("{{\"seq\":{from},"),
        &format!("{{\"seq\":{to},"),
        1,
    )
}

#[tokio::test]
async fn an_untampered_path_verifies_with_no_resync() {
    let a = authority().await;
    let (_proxy, agent) = verified_agent(&a).await;
    let alice = token_of(&issue(&a, "alice").await);
    for sid in ["s-1", "s-2", "s-3"] {
        a.admin_post("/v1/revoke/session", json!({ "sid": sid }))
            .await;
    }
    a.admin_post("/v1/revoke", json!({ "token": alice })).await;
    until_verified(&agent, &a).await;
    assert_eq!(code(&agent, &alice), "token_revoked");
    for reason in REASONS {
        assert_eq!(log_resyncs(&agent, reason), 0, "{reason}");
    }
    let s = agent.status();
    assert_eq!(s.resyncs, 1, "only the first sync");
    assert_eq!(s.events_applied, 4);
    assert!(metric(&agent, "revocast_agent_log_checkpoints_verified_total") >= 2);
}

/// Drops the event `seq` and has the heartbeats claim no more than what it let through, until
/// a checkpoint covering the dropped event has gone by.
struct DropEvent {
    seq: u64,
    dropped: bool,
    done: bool,
}

impl Rewrite for DropEvent {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done {
            return vec![event];
        }
        if event.event_seq() == Some(self.seq) {
            self.dropped = true;
            return vec![];
        }
        if self.dropped && is_heartbeat(&event) {
            if checkpoint_of(&event).is_some_and(|n| size_of(&n) >= self.seq) {
                self.done = true;
            }
            let hidden = self.seq - 1;
            return vec![heartbeat_with(event, |hb| {
                if hb["seq"].as_u64().unwrap() > hidden {
                    hb["seq"] = hidden.into();
                }
            })];
        }
        vec![event]
    }
}

#[tokio::test]
async fn a_dropped_event_is_caught_and_restored() {
    let a = authority().await;
    let (proxy, agent) = verified_agent(&a).await;
    let bob = token_of(&issue(&a, "bob").await);
    let seq = a.head() + 1;
    proxy.set(DropEvent {
        seq,
        dropped: false,
        done: false,
    });
    let watch = Watch::start(&agent, seq, &bob, "token_revoked");
    a.admin_post("/v1/revoke", json!({ "token": bob })).await;
    // The checkpoint covers an event the agent never received.
    refused_with(&agent, &a, "size_mismatch").await;
    assert_eq!(
        code(&agent, &bob),
        "token_revoked",
        "restored by the resync"
    );
    assert_eq!(watch.violations(), 0);
}

/// Holds the event `seq`, drops heartbeats meanwhile, and when `seq + 1` arrives sends the two
/// with their contents swapped (each keeps its `seq`, so the order looks right).
struct SwapPair {
    seq: u64,
    held: Option<SseEvent>,
    done: bool,
}

impl Rewrite for SwapPair {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done {
            return vec![event];
        }
        let (first, second) = (self.seq, self.seq + 1);
        match event.event_seq() {
            Some(s) if s == first => {
                self.held = Some(event);
                vec![]
            }
            Some(s) if s == second => {
                let Some(held) = self.held.take() else {
                    return vec![event];
                };
                self.done = true;
                let (a, b) = (held.data().unwrap(), event.data().unwrap());
                let a_moved = renumbered(a, first, second);
                let b_moved = renumbered(b, second, first);
                let kind = |e: &SseEvent| e.kind().unwrap();
                vec![
                    SseEvent::event(first, &kind(&event), &b_moved),
                    SseEvent::event(second, &kind(&held), &a_moved),
                ]
            }
            // Heartbeats would announce the held event: not while it is held.
            _ if self.held.is_some() && is_heartbeat(&event) => vec![],
            _ => vec![event],
        }
    }
}

#[tokio::test]
async fn a_reordered_pair_is_caught() {
    let a = authority().await;
    let (proxy, agent) = verified_agent(&a).await;
    let carol = token_of(&issue(&a, "carol").await);
    let seq = a.head() + 1;
    proxy.set(SwapPair {
        seq,
        held: None,
        done: false,
    });
    let watch = Watch::start(&agent, seq, &carol, "token_revoked");
    a.admin_post("/v1/revoke", json!({ "token": carol })).await;
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-swap" }))
        .await;
    refused_with(&agent, &a, "root_mismatch").await;
    assert_eq!(code(&agent, &carol), "token_revoked");
    assert_eq!(watch.violations(), 0);
}

/// Invents a revocation of `victim` as event `seq` (with the `at` of the real event it
/// precedes, if any) and renumbers everything after it, until a checkpoint covering `seq` has
/// gone by. With `at_tail`, injects it before the first heartbeat instead (the log idle).
struct Invent {
    seq: u64,
    rid: String,
    exp: i64,
    at_tail: bool,
    injected: bool,
    done: bool,
}

impl Invent {
    fn invented(&self, at: &str) -> SseEvent {
        let data = format!(
            r#"{{"seq":{},"type":"token","rid":"{}","exp":{},"at":{at}}}"#,
            self.seq, self.rid, self.exp
        );
        SseEvent::event(self.seq, "token", &data)
    }
}

impl Rewrite for Invent {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done {
            return vec![event];
        }
        if self.at_tail {
            if is_heartbeat(&event) {
                let at = event.json().unwrap()["at"].to_string();
                self.done = true;
                return vec![self.invented(&at), event];
            }
            return vec![event];
        }
        if let Some(s) = event.event_seq()
            && s >= self.seq
        {
            let data = event.data().unwrap().to_owned();
            let kind = event.kind().unwrap();
            let moved = SseEvent::event(s + 1, &kind, &renumbered(&data, s, s + 1));
            if s == self.seq && !self.injected {
                self.injected = true;
                let at = event.json().unwrap()["at"].to_string();
                return vec![self.invented(&at), moved];
            }
            return vec![moved];
        }
        if self.injected && is_heartbeat(&event) {
            if checkpoint_of(&event).is_some_and(|n| size_of(&n) >= self.seq) {
                self.done = true;
            }
            return vec![heartbeat_with(event, |hb| {
                hb["seq"] = (hb["seq"].as_u64().unwrap() + 1).into();
            })];
        }
        vec![event]
    }
}

#[tokio::test]
async fn an_invented_revocation_never_becomes_verified() {
    let a = authority().await;
    let (proxy, agent) = verified_agent(&a).await;
    let dave = token_of(&issue(&a, "dave").await);
    let victim = issue(&a, "victim").await;
    let victim_token = token_of(&victim);
    assert_eq!(code(&agent, &victim_token), "ok");
    let seq = a.head() + 1;
    proxy.set(Invent {
        seq,
        rid: victim["rid"].as_str().unwrap().to_owned(),
        exp: victim["exp"].as_i64().unwrap(),
        at_tail: false,
        injected: false,
        done: false,
    });
    let watch = Watch::start(&agent, seq, &victim_token, "ok");
    a.admin_post("/v1/revoke", json!({ "token": dave })).await;
    refused_with(&agent, &a, "root_mismatch").await;
    assert_eq!(code(&agent, &victim_token), "ok", "the invention is gone");
    assert_eq!(code(&agent, &dave), "token_revoked");
    assert_eq!(watch.violations(), 0);
}

#[tokio::test]
async fn an_invented_revocation_at_the_idle_tail_is_never_covered_and_resynced() {
    let a = authority().await;
    let proxy = TamperProxy::start(&a.base, PassThrough).await;
    let mut c = config(&proxy, &a);
    // A leaf may wait for a checkpoint to cover it max_staleness + max_clock_skew.
    c.max_staleness = Duration::from_secs(2);
    let agent = Agent::start(c).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    until_verified(&agent, &a).await;
    let victim = issue(&a, "victim").await;
    let victim_token = token_of(&victim);
    let seq = a.head() + 1;
    let watch = Watch::start(&agent, seq, &victim_token, "ok");
    proxy.set(Invent {
        seq,
        rid: victim["rid"].as_str().unwrap().to_owned(),
        exp: victim["exp"].as_i64().unwrap(),
        at_tail: true,
        injected: false,
        done: false,
    });
    // Checkpoints of the real (smaller) log keep verifying; the invented leaf never gets
    // covered, which is a resync once it has waited `max_staleness` + `max_clock_skew`.
    eventually("the invented revocation is applied", || async {
        code(&agent, &victim_token) == "token_revoked"
    })
    .await;
    refused_with(&agent, &a, "size_mismatch").await;
    assert_eq!(code(&agent, &victim_token), "ok");
    assert_eq!(watch.violations(), 0);
}

/// Changes the `exp` of event `seq` to an hour ago (the agent would purge the entry, and
/// accept the revoked token).
struct ChangeExp {
    seq: u64,
    done: bool,
}

impl Rewrite for ChangeExp {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done || event.event_seq() != Some(self.seq) {
            return vec![event];
        }
        self.done = true;
        let data = event.data().unwrap().to_owned();
        let exp = event.json().unwrap()["exp"].as_i64().unwrap();
        let changed = data.replacen(
            &format!("\"exp\":{exp},"),
            &format!("\"exp\":{},", exp - 7200),
            1,
        );
        assert_ne!(changed, data, "exp rewritten");
        vec![event.with_data(&changed, None)]
    }
}

#[tokio::test]
async fn a_changed_exp_is_caught() {
    let a = authority().await;
    let (proxy, agent) = verified_agent(&a).await;
    let erin = token_of(&issue(&a, "erin").await);
    let seq = a.head() + 1;
    proxy.set(ChangeExp { seq, done: false });
    let watch = Watch::start(&agent, seq, &erin, "token_revoked");
    a.admin_post("/v1/revoke", json!({ "token": erin })).await;
    refused_with(&agent, &a, "root_mismatch").await;
    assert_eq!(code(&agent, &erin), "token_revoked");
    // The entry held is the authority's: a purge now, past the tampered expiry, keeps it.
    let now = revocast_shared::UnixMillis::now().as_secs();
    assert_eq!(agent.revocations().purge_expired(now), 0);
    assert_eq!(watch.violations(), 0);
}

/// Records the first checkpoint it sees; once a larger one has gone by, puts the recorded one
/// in the next heartbeat instead of its own.
struct Replay {
    old: Arc<std::sync::Mutex<Option<String>>>,
    newer_seen: bool,
    done: bool,
}

impl Rewrite for Replay {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done {
            return vec![event];
        }
        let Some(note) = checkpoint_of(&event) else {
            return vec![event];
        };
        let recorded = self.old.lock().unwrap().clone();
        let Some(old) = recorded else {
            *self.old.lock().unwrap() = Some(note);
            return vec![event];
        };
        if !self.newer_seen {
            self.newer_seen = size_of(&note) > size_of(&old);
            return vec![event];
        }
        self.done = true;
        vec![heartbeat_with(event, |hb| hb["checkpoint"] = old.into())]
    }
}

#[tokio::test]
async fn a_replayed_old_checkpoint_is_caught() {
    let a = authority().await;
    let (proxy, agent) = verified_agent(&a).await;
    let old = Arc::new(std::sync::Mutex::new(None));
    proxy.set(Replay {
        old: Arc::clone(&old),
        newer_seen: false,
        done: false,
    });
    // Let the proxy record a checkpoint of the current head, then move the head on.
    eventually("the proxy has recorded a checkpoint", || async {
        old.lock().unwrap().is_some()
    })
    .await;
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-replay" }))
        .await;
    refused_with(&agent, &a, "older_than_seen").await;
}

/// Re-signs the checkpoint of the next heartbeat that carries one with `key` (same text: only
/// the signature is not the log key's).
struct Resign {
    key: LogSigningKey,
    done: bool,
}

impl Rewrite for Resign {
    fn event(&mut self, event: SseEvent) -> Vec<SseEvent> {
        if self.done {
            return vec![event];
        }
        let Some(note) = checkpoint_of(&event) else {
            return vec![event];
        };
        self.done = true;
        let parsed = SignedNote::parse(note.as_bytes()).unwrap();
        let checkpoint = Checkpoint::from_note_text(parsed.text()).unwrap();
        let forged = checkpoint.sign(&self.key).unwrap();
        vec![heartbeat_with(event, |hb| hb["checkpoint"] = forged.into())]
    }
}

async fn resigned_is_refused(a: &TestAuthority, key: LogSigningKey) {
    let (proxy, agent) = verified_agent(a).await;
    let fetches = metric(&agent, "revocast_agent_jwks_fetches_total");
    proxy.set(Resign { key, done: false });
    a.admin_post("/v1/revoke/session", json!({ "sid": "s-forged" }))
        .await;
    refused_with(&agent, a, "unknown_key").await;
    // One refresh for the unknown key, then the resync's own fetch.
    assert!(metric(&agent, "revocast_agent_jwks_fetches_total") >= fetches + 2);
}

#[tokio::test]
async fn a_checkpoint_signed_by_a_key_outside_the_jwks_is_refused() {
    let a = authority().await;
    resigned_is_refused(&a, LogSigningKey::generate().unwrap()).await;
}

#[tokio::test]
async fn a_checkpoint_signed_by_the_authoritys_token_key_is_refused() {
    let a = authority().await;
    // The authority's own token signing key, from its store: published in the JWKS, but as a
    // token key, which never verifies a checkpoint.
    let store = revocast_authority::open_store(a.config()).await.unwrap();
    let active = store
        .load_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.active)
        .unwrap();
    assert_eq!(active.kid, a.active_kid());
    resigned_is_refused(&a, LogSigningKey::from_seed(active.seed)).await;
}
