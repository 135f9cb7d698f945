//! `PgStore` against a real PostgreSQL (`REVOCAST_TEST_DATABASE_URL`, set by `.ci/run`; each
//! test makes its own database and drops it): the same store contract the SQLite tests check —
//! chunked reads that hold exactly what is in force, an exact backlog that refuses a hole, the
//! log floor, first-start races — plus the commit's row lock under concurrent stores. Without
//! the variable each test says it is skipped and passes.

use std::sync::Arc;

use revocast_authority::store::{
    Backlog, InitKey, KeyInit, Mutation, NewApiKey, Outcome, PgStore, Prune, Pruned, RevokeSession,
    RevokeToken, SnapshotPart, Store, TokenRevocation,
};
use revocast_authority::{Scope, StoreError};
use revocast_shared::event::RevocationEvent;
use revocast_shared::{RevocationId, Seq, SigningKey, UnixMillis, UnixSeconds};
use revocast_tests::postgres::TestDatabase;
use tokio::sync::mpsc;

fn session(i: usize, until: i64) -> Mutation {
    Mutation::RevokeSession(RevokeSession {
        // Quotes, newlines and non-ASCII survive the round trip.
        sid: format!("s\"{i}\n\u{e9}"),
        until: UnixSeconds::new(until),
        reason: None,
    })
}

async fn collect_snapshot(store: &PgStore, now: i64) -> (Seq, Vec<RevocationEvent>, bool) {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = store.snapshot(UnixSeconds::new(now), tx);
    let collect = async {
        let (mut head, mut events, mut ended) = (Seq::ZERO, Vec::new(), false);
        while let Some(part) = rx.recv().await {
            match part {
                SnapshotPart::Head { seq, .. } => head = seq,
                SnapshotPart::Events(chunk) => events.extend(chunk),
                SnapshotPart::End => ended = true,
            }
        }
        (head, events, ended)
    };
    let (read, collected) = tokio::join!(reader, collect);
    read.unwrap();
    collected
}

#[tokio::test]
async fn reads_hold_exactly_what_is_in_force_and_the_backlog_refuses_a_hole() {
    let Some(db) = TestDatabase::create("store_reads").await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    // Over two read chunks (4096 each), every third already expired at time 1000.
    let n = 4096 * 2 + 7;
    let batch: Vec<Mutation> = (0..n)
        .map(|i| session(i, if i % 3 == 0 { 500 } else { 2_000 }))
        .collect();
    let outcomes = store.commit(UnixMillis::new(1), &batch).await.unwrap();
    assert_eq!(outcomes.len(), n);
    let expected: Vec<Seq> = (0..n)
        .filter(|i| i % 3 != 0)
        .map(|i| Seq::new(i as u64 + 1))
        .collect();

    let loaded = store.load(UnixSeconds::new(1_000)).await.unwrap();
    assert_eq!(loaded.head, Seq::new(n as u64));
    let seqs: Vec<Seq> = loaded.revocations.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, expected);
    let (head, events, ended) = collect_snapshot(&store, 1_000).await;
    assert!(ended);
    assert_eq!(head, Seq::new(n as u64));
    assert_eq!(events, loaded.revocations);

    let seqs_of = |b: Backlog| match b {
        Backlog::Events(events) => events.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
        Backlog::Pruned { .. } => panic!("pruned"),
    };
    assert_eq!(
        seqs_of(store.events_after(Seq::new(1), 3).await.unwrap()),
        [2, 3, 4]
    );
    assert!(seqs_of(store.events_after(Seq::new(n as u64), 3).await.unwrap()).is_empty());
    let mut conn = db.connect().await;
    sqlx::query("DELETE FROM revocations WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.events_after(Seq::new(1), 3).await,
        Err(StoreError::Corrupt(_))
    ));

    // Pruning raises the floor; positions below it are refused, rows above it kept.
    let pruned = store
        .commit(
            UnixMillis::new(10_000),
            &[Mutation::Prune(Prune {
                floor_before: UnixMillis::new(5_000),
                expired_by: UnixSeconds::new(1_000),
                limit: 100_000,
            })],
        )
        .await
        .unwrap();
    assert!(
        matches!(pruned[0], Outcome::Prune(Pruned { floor, .. }) if floor == Seq::new(n as u64)),
        "{pruned:?}"
    );
    assert!(matches!(
        store.events_after(Seq::new(1), 3).await.unwrap(),
        Backlog::Pruned { .. }
    ));
    store.close().await;
}

