//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`, so every
//! commit is fsynced before it returns. Only the ledger task writes (one transaction per group
//! of requests), on a connection of its own; readers run concurrently thanks to WAL, on a
//! small pool of other connections.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use revocast_shared::crypto::SigningSeed;
use revocast_shared::event::RevocationEvent;
use revocast_shared::tlog::{Frontier, TreeHash};
use revocast_shared::{Epoch, KeyId, Seq, SigningKey, UnixMillis, UnixSeconds};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use tokio::sync::mpsc;

use super::commit::{LogWriter, OnceKind, apply_batch};
use super::log::{
    API_KEY_COLUMNS, ApiKeyRow, NewRow, REFRESH_STATE, ReadLog, RefreshRow, RowParts, api_key_of,
    check_contiguous, corrupt, frontier_of, generation_of, leaves_of, log_key_of, logged_of,
    read_in_force, scope_of, send_snapshot, seq_of, to_i64,
};
use super::{
    ApiKeyRecord, Backlog, KeyRecord, Loaded, LogKeyRecord, Logged, Mutation, NewApiKey,
    NewRefreshToken, Outcome, RefreshState, SnapshotPart, StartSession, Store, TreeHead,
};
use crate::config::Scope;
use crate::error::StoreError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "revocast.db";

/// Read connections: stream backlogs, snapshot chunks, API-key lookups, start-up loads.
const READERS: u32 = 4;

pub struct SqliteStore {
    /// The readers' pool ([`READERS`] connections). Nothing here holds one for longer than a
    /// query or a short read transaction: a snapshot reads chunk by chunk (see `send_snapshot`).
    pool: SqlitePool,
    /// The writer: one connection that only writes go through — the ledger's commits above
    /// all. It is not one of the readers', so no number of readers, however slow, can make a
    /// commit wait for a connection; WAL lets it commit while they read, and one connection
    /// for every write means two of our transactions never contend for SQLite's write lock.
    writer: SqlitePool,
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
        // First, so the file is created and switched to WAL before the readers open it. Kept
        // open for the store's life; the pool reopens it if it ever breaks.
        // No `SELECT 1` before each use (sqlx's default guards network connections): on a
        // file it is one more round trip to the connection's worker thread per commit, ~0.1 ms
        // of a ~1.5 ms commit here, and a broken connection fails the commit it is used for
        // anyway (503, retried).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }
}

/// A `seq` kept in `meta`: `head_seq` (the log's head) or `log_floor` (see the migration).
async fn read_meta_seq(conn: &mut sqlx::SqliteConnection, name: &str) -> Result<Seq, StoreError> {
    let value: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
        .bind(name)
        .fetch_one(conn)
        .await?;
    value
        .parse()
        .map(Seq::new)
        .map_err(|_| corrupt(format!("{name} is not a number")))
}

async fn read_head(conn: &mut sqlx::SqliteConnection) -> Result<Seq, StoreError> {
    read_meta_seq(conn, "head_seq").await
}

async fn read_epoch(conn: &mut sqlx::SqliteConnection) -> Result<Epoch, StoreError> {
    let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'epoch'")
        .fetch_one(conn)
        .await?;
    Ok(Epoch::new(epoch))
}

async fn read_tree(conn: &mut sqlx::SqliteConnection) -> Result<Frontier, StoreError> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT frontier FROM log_tree WHERE id = 1")
        .fetch_optional(conn)
        .await?;
    frontier_of(stored)
}

/// The next chunk of the log after a `seq` (`?1`) up to another (`?4`), oldest first, at most
/// `?3` revocations, of
/// those still in force at a time (`?2`; `i64::MIN` for all): one row holding a JSON array of
/// row arrays. sqlx hands every row from its SQLite thread to ours through a channel, and
/// every value through SQLite's allocator under a global mutex; a million one-event rows spend
/// most of their time there. One row per chunk, built by SQLite's JSON functions, pays it once.
const CHUNK: &str = "SELECT count(*), max(seq),
         json_group_array(json_array(seq, kind, target, gen, expires_at, at_ms) ORDER BY seq)
     FROM (SELECT seq, kind, target, gen, expires_at, at_ms FROM revocations
           WHERE seq > ?1 AND seq <= ?4 AND (expires_at IS NULL OR expires_at > ?2)
           ORDER BY seq LIMIT ?3)";

