//! The one commit algorithm both backends run: a backend supplies the statements
//! ([`LogWriter`]) and the transaction around them (read and lock the head, then write it
//! back); [`apply_batch`] decides what each mutation does, one function per kind, so SQLite and
//! PostgreSQL cannot drift apart in what a revoke means.

use std::sync::Arc;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::tlog::{Frontier, TreeHash, event_leaf_hash};
use revocast_shared::{Seq, SigningKey, UnixMillis, UnixSeconds};

use super::RefreshState;
use super::log::{NewRow, corrupt, generation_of, to_i64};
use super::mutation::{
    AddKey, InitKey, KeyAdded, KeyInit, KeyRevocation, Logged, Mutation, NewRefreshToken, Outcome,
    Prune, Pruned, RefreshRefusal, RefreshRevocation, RevokeKey, RevokeRefresh, RevokeSession,
    RevokeSubject, RevokeToken, Rotate, Rotation, SessionRevoked, SessionStart, StartSession,
    SubjectRevoked, TokenRevocation,
};
use crate::error::StoreError;

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
    /// The earlier revocation of this token or key.
    async fn previous(
        &mut self,
        kind: OnceKind,
        target: &str,
    ) -> Result<Option<Logged>, StoreError>;
    /// Raise the subject's generation by one and return the new value.
    async fn raise_generation(&mut self, sub: &str) -> Result<i64, StoreError>;
    /// Insert a revocation row, or hold it for [`flush`](Self::flush); either way, a later
    /// [`previous`](Self::previous) in the same commit sees it.
    async fn insert_revocation(&mut self, row: NewRow<'_>) -> Result<(), StoreError>;
    /// The transparency log's frontier as stored: the tree of the leaves up to the head this
    /// commit read (on PostgreSQL under the same `log_state` row lock, so every replica
    /// continues the one tree).
    async fn tree(&mut self) -> Result<Frontier, StoreError>;
    /// Store the leaf hash of the event at `seq`, or hold it for [`flush`](Self::flush).
    async fn insert_leaf(&mut self, seq: i64, hash: TreeHash) -> Result<(), StoreError>;
    /// Write the frontier back: once per commit that appended, after [`flush`](Self::flush).
    async fn set_tree(&mut self, tree: &Frontier) -> Result<(), StoreError>;
    /// Write the rows held back (a backend may gather a commit's rows into one statement).
    async fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// `Some(active)` for a stored key, `None` for an unknown one.
    async fn key_state(&mut self, kid: &str) -> Result<Option<bool>, StoreError>;
    async fn has_active_key(&mut self) -> Result<bool, StoreError>;
    /// The recorded longest token lifetime (seconds; see `Store::raise_max_ttl`), read inside
    /// the commit: on PostgreSQL under the `log_state` row lock, so a replica's raise either
    /// comes before this commit (and is seen) or after it (and that replica loads this
    /// commit's revocations before it issues anything).
    async fn max_ttl(&mut self) -> Result<i64, StoreError>;
    /// Retire the active key (if any) and insert `key` as the active one.
    async fn activate_key(&mut self, key: &SigningKey, now: UnixSeconds) -> Result<(), StoreError>;
    async fn mark_key_revoked(
        &mut self,
        kid: &str,
        seq: Seq,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    async fn log_floor(&mut self) -> Result<Seq, StoreError>;
    async fn set_log_floor(&mut self, floor: Seq) -> Result<(), StoreError>;
    /// The first revocation after `floor` committed after `cutoff`.
    async fn first_after(
        &mut self,
        floor: Seq,
        cutoff: UnixMillis,
    ) -> Result<Option<Seq>, StoreError>;
    /// Delete up to `limit` rows at or below `floor` whose expiry is at or before
    /// `expired_by`; returns how many went.
    async fn delete_expired(
        &mut self,
        expired_by: UnixSeconds,
        floor: Seq,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Delete up to `limit` refresh tokens of sessions whose absolute end is at or before
    /// `expired_by`, then up to `limit` such sessions that have no token left; returns how
    /// many tokens and sessions went.
    async fn delete_ended_sessions(
        &mut self,
        expired_by: UnixSeconds,
        limit: u32,
    ) -> Result<(u64, u64), StoreError>;
    /// Delete up to `limit` `revoked_sessions` rows whose sid has neither a refresh session
    /// nor a session revocation in the log any more; returns how many went.
    async fn delete_lapsed_revoked_sessions(&mut self, limit: u32) -> Result<u64, StoreError>;
    /// Record `sid` as revoked beyond its log row (nothing if it already is), or hold it for
    /// [`flush`](Self::flush).
    async fn mark_session_revoked(&mut self, sid: &str, at: UnixMillis) -> Result<(), StoreError>;
    /// Whether `sid` is recorded as revoked. Reads rows held back too (call `flush` first).
    async fn is_session_revoked(&mut self, sid: &str) -> Result<bool, StoreError>;
    /// The refresh token whose SHA-256 is `hash`, with its session, as this commit sees them.
    async fn refresh_state(&mut self, hash: &[u8; 32]) -> Result<Option<RefreshState>, StoreError>;
    /// Insert the session unless its `sid` has one already; `false` if it had.
    async fn insert_session(
        &mut self,
        m: &StartSession,
        now: UnixSeconds,
    ) -> Result<bool, StoreError>;
    async fn insert_refresh_token(
        &mut self,
        token: &NewRefreshToken,
        sid: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    /// Mark the token used at `at`, rotated into `successor`, with the rotation's sealed
    /// answer (if any); and drop the sealed answer of the token rotated into it, which is two
    /// generations back from now on and never a retry again.
    async fn mark_refresh_used(
        &mut self,
        hash: &[u8; 32],
        sid: &str,
        at: UnixMillis,
        successor: &[u8; 32],
        sealed: Option<&[u8]>,
    ) -> Result<(), StoreError>;
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
    let mut log = Tip {
        head,
        at,
        max_ttl: None,
        tree: None,
    };
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
            Mutation::StartSession(m) => Outcome::StartSession(start_session(w, &log, m).await?),
            Mutation::Rotate(m) => Outcome::Rotate(rotate(w, &mut log, m).await?),
            Mutation::RevokeRefresh(m) => {
                Outcome::RevokeRefresh(revoke_refresh(w, &mut log, m).await?)
            }
        };
        keys_changed |= outcome.changed_keys();
        outcomes.push(outcome);
    }
    w.flush().await?;
    if let Some(tree) = &log.tree {
        w.set_tree(tree).await?;
    }
    Ok(Applied {
        outcomes,
        head: log.head,
        keys_changed,
    })
}

/// The log as a commit in progress sees it: its head so far, the commit's time, and the
/// recorded longest token lifetime once a mutation needed it (read once per commit).
struct Tip {
    head: Seq,
    at: UnixMillis,
    max_ttl: Option<i64>,
    /// The transparency log's frontier, read at the first append (a commit that appends
    /// nothing never reads or writes it).
    tree: Option<Frontier>,
}

async fn revoke_token<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeToken,
) -> Result<TokenRevocation, StoreError> {
    if let Some(earlier) = w.previous(OnceKind::Token, &m.rid.to_string()).await? {
        return Ok(TokenRevocation::AlreadyRevoked(earlier));
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
    let until = covering(w, log, m.until).await?;
    let revocation = Revocation::Subject {
        sub: m.sub.clone(),
        r#gen,
        until: until.get(),
    };
    let Logged { seq, at } = append(w, log, revocation, None, m.reason.as_deref()).await?;
    Ok(SubjectRevoked {
        sub: m.sub.clone(),
        r#gen,
        until,
        seq,
        at,
    })
}

async fn revoke_session<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeSession,
) -> Result<SessionRevoked, StoreError> {
    let until = covering(w, log, m.until).await?;
    let revocation = Revocation::Session {
        sid: m.sid.clone(),
        until: until.get(),
    };
    let Logged { seq, at } = append(w, log, revocation, None, m.reason.as_deref()).await?;
    // The log row goes once the session's access tokens have expired; its refresh tokens
    // live longer, so the session is also recorded as revoked (until pruning finds both gone).
    w.mark_session_revoked(&m.sid, log.at).await?;
    Ok(SessionRevoked {
        sid: m.sid.clone(),
        until,
        seq,
        at,
    })
}

