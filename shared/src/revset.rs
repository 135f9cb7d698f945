//! The revocation set: what is revoked right now, built by applying events in `seq` order. The
//! authority and every agent hold one and check each verified token against it.

use std::collections::{HashMap, HashSet};

use crate::event::Revocation;
use crate::{KeyId, RevocationId, VerifiedToken, VerifyError};

/// The maps' hasher: foldhash with a random seed per map, several times faster than std's
/// SipHash on these short keys (an agent hashes every key it applies, and all of them again
/// when a map grows). The keys are not chosen by whoever presents tokens: a token's `sub`
/// and `sid` are only looked up, and only revocations (from the authority's log) insert.
type Hasher = foldhash::fast::RandomState;

/// Revoked tokens, subject minimum generations, revoked sessions and revoked keys, each with
/// the Unix second until which it matters.
///
/// Revoked tokens are the bulk (one entry per revoked token, millions at scale), so they are
/// stored compactly: the first 128 bits of the `rid` (a SHA-256 output; a false match with
/// a million entries has probability about 2⁻¹⁰⁸) and `exp` as `u32` seconds — 20 bytes a
/// slot (21 with hashbrown's control byte) instead of 41.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationSet {
    tokens: HashMap<[u8; 16], u32, Hasher>,
    subjects: HashMap<String, SubjectFloor, Hasher>,
    sessions: HashMap<String, i64, Hasher>,
    keys: HashSet<KeyId, Hasher>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubjectFloor {
    min_gen: u64,
    until: i64,
}