impl ReadLog for sqlx::SqliteConnection {
    /// One [`CHUNK`], checked against its own count.
    async fn read_chunk(
        &mut self,
        after: Seq,
        upto: Seq,
        in_force_at: Option<UnixSeconds>,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError> {
        let after = to_i64(after.get())?;
        let (count, last, json): (i64, Option<i64>, String) = sqlx::query_as(CHUNK)
            .bind(after)
            .bind(in_force_at.map_or(i64::MIN, UnixSeconds::get))
            .bind(i64::from(limit))
            .bind(i64::try_from(upto.get()).unwrap_or(i64::MAX))
            .fetch_one(self)
            .await?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        let rows: Vec<RowParts<'_>> =
            serde_json::from_str(&json).map_err(|e| corrupt(format!("revocation chunk: {e}")))?;
        let mut previous = after;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            if row.seq <= previous {
                return Err(corrupt("revocation chunk out of seq order"));
            }
            previous = row.seq;
            events.push(row.into_event()?);
        }
        if previous != last || events.len() as i64 != count {
            return Err(corrupt("revocation chunk does not match its count"));
        }
        Ok(events)
    }
}

/// The readers' pool as a [`ReadLog`]: each chunk on a connection taken for it alone (see
/// `send_snapshot`).
impl ReadLog for SqlitePool {
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

/// The SQLite statements of a commit, inside its transaction.
struct Writer<'t, 'c> {
    tx: &'t mut Transaction<'c, Sqlite>,
    /// Leaf hashes held for [`LogWriter::flush`]: a commit's leaves have consecutive `seq`s,
    /// so they go in as one statement (the first `seq` and the hashes end to end) instead of
    /// one per event. Each sqlx statement is a hand-off to the connection's worker thread and
    /// back, which is what an extra statement per event costs on ingest.
    leaves: PendingLeaves,
}

impl<'t, 'c> Writer<'t, 'c> {
    fn new(tx: &'t mut Transaction<'c, Sqlite>) -> Self {
        Self {
            tx,
            leaves: PendingLeaves::default(),
        }
    }
}

/// Consecutive leaves from `first`: hash `i` is `hashes[32 * i..32 * (i + 1)]`.
#[derive(Default)]
struct PendingLeaves {
    first: i64,
    hashes: Vec<u8>,
}

impl PendingLeaves {
    fn len(&self) -> i64 {
        (self.hashes.len() / 32) as i64
    }
}

/// Inserts `?3` leaves from seq `?1`, taking each 32-byte hash from the blob `?2` in turn (a
/// recursive count, since `generate_series` is not in every SQLite build).
const INSERT_LEAVES: &str =
    "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?3)
     INSERT INTO log_leaves (seq, hash) SELECT ?1 + n, substr(?2, 32 * n + 1, 32) FROM i";

impl LogWriter for Writer<'_, '_> {
    async fn previous(
        &mut self,
        kind: OnceKind,
        target: &str,
    ) -> Result<Option<Logged>, StoreError> {
        sqlx::query_as(PREVIOUS)
            .bind(kind.as_str())
            .bind(target)
            .fetch_optional(&mut **self.tx)
            .await?
            .map(logged_of)
            .transpose()
    }

