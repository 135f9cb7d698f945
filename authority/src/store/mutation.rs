//! What a commit is made of: one command type per kind of change, each paired with the type of
//! its outcome ([`Command::Outcome`]). A batch carries them as [`Mutation`]s and the store
//! answers each with the [`Outcome`] variant of the same name, so a caller that submits a
//! [`RevokeToken`] gets a [`TokenRevocation`] back and nothing else.

use std::sync::Arc;

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::{KeyId, RevocationId, Seq, SigningKey, UnixMillis, UnixSeconds};

use crate::error::StoreError;

/// Revoke one token, once: a second revocation of the same token writes nothing.
#[derive(Debug, Clone)]
pub struct RevokeToken {
    pub rid: RevocationId,
    pub sub: String,
    /// The token's own `exp`: the revocation is dropped once the token has expired.
    pub exp: UnixSeconds,
    pub reason: Option<String>,
}

/// Raise the subject's generation by one; the event carries the new minimum.
#[derive(Debug, Clone)]
pub struct RevokeSubject {
    pub sub: String,
    /// At least this; the commit raises it to its time plus the recorded longest lifetime.
    pub until: UnixSeconds,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RevokeSession {
    pub sid: String,
    /// At least this; the commit raises it to its time plus the recorded longest lifetime.
    pub until: UnixSeconds,
    pub reason: Option<String>,
}

/// Revoke `kid`. If it is the active signing key, `replacement` becomes active instead.
#[derive(Debug, Clone)]
pub struct RevokeKey {
    pub kid: KeyId,
    pub replacement: Arc<SigningKey>,
}

/// Add `key` as the active signing key; the previous one is retired (still verifies).
#[derive(Debug, Clone)]
pub struct AddKey {
    pub key: Arc<SigningKey>,
}

/// Add `key` as the active signing key only if there is none: the first start. Replicas
/// starting together on an empty database race for it, and exactly one key wins.
#[derive(Debug, Clone)]
pub struct InitKey {
    pub key: Arc<SigningKey>,
}

/// Log retention: raise the log floor to the last revocation committed at or before
/// `floor_before`, then delete up to `limit` rows at or below the floor whose expiry is at or
/// before `expired_by`. Rows above the floor are kept, so every resume from `since >= floor`
/// stays exact.
/// Refresh state is pruned with it, up to `limit` rows of each table: sessions whose absolute
/// end is at or before `expired_by` with their refresh tokens, and the `revoked_sessions` rows
/// of sids with neither a session nor a session revocation in the log left.
#[derive(Debug, Clone)]
pub struct Prune {
    pub floor_before: UnixMillis,
    pub expired_by: UnixSeconds,
    pub limit: u32,
}

/// Start a session with refresh tokens: its first refresh token, bound to the session, the
/// subject (at its generation `gen`) and the grant (audience, custom claims, access-token
/// lifetime) every rotation issues with.
#[derive(Debug, Clone)]
pub struct StartSession {
    pub sid: String,
    pub sub: String,
    pub r#gen: u64,
    /// JSON of what rotations issue access tokens with (see `refresh::Grant`).
    pub grant: String,
    /// The session's absolute end.
    pub expires_at: UnixSeconds,
    pub token: NewRefreshToken,
}

/// A refresh token to store: its SHA-256, never the token.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: [u8; 32],
    pub expires_at: UnixSeconds,
}

/// Rotate the refresh token whose SHA-256 is `hash` into `next`, exactly once. Everything is
/// decided inside the commit, under the log's lock on PostgreSQL and by the one writer on
/// SQLite, so two rotations of one token — on one authority or on two replicas — cannot both
/// find it live: the second finds it used, which is reuse.
#[derive(Debug, Clone)]
pub struct Rotate {
    pub hash: [u8; 32],
    pub next: NewRefreshToken,
    /// The new access token's generation: the rotation happens only if it is still the
    /// subject's current one (and the session's).
    pub r#gen: u64,
    /// The answer of this rotation encrypted under the presented token, kept for a retry
    /// within the reuse interval; `None` when the interval is 0.
    pub sealed: Option<Vec<u8>>,
    /// A used token presented again within this long after its rotation, while its successor
    /// is unused, is a retry (0: never).
    pub reuse_interval_ms: i64,
    /// On reuse, the session revocation's requested `until` (see [`RevokeSession`]).
    pub until: UnixSeconds,
}

/// End the session of the refresh token whose SHA-256 is `hash` (RFC 7009 revocation of a
/// refresh token): the session is revoked — its refresh tokens and its access tokens.
#[derive(Debug, Clone)]
pub struct RevokeRefresh {
    pub hash: [u8; 32],
    pub until: UnixSeconds,
}

