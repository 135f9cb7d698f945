//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`, so every
//! commit is fsynced before it returns. Only the ledger task writes (one transaction per group
//! of requests); readers run concurrently thanks to WAL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use revocast_shared::crypto::SigningSeed;
use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::{Epoch, KeyId, Seq, UnixMillis};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{KeyRecord, Loaded, Mutation, Outcome, Store};
use crate::config::Scope;
use crate::error::StoreError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "revocast.db";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database in `data_dir` and run the migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // A `create-key` run against a live authority waits instead of failing.
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| corrupt("sequence number beyond i64"))
}

fn seq_of(n: i64) -> Result<Seq, StoreError> {
    u64::try_from(n)
        .map(Seq::new)
        .map_err(|_| corrupt("negative sequence number"))
}

/// Rebuild an event from its row.
fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RevocationEvent, StoreError> {
    let kind: String = row.try_get("kind")?;
    let target: String = row.try_get("target")?;
    let expires_at: Option<i64> = row.try_get("expires_at")?;
    let until = || expires_at.ok_or_else(|| corrupt(format!("{kind} revocation without expiry")));
    let revocation = match kind.as_str() {
        "token" => Revocation::Token {
            rid: target.parse().map_err(|_| corrupt("bad rid"))?,
            exp: until()?,
        },
        "subject" => Revocation::Subject {
            sub: target,
            r#gen: u64::try_from(row.try_get::<Option<i64>, _>("gen")?.unwrap_or(-1))
                .map_err(|_| corrupt("subject revocation without generation"))?,
            until: until()?,
        },
        "session" => Revocation::Session {
            sid: target,
            until: until()?,
        },
        "key" => Revocation::Key {
            kid: target.parse().map_err(|_| corrupt("bad kid"))?,
        },
        other => return Err(corrupt(format!("unknown revocation kind {other:?}"))),
    };
    Ok(RevocationEvent {
        seq: seq_of(row.try_get("seq")?)?,
        revocation,
        at: UnixMillis::new(row.try_get("at_ms")?),
    })
}

/// The log's head `seq` as stored in `meta`.
async fn read_head(conn: &mut sqlx::SqliteConnection) -> Result<Seq, StoreError> {
    let head: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'head_seq'")
        .fetch_one(conn)
        .await?;
    head.parse()
        .map(Seq::new)
        .map_err(|_| corrupt("head_seq is not a number"))
}

