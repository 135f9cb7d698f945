//! The shared store for replicas: one PostgreSQL database that every authority replica commits
//! to and follows.
//!
//! Ordering: every commit locks the single `log_state` row first and holds it until it
//! commits, so `seq` is allocated gap-free and commit order is `seq` order across replicas
//! (see the migration). Durability: PostgreSQL's default `synchronous_commit = on` flushes the
//! WAL before COMMIT returns; a commit whose connection breaks during COMMIT is reported as
//! failed but may have landed, which is harmless because every revocation is idempotent.
//!
//! Following: a commit that moved the head sends `NOTIFY revocast_log, '<head>'` (delivered
//! at commit), and one that changed the signing keys `NOTIFY revocast_keys`. The
//! [`PgDoorbell`] listens on its own connection and reconnects by itself; the notifications
//! are hints only — the replica reads the log by `seq` after each, and polls as well.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use revocast_shared::crypto::SigningSeed;
use revocast_shared::event::RevocationEvent;
use revocast_shared::tlog::{Frontier, TreeHash};
use revocast_shared::{Epoch, KeyId, Seq, SigningKey, UnixMillis, UnixSeconds};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::mpsc;

use super::commit::{LogWriter, OnceKind, apply_batch};
use super::log::{
    API_KEY_COLUMNS, ApiKeyRow, NewRow, REFRESH_STATE, ReadLog, RefreshRow, RowParts, api_key_of,
    check_contiguous, corrupt, frontier_of, generation_of, leaves_of, log_key_of, logged_of,
    read_in_force, scope_of, send_snapshot, seq_of, to_i64,
};
use super::{
    ApiKeyRecord, Backlog, Doorbell, FleetRecord, KeyRecord, Loaded, LogKeyRecord, Logged,
    Mutation, NewApiKey, NewRefreshToken, Outcome, RefreshState, Ring, SnapshotPart, StartSession,
    Store, TreeHead,
};
use crate::config::Scope;
use crate::error::StoreError;

/// Channel a commit that appended revocations notifies, with the new head as payload.
const LOG_CHANNEL: &str = "revocast_log";
/// Channel a commit that changed the signing keys notifies.
const KEYS_CHANNEL: &str = "revocast_keys";

/// Server-side limits of a committing transaction, which holds the lock every other replica's
/// commits wait for: it may sit idle, or wait for that lock, this long at most.
/// (`set_config(…, true)` is `SET LOCAL`, as one statement.)
const COMMIT_LIMITS: &str = "SELECT set_config('idle_in_transaction_session_timeout', '10s', true),
            set_config('lock_timeout', '10s', true)";

/// Read connections per replica, shared by stream backlogs, snapshot chunks and API key
/// lookups. The ledger's commits have their own connection besides (see [`PgStore`]).
const MAX_CONNECTIONS: u32 = 16;
/// `application_name` of the writer's connection, so `pg_stat_activity` tells it apart.
pub(crate) const WRITER_NAME: &str = "revocast-authority writer";
/// A request waiting longer than this for a connection fails (503) instead of hanging while
/// the database is unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    /// Everything but the ledger's commits. Nothing holds one of these connections for
    /// longer than a query or a short transaction: a snapshot reads chunk by chunk (see
    /// `send_snapshot`).
    pool: PgPool,
    /// The ledger's commits, on one connection of their own: however many readers are busy
    /// or slow, a commit never waits for a pooled connection. Kept open (no idle timeout, no
    /// lifetime); checked before each commit and re-established if it broke.
    writer: PgPool,
    options: PgConnectOptions,
}

impl PgStore {
    /// Connect to the database at `url` and run the migrations (under sqlx's advisory lock, so
    /// replicas starting together apply them once).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("revocast-authority");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // A ping before each commit: a connection the server or the network dropped
            // meanwhile is replaced there, rather than failing the commit.
            .test_before_acquire(true)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().application_name(WRITER_NAME))
            .await?;
        Ok(Self {
            pool,
            writer,
            options,
        })
    }
}