/// A subject or session revocation's `until`: at least the requested one, and at least until
/// every token it covers has expired — the commit's time plus the longest lifetime recorded,
/// which a replica started with a larger `--max-ttl` may have raised since the request
/// computed its `until`.
async fn covering<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    requested: UnixSeconds,
) -> Result<UnixSeconds, StoreError> {
    let max_ttl = match log.max_ttl {
        Some(known) => known,
        None => *log.max_ttl.insert(w.max_ttl().await?),
    };
    Ok(requested.max(log.at.to_seconds().saturating_add_secs(max_ttl)))
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
        return Ok(KeyRevocation::AlreadyRevoked(earlier));
    }
    let logged = append(w, log, Revocation::Key { kid: m.kid }, None, None).await?;
    let now = log.at.to_seconds();
    if was_active {
        w.activate_key(&m.replacement, now).await?;
    }
    w.mark_key_revoked(&kid, logged.seq, now).await?;
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

/// See [`StartSession`]. A session id that was revoked, or has refresh tokens already, is
/// refused: its refresh tokens could outlive the revocation's log row. (A revoked sid is
/// remembered until [`prune`] finds both its session and its log row gone.)
async fn start_session<W: LogWriter>(
    w: &mut W,
    log: &Tip,
    m: &StartSession,
) -> Result<SessionStart, StoreError> {
    // It reads what this commit's session revocations hold back.
    w.flush().await?;
    let now = log.at.to_seconds();
    if w.is_session_revoked(&m.sid).await? || !w.insert_session(m, now).await? {
        return Ok(SessionStart::Taken);
    }
    w.insert_refresh_token(&m.token, &m.sid, now).await?;
    Ok(SessionStart::Started)
}

