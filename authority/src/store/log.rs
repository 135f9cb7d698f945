//! What both backends share: the mapping between a revocation and its log row, and the one
//! commit algorithm. A backend supplies the statements ([`LogWriter`]) and the transaction
//! around them (read and lock the head, then write it back); [`apply_batch`] decides what each
//! mutation does, so SQLite and PostgreSQL cannot drift apart in what a revoke means.

use std::borrow::Cow;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::{Seq, SigningKey, UnixMillis};

use super::{Mutation, Outcome};
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
    async fn activate_key(&mut self, key: &SigningKey, now: i64) -> Result<(), StoreError>;
    async fn mark_key_revoked(&mut self, kid: &str, seq: i64, now: i64) -> Result<(), StoreError>;
    /// See [`Mutation::Prune`]; `head` is the log's head inside this transaction.
    async fn prune(
        &mut self,
        head: Seq,
        floor_before: i64,
        expired_by: i64,
        limit: u32,
    ) -> Result<Outcome, StoreError>;
}

/// What [`apply_batch`] did besides the outcomes: the backend writes the head back (and, on a
/// shared database, rings the doorbell) only when something changed.
pub(super) struct Applied {
    pub outcomes: Vec<Outcome>,
    pub head: Seq,
    pub keys_changed: bool,
}

/// Apply `batch` in order on top of the log's `head`, all at time `at`.
pub(super) async fn apply_batch<W: LogWriter>(
    w: &mut W,
    mut head: Seq,
    at: UnixMillis,
    batch: &[Mutation],
) -> Result<Applied, StoreError> {
    let now = at.as_secs();
    let mut keys_changed = false;
    let mut outcomes = Vec::with_capacity(batch.len());
    for mutation in batch {
        let outcome = match mutation {
            Mutation::RevokeToken {
                rid,
                sub,
                exp,
                reason,
            } => match w.previous(OnceKind::Token, &rid.to_string()).await? {
                Some(earlier) => already_revoked(earlier)?,
                None => {
                    let revocation = Revocation::Token {
                        rid: *rid,
                        exp: *exp,
                    };
                    let event =
                        append(w, &mut head, at, revocation, Some(sub), reason.as_deref()).await?;
                    Outcome::Appended {
                        event,
                        activated: None,
                    }
                }
            },
            Mutation::RevokeSubject { sub, until, reason } => {
                let r#gen = generation_of(w.raise_generation(sub).await?)?;
                let revocation = Revocation::Subject {
                    sub: sub.clone(),
                    r#gen,
                    until: *until,
                };
                let event = append(w, &mut head, at, revocation, None, reason.as_deref()).await?;
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
                let event = append(w, &mut head, at, revocation, None, reason.as_deref()).await?;
                Outcome::Appended {
                    event,
                    activated: None,
                }
            }
            Mutation::RevokeKey { kid, replacement } => {
                let kid_s = kid.to_string();
                match w.key_state(&kid_s).await? {
                    None => Outcome::UnknownKey,
                    Some(was_active) => match w.previous(OnceKind::Key, &kid_s).await? {
                        Some(earlier) => already_revoked(earlier)?,
                        None => {
                            let event =
                                append(w, &mut head, at, Revocation::Key { kid: *kid }, None, None)
                                    .await?;
                            if was_active {
                                w.activate_key(replacement, now).await?;
                            }
                            w.mark_key_revoked(&kid_s, to_i64(event.seq.get())?, now)
                                .await?;
                            keys_changed = true;
                            Outcome::Appended {
                                event,
                                activated: was_active.then(|| replacement.kid()),
                            }
                        }
                    },
                }
            }
            Mutation::AddKey { key } => {
                w.activate_key(key, now).await?;
                keys_changed = true;
                Outcome::KeyAdded
            }
            Mutation::InitKey { key } => {
                if w.has_active_key().await? {
                    Outcome::KeyExists
                } else {
                    w.activate_key(key, now).await?;
                    keys_changed = true;
                    Outcome::KeyAdded
                }
            }
            Mutation::Prune {
                floor_before,
                expired_by,
                limit,
            } => w.prune(head, *floor_before, *expired_by, *limit).await?,
        };
        outcomes.push(outcome);
    }
    w.flush().await?;
    Ok(Applied {
        outcomes,
        head,
        keys_changed,
    })
}

/// Append one revocation at `head + 1`, returning its event.
async fn append<W: LogWriter>(
    w: &mut W,
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
    w.insert_revocation(NewRow {
        seq: to_i64(seq.get())?,
        kind: revocation.kind(),
        target,
        r#gen,
        expires_at: revocation.expires_at(),
        at_ms: at.as_millis(),
        token_sub,
        reason,
    })
    .await?;
    *head = seq;
    Ok(RevocationEvent {
        seq,
        revocation,
        at,
    })
}

fn already_revoked((seq, at_ms): (i64, i64)) -> Result<Outcome, StoreError> {
    Ok(Outcome::AlreadyRevoked {
        seq: seq_of(seq)?,
        at: UnixMillis::new(at_ms),
    })
}