/// Begin a read-only transaction that sees one snapshot of the database throughout.
async fn begin_snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// `(epoch, head, floor, frontier)`, from one row: they agree.
async fn read_state(conn: &mut PgConnection) -> Result<(Epoch, Seq, Seq, Frontier), StoreError> {
    let (epoch, head, floor, tree): (String, i64, i64, Option<Vec<u8>>) =
        sqlx::query_as("SELECT epoch, head_seq, log_floor, frontier FROM log_state WHERE id = 1")
            .fetch_one(conn)
            .await?;
    Ok((
        Epoch::new(epoch),
        seq_of(head)?,
        seq_of(floor)?,
        frontier_of(tree)?,
    ))
}

#[derive(sqlx::FromRow)]
struct LogRow {
    seq: i64,
    kind: String,
    target: String,
    #[sqlx(rename = "gen")]
    r#gen: Option<i64>,
    expires_at: Option<i64>,
    at_ms: i64,
}

/// A row of the backlog query: the floor, and a revocation unless there are none.
#[derive(sqlx::FromRow)]
struct BacklogRow {
    log_floor: i64,
    seq: Option<i64>,
    kind: Option<String>,
    target: Option<String>,
    #[sqlx(rename = "gen")]
    r#gen: Option<i64>,
    expires_at: Option<i64>,
    at_ms: Option<i64>,
}

impl LogRow {
    fn into_event(self) -> Result<RevocationEvent, StoreError> {
        RowParts {
            seq: self.seq,
            kind: &self.kind,
            target: self.target.into(),
            r#gen: self.r#gen,
            expires_at: self.expires_at,
            at_ms: self.at_ms,
        }
        .into_event()
    }
}

impl BacklogRow {
    /// The revocation it carries; `None` for the floor-only row of an empty backlog.
    fn into_log_row(self) -> Option<LogRow> {
        Some(LogRow {
            seq: self.seq?,
            kind: self.kind?,
            target: self.target?,
            r#gen: self.r#gen,
            expires_at: self.expires_at,
            at_ms: self.at_ms?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    seed: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
    revoked_seq: Option<i64>,
    active: bool,
}

impl ReadLog for PgConnection {
    async fn read_chunk(
        &mut self,
        after: Seq,
        upto: Seq,
        in_force_at: Option<UnixSeconds>,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT seq, kind, target, gen, expires_at, at_ms FROM revocations
             WHERE seq > $1 AND seq <= $4 AND (expires_at IS NULL OR expires_at > $2)
             ORDER BY seq LIMIT $3",
        )
        .bind(to_i64(after.get())?)
        .bind(in_force_at.map_or(i64::MIN, UnixSeconds::get))
        .bind(i64::from(limit))
        .bind(i64::try_from(upto.get()).unwrap_or(i64::MAX))
        .fetch_all(self)
        .await?;
        rows.into_iter().map(LogRow::into_event).collect()
    }
}

/// The readers' pool as a [`ReadLog`]: each chunk on a connection taken for it alone (see
/// `send_snapshot`).
impl ReadLog for PgPool {
    async fn read_chunk(
        &mut self,
        after: Seq,
        upto: Seq,
        in_force_at: Option<UnixSeconds>,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        self.acquire()
            .await?
            .read_chunk(after, upto, in_force_at, limit)
            .await
    }
}

async fn read_keys(conn: &mut PgConnection) -> Result<Vec<KeyRecord>, StoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT kid, seed, created_at, retired_at, revoked_seq, active
         FROM signing_keys ORDER BY created_at, kid",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(KeyRecord {
                kid: KeyId::from_str(&row.kid).map_err(|_| corrupt("bad kid"))?,
                seed: SigningSeed::from_slice(&row.seed)
                    .ok_or_else(|| corrupt("seed is not 32 bytes"))?,
                created_at: UnixSeconds::new(row.created_at),
                retired_at: row.retired_at.map(UnixSeconds::new),
                revoked: row.revoked_seq.is_some(),
                active: row.active,
            })
        })
        .collect()
}