/// See [`Rotate`]: live → rotated; used → a retry within the reuse interval, else reuse, which
/// revokes the session in this same commit.
async fn rotate<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &Rotate,
) -> Result<Rotation, StoreError> {
    w.flush().await?;
    let Some(token) = w.refresh_state(&m.hash).await? else {
        return Ok(Rotation::Refused(RefreshRefusal::Unknown));
    };
    if let Some(refusal) = token.refusal(log.at.to_seconds()) {
        return Ok(Rotation::Refused(refusal));
    }
    if let Some(used_at) = token.used_at {
        let within = log.at.as_millis().saturating_sub(used_at.as_millis()) <= m.reuse_interval_ms;
        // Only the immediately preceding token (its successor is the live one), only within
        // the interval, and only if that rotation kept its answer.
        if m.reuse_interval_ms > 0
            && within
            && token.successor_live
            && let Some(sealed) = token.sealed
        {
            return Ok(Rotation::Retried { sealed });
        }
        let revoked = revoke_session(
            w,
            log,
            &RevokeSession {
                sid: token.sid,
                until: m.until,
                reason: Some("refresh token reused".into()),
            },
        )
        .await?;
        return Ok(Rotation::Reused {
            sub: token.sub,
            revoked,
        });
    }
    if token.session_gen != m.r#gen {
        // The request read the session before a subject revocation committed.
        return Ok(Rotation::Refused(RefreshRefusal::SubjectRevoked));
    }
    w.mark_refresh_used(
        &m.hash,
        &token.sid,
        log.at,
        &m.next.hash,
        m.sealed.as_deref(),
    )
    .await?;
    w.insert_refresh_token(&m.next, &token.sid, log.at.to_seconds())
        .await?;
    Ok(Rotation::Rotated)
}

