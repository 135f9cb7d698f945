//! What both backends share: the mapping between a revocation and its log row, the one
//! commit algorithm, and the chunked read of what is in force. A backend supplies the
//! statements ([`LogWriter`], [`ReadLog`]) and the transaction around them (read and lock the
//! head, then write it back); [`apply_batch`] decides what each mutation does, so SQLite and
//! PostgreSQL cannot drift apart in what a revoke means.

use std::borrow::Cow;
use std::sync::Arc;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::{Seq, SigningKey, UnixMillis, UnixSeconds};
use tokio::sync::mpsc;

use super::SnapshotPart;
use super::mutation::{
    AddKey, InitKey, KeyAdded, KeyInit, KeyRevocation, Logged, Mutation, Outcome, Prune, Pruned,
    RevokeKey, RevokeSession, RevokeSubject, RevokeToken, SessionRevoked, SubjectRevoked,
    TokenRevocation,
};
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

/// Reads of the log, inside the backend's open (read) transaction.
pub(super) trait ReadLog {
    /// Up to `limit` revocations after `after`, oldest first, of those in force at
    /// `in_force_at` (every one if `None`), their `seq`s increasing.
    async fn read_chunk(
        &mut self,
        after: Seq,
        in_force_at: Option<UnixSeconds>,
        limit: u32,
    ) -> Result<Vec<RevocationEvent>, StoreError>;
}

/// Events per chunk of a full read (start-up load, snapshot).
pub(super) const IN_FORCE_CHUNK_LEN: u32 = 4096;

/// Reads every revocation still in force at `now`, oldest first, in chunks of up to
/// [`IN_FORCE_CHUNK_LEN`] events. Use inside one transaction for one consistent view.
pub(super) struct InForce {
    now: UnixSeconds,
    after: Seq,
    done: bool,
}

