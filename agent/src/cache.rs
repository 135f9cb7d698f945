//! The verdict cache: tokens whose signature and claims already verified, so a repeated verify
//! skips the ML-DSA check. It never answers "valid" by itself — the caller re-checks expiry
//! and the revocation set on every hit.
//!
//! Keyed on the whole token: a lookup hashes only the signature's tail (random per token, and
//! cheap), then compares the entire token byte for byte, so no other token can ever hit an
//! entry. Bounded: at capacity, expired entries go first, then an arbitrary one. Sharded, so
//! concurrent verifies rarely touch the same lock.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;
use revocast_shared::VerifiedToken;

const SHARDS: usize = 16;
/// Bytes of the token's end that are hashed (the signature's last characters).
const HASHED_TAIL: usize = 32;

struct Entry {
    token: Box<str>,
    verified: Arc<VerifiedToken>,
}

type Shard = RwLock<HashTable<Entry>>;

pub struct VerdictCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl VerdictCache {
    /// A cache holding at most about `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn hash(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    fn shard(&self, hash: u64) -> &Shard {
        // The top bits pick the shard; hashbrown uses the low and top-7 bits within it, and
        // the overlap only makes shards slightly less even.
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// The cached verdict for exactly `token`, if any.
    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        if self.per_shard == 0 {
            return None;
        }
        let hash = self.hash(token);
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        shard
            .find(hash, |e| *e.token == *token)
            .map(|e| Arc::clone(&e.verified))
    }

    /// Remember that `token` verified as `verified`. `now` (Unix seconds) decides which
    /// entries have expired when room must be made.
    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>, now: i64) {
        if self.per_shard == 0 {
            return;
        }
        let hash = self.hash(token);
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        if shard.find(hash, |e| *e.token == *token).is_some() {
            return;
        }
        if shard.len() >= self.per_shard {
            shard.retain(|e| e.verified.claims().exp > now);
        }
        if shard.len() >= self.per_shard {
            let victim = shard.iter().next().map(|e| self.hash(&e.token));
            if let Some(victim) = victim
                && let Ok(entry) = shard.find_entry(victim, |_| true)
            {
                entry.remove();
            }
        }
        shard.insert_unique(
            hash,
            Entry {
                token: token.into(),
                verified,
            },
            |e| self.hash(&e.token),
        );
    }

    /// Drop entries whose token has expired at `now`.
    pub fn purge_expired(&self, now: i64) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|e| e.verified.claims().exp > now);
        }
    }

    /// Forget every verdict: the state they were reached under has been replaced (a resync)
    /// or has lost a key.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::token::issue;
    use revocast_shared::{Claims, SigningKey, UnverifiedToken, Validation};

    use super::*;

    fn token(key: &SigningKey, sub: &str, exp: i64) -> (String, Arc<VerifiedToken>) {
        let claims = Claims {
            iss: "i".into(),
            sub: sub.into(),
            iat: 0,
            exp,
            nbf: None,
            aud: None,
            jti: format!("j-{sub}"),
            sid: None,
            r#gen: 0,
            custom: Default::default(),
        };
        let t = issue(&claims, key).unwrap().token;
        let v = UnverifiedToken::parse(&t)
            .unwrap()
            .verify(key.verifying_key(), &Validation::new(0), 0)
            .unwrap();
        (t, Arc::new(v))
    }

    #[test]
    fn only_the_exact_token_hits() {
        let key = SigningKey::generate().unwrap();
        let cache = VerdictCache::new(64);
        let (t, v) = token(&key, "a", 100);
        cache.insert(&t, v, 0);
        assert_eq!(cache.get(&t).unwrap().claims().sub, "a");
        // Same signature tail, different payload: must miss.
        let mut forged = t.clone();
        let dot = forged.find('.').unwrap() + 1;
        forged.replace_range(dot..dot + 1, "X");
        assert!(cache.get(&forged).is_none());
        assert!(cache.get(&t[..t.len() - 1]).is_none());
    }

    #[test]
    fn it_stays_bounded_and_drops_expired_entries_first() {
        let key = SigningKey::generate().unwrap();
        let cache = VerdictCache::new(16); // one per shard
        let tokens: Vec<_> = (0..40).map(|i| token(&key, &format!("s{i}"), 10)).collect();
        for (t, v) in &tokens {
            cache.insert(t, Arc::clone(v), 0);
        }
        assert!(cache.len() <= 16);
        cache.purge_expired(10);
        assert_eq!(cache.len(), 0);
        cache.insert(&tokens[0].0, Arc::clone(&tokens[0].1), 0);
        cache.clear();
        assert!(cache.get(&tokens[0].0).is_none());
        let disabled = VerdictCache::new(0);
        disabled.insert(&tokens[0].0, Arc::clone(&tokens[0].1), 0);
        assert!(disabled.get(&tokens[0].0).is_none());
    }
}
