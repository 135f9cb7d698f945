//! What both backends share in reading the log: the mapping between a revocation and its
//! row, the column conversions (and an API key's), and the chunked read of what is in force ([`InForce`]) over
//! the backend's one query ([`ReadLog`]).

use std::borrow::Cow;
use std::str::FromStr;

use revocast_shared::crypto::SigningSeed;
use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::tlog::{Frontier, TreeHash};
use revocast_shared::{Epoch, KeyId, Seq, UnixMillis, UnixSeconds};
use tokio::sync::mpsc;

use super::{ApiKeyRecord, LogKeyRecord, Logged, RefreshState, SnapshotPart};
use crate::config::Scope;
use crate::error::StoreError;

pub(super) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(super) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| corrupt("sequence number beyond i64"))
}

pub(super) fn seq_of(n: i64) -> Result<Seq, StoreError> {
    u64::try_from(n)
        .map(Seq::new)
        .map_err(|_| corrupt("negative sequence number"))
}

/// An API key's stored scope.
pub(super) fn scope_of(column: Option<String>) -> Result<Option<Scope>, StoreError> {
    column
        .map(|s| Scope::parse(&s).ok_or_else(|| corrupt(format!("unknown scope {s:?}"))))
        .transpose()
}

/// The columns of an API key as listed: `hash, scope, label, created_at, revoked_at`.
pub(super) const API_KEY_COLUMNS: &str = "hash, scope, label, created_at, revoked_at";

/// An API key row of [`API_KEY_COLUMNS`].
pub(super) type ApiKeyRow = (Vec<u8>, String, Option<String>, i64, Option<i64>);

pub(super) fn api_key_of(
    (hash, scope, label, created_at, revoked_at): ApiKeyRow,
) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        hash: hash
            .try_into()
            .map_err(|_| corrupt("an API key hash is not 32 bytes"))?,
        scope: scope_of(Some(scope))?.ok_or_else(|| corrupt("an API key without scope"))?,
        label,
        created_at: UnixSeconds::new(created_at),
        revoked_at: revoked_at.map(UnixSeconds::new),
    })
}

/// The query of a refresh token and its session, `$1` its hash (SQLite reads `$1` as its one
/// parameter too).
pub(super) const REFRESH_STATE: &str = "SELECT s.sid, s.sub, s.gen AS session_gen,
        COALESCE(g.gen, 0) AS current_gen, s.grant_json, s.expires_at AS session_expires_at,
        r.at_ms AS session_revoked_at, t.issued_at, t.expires_at, t.used_at_ms, t.sealed,
        n.hash AS successor, n.used_at_ms AS successor_used_at_ms
     FROM refresh_tokens t
     JOIN refresh_sessions s ON s.sid = t.sid
     LEFT JOIN subject_generations g ON g.sub = s.sub
     LEFT JOIN revoked_sessions r ON r.sid = s.sid
     LEFT JOIN refresh_tokens n ON n.hash = t.successor
     WHERE t.hash = $1";

/// A row of [`REFRESH_STATE`].
#[derive(sqlx::FromRow)]
pub(super) struct RefreshRow {
    sid: String,
    sub: String,
    session_gen: i64,
    current_gen: i64,
    grant_json: String,
    session_expires_at: i64,
    session_revoked_at: Option<i64>,
    issued_at: i64,
    expires_at: i64,
    used_at_ms: Option<i64>,
    sealed: Option<Vec<u8>>,
    successor: Option<Vec<u8>>,
    successor_used_at_ms: Option<i64>,
}

impl RefreshRow {
    pub(super) fn into_state(self) -> Result<RefreshState, StoreError> {
        Ok(RefreshState {
            sid: self.sid,
            sub: self.sub,
            session_gen: generation_of(self.session_gen)?,
            current_gen: generation_of(self.current_gen)?,
            grant: self.grant_json,
            session_expires_at: UnixSeconds::new(self.session_expires_at),
            session_revoked: self.session_revoked_at.is_some(),
            issued_at: UnixSeconds::new(self.issued_at),
            expires_at: UnixSeconds::new(self.expires_at),
            used_at: self.used_at_ms.map(UnixMillis::new),
            successor_live: self.successor.is_some() && self.successor_used_at_ms.is_none(),
            sealed: self.sealed,
        })
    }
}

