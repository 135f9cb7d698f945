//! Revocations outlive what they cover. Subject and session revocations are kept until every
//! token they cover has expired — by the longest lifetime any start of the store allowed, not
//! the current `--max-ttl` — on SQLite across restarts and on PostgreSQL across replicas
//! (`REVOCAST_TEST_DATABASE_URL`; skipped with a message without it). And a revoked token stays
//! in the snapshot for as long as an agent could still accept it under its leeway.

use std::time::Duration;

use revocast_agent::{Agent, AgentConfig};
use revocast_shared::UnixMillis;
use revocast_tests::postgres::TestDatabase;
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::{Value, json};

const HOUR: i64 = 3600;
const TEN_MINUTES: i64 = 600;

/// `--max-ttl` (and a default TTL within it) of `secs`.
fn max_ttl(secs: i64) -> impl Fn(&mut revocast_authority::Config) {
    move |c| {
        c.max_ttl_secs = secs;
        c.default_ttl_secs = c.default_ttl_secs.min(secs);
    }
}

/// The `until` of the newest revocation of `kind` naming `name` (in `field`) in a snapshot.
async fn until_of(a: &TestAuthority, kind: &str, field: &str, name: &str) -> i64 {
    let snapshot = a.snapshot().await;
    snapshot["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind && e[field] == name)
        .filter_map(|e| e["until"].as_i64())
        .max()
        .unwrap_or_else(|| panic!("no {kind} revocation of {name} in {snapshot}"))
}

fn now() -> i64 {
    UnixMillis::now().as_secs()
}

/// Started with `--max-ttl 1h`, then restarted with `10m`: tokens issued before still live an
/// hour, so a subject or session revoked after the restart stays revoked that long.
#[tokio::test]
async fn lowering_max_ttl_keeps_revocations_as_long_as_the_longest_token() {
    let mut a = TestAuthority::start_with(max_ttl(HOUR)).await;
    let long = a
        .admin_post(
            "/v1/tokens",
            json!({ "sub": "hal", "sid": "hal-session", "ttl": HOUR }),
        )
        .await;
    let exp = long["exp"].as_i64().unwrap();
    a.restart_with(max_ttl(TEN_MINUTES)).await;
    // The restart's own limit applies to new tokens…
    let resp = a
        .http
        .post(format!("{}/v1/tokens", a.base))
        .bearer_auth(&a.admin_key)
        .json(&json!({ "sub": "hal", "ttl": HOUR }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        400,
        "a ttl over the new --max-ttl is refused"
    );
    // …but revocations still cover the hour-long token issued before it.
    a.admin_post("/v1/revoke/subject", json!({ "sub": "hal" }))
        .await;
    a.revoke_session("hal-session").await;
    let subject = until_of(&a, "subject", "sub", "hal").await;
    let session = until_of(&a, "session", "sid", "hal-session").await;
    assert!(subject >= exp, "subject until {subject} < token exp {exp}");
    assert!(session >= exp, "session until {session} < token exp {exp}");
    let verdict = a
        .admin_post("/v1/verify", json!({ "token": long["token"] }))
        .await;
    assert_eq!(verdict["error"], "token_revoked");
}

/// Two replicas of one database: one started with `--max-ttl 10m`, then one with `1h`, which
/// issues an hour-long token. Revoked on either, the subject stays revoked that hour: both use
/// the one recorded maximum.
#[tokio::test]
async fn replicas_share_the_longest_max_ttl() {
    let Some(db) = TestDatabase::create("max_ttl").await else {
        return;
    };
    let short = TestAuthority::start_replicas(&db, 1, max_ttl(TEN_MINUTES))
        .await
        .remove(0);
    let long = TestAuthority::start_with_keys(&short, max_ttl(HOUR)).await;
    let exp = long.issue("ida", HOUR as u64).await["exp"]
        .as_i64()
        .unwrap();
    for (replica, name) in [(&short, "short"), (&long, "long")] {
        replica
            .admin_post("/v1/revoke/subject", json!({ "sub": "ida" }))
            .await;
        let until = until_of(replica, "subject", "sub", "ida").await;
        assert!(
            until >= exp,
            "revoked on the {name} replica: until {until} < token exp {exp}"
        );
    }
}

/// The race: a replica that has not yet seen another's raise of the longest lifetime computes
/// a short `until`; the commit, which reads the recorded lifetime under the log's row lock,
/// still covers the longer tokens. Each store plays one replica.
#[tokio::test]
async fn a_commit_covers_a_lifetime_raised_by_a_replica_not_yet_seen() {
    use revocast_authority::store::{
        Mutation, Outcome, PgStore, RevokeSession, RevokeSubject, Store,
    };
    use revocast_shared::UnixSeconds;
    let Some(db) = TestDatabase::create("max_ttl_race").await else {
        return;
    };
    let (short, long) = (
        PgStore::open(&db.url).await.unwrap(),
        PgStore::open(&db.url).await.unwrap(),
    );
    assert_eq!(short.raise_max_ttl(TEN_MINUTES).await.unwrap(), TEN_MINUTES);
    // The long replica starts: it may issue hour-long tokens from now on.
    assert_eq!(long.raise_max_ttl(HOUR).await.unwrap(), HOUR);
    assert_eq!(
        short.raise_max_ttl(TEN_MINUTES).await.unwrap(),
        HOUR,
        "never lowered"
    );
    // The short one revokes with the `until` its own, stale figure gives.
    let at = UnixMillis::now();
    let stale = UnixSeconds::new(at.as_secs() + TEN_MINUTES);
    let outcomes = short
        .commit(
            at,
            &[
                Mutation::RevokeSubject(RevokeSubject {
                    sub: "kit".into(),
                    until: stale,
                    reason: None,
                }),
                Mutation::RevokeSession(RevokeSession {
                    sid: "kit-session".into(),
                    until: stale,
                    reason: None,
                }),
            ],
        )
        .await
        .unwrap();
    let covered = at.as_secs() + HOUR;
    match outcomes.as_slice() {
        [
            Outcome::RevokeSubject(subject),
            Outcome::RevokeSession(session),
        ] => {
            assert!(subject.until.get() >= covered, "{subject:?}");
            assert!(session.until.get() >= covered, "{session:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(short.max_ttl().await.unwrap(), HOUR);
}

/// What enforces the rule below in a deployment: the authority's grace is a constant, not a
/// flag, and an agent refuses a leeway that, with its allowed clock skew, goes beyond it.
#[tokio::test]
async fn an_agent_refuses_a_leeway_above_the_authoritys_grace() {
    use revocast_agent::config::MAX_LEEWAY_SECS;
    use revocast_shared::event::EXPIRY_GRACE_SECS;
    assert_eq!(i64::from(MAX_LEEWAY_SECS), EXPIRY_GRACE_SECS);
    let a = TestAuthority::start().await;
    assert_eq!(a.config().expiry_grace_secs, EXPIRY_GRACE_SECS);
    let mut config = AgentConfig::new(a.base.clone(), a.subscriber_key.clone());
    // The leeway and the clock skew together: a clock behind the authority's accepts longer.
    let skew = config.max_clock_skew.as_secs() as u32;
    assert!(skew > 0, "the default allows some skew");
    config.leeway_secs = MAX_LEEWAY_SECS - skew;
    assert!(Agent::start(config.clone()).is_ok());
    config.leeway_secs = MAX_LEEWAY_SECS - skew + 1;
    assert!(
        Agent::start(config.clone()).is_err(),
        "a leeway that with the skew outlasts the grace"
    );
    config.max_clock_skew = std::time::Duration::ZERO;
    config.leeway_secs = MAX_LEEWAY_SECS;
    assert!(Agent::start(config.clone()).is_ok());
    config.leeway_secs = MAX_LEEWAY_SECS + 1;
    assert!(Agent::start(config).is_err(), "a leeway above the grace");
}

/// The rule "a revoked token stays rejected for as long as any agent could still accept it"
/// at its boundary, with short figures (leeway 2 s, grace 3 s, a 2 s token): just before
/// `exp + leeway` an agent that resyncs from a fresh snapshot still rejects the token as
/// revoked (its entry is still in the snapshot), and the authority drops the entry only after
/// `exp + grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stays_in_the_snapshot_while_an_agent_could_accept_it() {
    const LEEWAY: u32 = 2;
    const GRACE: i64 = 3;
    let a = TestAuthority::start_with(|c| c.expiry_grace_secs = GRACE).await;
    let issued = a.issue("jan", 2).await;
    let (token, exp) = (
        issued["token"].as_str().unwrap().to_string(),
        issued["exp"].as_i64().unwrap(),
    );
    let rid = issued["rid"].clone();
    a.admin_post("/v1/revoke", json!({ "token": token })).await;
    let in_snapshot = |snapshot: &Value| {
        snapshot["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["rid"] == rid)
    };
    let sleep_until = |unix_millis: i64| async move {
        let wait = unix_millis - UnixMillis::now().as_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    };

    // Just before exp + leeway: the token is still within a fresh agent's leeway, and its
    // revocation is still in the snapshot that agent loads.
    sleep_until((exp + i64::from(LEEWAY)) * 1000 - 700).await;
    let mut config = AgentConfig::new(a.base.clone(), a.subscriber_key.clone());
    config.leeway_secs = LEEWAY;
    let agent = Agent::start(config).unwrap();
    assert!(agent.wait_until_synced(PATIENCE).await);
    let verdict = agent.verify(&token).map(|_| ()).map_err(|r| r.code());
    assert!(
        now() < exp + i64::from(LEEWAY),
        "the test machine was too slow to check at the boundary"
    );
    assert_eq!(verdict, Err("token_revoked"), "within the agent's leeway");

    // Still there just before exp + grace…
    sleep_until((exp + GRACE) * 1000 - 700).await;
    assert!(
        in_snapshot(&a.snapshot().await),
        "dropped before exp + grace"
    );
    // …and dropped from the snapshot only after it.
    sleep_until((exp + GRACE + 1) * 1000 + 200).await;
    assert!(!in_snapshot(&a.snapshot().await), "kept after exp + grace");
}