#[tokio::test]
async fn concurrent_stores_commit_one_gap_free_log_and_initialise_once() {
    let Some(db) = TestDatabase::create("store_concurrent").await else {
        return;
    };
    // Four stores, as four replicas: they migrate, add the first key and the first API keys
    // all at once.
    let stores: Vec<Arc<PgStore>> =
        futures_util::future::join_all((0..4).map(|_| PgStore::open(&db.url)))
            .await
            .into_iter()
            .map(|s| Arc::new(s.unwrap()))
            .collect();
    let init = stores.iter().map(|s| {
        let s = Arc::clone(s);
        async move {
            let key = Arc::new(SigningKey::generate().unwrap());
            let outcome = s
                .commit(UnixMillis::now(), &[Mutation::InitKey(InitKey { key })])
                .await
                .unwrap();
            let api = NewApiKey {
                hash: rand_hash(),
                scope: Scope::Admin,
                label: None,
            };
            let first = s
                .insert_first_api_keys(&[api], UnixSeconds::new(0))
                .await
                .unwrap();
            (
                matches!(outcome[0], Outcome::InitKey(KeyInit::Added(_))),
                first,
            )
        }
    });
    let results = futures_util::future::join_all(init).await;
    assert_eq!(results.iter().filter(|(key, _)| *key).count(), 1);
    assert_eq!(results.iter().filter(|(_, api)| *api).count(), 1);
    assert_eq!(stores[0].count_api_keys().await.unwrap(), 1);
    assert_eq!(
        stores[0].load_keys().await.unwrap().len(),
        1,
        "one signing key"
    );

    // 4 stores × 8 writers × 25 commits of 1–4 revocations each.
    let mut writers = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..8 {
            let store = Arc::clone(store);
            writers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for c in 0..25 {
                    let batch: Vec<Mutation> = (0..=(c % 4))
                        .map(|i| {
                            Mutation::RevokeToken(RevokeToken {
                                rid: RevocationId::of_signature(
                                    format!("{s}-{w}-{c}-{i}").as_bytes(),
                                ),
                                sub: "x".into(),
                                exp: UnixSeconds::new(i64::MAX / 2),
                                reason: None,
                            })
                        })
                        .collect();
                    for outcome in store.commit(UnixMillis::now(), &batch).await.unwrap() {
                        match outcome.appended() {
                            Some(event) => seqs.push(event.seq.get()),
                            None => panic!("{outcome:?}"),
                        }
                    }
                }
                seqs
            }));
        }
    }
    let mut seqs = Vec::new();
    for w in writers {
        let mine = w.await.unwrap();
        // Within one writer, later commits got later seqs.
        assert!(mine.windows(2).all(|p| p[0] < p[1]));
        seqs.extend(mine);
    }
    seqs.sort_unstable();
    let total = seqs.len() as u64;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    match stores[1].events_after(Seq::ZERO, u32::MAX).await.unwrap() {
        Backlog::Events(events) => assert_eq!(events.len() as u64, total),
        Backlog::Pruned { .. } => panic!("nothing was pruned"),
    }
    // Revoking one token again from another store answers with the first seq.
    let again = stores[3]
        .commit(
            UnixMillis::now(),
            &[Mutation::RevokeToken(RevokeToken {
                rid: RevocationId::of_signature(b"0-0-0-0"),
                sub: "x".into(),
                exp: UnixSeconds::new(i64::MAX / 2),
                reason: None,
            })],
        )
        .await
        .unwrap();
    assert!(matches!(
        again[0],
        Outcome::RevokeToken(TokenRevocation::AlreadyRevoked(_))
    ));
    for s in &stores {
        s.close().await;
    }
}

fn rand_hash() -> [u8; 32] {
    let mut h = [0u8; 32];
    getrandom::fill(&mut h).unwrap();
    h
}