/// A revocation's `(seq, at_ms)` columns.
pub(super) fn logged_of((seq, at_ms): (i64, i64)) -> Result<Logged, StoreError> {
    Ok(Logged {
        seq: seq_of(seq)?,
        at: UnixMillis::new(at_ms),
    })
}

pub(super) fn generation_of(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt("negative generation"))
}

/// A revocation row's columns as read back.
#[derive(serde::Deserialize)]
pub(super) struct RowParts<'a> {
    pub seq: i64,
    pub kind: &'a str,
    #[serde(borrow)]
    pub target: Cow<'a, str>,
    pub r#gen: Option<i64>,
    pub expires_at: Option<i64>,
    pub at_ms: i64,
}

impl RowParts<'_> {
    pub fn into_event(self) -> Result<RevocationEvent, StoreError> {
        let RowParts {
            seq,
            kind,
            target,
            r#gen,
            expires_at,
            at_ms,
        } = self;
        let until =
            || expires_at.ok_or_else(|| corrupt(format!("{kind} revocation without expiry")));
        let revocation = match kind {
            "token" => Revocation::Token {
                rid: target.parse().map_err(|_| corrupt("bad rid"))?,
                exp: until()?,
            },
            "subject" => Revocation::Subject {
                sub: target.into_owned(),
                r#gen: u64::try_from(r#gen.unwrap_or(-1))
                    .map_err(|_| corrupt("subject revocation without generation"))?,
                until: until()?,
            },
            "session" => Revocation::Session {
                sid: target.into_owned(),
                until: until()?,
            },
            "key" => Revocation::Key {
                kid: target.parse().map_err(|_| corrupt("bad kid"))?,
            },
            other => return Err(corrupt(format!("unknown revocation kind {other:?}"))),
        };
        Ok(RevocationEvent {
            seq: seq_of(seq)?,
            revocation,
            at: UnixMillis::new(at_ms),
        })
    }
}

/// A revocation about to be written, in the columns of the `revocations` table.
pub(super) struct NewRow<'a> {
    pub seq: i64,
    pub kind: &'static str,
    pub target: String,
    pub r#gen: Option<i64>,
    pub expires_at: Option<i64>,
    pub at_ms: i64,
    pub token_sub: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// Check that `events`, read as the log after `after`, are exactly `after + 1 ..= last`: a
/// backlog read refuses a log with a hole rather than skip over it.
pub(super) fn check_contiguous(after: Seq, events: &[RevocationEvent]) -> Result<(), StoreError> {
    if let Some(last) = events.last()
        && last.seq.get() - after.get() != events.len() as u64
    {
        return Err(corrupt(format!(
            "log gap: {} events after seq {after} end at {}",
            events.len(),
            last.seq
        )));
    }
    Ok(())
}

/// Reads of the log: on a connection, inside the backend's open (read) transaction; or on
/// a pool of readers, each chunk on whichever connection is free, released before the chunk
/// is returned (how a snapshot reads: see [`send_in_force`]).
pub(super) trait ReadLog {
    /// Up to `limit` revocations after `after` and at most `upto`, oldest first, of those in
    /// force at `in_force_at` (every one if `None`), their `seq`s increasing.
    async fn read_chunk(
        &mut self,
        after: Seq,
        upto: Seq,
        in_force_at: Option<UnixSeconds>,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError>;
}

/// Events per chunk of a full read (start-up load, snapshot).
pub(super) const IN_FORCE_CHUNK_LEN: u32 = 4096;

/// Reads every revocation up to a head `seq` still in force at `now`, oldest first, in
/// chunks of up to [`IN_FORCE_CHUNK_LEN`] events.
pub(super) struct InForce {
    now: UnixSeconds,
    upto: Seq,
    after: Seq,
    done: bool,
}

impl InForce {
    pub fn new(now: UnixSeconds, upto: Seq) -> Self {
        Self {
            now,
            upto,
            after: Seq::ZERO,
            done: false,
        }
    }