    async fn raise_generation(&mut self, sub: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO subject_generations (sub, gen) VALUES (?, 1)
             ON CONFLICT (sub) DO UPDATE SET gen = gen + 1 RETURNING gen",
        )
        .bind(sub)
        .fetch_one(&mut **self.tx)
        .await?)
    }

    async fn insert_revocation(&mut self, row: NewRow<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revocations (seq, kind, target, gen, expires_at, at_ms, token_sub, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.seq)
        .bind(row.kind)
        .bind(row.target)
        .bind(row.r#gen)
        .bind(row.expires_at)
        .bind(row.at_ms)
        .bind(row.token_sub)
        .bind(row.reason)
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn tree(&mut self) -> Result<Frontier, StoreError> {
        read_tree(self.tx).await
    }

    async fn insert_leaf(&mut self, seq: i64, hash: TreeHash) -> Result<(), StoreError> {
        let pending = &mut self.leaves;
        if !pending.hashes.is_empty() && pending.first + pending.len() != seq {
            // Not the next one (no commit does this): what is held goes in first.
            self.flush().await?;
        }
        let pending = &mut self.leaves;
        if pending.hashes.is_empty() {
            pending.first = seq;
        }
        pending.hashes.extend_from_slice(&hash.0);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.leaves.hashes.is_empty() {
            return Ok(());
        }
        let PendingLeaves { first, hashes } = std::mem::take(&mut self.leaves);
        let count = (hashes.len() / 32) as i64;
        let inserted = sqlx::query(INSERT_LEAVES)
            .bind(first)
            .bind(hashes)
            .bind(count)
            .execute(&mut **self.tx)
            .await?
            .rows_affected();
        if inserted != count as u64 {
            return Err(corrupt(format!(
                "{inserted} transparency log leaves went in from seq {first}, not {count}"
            )));
        }
        Ok(())
    }

    async fn set_tree(&mut self, tree: &Frontier) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO log_tree (id, frontier) VALUES (1, ?)
             ON CONFLICT (id) DO UPDATE SET frontier = excluded.frontier",
        )
        .bind(tree.to_bytes())
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn key_state(&mut self, kid: &str) -> Result<Option<bool>, StoreError> {
        let active: Option<i64> =
            sqlx::query_scalar("SELECT active FROM signing_keys WHERE kid = ?")
                .bind(kid)
                .fetch_optional(&mut **self.tx)
                .await?;
        Ok(active.map(|a| a == 1))
    }

    async fn has_active_key(&mut self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys WHERE active = 1")
            .fetch_one(&mut **self.tx)
            .await?;
        Ok(n > 0)
    }

    async fn max_ttl(&mut self) -> Result<i64, StoreError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'max_ttl_secs'")
                .fetch_optional(&mut **self.tx)
                .await?;
        stored.as_deref().map_or(Ok(0), parse_max_ttl)
    }

    async fn activate_key(&mut self, key: &SigningKey, now: UnixSeconds) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET active = 0, retired_at = COALESCE(retired_at, ?) WHERE active = 1",
        )
        .bind(now.get())
        .execute(&mut **self.tx)
        .await?;
        sqlx::query("INSERT INTO signing_keys (kid, seed, created_at, active) VALUES (?, ?, ?, 1)")
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
            "UPDATE signing_keys SET revoked_seq = ?, retired_at = COALESCE(retired_at, ?)
             WHERE kid = ?",
        )
        .bind(to_i64(seq.get())?)
        .bind(now.get())
        .bind(kid)
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn log_floor(&mut self) -> Result<Seq, StoreError> {
        read_meta_seq(self.tx, "log_floor").await
    }

    async fn set_log_floor(&mut self, floor: Seq) -> Result<(), StoreError> {
        sqlx::query("UPDATE meta SET value = ? WHERE name = 'log_floor'")
            .bind(floor.get().to_string())
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
            "SELECT seq FROM revocations WHERE seq > ? AND at_ms > ? ORDER BY seq LIMIT 1",
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
                 SELECT seq FROM revocations WHERE expires_at <= ? AND seq <= ? LIMIT ?)",
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
                 WHERE s.expires_at <= ? LIMIT ?)",
        )
        .bind(expired_by.get())
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM refresh_sessions WHERE sid IN (
                 SELECT s.sid FROM refresh_sessions s
                 WHERE s.expires_at <= ?
                   AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.sid = s.sid)
                 LIMIT ?)",
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
                 LIMIT ?)",
        )
        .bind(i64::from(limit))
        .execute(&mut **self.tx)
        .await?
        .rows_affected())
    }

    async fn mark_session_revoked(&mut self, sid: &str, at: UnixMillis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sid, at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(sid)
        .bind(at.as_millis())
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn is_session_revoked(&mut self, sid: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM revoked_sessions WHERE sid = ?")
            .bind(sid)
            .fetch_optional(&mut **self.tx)
            .await?;
        Ok(found.is_some())
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sid) DO NOTHING",
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
            "INSERT INTO refresh_tokens (hash, sid, issued_at, expires_at) VALUES (?, ?, ?, ?)",
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
             WHERE sid = ? AND successor = ? AND sealed IS NOT NULL",
        )
        .bind(sid)
        .bind(&hash[..])
        .execute(&mut **self.tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE refresh_tokens SET used_at_ms = ?, successor = ?, sealed = ?
             WHERE hash = ? AND used_at_ms IS NULL",
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

/// The earlier revocation of a token or key. The query repeats the partial index's own
/// condition, `kind IN ('token', 'key')`: SQLite uses a partial index only when the query's
/// WHERE contains that term, and without the index every revoke scanned the whole log.
const PREVIOUS: &str = "SELECT seq, at_ms FROM revocations
     WHERE kind IN ('token', 'key') AND kind = ? AND target = ?";

async fn read_keys(conn: &mut sqlx::SqliteConnection) -> Result<Vec<KeyRecord>, StoreError> {
    let mut keys = Vec::new();
    for row in sqlx::query(
            "SELECT kid, seed, created_at, retired_at, revoked_seq, active FROM signing_keys ORDER BY created_at",
        )
        .fetch_all(conn)
        .await?
        {
            let seed: Vec<u8> = row.try_get("seed")?;
            keys.push(KeyRecord {
                kid: KeyId::from_str(row.try_get("kid")?).map_err(|_| corrupt("bad kid"))?,
                seed: SigningSeed::from_slice(&seed).ok_or_else(|| corrupt("seed is not 32 bytes"))?,
                created_at: UnixSeconds::new(row.try_get("created_at")?),
                retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(UnixSeconds::new),
                revoked: row.try_get::<Option<i64>, _>("revoked_seq")?.is_some(),
                active: row.try_get::<i64, _>("active")? == 1,
            });
        }

    Ok(keys)
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, now: UnixSeconds) -> Result<Loaded, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let epoch = read_epoch(&mut conn).await?;
        let head = read_head(&mut conn).await?;
        let keys = read_keys(&mut conn).await?;
        let revocations = read_in_force(&mut *conn, head, now).await?;

        let subject_generations =
            sqlx::query_as::<_, (String, i64)>("SELECT sub, gen FROM subject_generations")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(sub, g)| Ok((sub, generation_of(g)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;

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
        let start = read_head(&mut tx).await?;
        let applied = apply_batch(&mut Writer::new(&mut tx), start, at, batch).await?;
        if applied.head != start {
            sqlx::query("UPDATE meta SET value = ? WHERE name = 'head_seq'")
                .bind(applied.head.get().to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(applied.outcomes)
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Backlog, StoreError> {
        // One read transaction, so a concurrent prune cannot slip between the floor check and
        // the rows.
        let mut tx = self.pool.begin().await?;
        let floor = read_meta_seq(&mut tx, "log_floor").await?;
        if after < floor {
            return Ok(Backlog::Pruned { floor });
        }
        let events = tx
            .read_chunk(after, Seq::new(u64::MAX), None, limit)
            .await?;
        check_contiguous(after, &events)?;
        Ok(Backlog::Events(events))
    }

    async fn snapshot(
        &self,
        now: UnixSeconds,
        out: mpsc::Sender<SnapshotPart>,
    ) -> Result<(), StoreError> {
        // The head first (the epoch never changes), then chunk by chunk up to it: no
        // connection is held while `out` is full.
        let head = {
            // One read transaction: the head and the tree's frontier agree.
            let mut tx = self.pool.begin().await?;
            (
                read_epoch(&mut tx).await?,
                read_head(&mut tx).await?,
                read_tree(&mut tx).await?,
            )
        };
        send_snapshot(self.pool.clone(), head, now, &out).await
    }

    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let mut tx = self.pool.begin().await?;
        Ok(TreeHead {
            head: read_head(&mut tx).await?,
            floor: read_meta_seq(&mut tx, "log_floor").await?,
            tree: read_tree(&mut tx).await?,
        })
    }

    async fn leaf_hashes(&self, after: u64, limit: u32) -> Result<Vec<TreeHash>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM log_leaves WHERE seq > ? ORDER BY seq LIMIT ?")
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
        sqlx::query("INSERT INTO log_keys (kid, seed, created_at, signs_from) VALUES (?, ?, ?, ?)")
            .bind(key.kid.to_string())
            .bind(&key.seed.expose_secret()[..])
            .bind(key.created_at.as_millis())
            .bind(key.signs_from.as_millis())
            .execute(&self.writer)
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
        sqlx::query(
            "INSERT INTO log_checkpoint (id, size, note) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note
             WHERE excluded.size >= log_checkpoint.size",
        )
        .bind(to_i64(size)?)
        .bind(note)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn load_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        read_keys(&mut *self.pool.acquire().await?).await
    }

    async fn claim_issuer(&self, issuer: &str) -> Result<String, StoreError> {
        // Recorded once and never changed, so the read after the insert sees the winner.
        sqlx::query("INSERT OR IGNORE INTO meta (name, value) VALUES ('issuer', ?)")
            .bind(issuer)
            .execute(&self.writer)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'issuer'")
                .fetch_one(&self.writer)
                .await?,
        )
    }

    async fn raise_max_ttl(&self, secs: i64) -> Result<i64, StoreError> {
        // One statement, so the read-modify-write is atomic under SQLite's write lock.
        let raised: String = sqlx::query_scalar(
            "INSERT INTO meta (name, value) VALUES ('max_ttl_secs', ?1)
             ON CONFLICT (name) DO UPDATE
                 SET value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)
             RETURNING value",
        )
        .bind(secs.to_string())
        .fetch_one(&self.writer)
        .await?;
        parse_max_ttl(&raised)
    }

    async fn max_ttl(&self) -> Result<i64, StoreError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'max_ttl_secs'")
                .fetch_optional(&self.pool)
                .await?;
        stored.as_deref().map_or(Ok(0), parse_max_ttl)
    }

    async fn insert_first_api_keys(
        &self,
        keys: &[NewApiKey<'_>],
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        // The first statement writes (or not) under SQLite's single write lock, which the
        // transaction then holds: nobody can store a key between the check and the inserts.
        let mut first = true;
        for key in keys {
            let inserted = sqlx::query(if first {
                "INSERT INTO api_keys (hash, scope, label, created_at)
                 SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM api_keys)"
            } else {
                "INSERT INTO api_keys (hash, scope, label, created_at) VALUES (?, ?, ?, ?)"
            })
            .bind(&key.hash[..])
            .bind(key.scope.as_str())
            .bind(key.label)
            .bind(now.get())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if first && inserted == 0 {
                return Ok(false);
            }
            first = false;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn api_key_scope(&self, hash: &[u8; 32]) -> Result<Option<Scope>, StoreError> {
        let scope: Option<String> =
            sqlx::query_scalar("SELECT scope FROM api_keys WHERE hash = ? AND revoked_at IS NULL")
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
        sqlx::query("INSERT INTO api_keys (hash, scope, label, created_at) VALUES (?, ?, ?, ?)")
            .bind(&hash[..])
            .bind(scope.as_str())
            .bind(label)
            .bind(now.get())
            .execute(&self.writer)
            .await?;
        Ok(())
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
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE hash = ?
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now.get())
        .bind(&hash[..])
        .fetch_optional(&self.writer)
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

/// The `max_ttl_secs` meta row's value.
fn parse_max_ttl(stored: &str) -> Result<i64, StoreError> {
    stored
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("max_ttl_secs is not a number: {stored:?}")))
}