impl InForce {
    pub fn new(now: UnixSeconds) -> Self {
        Self {
            now,
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
            .read_chunk(self.after, Some(self.now), IN_FORCE_CHUNK_LEN)
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

/// Every revocation in force at `now`, in `seq` order.
pub(super) async fn read_in_force<R: ReadLog>(
    log: &mut R,
    now: UnixSeconds,
) -> Result<Vec<RevocationEvent>, StoreError> {
    let mut revocations = Vec::new();
    let mut in_force = InForce::new(now);
    while let Some(chunk) = in_force.next(log).await? {
        revocations.extend(chunk);
    }
    Ok(revocations)
}

/// Send every revocation in force at `now` to `out`, chunk by chunk, then [`SnapshotPart::End`].
/// Returns `false` if `out` closed first.
pub(super) async fn send_in_force<R: ReadLog>(
    log: &mut R,
    now: UnixSeconds,
    out: &mpsc::Sender<SnapshotPart>,
) -> Result<bool, StoreError> {
    let mut in_force = InForce::new(now);
    while let Some(chunk) = in_force.next(log).await? {
        if out.send(SnapshotPart::Events(chunk)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(out.send(SnapshotPart::End).await.is_ok())
}

/// The kinds revoked at most once (see the `revocations_once` index).
#[derive(Clone, Copy)]
pub(super) enum OnceKind {
    Token,
    Key,
}

impl OnceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Key => "key",
        }
    }
}

/// The statements one commit is made of, inside the backend's open transaction.
pub(super) trait LogWriter {
    /// `(seq, at_ms)` of the earlier revocation of this token or key.
    async fn previous(
        &mut self,
        kind: OnceKind,
        target: &str,
    ) -> Result<Option<(i64, i64)>, StoreError>;
    /// Raise the subject's generation by one and return the new value.
    async fn raise_generation(&mut self, sub: &str) -> Result<i64, StoreError>;
    /// Insert a revocation row, or hold it for [`flush`](Self::flush); either way, a later
    /// [`previous`](Self::previous) in the same commit sees it.
    async fn insert_revocation(&mut self, row: NewRow<'_>) -> Result<(), StoreError>;
    /// Write the rows held back (a backend may gather a commit's rows into one statement).
    async fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// `Some(active)` for a stored key, `None` for an unknown one.
    async fn key_state(&mut self, kid: &str) -> Result<Option<bool>, StoreError>;
    async fn has_active_key(&mut self) -> Result<bool, StoreError>;
    /// Retire the active key (if any) and insert `key` as the active one.
    async fn activate_key(&mut self, key: &SigningKey, now: UnixSeconds) -> Result<(), StoreError>;
    async fn mark_key_revoked(
        &mut self,
        kid: &str,
        seq: i64,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    async fn log_floor(&mut self) -> Result<Seq, StoreError>;
    async fn set_log_floor(&mut self, floor: Seq) -> Result<(), StoreError>;
    /// The first revocation after `floor` committed after `cutoff`.
    async fn first_after(
        &mut self,
        floor: Seq,
        cutoff: UnixMillis,
    ) -> Result<Option<i64>, StoreError>;
    /// Delete up to `limit` rows at or below `floor` whose expiry is at or before
    /// `expired_by`; returns how many went.
    async fn delete_expired(
        &mut self,
        expired_by: UnixSeconds,
        floor: Seq,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// What [`apply_batch`] did besides the outcomes: the backend writes the head back (and, on a
/// shared database, rings the doorbell) only when something changed.
pub(super) struct Applied {
    pub outcomes: Vec<Outcome>,
    pub head: Seq,
    pub keys_changed: bool,
}

/// Apply `batch` in order on top of the log's `head`, all at time `at`. Each kind of mutation
/// has its function below, which answers with that kind's outcome.
pub(super) async fn apply_batch<W: LogWriter>(
    w: &mut W,
    head: Seq,
    at: UnixMillis,
    batch: &[Mutation],
) -> Result<Applied, StoreError> {
    let mut log = Tip { head, at };
    let mut keys_changed = false;
    let mut outcomes = Vec::with_capacity(batch.len());
    for mutation in batch {
        let outcome = match mutation {
            Mutation::RevokeToken(m) => Outcome::RevokeToken(revoke_token(w, &mut log, m).await?),
            Mutation::RevokeSubject(m) => {
                Outcome::RevokeSubject(revoke_subject(w, &mut log, m).await?)
            }
            Mutation::RevokeSession(m) => {
                Outcome::RevokeSession(revoke_session(w, &mut log, m).await?)
            }
            Mutation::RevokeKey(m) => Outcome::RevokeKey(revoke_key(w, &mut log, m).await?),
            Mutation::AddKey(m) => Outcome::AddKey(add_key(w, &log, m).await?),
            Mutation::InitKey(m) => Outcome::InitKey(init_key(w, &log, m).await?),
            Mutation::Prune(m) => Outcome::Prune(prune(w, &log, m).await?),
        };
        keys_changed |= outcome.changed_keys();
        outcomes.push(outcome);
    }
    w.flush().await?;
    Ok(Applied {
        outcomes,
        head: log.head,
        keys_changed,
    })
}

/// The log as a commit in progress sees it: its head so far, and the commit's time.
struct Tip {
    head: Seq,
    at: UnixMillis,
}

async fn revoke_token<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeToken,
) -> Result<TokenRevocation, StoreError> {
    if let Some(earlier) = w.previous(OnceKind::Token, &m.rid.to_string()).await? {
        return Ok(TokenRevocation::AlreadyRevoked(logged_of(earlier)?));
    }
    let revocation = Revocation::Token {
        rid: m.rid,
        exp: m.exp.get(),
    };
    let logged = append(w, log, revocation, Some(&m.sub), m.reason.as_deref()).await?;
    Ok(TokenRevocation::Revoked {
        rid: m.rid,
        exp: m.exp,
        logged,
    })
}

async fn revoke_subject<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeSubject,
) -> Result<SubjectRevoked, StoreError> {
    let r#gen = generation_of(w.raise_generation(&m.sub).await?)?;
    let revocation = Revocation::Subject {
        sub: m.sub.clone(),
        r#gen,
        until: m.until.get(),
    };
    let Logged { seq, at } = append(w, log, revocation, None, m.reason.as_deref()).await?;
    Ok(SubjectRevoked {
        sub: m.sub.clone(),
        r#gen,
        until: m.until,
        seq,
        at,
    })
}

async fn revoke_session<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeSession,
) -> Result<SessionRevoked, StoreError> {
    let revocation = Revocation::Session {
        sid: m.sid.clone(),
        until: m.until.get(),
    };
    let Logged { seq, at } = append(w, log, revocation, None, m.reason.as_deref()).await?;
    Ok(SessionRevoked {
        sid: m.sid.clone(),
        until: m.until,
        seq,
        at,
    })
}

async fn revoke_key<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeKey,
) -> Result<KeyRevocation, StoreError> {
    let kid = m.kid.to_string();
    let Some(was_active) = w.key_state(&kid).await? else {
        return Ok(KeyRevocation::UnknownKey);
    };
    if let Some(earlier) = w.previous(OnceKind::Key, &kid).await? {
        return Ok(KeyRevocation::AlreadyRevoked(logged_of(earlier)?));
    }
    let logged = append(w, log, Revocation::Key { kid: m.kid }, None, None).await?;
    let now = log.at.to_seconds();
    if was_active {
        w.activate_key(&m.replacement, now).await?;
    }
    w.mark_key_revoked(&kid, to_i64(logged.seq.get())?, now)
        .await?;
    Ok(KeyRevocation::Revoked {
        kid: m.kid,
        logged,
        activated: was_active.then(|| Arc::clone(&m.replacement)),
    })
}

async fn add_key<W: LogWriter>(w: &mut W, log: &Tip, m: &AddKey) -> Result<KeyAdded, StoreError> {
    w.activate_key(&m.key, log.at.to_seconds()).await?;
    Ok(KeyAdded {
        key: Arc::clone(&m.key),
    })
}

async fn init_key<W: LogWriter>(w: &mut W, log: &Tip, m: &InitKey) -> Result<KeyInit, StoreError> {
    if w.has_active_key().await? {
        return Ok(KeyInit::Exists);
    }
    w.activate_key(&m.key, log.at.to_seconds()).await?;
    Ok(KeyInit::Added(Arc::clone(&m.key)))
}

/// See [`Prune`].
async fn prune<W: LogWriter>(w: &mut W, log: &Tip, m: &Prune) -> Result<Pruned, StoreError> {
    // It reads and deletes revocations: rows held back must be written first.
    w.flush().await?;
    let floor = w.log_floor().await?;
    // The first revocation newer than the cutoff, walking up from the floor: the scan covers
    // only what was committed since the last prune.
    let new_floor = match w.first_after(floor, m.floor_before).await? {
        Some(seq) => seq_of(seq - 1)?,
        None => log.head,
    }
    .max(floor);
    if new_floor != floor {
        w.set_log_floor(new_floor).await?;
    }
    let deleted = w.delete_expired(m.expired_by, new_floor, m.limit).await?;
    Ok(Pruned {
        floor: new_floor,
        deleted,
        more: deleted >= u64::from(m.limit),
    })
}

/// Append one revocation at `head + 1`.
async fn append<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    revocation: Revocation,
    token_sub: Option<&str>,
    reason: Option<&str>,
) -> Result<Logged, StoreError> {
    let seq = log.head.next();
    let expires_at = revocation.expires_at();
    let kind = revocation.kind();
    let (target, r#gen) = match revocation {
        Revocation::Token { rid, .. } => (rid.to_string(), None),
        Revocation::Subject { sub, r#gen, .. } => (sub, Some(to_i64(r#gen)?)),
        Revocation::Session { sid, .. } => (sid, None),
        Revocation::Key { kid } => (kid.to_string(), None),
    };
    w.insert_revocation(NewRow {
        seq: to_i64(seq.get())?,
        kind,
        target,
        r#gen,
        expires_at,
        at_ms: log.at.as_millis(),
        token_sub,
        reason,
    })
    .await?;
    log.head = seq;
    Ok(Logged { seq, at: log.at })
}

fn logged_of((seq, at_ms): (i64, i64)) -> Result<Logged, StoreError> {
    Ok(Logged {
        seq: seq_of(seq)?,
        at: UnixMillis::new(at_ms),
    })
}