    /// The next non-empty chunk, or `None` when everything was read.
    pub async fn next<R: ReadLog>(
        &mut self,
        log: &mut R,
    ) -> Result<Option<Vec<RevocationEvent>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let chunk = log
            .read_chunk(self.after, self.upto, Some(self.now), IN_FORCE_CHUNK_LEN)
            .await?;
        self.done = chunk.len() < IN_FORCE_CHUNK_LEN as usize;
        match chunk.last() {
            Some(last) => {
                self.after = last.seq;
                Ok(Some(chunk))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// Every revocation up to `upto` in force at `now`, in `seq` order. Use inside one
/// transaction for one consistent view.
pub(super) async fn read_in_force<R: ReadLog>(
    log: &mut R,
    upto: Seq,
    now: UnixSeconds,
) -> Result<Vec<RevocationEvent>, StoreError> {
    let mut revocations = Vec::new();
    let mut in_force = InForce::new(now, upto);
    while let Some(chunk) = in_force.next(log).await? {
        revocations.extend(chunk);
    }
    Ok(revocations)
}

/// Send a snapshot to `out`: the head `(epoch, seq)` read first, then every revocation up to
/// `seq` in force at `now`, chunk by chunk, then [`SnapshotPart::End`]. Stops early, without
/// error, if `out` closes.
///
/// `readers` is a pool, not a transaction: each chunk is read on a connection of its own and
/// that connection is back in the pool before the chunk is sent. A subscriber that reads
/// slowly (network backpressure reaches `out` through the HTTP body) therefore holds no store
/// connection and no transaction while the authority waits for it, and the ledger's commits,
/// the backlog reads and the API-key lookups never queue behind it.
///
/// Consistent without one transaction: the rows up to the head read first are never changed
/// afterwards, only deleted by pruning once they expired (`expires_at` plus the expiry grace
/// past) — rows that no longer protect against any token an agent could accept. Reading up to
/// that head, chunk after chunk, yields what one read at that head would have, less such
/// rows: the same as a snapshot taken a moment later, as of the same `seq`. Rows committed
/// meanwhile are above the head and left to the stream (`since=seq`).
pub(super) async fn send_snapshot<R: ReadLog>(
    mut readers: R,
    (epoch, seq, tree): (Epoch, Seq, Frontier),
    now: UnixSeconds,
    out: &mpsc::Sender<SnapshotPart>,
) -> Result<(), StoreError> {
    if tree.size() != seq.get() {
        return Err(corrupt(format!(
            "the transparency log's tree has {} leaves but the log's head is seq {seq}",
            tree.size()
        )));
    }
    if out
        .send(SnapshotPart::Head { epoch, seq, tree })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut in_force = InForce::new(now, seq);
    while let Some(chunk) = in_force.next(&mut readers).await? {
        if out.send(SnapshotPart::Events(chunk)).await.is_err() {
            return Ok(());
        }
    }
    let _ = out.send(SnapshotPart::End).await;
    Ok(())
}

/// A stored frontier column; `None` (no row, or NULL) is the empty tree.
pub(super) fn frontier_of(column: Option<Vec<u8>>) -> Result<Frontier, StoreError> {
    column.map_or_else(
        || Ok(Frontier::new()),
        |bytes| {
            Frontier::from_bytes(&bytes)
                .map_err(|e| corrupt(format!("the transparency log's frontier: {e}")))
        },
    )
}

/// Stored leaf rows `(seq, hash)` read after the first `after` leaves, checked to be exactly
/// the leaves `after + 1, after + 2, …` (a deleted leaf is named by its `seq`).
pub(super) fn leaves_of(
    after: u64,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<Vec<TreeHash>, StoreError> {
    let mut expected = after;
    rows.into_iter()
        .map(|(seq, hash)| {
            expected += 1;
            if u64::try_from(seq).ok() != Some(expected) {
                return Err(corrupt(format!(
                    "the transparency log's leaf of seq {expected} is missing"
                )));
            }
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| corrupt(format!("the leaf hash of seq {seq} is not 32 bytes")))?;
            Ok(TreeHash(hash))
        })
        .collect()
}

/// A `log_keys` row `(kid, seed, created_at, signs_from)`.
pub(super) fn log_key_of(
    (kid, seed, created_at, signs_from): (String, Vec<u8>, i64, i64),
) -> Result<LogKeyRecord, StoreError> {
    Ok(LogKeyRecord {
        kid: KeyId::from_str(&kid).map_err(|_| corrupt("bad log key kid"))?,
        seed: SigningSeed::from_slice(&seed).ok_or_else(|| corrupt("seed is not 32 bytes"))?,
        created_at: UnixMillis::new(created_at),
        signs_from: UnixMillis::new(signs_from),
    })
}