/// The answer to a [`StartSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStart {
    Started,
    /// The session id has refresh tokens already, or was revoked: nothing was written.
    Taken,
}

/// Why a refresh token was refused without anything being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    Unknown,
    /// Its session was revoked (before this request).
    SessionRevoked,
    /// Its subject was revoked since the session started.
    SubjectRevoked,
    /// The token's lifetime or the session's is over.
    Expired,
}

/// The answer to a [`Rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token is used now and `next` is the session's live token.
    Rotated,
    /// The presented token was rotated moments ago (within the reuse interval) and its
    /// successor is unused: the earlier rotation's answer, still sealed.
    Retried {
        sealed: Vec<u8>,
    },
    /// The presented token had been used: reuse. The session is revoked now, in this commit.
    Reused {
        sub: String,
        revoked: SessionRevoked,
    },
    Refused(RefreshRefusal),
}

/// The answer to a [`RevokeRefresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRevocation {
    /// The session is revoked now.
    Revoked(SessionRevoked),
    /// Nothing to do: unknown token, or its session was revoked before.
    Nothing,
}

/// The answer to a [`RevokeToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRevocation {
    /// Appended to the log now.
    Revoked {
        rid: RevocationId,
        exp: UnixSeconds,
        logged: Logged,
    },
    /// The token had been revoked before: nothing was written.
    AlreadyRevoked(Logged),
}

impl TokenRevocation {
    /// Where the token's revocation is in the log, whether appended now or before.
    pub fn logged(&self) -> Logged {
        match self {
            Self::Revoked { logged, .. } | Self::AlreadyRevoked(logged) => *logged,
        }
    }

    pub fn is_already_revoked(&self) -> bool {
        matches!(self, Self::AlreadyRevoked(_))
    }
}

/// A revocation's place in the log: its `seq` and when it was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub seq: Seq,
    pub at: UnixMillis,
}

/// The answer to a [`RevokeSubject`]: the subject's new generation, appended at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRevoked {
    pub sub: String,
    pub r#gen: u64,
    pub until: UnixSeconds,
    pub seq: Seq,
    pub at: UnixMillis,
}

/// The answer to a [`RevokeSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRevoked {
    pub sid: String,
    pub until: UnixSeconds,
    pub seq: Seq,
    pub at: UnixMillis,
}

/// The answer to a [`RevokeKey`].
#[derive(Debug, Clone)]
pub enum KeyRevocation {
    /// Appended to the log now. `activated` is the replacement, if the revoked key was the
    /// active one.
    Revoked {
        kid: KeyId,
        logged: Logged,
        activated: Option<Arc<SigningKey>>,
    },
    /// The key had been revoked before: nothing was written.
    AlreadyRevoked(Logged),
    /// The store has no such key.
    UnknownKey,
}

/// The answer to an [`AddKey`]: the key is the active one now.
#[derive(Debug, Clone)]
pub struct KeyAdded {
    pub key: Arc<SigningKey>,
}

/// The answer to an [`InitKey`].
#[derive(Debug, Clone)]
pub enum KeyInit {
    /// The key is the active one now.
    Added(Arc<SigningKey>),
    /// An active key existed already; nothing was written.
    Exists,
}

/// The answer to a [`Prune`]: `deleted` log rows went, and the refresh-state rows counted
/// by table; `more` says another prune may find further rows to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub floor: Seq,
    pub deleted: u64,
    pub refresh_tokens: u64,
    pub refresh_sessions: u64,
    pub revoked_sessions: u64,
    pub more: bool,
}

/// One change of a batch to commit. Revocations are appended to the log; key changes and
/// pruning are not revocations and take no `seq`.
#[derive(Debug, Clone)]
pub enum Mutation {
    RevokeToken(RevokeToken),
    RevokeSubject(RevokeSubject),
    RevokeSession(RevokeSession),
    RevokeKey(RevokeKey),
    AddKey(AddKey),
    InitKey(InitKey),
    Prune(Prune),
    StartSession(StartSession),
    Rotate(Rotate),
    RevokeRefresh(RevokeRefresh),
}

/// What committing one [`Mutation`] did: the variant of the same name.
#[derive(Debug, Clone)]
pub enum Outcome {
    RevokeToken(TokenRevocation),
    RevokeSubject(SubjectRevoked),
    RevokeSession(SessionRevoked),
    RevokeKey(KeyRevocation),
    AddKey(KeyAdded),
    InitKey(KeyInit),
    Prune(Pruned),
    StartSession(SessionStart),
    Rotate(Rotation),
    RevokeRefresh(RefreshRevocation),
}

