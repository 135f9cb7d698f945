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
#[derive(Debug, Clone)]
pub struct Prune {
    pub floor_before: UnixMillis,
    pub expired_by: UnixSeconds,
    pub limit: u32,
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

/// The answer to a [`Prune`]: `deleted` rows went; `more` says another prune would find
/// further expired rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub floor: Seq,
    pub deleted: u64,
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
            Self::RevokeSession(s) => (
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
            | Self::Prune(_) => return None,
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
            Self::RevokeSession(s) => Some(s.seq),
            Self::RevokeKey(
                KeyRevocation::Revoked { logged, .. } | KeyRevocation::AlreadyRevoked(logged),
            ) => Some(logged.seq),
            Self::RevokeKey(KeyRevocation::UnknownKey)
            | Self::AddKey(_)
            | Self::InitKey(_)
            | Self::Prune(_) => None,
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