#[cfg(test)]
mod tests {
    use revocast_shared::RevocationId;
    use revocast_shared::event::Revocation;

    use super::super::log::IN_FORCE_CHUNK_LEN;
    use super::super::{RevokeSession, RevokeToken};
    use super::*;

    /// Every lookup on the revoke path must use an index: a scan makes each revoke O(log size).
    #[tokio::test]
    async fn revoke_path_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {PREVIOUS}"))
                .bind("token")
                .bind("x")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let detail: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            detail.iter().any(|d| d.contains("INDEX revocations_once")),
            "{detail:?}"
        );
        assert!(!detail.iter().any(|d| d.starts_with("SCAN")), "{detail:?}");
    }

    /// Start-up load and snapshot read in chunks: across chunk boundaries, with expired rows
    /// and awkward strings in between, they hold exactly the revocations in force, in order.
    #[tokio::test]
    async fn load_and_snapshot_read_every_chunk_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let n = IN_FORCE_CHUNK_LEN as usize * 2 + 7;
        let batch: Vec<Mutation> = (0..n)
            .map(|i| {
                // Every third one is already over; sids carry quotes, newlines and non-ASCII.
                let until = UnixSeconds::new(if i % 3 == 0 { 500 } else { 2_000 });
                if i % 2 == 0 {
                    Mutation::RevokeSession(RevokeSession {
                        sid: format!("s\"{i}\n\u{e9}\\"),
                        until,
                        reason: None,
                    })
                } else {
                    Mutation::RevokeToken(RevokeToken {
                        rid: RevocationId::of_signature(&i.to_le_bytes()),
                        sub: format!("sub{i}"),
                        exp: until,
                        reason: None,
                    })
                }
            })
            .collect();
        store.commit(UnixMillis::new(1), &batch).await.unwrap();
        let expected: Vec<Seq> = (0..n)
            .filter(|i| i % 3 != 0)
            .map(|i| Seq::new(i as u64 + 1))
            .collect();

        let loaded = store.load(UnixSeconds::new(1_000)).await.unwrap();
        let seqs: Vec<Seq> = loaded.revocations.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, expected);
        assert!(loaded.revocations.iter().any(|e| matches!(
            &e.revocation,
            Revocation::Session { sid, .. } if sid == "s\"2\n\u{e9}\\"
        )));

        let (tx, mut rx) = mpsc::channel(4);
        let collect = async {
            let mut events = Vec::new();
            let mut ended = false;
            while let Some(part) = rx.recv().await {
                match part {
                    SnapshotPart::Head { seq, .. } => assert_eq!(seq, Seq::new(n as u64)),
                    SnapshotPart::Events(chunk) => events.extend(chunk),
                    SnapshotPart::End => ended = true,
                }
            }
            (events, ended)
        };
        let (read, (events, ended)) =
            tokio::join!(store.snapshot(UnixSeconds::new(1_000), tx), collect);
        read.unwrap();
        assert!(ended);
        assert_eq!(events, loaded.revocations);
    }

    /// A snapshot whose reader takes nothing after the head holds no connection: with twice
    /// as many of them as there are read connections, commits, key lookups and other reads go
    /// on at once. What is committed meanwhile stays out of them (it is above their head),
    /// and each still reads exactly what was in force at its head.
    #[tokio::test]
    async fn stalled_snapshots_hold_no_connection_and_stay_at_their_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let session = |i: usize| {
            Mutation::RevokeSession(RevokeSession {
                sid: format!("s{i}"),
                until: UnixSeconds::new(2_000),
                reason: None,
            })
        };
        let n = IN_FORCE_CHUNK_LEN as usize * 2 + 1;
        let batch: Vec<Mutation> = (0..n).map(session).collect();
        store.commit(UnixMillis::new(1), &batch).await.unwrap();

        let mut stalled = Vec::new();
        for _ in 0..READERS * 2 {
            let (tx, mut rx) = mpsc::channel(1);
            let reader = tokio::spawn({
                let store = std::sync::Arc::clone(&store);
                async move { store.snapshot(UnixSeconds::new(1_000), tx).await }
            });
            let Some(SnapshotPart::Head { seq, .. }) = rx.recv().await else {
                panic!("no head");
            };
            assert_eq!(seq, Seq::new(n as u64));
            stalled.push((reader, rx));
        }
        let within = Duration::from_secs(2);
        let more: Vec<Mutation> = (n..n + 10).map(session).collect();
        tokio::time::timeout(within, store.commit(UnixMillis::new(2), &more))
            .await
            .expect("a commit waited for stalled snapshots")
            .unwrap();
        tokio::time::timeout(within, store.api_key_scope(&[0; 32]))
            .await
            .expect("a key lookup waited for stalled snapshots")
            .unwrap();
        tokio::time::timeout(within, store.events_after(Seq::new(n as u64), 100))
            .await
            .expect("a backlog read waited for stalled snapshots")
            .unwrap();

        for (reader, mut rx) in stalled {
            let mut seqs = Vec::new();
            let mut ended = false;
            while let Some(part) = rx.recv().await {
                match part {
                    SnapshotPart::Events(chunk) => seqs.extend(chunk.iter().map(|e| e.seq.get())),
                    SnapshotPart::End => ended = true,
                    SnapshotPart::Head { .. } => panic!("a second head"),
                }
            }
            reader.await.unwrap().unwrap();
            assert!(ended);
            assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
        }
    }

    /// The backlog read refuses a log with a hole rather than skip over it.
    #[tokio::test]
    async fn events_after_reads_exactly_and_detects_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let batch: Vec<Mutation> = (0..5)
            .map(|i| {
                Mutation::RevokeSession(RevokeSession {
                    sid: format!("s{i}"),
                    until: UnixSeconds::new(2_000),
                    reason: None,
                })
            })
            .collect();
        store.commit(UnixMillis::new(1), &batch).await.unwrap();
        let seqs = |b: Backlog| match b {
            Backlog::Events(events) => events.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
            Backlog::Pruned { .. } => panic!("pruned"),
        };
        assert_eq!(
            seqs(store.events_after(Seq::new(1), 3).await.unwrap()),
            [2, 3, 4]
        );
        assert_eq!(
            seqs(store.events_after(Seq::new(5), 3).await.unwrap()),
            Vec::<u64>::new()
        );
        sqlx::query("DELETE FROM revocations WHERE seq = 3")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            store.events_after(Seq::new(1), 3).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.events_after(Seq::new(2), 3).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