/// See [`RevokeRefresh`].
async fn revoke_refresh<W: LogWriter>(
    w: &mut W,
    log: &mut Tip,
    m: &RevokeRefresh,
) -> Result<RefreshRevocation, StoreError> {
    w.flush().await?;
    let Some(token) = w.refresh_state(&m.hash).await? else {
        return Ok(RefreshRevocation::Nothing);
    };
    if token.session_revoked {
        return Ok(RefreshRevocation::Nothing);
    }
    let revoked = revoke_session(
        w,
        log,
        &RevokeSession {
            sid: token.sid,
            until: m.until,
            reason: Some("refresh token revoked".into()),
        },
    )
    .await?;
    Ok(RefreshRevocation::Revoked(revoked))
}

/// See [`Prune`].
async fn prune<W: LogWriter>(w: &mut W, log: &Tip, m: &Prune) -> Result<Pruned, StoreError> {
    // It reads and deletes revocations: rows held back must be written first.
    w.flush().await?;
    let floor = w.log_floor().await?;
    // The first revocation newer than the cutoff, walking up from the floor: the scan covers
    // only what was committed since the last prune.
    let new_floor = match w.first_after(floor, m.floor_before).await? {
        Some(seq) => seq
            .get()
            .checked_sub(1)
            .map(Seq::new)
            .ok_or_else(|| corrupt("a revocation at seq 0"))?,
        None => log.head,
    }
    .max(floor);
    if new_floor != floor {
        w.set_log_floor(new_floor).await?;
    }
    let deleted = w.delete_expired(m.expired_by, new_floor, m.limit).await?;
    // Refresh state, after the log rows, so that a session revocation pruned just now lets
    // its `revoked_sessions` row go in the same prune. Why each deletion is sound:
    // - A session whose absolute end has passed is over: every one of its refresh tokens is
    //   refused from then on (`RefreshState::refusal` checks the session's end, and a token's
    //   own expiry is capped at it when issued), so the session and all its tokens go
    //   together, tokens first (they reference the session). A token presented afterwards is
    //   unknown: refused just the same, and no reuse to detect on a session that is over.
    // - A `revoked_sessions` row keeps a revoked session dead after its log row lapsed, for
    //   its refresh tokens and against starting it again with refresh tokens. It may go once
    //   both are moot: its session's refresh state is gone (no `refresh_sessions` row, so no
    //   refresh token of it exists) and no session revocation for its sid is left in the log
    //   (the log row is what agents enforce; it is pruned only once past its `until`, by
    //   which time every access token of the session has expired). From then on the sid is as
    //   good as new, as it is for tokens issued without refresh.
    // Each is bounded by `limit`, like the log rows.
    let (refresh_tokens, refresh_sessions) = w.delete_ended_sessions(m.expired_by, m.limit).await?;
    let revoked_sessions = w.delete_lapsed_revoked_sessions(m.limit).await?;
    let limit = u64::from(m.limit);
    Ok(Pruned {
        floor: new_floor,
        deleted,
        refresh_tokens,
        refresh_sessions,
        revoked_sessions,
        more: deleted >= limit
            || refresh_tokens >= limit
            || refresh_sessions >= limit
            || revoked_sessions >= limit,
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
    // The leaf is the event exactly as the stream will send it.
    let event = RevocationEvent {
        seq,
        revocation,
        at: log.at,
    };
    let leaf = event_leaf_hash(&event);
    let tree = match log.tree.take() {
        Some(tree) => tree,
        None => {
            let stored = w.tree().await?;
            if stored.size() != log.head.get() {
                return Err(corrupt(format!(
                    "the transparency log's tree has {} leaves but the log's head is seq {}",
                    stored.size(),
                    log.head
                )));
            }
            stored
        }
    };
    log.tree.insert(tree).push(leaf);
    w.insert_leaf(to_i64(seq.get())?, leaf).await?;
    let revocation = event.revocation;
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