/// Append one revocation at `head + 1`, returning its event.
async fn append(
    tx: &mut Transaction<'_, Sqlite>,
    head: &mut Seq,
    at: UnixMillis,
    revocation: Revocation,
    token_sub: Option<&str>,
    reason: Option<&str>,
) -> Result<RevocationEvent, StoreError> {
    let seq = head.next();
    let (target, r#gen) = match &revocation {
        Revocation::Token { rid, .. } => (rid.to_string(), None),
        Revocation::Subject { sub, r#gen, .. } => (sub.clone(), Some(to_i64(*r#gen)?)),
        Revocation::Session { sid, .. } => (sid.clone(), None),
        Revocation::Key { kid } => (kid.to_string(), None),
    };
    sqlx::query(
        "INSERT INTO revocations (seq, kind, target, gen, expires_at, at_ms, token_sub, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_i64(seq.get())?)
    .bind(revocation.kind())
    .bind(target)
    .bind(r#gen)
    .bind(revocation.expires_at())
    .bind(at.as_millis())
    .bind(token_sub)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    *head = seq;
    Ok(RevocationEvent {
        seq,
        revocation,
        at,
    })
}

async fn previous(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    target: &str,
) -> Result<Option<Outcome>, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT seq, at_ms FROM revocations WHERE kind = ? AND target = ?")
            .bind(kind)
            .bind(target)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|(seq, at)| {
        Ok(Outcome::AlreadyRevoked {
            seq: seq_of(seq)?,
            at: UnixMillis::new(at),
        })
    })
    .transpose()
}

async fn insert_active_key(
    tx: &mut Transaction<'_, Sqlite>,
    key: &revocast_shared::SigningKey,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE signing_keys SET active = 0, retired_at = COALESCE(retired_at, ?) WHERE active = 1",
    )
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO signing_keys (kid, seed, created_at, active) VALUES (?, ?, ?, 1)")
        .bind(key.kid().to_string())
        .bind(&key.seed().expose_secret()[..])
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, now: i64) -> Result<Loaded, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'epoch'")
            .fetch_one(&mut *conn)
            .await?;
        let head = read_head(&mut conn).await?;

        let mut keys = Vec::new();
        for row in sqlx::query(
            "SELECT kid, seed, created_at, retired_at, revoked_seq, active FROM signing_keys ORDER BY created_at",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            let seed: Vec<u8> = row.try_get("seed")?;
            keys.push(KeyRecord {
                kid: KeyId::from_str(row.try_get("kid")?).map_err(|_| corrupt("bad kid"))?,
                seed: SigningSeed::from_slice(&seed).ok_or_else(|| corrupt("seed is not 32 bytes"))?,
                created_at: row.try_get("created_at")?,
                retired_at: row.try_get("retired_at")?,
                revoked: row.try_get::<Option<i64>, _>("revoked_seq")?.is_some(),
                active: row.try_get::<i64, _>("active")? == 1,
            });
        }

        let revocations = sqlx::query(
            "SELECT seq, kind, target, gen, expires_at, at_ms FROM revocations
             WHERE expires_at IS NULL OR expires_at > ? ORDER BY seq",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?;

        let subject_generations =
            sqlx::query_as::<_, (String, i64)>("SELECT sub, gen FROM subject_generations")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(sub, g)| {
                    Ok((
                        sub,
                        u64::try_from(g).map_err(|_| corrupt("negative generation"))?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;

        Ok(Loaded {
            epoch: Epoch::new(epoch),
            head,
            keys,
            revocations,
            subject_generations,
        })
    }

    async fn commit(&self, at: UnixMillis, batch: &[Mutation]) -> Result<Vec<Outcome>, StoreError> {
        let now = at.as_secs();
        let mut tx = self.pool.begin().await?;
        let start = read_head(&mut tx).await?;
        let mut head = start;
        let mut outcomes = Vec::with_capacity(batch.len());
        for mutation in batch {
            let outcome = match mutation {
                Mutation::RevokeToken {
                    rid,
                    sub,
                    exp,
                    reason,
                } => match previous(&mut tx, "token", &rid.to_string()).await? {
                    Some(earlier) => earlier,
                    None => {
                        let revocation = Revocation::Token {
                            rid: *rid,
                            exp: *exp,
                        };
                        let event = append(
                            &mut tx,
                            &mut head,
                            at,
                            revocation,
                            Some(sub),
                            reason.as_deref(),
                        )
                        .await?;
                        Outcome::Appended {
                            event,
                            activated: None,
                        }
                    }
                },
                Mutation::RevokeSubject { sub, until, reason } => {
                    let r#gen: i64 = sqlx::query_scalar(
                        "INSERT INTO subject_generations (sub, gen) VALUES (?, 1)
                         ON CONFLICT (sub) DO UPDATE SET gen = gen + 1 RETURNING gen",
                    )
                    .bind(sub)
                    .fetch_one(&mut *tx)
                    .await?;
                    let r#gen = u64::try_from(r#gen).map_err(|_| corrupt("negative generation"))?;
                    let revocation = Revocation::Subject {
                        sub: sub.clone(),
                        r#gen,
                        until: *until,
                    };
                    let event =
                        append(&mut tx, &mut head, at, revocation, None, reason.as_deref()).await?;
                    Outcome::Appended {
                        event,
                        activated: None,
                    }
                }
                Mutation::RevokeSession { sid, until, reason } => {
                    let revocation = Revocation::Session {
                        sid: sid.clone(),
                        until: *until,
                    };
                    let event =
                        append(&mut tx, &mut head, at, revocation, None, reason.as_deref()).await?;
                    Outcome::Appended {
                        event,
                        activated: None,
                    }
                }
                Mutation::RevokeKey { kid, replacement } => {
                    let kid_s = kid.to_string();
                    let active: Option<i64> =
                        sqlx::query_scalar("SELECT active FROM signing_keys WHERE kid = ?")
                            .bind(&kid_s)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match active {
                        None => Outcome::UnknownKey,
                        Some(active) => match previous(&mut tx, "key", &kid_s).await? {
                            Some(earlier) => earlier,
                            None => {
                                let event = append(
                                    &mut tx,
                                    &mut head,
                                    at,
                                    Revocation::Key { kid: *kid },
                                    None,
                                    None,
                                )
                                .await?;
                                let was_active = active == 1;
                                if was_active {
                                    insert_active_key(&mut tx, replacement, now).await?;
                                }
                                sqlx::query(
                                    "UPDATE signing_keys SET revoked_seq = ?, retired_at = COALESCE(retired_at, ?)
                                     WHERE kid = ?",
                                )
                                .bind(to_i64(event.seq.get())?)
                                .bind(now)
                                .bind(&kid_s)
                                .execute(&mut *tx)
                                .await?;
                                Outcome::Appended {
                                    event,
                                    activated: was_active.then(|| replacement.kid()),
                                }
                            }
                        },
                    }
                }
                Mutation::AddKey { key } => {
                    insert_active_key(&mut tx, key, now).await?;
                    Outcome::KeyAdded
                }
            };
            outcomes.push(outcome);
        }
        if head != start {
            sqlx::query("UPDATE meta SET value = ? WHERE name = 'head_seq'")
                .bind(head.get().to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn api_key_scope(&self, hash: &[u8; 32]) -> Result<Option<Scope>, StoreError> {
        let scope: Option<String> = sqlx::query_scalar("SELECT scope FROM api_keys WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        scope
            .map(|s| Scope::parse(&s).ok_or_else(|| corrupt(format!("unknown scope {s:?}"))))
            .transpose()
    }

    async fn insert_api_key(
        &self,
        hash: &[u8; 32],
        scope: Scope,
        label: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (hash, scope, label, created_at) VALUES (?, ?, ?, ?)")
            .bind(&hash[..])
            .bind(scope.as_str())
            .bind(label)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