#[tokio::test]
async fn a_commit_sees_its_own_rows_before_they_are_written() {
    let Some(db) = TestDatabase::create("store_own_rows").await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    let token = |n: u8| {
        Mutation::RevokeToken(RevokeToken {
            rid: RevocationId::of_signature(&[n]),
            sub: "x".into(),
            exp: UnixSeconds::new(2_000),
            reason: Some("twice in one batch".into()),
        })
    };
    let prune = Mutation::Prune(Prune {
        floor_before: UnixMillis::new(0),
        expired_by: UnixSeconds::new(0),
        limit: 10,
    });
    // The second revoke of token 1 finds the first, still held back for the batch's INSERT;
    // the prune in the middle writes what was held back before it reads.
    let outcomes = store
        .commit(
            UnixMillis::new(1),
            &[token(1), session(0, 2_000), prune, token(1), token(2)],
        )
        .await
        .unwrap();
    let seqs: Vec<String> = outcomes
        .iter()
        .map(|o| match (o, o.appended()) {
            (_, Some(event)) => format!("new {}", event.seq),
            (Outcome::RevokeToken(TokenRevocation::AlreadyRevoked(earlier)), _) => {
                format!("again {}", earlier.seq)
            }
            (Outcome::Prune(Pruned { deleted, .. }), _) => format!("pruned {deleted}"),
            (other, None) => format!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, ["new 1", "new 2", "pruned 0", "again 1", "new 3"]);
    let loaded = store.load(UnixSeconds::new(1_000)).await.unwrap();
    assert_eq!(loaded.head, Seq::new(3));
    assert_eq!(loaded.revocations.len(), 3);
    store.close().await;
}

/// Replicas starting together on an empty database, each with its own issuer: exactly one
/// records its issuer and every one, then and later, gets that one back.
#[tokio::test]
async fn concurrent_stores_record_one_issuer() {
    let Some(db) = TestDatabase::create("store_issuer").await else {
        return;
    };
    let stores: Vec<PgStore> =
        futures_util::future::join_all((0..4).map(|_| PgStore::open(&db.url)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let issuers: Vec<String> = (0..4).map(|i| format!("https://r{i}.example")).collect();
    let claimed: Vec<String> = futures_util::future::join_all(
        stores
            .iter()
            .zip(&issuers)
            .map(|(s, issuer)| s.claim_issuer(issuer)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert!(issuers.contains(&claimed[0]), "{claimed:?}");
    assert!(claimed.iter().all(|c| *c == claimed[0]), "{claimed:?}");
    assert_eq!(
        stores[1]
            .claim_issuer("https://late.example")
            .await
            .unwrap(),
        claimed[0]
    );
    for s in &stores {
        s.close().await;
    }
}

/// No reader can make a commit wait, and the writer's connection comes back by itself: with
/// as many snapshots in progress as the store has read connections, each stalled by a reader
/// that takes nothing after the head, commits and API-key lookups still answer at once. Then
/// the server drops the writer's connection (as a restart or a network cut would) and the
/// next commit goes through on a new one.
#[tokio::test]
async fn commits_do_not_wait_for_readers_and_survive_a_lost_writer_connection() {
    let Some(db) = TestDatabase::create("store_writer").await else {
        return;
    };
    let store = Arc::new(PgStore::open(&db.url).await.unwrap());
    let batch: Vec<Mutation> = (0..10_000).map(|i| session(i, i64::MAX)).collect();
    store.commit(UnixMillis::new(1), &batch).await.unwrap();

    // As many stalled snapshots as the store has read connections (16): each has sent its
    // head and waits to send its first chunk, which nobody takes. (Before the fix each held
    // a pooled connection inside its read transaction, and the commit waited for one.)
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let (tx, mut rx) = mpsc::channel(1);
        let reader = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.snapshot(UnixSeconds::new(1_000), tx).await }
        });
        assert!(matches!(rx.recv().await, Some(SnapshotPart::Head { .. })));
        stalled.push((reader, rx));
    }
    let within = std::time::Duration::from_secs(3);
    let committed = tokio::time::timeout(
        within,
        store.commit(UnixMillis::new(2), &[session(1, i64::MAX)]),
    )
    .await
    .expect("a commit waited for the stalled snapshots");
    assert!(committed.is_ok(), "{committed:?}");
    let looked_up = tokio::time::timeout(within, store.api_key_scope(&[0; 32]))
        .await
        .expect("a key lookup waited for the stalled snapshots");
    assert!(matches!(looked_up, Ok(None)), "{looked_up:?}");

    let mut conn = db.connect().await;
    let terminated = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'revocast-authority writer'",
    )
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(terminated, 1, "the writer has one connection of its own");
    let after = store
        .commit(UnixMillis::new(3), &[session(2, i64::MAX)])
        .await;
    assert!(after.is_ok(), "{after:?}");

    for (reader, rx) in stalled {
        drop(rx);
        reader.await.unwrap().unwrap();
    }
    store.close().await;
}