/// The PostgreSQL statements of a commit, inside its transaction. Revocation rows are
/// gathered and written by one multi-row INSERT at the end: every statement is a round trip
/// made while holding the log lock that every other replica's commit waits for.
struct Writer<'t, 'c> {
    tx: &'t mut Transaction<'c, Postgres>,
    pending: PendingRows,
    /// The frontier column, read with the head under the row lock (no round trip of its own).
    stored_tree: Option<Vec<u8>>,
    /// The frontier to write back with the head, if the commit appended.
    new_tree: Option<Vec<u8>>,
}

impl<'t, 'c> Writer<'t, 'c> {
    fn new(tx: &'t mut Transaction<'c, Postgres>, stored_tree: Option<Vec<u8>>) -> Self {
        Self {
            tx,
            pending: PendingRows::default(),
            stored_tree,
            new_tree: None,
        }
    }
}

/// Revocation rows not yet written, column by column (as `UNNEST` takes them).
#[derive(Default)]
struct PendingRows {
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    target: Vec<String>,
    r#gen: Vec<Option<i64>>,
    expires_at: Vec<Option<i64>>,
    at_ms: Vec<i64>,
    token_sub: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    /// `revoked_sessions` rows, `(sid, at_ms)`.
    revoked_sid: Vec<String>,
    revoked_at_ms: Vec<i64>,
    /// `log_leaves` rows, `(seq, hash)`.
    leaf_seq: Vec<i64>,
    leaf_hash: Vec<Vec<u8>>,
}

impl LogWriter for Writer<'_, '_> {
    async fn previous(
        &mut self,
        kind: OnceKind,
        target: &str,
    ) -> Result<Option<Logged>, StoreError> {
        let p = &self.pending;
        if let Some(i) =
            (0..p.seq.len()).find(|&i| p.kind[i] == kind.as_str() && p.target[i] == target)
        {
            return logged_of((p.seq[i], p.at_ms[i])).map(Some);
        }
        sqlx::query_as(
            "SELECT seq, at_ms FROM revocations
             WHERE kind IN ('token', 'key') AND kind = $1 AND target = $2",
        )
        .bind(kind.as_str())
        .bind(target)
        .fetch_optional(&mut **self.tx)
        .await?
        .map(logged_of)
        .transpose()
    }

