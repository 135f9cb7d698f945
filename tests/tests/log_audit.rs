//! An outside auditor, written in another language from PROTOCOL.md alone
//! (`tests/interop/verify_log.py`: hashlib for the RFC 9162 tree, dilithium-py for ML-DSA-65),
//! audits the transparency log over HTTP: it follows the stream, rebuilds the tree from the
//! bytes it received, verifies every checkpoint from the JWKS alone, checks an inclusion proof
//! for every event, and checks with consistency proofs that the log only grew — across a
//! restart, and from one PostgreSQL replica to another. A history the log does not extend is
//! refused, so the audit can fail.

use revocast_tests::interop::{can_run, run};
use revocast_tests::postgres::TestDatabase;
use revocast_tests::{PATIENCE, TestAuthority};
use serde_json::{Value, json};

/// Audit `a` until a verified checkpoint covers its head, from `previous` (an earlier audit's
/// answer) when given: `Ok(answer)` or `Err(what the auditor printed)`.
fn audit(a: &TestAuthority, previous: Option<&Value>) -> Result<Value, String> {
    let input = json!({
        "base": a.base,
        "key": a.subscriber_key,
        "issuer": a.config().issuer,
        "until_size": a.head(),
        "previous": previous,
        "timeout": PATIENCE.as_secs(),
    });
    let stdout = run("verify_log.py", &input)?;
    let answer: Value = serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))?;
    assert_eq!(answer["ok"], true, "{answer}");
    Ok(answer)
}

async fn revoke_sessions(a: &TestAuthority, prefix: &str, n: usize) {
    for i in 0..n {
        a.revoke_session(&format!("{prefix}-{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_auditor_verifies_the_log_across_a_restart() {
    if !can_run("an_outside_auditor_verifies_the_log_across_a_restart") {
        return;
    }
    let mut a = TestAuthority::start().await;
    revoke_sessions(&a, "before", 5).await;
    a.issue("audited", 60).await;
    let first = tokio::task::block_in_place(|| audit(&a, None)).expect("first audit");
    assert!(first["size"].as_u64() >= Some(5), "{first}");
    assert!(first["checkpoints_verified"].as_u64() >= Some(2), "{first}");
    assert_eq!(first["inclusion_checked"], first["size"], "{first}");

    a.restart().await;
    revoke_sessions(&a, "after", 3).await;
    let second = tokio::task::block_in_place(|| audit(&a, Some(&first))).expect("after restart");
    assert_eq!(second["origin"], first["origin"], "a restart keeps the log");
    assert!(second["size"].as_u64() >= Some(8), "{second}");
    assert_eq!(second["consistency_checked"], true, "{second}");

    // A history this log does not extend — the first audit's size with another root, as a
    // log rewritten behind the auditor's back would present it — is refused.
    let mut forged = first.clone();
    forged["root"] = second["root"].clone();
    let refused = tokio::task::block_in_place(|| audit(&a, Some(&forged)));
    let printed = refused.expect_err("a forged history must fail the audit");
    assert!(printed.contains("does not extend"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_auditor_sees_one_log_across_replicas() {
    if !can_run("an_outside_auditor_sees_one_log_across_replicas") {
        return;
    }
    let Some(db) = TestDatabase::create("log_audit").await else {
        return;
    };
    let replicas = TestAuthority::start_replicas(&db, 2, |_| {}).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    for i in 0..3 {
        a.revoke_session(&format!("a-{i}")).await;
        b.revoke_session(&format!("b-{i}")).await;
    }
    // Each replica's head catches up with the other's commits through the database.
    revocast_tests::eventually("both replicas see all six revocations", || async {
        a.head() >= 6 && b.head() >= 6
    })
    .await;
    let on_a = tokio::task::block_in_place(|| audit(a, None)).expect("audit on replica A");
    b.revoke_session("b-last").await;
    let on_b = tokio::task::block_in_place(|| audit(b, Some(&on_a))).expect("audit on B");
    assert_eq!(
        on_b["origin"], on_a["origin"],
        "one log for the whole database"
    );
    assert_eq!(on_b["consistency_checked"], true, "{on_b}");
    assert!(
        on_b["size"].as_u64() > on_a["size"].as_u64(),
        "{on_b} after {on_a}"
    );
}