impl SubjectFloor {
    /// The larger floor and the later `until` win.
    fn raise(&mut self, r#gen: u64, until: i64) {
        self.min_gen = self.min_gen.max(r#gen);
        self.until = self.until.max(until);
    }
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one revocation. Idempotent, and order-insensitive for entries of the same subject
    /// or session (the larger floor and the later `until` win).
    pub fn apply(&mut self, revocation: &Revocation) {
        match revocation {
            Revocation::Subject { sub, r#gen, until } => {
                if let Some(floor) = self.subjects.get_mut(sub.as_str()) {
                    floor.raise(*r#gen, *until);
                } else {
                    self.insert_subject(sub.clone(), *r#gen, *until);
                }
            }
            Revocation::Session { sid, until } => {
                if let Some(e) = self.sessions.get_mut(sid.as_str()) {
                    *e = (*e).max(*until);
                } else {
                    self.sessions.insert(sid.clone(), *until);
                }
            }
            Revocation::Token { rid, exp } => self.insert_token(rid, *exp),
            Revocation::Key { kid } => {
                self.keys.insert(*kid);
            }
        }
    }

    /// [`apply`](Self::apply), taking the revocation: a subject's or session's name moves
    /// into the set instead of being copied.
    pub fn insert(&mut self, revocation: Revocation) {
        match revocation {
            Revocation::Subject { sub, r#gen, until } => self.insert_subject(sub, r#gen, until),
            Revocation::Session { sid, until } => {
                let e = self.sessions.entry(sid).or_insert(until);
                *e = (*e).max(until);
            }
            Revocation::Token { rid, exp } => self.insert_token(&rid, exp),
            Revocation::Key { kid } => {
                self.keys.insert(kid);
            }
        }
    }

    fn insert_token(&mut self, rid: &RevocationId, exp: i64) {
        let exp = compact_time(exp);
        let e = self.tokens.entry(token_key(rid)).or_insert(exp);
        *e = (*e).max(exp);
    }

    fn insert_subject(&mut self, sub: String, r#gen: u64, until: i64) {
        self.subjects
            .entry(sub)
            .or_insert(SubjectFloor {
                min_gen: r#gen,
                until,
            })
            .raise(r#gen, until);
    }

    /// `Err(Revoked)` if any revocation in force covers `token`.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), VerifyError> {
        let claims = token.claims();
        let revoked = self.tokens.contains_key(&token_key(&token.rid()))
            || self.keys.contains(&token.kid())
            || self
                .subjects
                .get(claims.sub.as_str())
                .is_some_and(|f| claims.r#gen < f.min_gen)
            || claims
                .sid
                .as_deref()
                .is_some_and(|sid| self.sessions.contains_key(sid));
        if revoked {
            Err(VerifyError::Revoked)
        } else {
            Ok(())
        }
    }

    pub fn is_token_revoked(&self, rid: &RevocationId) -> bool {
        self.tokens.contains_key(&token_key(rid))
    }

    pub fn is_key_revoked(&self, kid: &KeyId) -> bool {
        self.keys.contains(kid)
    }

    /// `true` while a revocation of session `sid` is in force at `now`.
    pub fn is_session_revoked(&self, sid: &str, now: i64) -> bool {
        self.sessions.get(sid).is_some_and(|until| *until > now)
    }

    /// Drop every entry whose time has passed (`until`/`exp` ≤ `now`): a token it could reject
    /// has expired by then. Returns how many entries were dropped.
    pub fn purge_expired(&mut self, now: i64) -> usize {
        let before = self.len();
        let now_compact = compact_time(now);
        self.tokens.retain(|_, exp| *exp > now_compact);
        self.subjects.retain(|_, f| f.until > now);
        self.sessions.retain(|_, until| *until > now);
        before - self.len()
    }

    /// Make room for `additional` more revoked tokens at once (e.g. before loading a snapshot),
    /// instead of growing the table step by step.
    pub fn reserve_tokens(&mut self, additional: usize) {
        self.tokens.reserve(additional);
    }

    /// Number of entries of all kinds.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.subjects.len() + self.sessions.len() + self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stored key of a revoked token: the first 128 bits of its `rid`. A byte array rather
/// than a `u128`, whose 16-byte alignment would pad every slot to 32 bytes.
fn token_key(rid: &RevocationId) -> [u8; 16] {
    let mut first = [0u8; 16];
    first.copy_from_slice(&rid.as_bytes()[..16]);
    first
}

/// Unix seconds as `u32` (valid until 2106), saturating: before 1970 is 0, after is `u32::MAX`.
fn compact_time(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::crypto::SigningSeed;
    use crate::token::{Claims, UnverifiedToken, Validation, issue};

    const NOW: i64 = 1_767_222_000;

    fn token(sub: &str, r#gen: u64, sid: Option<&str>, key: &SigningKey) -> VerifiedToken {
        let claims = Claims {
            iss: "i".into(),
            sub: sub.into(),
            iat: NOW,
            exp: NOW + 60,
            nbf: None,
            aud: None,
            jti: "j".into(),
            sid: sid.map(Into::into),
            r#gen,
            custom: Default::default(),
        };
        let t = issue(&claims, key).unwrap().token;
        UnverifiedToken::parse(&t)
            .unwrap()
            .verify(key.verifying_key(), &Validation::new(0), NOW)
            .unwrap()
    }

    #[test]
    fn each_kind_revokes_what_it_names_and_nothing_else() {
        let key = SigningKey::from_seed(SigningSeed::from_bytes([1; 32]));
        let a = token("alice", 0, Some("s1"), &key);
        let b = token("bob", 0, None, &key);
        let mut set = RevocationSet::new();
        assert!(set.check(&a).is_ok() && set.check(&b).is_ok());

        set.apply(&Revocation::Token {
            rid: a.rid(),
            exp: NOW + 60,
        });
        assert_eq!(set.check(&a), Err(VerifyError::Revoked));
        assert!(set.check(&b).is_ok());

        let mut set = RevocationSet::new();
        set.apply(&Revocation::Subject {
            sub: "bob".into(),
            r#gen: 1,
            until: NOW + 100,
        });
        assert_eq!(set.check(&b), Err(VerifyError::Revoked));
        assert!(
            set.check(&token("bob", 1, None, &key)).is_ok(),
            "issued after the revocation"
        );
        assert!(set.check(&a).is_ok());

        let mut set = RevocationSet::new();
        set.apply(&Revocation::Session {
            sid: "s1".into(),
            until: NOW + 100,
        });
        assert_eq!(set.check(&a), Err(VerifyError::Revoked));
        assert!(set.check(&b).is_ok());
        assert!(set.is_session_revoked("s1", NOW) && !set.is_session_revoked("s1", NOW + 100));

        let mut set = RevocationSet::new();
        set.apply(&Revocation::Key { kid: key.kid() });
        assert_eq!(set.check(&a), Err(VerifyError::Revoked));
        assert_eq!(set.check(&b), Err(VerifyError::Revoked));
    }

    #[test]
    fn inserting_a_revocation_is_applying_it() {
        let revocations = [
            Revocation::Subject {
                sub: "s".into(),
                r#gen: 3,
                until: NOW + 10,
            },
            Revocation::Subject {
                sub: "s".into(),
                r#gen: 2,
                until: NOW + 50,
            },
            Revocation::Session {
                sid: "x".into(),
                until: NOW + 5,
            },
            Revocation::Session {
                sid: "x".into(),
                until: NOW + 1,
            },
            Revocation::Token {
                rid: RevocationId::of_signature(b"t"),
                exp: NOW + 1,
            },
            Revocation::Token {
                rid: RevocationId::of_signature(b"t"),
                exp: -5,
            },
            Revocation::Key {
                kid: KeyId::from_bytes([0; 32]),
            },
        ];
        let (mut applied, mut inserted) = (RevocationSet::new(), RevocationSet::new());
        for r in revocations {
            applied.apply(&r);
            inserted.insert(r);
            assert_eq!(applied, inserted);
        }
        assert_eq!(
            inserted.subjects["s"],
            SubjectFloor {
                min_gen: 3,
                until: NOW + 50
            }
        );
        assert_eq!(inserted.sessions["x"], NOW + 5);
    }

    #[test]
    fn floors_only_rise_and_expired_entries_leave() {
        let mut set = RevocationSet::new();
        set.apply(&Revocation::Subject {
            sub: "s".into(),
            r#gen: 3,
            until: NOW + 10,
        });
        set.apply(&Revocation::Subject {
            sub: "s".into(),
            r#gen: 2,
            until: NOW + 5,
        });
        set.apply(&Revocation::Token {
            rid: RevocationId::of_signature(b"t"),
            exp: NOW + 1,
        });
        set.apply(&Revocation::Key {
            kid: KeyId::from_bytes([0; 32]),
        });
        assert_eq!(
            set.subjects["s"],
            SubjectFloor {
                min_gen: 3,
                until: NOW + 10
            }
        );
        assert_eq!(set.purge_expired(NOW + 1), 1);
        assert_eq!(set.purge_expired(NOW + 10), 1);
        assert_eq!(set.len(), 1, "key revocations are forever");
    }
}