    async fn insert_revocation(&mut self, row: NewRow<'_>) -> Result<(), StoreError> {
        let p = &mut self.pending;
        p.seq.push(row.seq);
        p.kind.push(row.kind);
        p.target.push(row.target);
        p.r#gen.push(row.r#gen);
        p.expires_at.push(row.expires_at);
        p.at_ms.push(row.at_ms);
        p.token_sub.push(row.token_sub.map(str::to_owned));
        p.reason.push(row.reason.map(str::to_owned));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let mut p = std::mem::take(&mut self.pending);
        if !p.revoked_sid.is_empty() {
            sqlx::query(
                "INSERT INTO revoked_sessions (sid, at_ms)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
            )
            .bind(std::mem::take(&mut p.revoked_sid))
            .bind(std::mem::take(&mut p.revoked_at_ms))
            .execute(&mut **self.tx)
            .await?;
        }
        if p.seq.is_empty() {
            return Ok(());
        }
        // The leaves with their rows, in the same statement: one round trip under the lock.
        sqlx::query(
            "WITH leaves AS (
                 INSERT INTO log_leaves (seq, hash)
                 SELECT * FROM UNNEST($9::bigint[], $10::bytea[]))
             INSERT INTO revocations (seq, kind, target, gen, expires_at, at_ms, token_sub, reason)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[],
                                  $5::bigint[], $6::bigint[], $7::text[], $8::text[])",
        )
        .bind(p.seq)
        .bind(p.kind)
        .bind(p.target)
        .bind(p.r#gen)
        .bind(p.expires_at)
        .bind(p.at_ms)
        .bind(p.token_sub)
        .bind(p.reason)
        .bind(p.leaf_seq)
        .bind(p.leaf_hash)
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn tree(&mut self) -> Result<Frontier, StoreError> {
        frontier_of(self.stored_tree.take())
    }

    async fn insert_leaf(&mut self, seq: i64, hash: TreeHash) -> Result<(), StoreError> {
        self.pending.leaf_seq.push(seq);
        self.pending.leaf_hash.push(hash.0.to_vec());
        Ok(())
    }

    async fn set_tree(&mut self, tree: &Frontier) -> Result<(), StoreError> {
        // Written by `commit` with the head, in its one UPDATE.
        self.new_tree = Some(tree.to_bytes());
        Ok(())
    }

    async fn raise_generation(&mut self, sub: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO subject_generations AS g (sub, gen) VALUES ($1, 1)
             ON CONFLICT (sub) DO UPDATE SET gen = g.gen + 1 RETURNING gen",
        )
        .bind(sub)
        .fetch_one(&mut **self.tx)
        .await?)
    }

    async fn key_state(&mut self, kid: &str) -> Result<Option<bool>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT active FROM signing_keys WHERE kid = $1")
                .bind(kid)
                .fetch_optional(&mut **self.tx)
                .await?,
        )
    }

    async fn has_active_key(&mut self) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active)")
                .fetch_one(&mut **self.tx)
                .await?,
        )
    }

    async fn max_ttl(&mut self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT max_ttl_secs FROM log_state WHERE id = 1")
                .fetch_one(&mut **self.tx)
                .await?,
        )
    }

    async fn activate_key(&mut self, key: &SigningKey, now: UnixSeconds) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET active = false, retired_at = COALESCE(retired_at, $1)
             WHERE active",
        )
        .bind(now.get())
        .execute(&mut **self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, seed, created_at, active) VALUES ($1, $2, $3, true)",
        )
        .bind(key.kid().to_string())
        .bind(&key.seed().expose_secret()[..])
        .bind(now.get())
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn mark_key_revoked(
        &mut self,
        kid: &str,
        seq: Seq,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET revoked_seq = $1, retired_at = COALESCE(retired_at, $2)
             WHERE kid = $3",
        )
        .bind(to_i64(seq.get())?)
        .bind(now.get())
        .bind(kid)
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn log_floor(&mut self) -> Result<Seq, StoreError> {
        let (_, _, floor, _) = read_state(self.tx).await?;
        Ok(floor)
    }

    async fn set_log_floor(&mut self, floor: Seq) -> Result<(), StoreError> {
        sqlx::query("UPDATE log_state SET log_floor = $1 WHERE id = 1")
            .bind(to_i64(floor.get())?)
            .execute(&mut **self.tx)
            .await?;
        Ok(())
    }

    async fn first_after(
        &mut self,
        floor: Seq,
        cutoff: UnixMillis,
    ) -> Result<Option<Seq>, StoreError> {
        sqlx::query_scalar(
            "SELECT seq FROM revocations WHERE seq > $1 AND at_ms > $2 ORDER BY seq LIMIT 1",
        )
        .bind(to_i64(floor.get())?)
        .bind(cutoff.as_millis())
        .fetch_optional(&mut **self.tx)
        .await?
        .map(seq_of)
        .transpose()
    }

    async fn delete_expired(
        &mut self,
        expired_by: UnixSeconds,
        floor: Seq,
        limit: u32,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM revocations WHERE seq IN (
                 SELECT seq FROM revocations WHERE expires_at <= $1 AND seq <= $2 LIMIT $3)",
        )
        .bind(expired_by.get())
        .bind(to_i64(floor.get())?)
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected())
    }

    async fn delete_ended_sessions(
        &mut self,
        expired_by: UnixSeconds,
        limit: u32,
    ) -> Result<(u64, u64), StoreError> {
        let tokens = sqlx::query(
            "DELETE FROM refresh_tokens WHERE hash IN (
                 SELECT t.hash FROM refresh_sessions s JOIN refresh_tokens t ON t.sid = s.sid
                 WHERE s.expires_at <= $1 LIMIT $2)",
        )
        .bind(expired_by.get())
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM refresh_sessions WHERE sid IN (
                 SELECT s.sid FROM refresh_sessions s
                 WHERE s.expires_at <= $1
                   AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.sid = s.sid)
                 LIMIT $2)",
        )
        .bind(expired_by.get())
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected();
        Ok((tokens, sessions))
    }

    async fn delete_lapsed_revoked_sessions(&mut self, limit: u32) -> Result<u64, StoreError> {
        // `kind = 'session'` as the partial index `revocations_session` is defined.
        Ok(sqlx::query(
            "DELETE FROM revoked_sessions WHERE sid IN (
                 SELECT r.sid FROM revoked_sessions r
                 WHERE NOT EXISTS (SELECT 1 FROM refresh_sessions s WHERE s.sid = r.sid)
                   AND NOT EXISTS (SELECT 1 FROM revocations l
                                   WHERE l.kind = 'session' AND l.target = r.sid)
                 LIMIT $1)",
        )
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected())
    }

    async fn mark_session_revoked(&mut self, sid: &str, at: UnixMillis) -> Result<(), StoreError> {
        self.pending.revoked_sid.push(sid.to_owned());
        self.pending.revoked_at_ms.push(at.as_millis());
        Ok(())
    }

    async fn is_session_revoked(&mut self, sid: &str) -> Result<bool, StoreError> {
        if self.pending.revoked_sid.iter().any(|s| s == sid) {
            return Ok(true);
        }
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE sid = $1)")
                .bind(sid)
                .fetch_one(&mut **self.tx)
                .await?,
        )
    }

    async fn refresh_state(&mut self, hash: &[u8; 32]) -> Result<Option<RefreshState>, StoreError> {
        sqlx::query_as::<_, RefreshRow>(REFRESH_STATE)
            .bind(&hash[..])
            .fetch_optional(&mut **self.tx)
            .await?
            .map(RefreshRow::into_state)
            .transpose()
    }

    async fn insert_session(
        &mut self,
        m: &StartSession,
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "INSERT INTO refresh_sessions (sid, sub, gen, grant_json, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sid) DO NOTHING",
        )
        .bind(&m.sid)
        .bind(&m.sub)
        .bind(to_i64(m.r#gen)?)
        .bind(&m.grant)
        .bind(now.get())
        .bind(m.expires_at.get())
        .execute(&mut **self.tx)
        .await?
        .rows_affected()
            == 1)
    }

    async fn insert_refresh_token(
        &mut self,
        token: &NewRefreshToken,
        sid: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, sid, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.hash[..])
        .bind(sid)
        .bind(now.get())
        .bind(token.expires_at.get())
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn mark_refresh_used(
        &mut self,
        hash: &[u8; 32],
        sid: &str,
        at: UnixMillis,
        successor: &[u8; 32],
        sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET sealed = NULL
             WHERE sid = $1 AND successor = $2 AND sealed IS NOT NULL",
        )
        .bind(sid)
        .bind(&hash[..])
        .execute(&mut **self.tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE refresh_tokens SET used_at_ms = $1, successor = $2, sealed = $3
             WHERE hash = $4 AND used_at_ms IS NULL",
        )
        .bind(at.as_millis())
        .bind(&successor[..])
        .bind(sealed)
        .bind(&hash[..])
        .execute(&mut **self.tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::Invariant("a live refresh token was not live"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn load(&self, now: UnixSeconds) -> Result<Loaded, StoreError> {
        let mut tx = begin_snapshot(&self.pool).await?;
        let (epoch, head, _, _) = read_state(&mut tx).await?;
        let keys = read_keys(&mut tx).await?;
        let revocations = read_in_force(&mut *tx, head, now).await?;
        let subject_generations =
            sqlx::query_as::<_, (String, i64)>("SELECT sub, gen FROM subject_generations")
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(sub, g)| Ok((sub, generation_of(g)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await?;
        Ok(Loaded {
            epoch,
            head,
            keys,
            revocations,
            subject_generations,
        })
    }

    async fn commit(&self, at: UnixMillis, batch: &[Mutation]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        // If this replica stalls or vanishes mid-commit, the server ends the transaction and
        // frees the log for the other replicas instead of waiting for TCP to notice.
        sqlx::query(COMMIT_LIMITS).execute(&mut *tx).await?;
        // The row lock that orders every commit of every replica (see the module doc).
        let (start, tree): (i64, Option<Vec<u8>>) =
            sqlx::query_as("SELECT head_seq, frontier FROM log_state WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let start = seq_of(start)?;
        let mut writer = Writer::new(&mut tx, tree);
        let applied = apply_batch(&mut writer, start, at, batch).await?;
        let new_tree = writer.new_tree.take();
        if applied.head != start {
            let head = to_i64(applied.head.get())?;
            // The frontier beside the head, in one statement (unchanged if nothing appended,
            // which cannot move the head, but the column stays as it was either way).
            sqlx::query(
                "UPDATE log_state SET head_seq = $1, frontier = COALESCE($2, frontier) WHERE id = 1",
            )
            .bind(head)
            .bind(new_tree)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(LOG_CHANNEL)
                .bind(head.to_string())
                .execute(&mut *tx)
                .await?;
        }
        if applied.keys_changed {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(KEYS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(applied.outcomes)
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Backlog, StoreError> {
        // One statement sees one snapshot, so the floor and the rows agree without a
        // transaction: one round trip, which matters when a busy replica follows the log.
        let rows: Vec<BacklogRow> = sqlx::query_as(
            "SELECT st.log_floor, r.seq, r.kind, r.target, r.gen, r.expires_at, r.at_ms
             FROM log_state st
             LEFT JOIN LATERAL (
                 SELECT seq, kind, target, gen, expires_at, at_ms FROM revocations
                 WHERE seq > $1 ORDER BY seq LIMIT $2
             ) r ON true
             WHERE st.id = 1
             ORDER BY r.seq",
        )
        .bind(to_i64(after.get())?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let floor = seq_of(
            rows.first()
                .ok_or_else(|| corrupt("no log_state row"))?
                .log_floor,
        )?;
        if after < floor {
            return Ok(Backlog::Pruned { floor });
        }
        // With no revocation after `after`, the one row holds only the floor.
        let events = rows
            .into_iter()
            .filter_map(BacklogRow::into_log_row)
            .map(LogRow::into_event)
            .collect::<Result<Vec<_>, _>>()?;
        check_contiguous(after, &events)?;
        Ok(Backlog::Events(events))
    }

    async fn snapshot(
        &self,
        now: UnixSeconds,
        out: mpsc::Sender<SnapshotPart>,
    ) -> Result<(), StoreError> {
        // The head first, then chunk by chunk up to it: no connection is held while `out` is
        // full.
        let (epoch, seq, _, tree) = read_state(&mut *self.pool.acquire().await?).await?;
        send_snapshot(self.pool.clone(), (epoch, seq, tree), now, &out).await
    }

    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let (_, head, floor, tree) = read_state(&mut *self.pool.acquire().await?).await?;
        Ok(TreeHead { head, floor, tree })
    }

    async fn leaf_hashes(&self, after: u64, limit: u32) -> Result<Vec<TreeHash>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM log_leaves WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(to_i64(after)?)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        leaves_of(after, rows)
    }

    async fn log_rows(&self, after: Seq, limit: u32) -> Result<Vec<RevocationEvent>, StoreError> {
        self.pool
            .acquire()
            .await?
            .read_chunk(after, Seq::new(u64::MAX), None, limit)
            .await
    }

    async fn log_keys(&self) -> Result<Vec<LogKeyRecord>, StoreError> {
        let rows: Vec<(String, Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT kid, seed, created_at, signs_from FROM log_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(log_key_of).collect()
    }

    async fn insert_log_key(&self, key: &LogKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO log_keys (kid, seed, created_at, signs_from) VALUES ($1, $2, $3, $4)",
        )
        .bind(key.kid.to_string())
        .bind(&key.seed.expose_secret()[..])
        .bind(key.created_at.as_millis())
        .bind(key.signs_from.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT note FROM log_checkpoint WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn save_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        // Replicas sign concurrently: the larger checkpoint stays.
        sqlx::query(
            "INSERT INTO log_checkpoint (id, size, note) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note
             WHERE excluded.size >= log_checkpoint.size",
        )
        .bind(to_i64(size)?)
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        read_keys(&mut *self.pool.acquire().await?).await
    }

    async fn claim_issuer(&self, issuer: &str) -> Result<String, StoreError> {
        // One statement on the one `log_state` row: a second replica's update waits for the
        // first one's row lock and then keeps the issuer it recorded.
        Ok(sqlx::query_scalar(
            "UPDATE log_state SET issuer = COALESCE(issuer, $1) WHERE id = 1 RETURNING issuer",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn raise_max_ttl(&self, secs: i64) -> Result<i64, StoreError> {
        // One statement on the one `log_state` row, which every commit locks too: a commit
        // after this one sees the raised value.
        Ok(sqlx::query_scalar(
            "UPDATE log_state SET max_ttl_secs = GREATEST(max_ttl_secs, $1) WHERE id = 1
             RETURNING max_ttl_secs",
        )
        .bind(secs)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn share_fleet(
        &self,
        replica: &str,
        now: UnixMillis,
        rows: &[FleetRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO fleet_replicas (replica, updated_at) VALUES ($1, $2)
             ON CONFLICT (replica) DO UPDATE SET updated_at = EXCLUDED.updated_at",
        )
        .bind(replica)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM fleet_subscribers WHERE replica = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        // One statement for the whole fleet, column by column.
        let col = |f: fn(&FleetRecord) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO fleet_subscribers (replica, id, name, version, transport, remote,
                 connected_at, applied, acked_at, lag_events, lag_ms, last_heard, resyncs,
                 acks_ignored)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                 $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[],
                 $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[])",
        )
        .bind(replica)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.version.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.transport.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.remote.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.connected_at).collect::<Vec<_>>())
        .bind(col(|r| r.applied))
        .bind(col(|r| r.acked_at))
        .bind(col(|r| r.lag_events))
        .bind(col(|r| r.lag_ms))
        .bind(col(|r| r.last_heard))
        .bind(col(|r| r.resyncs))
        .bind(rows.iter().map(|r| r.acks_ignored).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        // Replicas that stopped sharing a minute ago are gone.
        let gone = now.as_millis().saturating_sub(60_000);
        sqlx::query(
            "DELETE FROM fleet_subscribers WHERE replica IN
                 (SELECT replica FROM fleet_replicas WHERE updated_at < $1)",
        )
        .bind(gone)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM fleet_replicas WHERE updated_at < $1")
            .bind(gone)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn shared_fleet(
        &self,
        replica: &str,
        fresh_since: UnixMillis,
    ) -> Result<Vec<FleetRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.replica, s.id, s.name, s.version, s.transport, s.remote, s.connected_at,
                    s.applied, s.acked_at, s.lag_events, s.lag_ms, s.last_heard, s.resyncs,
                    s.acks_ignored
             FROM fleet_subscribers s JOIN fleet_replicas r ON r.replica = s.replica
             WHERE r.updated_at >= $1 AND s.replica <> $2
             ORDER BY s.replica, s.id",
        )
        .bind(fresh_since.as_millis())
        .bind(replica)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn max_ttl(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT max_ttl_secs FROM log_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn insert_first_api_keys(
        &self,
        keys: &[NewApiKey<'_>],
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Writers of other tables go on; a second initialiser waits here until we commit, and
        // then sees our keys.
        sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            return Ok(false);
        }
        for key in keys {
            insert_api_key(&mut tx, key, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn doorbell(&self) -> Result<Option<Box<dyn Doorbell>>, StoreError> {
        let mut bell = PgDoorbell {
            pool: PgPoolOptions::new()
                .max_connections(1)
                .max_lifetime(None)
                .idle_timeout(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(self.options.clone()),
            listener: None,
            backoff: BACKOFF_MIN,
        };
        bell.listener = Some(bell.listen().await?);
        Ok(Some(Box::new(bell)))
    }

    async fn api_key_scope(&self, hash: &[u8; 32]) -> Result<Option<Scope>, StoreError> {
        let scope: Option<String> =
            sqlx::query_scalar("SELECT scope FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?;
        scope_of(scope)
    }

    async fn insert_api_key(
        &self,
        hash: &[u8; 32],
        scope: Scope,
        label: Option<&str>,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        let key = NewApiKey {
            hash: *hash,
            scope,
            label,
        };
        insert_api_key(&mut *self.pool.acquire().await?, &key, now).await
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        sqlx::query_as::<_, ApiKeyRow>(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, hash"
        ))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(api_key_of)
        .collect()
    }

    async fn revoke_api_key(
        &self,
        hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query_as::<_, ApiKeyRow>(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE hash = $2
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now.get())
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?
        .map(api_key_of)
        .transpose()
    }

    async fn refresh_token(&self, hash: &[u8; 32]) -> Result<Option<RefreshState>, StoreError> {
        sqlx::query_as::<_, RefreshRow>(REFRESH_STATE)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?
            .map(RefreshRow::into_state)
            .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

async fn insert_api_key(
    conn: &mut PgConnection,
    key: &NewApiKey<'_>,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (hash, scope, label, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&key.hash[..])
        .bind(key.scope.as_str())
        .bind(key.label)
        .bind(now.get())
        .execute(conn)
        .await?;
    Ok(())
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// LISTENs on its own connection (not one of the pool's), reconnecting with backoff.
struct PgDoorbell {
    pool: PgPool,
    listener: Option<PgListener>,
    backoff: Duration,
}

impl PgDoorbell {
    async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([LOG_CHANNEL, KEYS_CHANNEL]).await?;
        Ok(listener)
    }
}

#[async_trait]
impl Doorbell for PgDoorbell {
    async fn ring(&mut self) -> Ring {
        loop {
            let Some(listener) = &mut self.listener else {
                match self.listen().await {
                    Ok(listener) => {
                        tracing::info!("database notifications resumed");
                        self.listener = Some(listener);
                        self.backoff = BACKOFF_MIN;
                        return Ring::Reconnected;
                    }
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, retry_in = ?self.backoff, "cannot listen for database notifications");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            };
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == KEYS_CHANNEL => return Ring::Keys,
                Ok(Some(n)) if n.channel() == LOG_CHANNEL => {
                    match n.payload().parse::<u64>() {
                        Ok(seq) => return Ring::Log(Seq::new(seq)),
                        // Not from us; treat it as a reason to look.
                        Err(_) => return Ring::Reconnected,
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!("lost the database notification connection");
                    self.listener = None;
                }
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "database notifications failed"
                    );
                    self.listener = None;
                }
            }
        }
    }
}