impl Outcome {
    /// The revocation this outcome appended to the log, as the stream carries it.
    pub fn appended(&self) -> Option<RevocationEvent> {
        let (revocation, seq, at) = match self {
            Self::RevokeToken(TokenRevocation::Revoked { rid, exp, logged }) => (
                Revocation::Token {
                    rid: *rid,
                    exp: exp.get(),
                },
                logged.seq,
                logged.at,
            ),
            Self::RevokeSubject(s) => (
                Revocation::Subject {
                    sub: s.sub.clone(),
                    r#gen: s.r#gen,
                    until: s.until.get(),
                },
                s.seq,
                s.at,
            ),
            Self::RevokeSession(s)
            | Self::Rotate(Rotation::Reused { revoked: s, .. })
            | Self::RevokeRefresh(RefreshRevocation::Revoked(s)) => (
                Revocation::Session {
                    sid: s.sid.clone(),
                    until: s.until.get(),
                },
                s.seq,
                s.at,
            ),
            Self::RevokeKey(KeyRevocation::Revoked { kid, logged, .. }) => {
                (Revocation::Key { kid: *kid }, logged.seq, logged.at)
            }
            Self::RevokeToken(TokenRevocation::AlreadyRevoked(_))
            | Self::RevokeKey(KeyRevocation::AlreadyRevoked(_) | KeyRevocation::UnknownKey)
            | Self::AddKey(_)
            | Self::InitKey(_)
            | Self::Prune(_)
            | Self::StartSession(_)
            | Self::Rotate(_)
            | Self::RevokeRefresh(_) => return None,
        };
        Some(RevocationEvent {
            seq,
            revocation,
            at,
        })
    }

    /// Where in the log the revocation this outcome answers for is — appended now, or found
    /// there (already revoked): an answer vouches for it, so it must be applied first.
    pub fn position(&self) -> Option<Seq> {
        match self {
            Self::RevokeToken(t) => Some(t.logged().seq),
            Self::RevokeSubject(s) => Some(s.seq),
            Self::RevokeSession(s)
            | Self::Rotate(Rotation::Reused { revoked: s, .. })
            | Self::RevokeRefresh(RefreshRevocation::Revoked(s)) => Some(s.seq),
            Self::RevokeKey(
                KeyRevocation::Revoked { logged, .. } | KeyRevocation::AlreadyRevoked(logged),
            ) => Some(logged.seq),
            Self::RevokeKey(KeyRevocation::UnknownKey)
            | Self::AddKey(_)
            | Self::InitKey(_)
            | Self::Prune(_)
            | Self::StartSession(_)
            | Self::Rotate(_)
            | Self::RevokeRefresh(_) => None,
        }
    }

    /// The signing key this outcome made the active one.
    pub(crate) fn activated(&self) -> Option<&Arc<SigningKey>> {
        match self {
            Self::AddKey(KeyAdded { key })
            | Self::InitKey(KeyInit::Added(key))
            | Self::RevokeKey(KeyRevocation::Revoked {
                activated: Some(key),
                ..
            }) => Some(key),
            _ => None,
        }
    }

    /// Whether the stored signing keys changed (one added, retired or revoked).
    pub(crate) fn changed_keys(&self) -> bool {
        matches!(
            self,
            Self::AddKey(_)
                | Self::InitKey(KeyInit::Added(_))
                | Self::RevokeKey(KeyRevocation::Revoked { .. })
        )
    }
}

/// A command of a batch, tied to the type of its outcome.
pub(crate) trait Command: Into<Mutation> + Send + 'static {
    type Outcome: Send + 'static;

    /// This command's outcome out of the store's answer to its mutation. The store answers
    /// every mutation with the outcome variant of the same name; any other is an invariant
    /// broken inside the store, reported as [`StoreError::Invariant`].
    fn outcome(outcome: Outcome) -> Result<Self::Outcome, StoreError>;
}

macro_rules! command {
    ($command:ident => $outcome:ty) => {
        impl Command for $command {
            type Outcome = $outcome;

            fn outcome(outcome: Outcome) -> Result<$outcome, StoreError> {
                match outcome {
                    Outcome::$command(o) => Ok(o),
                    _ => Err(StoreError::Invariant(concat!(
                        "a ",
                        stringify!($command),
                        " was answered with another kind's outcome"
                    ))),
                }
            }
        }

        impl From<$command> for Mutation {
            fn from(command: $command) -> Self {
                Mutation::$command(command)
            }
        }
    };
}

command!(RevokeToken => TokenRevocation);
command!(RevokeSubject => SubjectRevoked);
command!(RevokeSession => SessionRevoked);
command!(RevokeKey => KeyRevocation);
command!(AddKey => KeyAdded);
command!(InitKey => KeyInit);
command!(Prune => Pruned);
command!(StartSession => SessionStart);
command!(Rotate => Rotation);
command!(RevokeRefresh => RefreshRevocation);
