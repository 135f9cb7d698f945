//! Open streams end when their key is revoked, on any replica.
//!
//! A stream is authenticated once, when it opens, and may then run for days: without this, a
//! leaked subscriber key revoked everywhere would keep receiving the revocation stream until
//! its connection dropped. So every key with open streams is re-checked through [`ApiKeys`]
//! (its cache and single flight included) every [`RECHECK_EVERY`], by one task per distinct
//! key, whatever the number of its streams: 10,000 agents sharing one subscriber key cost one
//! timer and one check per interval, not 10,000. Each stream holds a [`KeyWatch`], a `watch`
//! receiver it selects on beside its feed; the fan-out of frames does no work for it.
//!
//! A revocation through this process ends the key's streams at once; one through another
//! replica (or the CLI), within [`RECHECK_EVERY`] plus the cache's `KNOWN_FOR` plus one store
//! query — about a second.
//!
//! A check the store cannot answer does not end anything: one failed query must not cut a
//! fleet's healthy streams (new requests fail closed with 503 meanwhile). But a key that has
//! gone unverified for [`UNVERIFIED_FOR`] — the staleness an agent tolerates by default
//! (`--max-staleness`) — ends its streams as [`Verdict::Unverifiable`]: its revocation may be
//! exactly what cannot be read, and its agents are better off reconnecting (and failing over
//! to a replica whose store answers) than trusting a stream whose key nobody can vouch for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::{ApiKeys, KeyDigest, id_of};

/// How often a key with open streams is re-checked.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a key with open streams may go unverified (every check failing) before they end.
pub(crate) const UNVERIFIED_FOR: Duration = Duration::from_secs(5);

/// What the latest check says of a key with open streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid,
    /// Unknown to the store now: revoked (keys are never deleted).
    Revoked,
    /// The store could not answer for [`UNVERIFIED_FOR`].
    Unverifiable,
}

/// One key's channel; its checking task holds it too.
type Channel = Arc<watch::Sender<Verdict>>;

/// The keys with open streams, each with the channel its streams watch.
#[derive(Default)]
pub(super) struct Watchers {
    keys: Mutex<HashMap<[u8; 32], Channel>>,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Channel>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End the streams of `digest` with `verdict`: those watching `channel` (its checking
    /// task's), or, without one, whichever channel the key has (a revocation here).
    pub(super) fn end(&self, digest: &[u8; 32], channel: Option<&Channel>, verdict: Verdict) {
        let removed = {
            let mut keys = self.lock();
            match keys.get(digest) {
                Some(current) if channel.is_none_or(|mine| Arc::ptr_eq(current, mine)) => {
                    keys.remove(digest)
                }
                _ => None,
            }
        };
        for channel in removed.iter().chain(channel) {
            let streams = channel.receiver_count();
            if channel.send_replace(verdict) == Verdict::Valid && streams > 0 {
                // The first characters of the id are enough to find the key in `keys list`.
                let id = id_of(digest);
                tracing::info!(
                    key = id.get(..8).unwrap_or(&id),
                    streams,
                    ?verdict,
                    "ending the open streams of an API key"
                );
            }
        }
    }

    /// Whether `channel` has no stream left; then it is forgotten (if still the key's).
    fn forget_if_unwatched(&self, digest: &[u8; 32], channel: &Channel) -> bool {
        let mut keys = self.lock();
        // Under the lock: `watch` subscribes under it too, so no stream joins in between.
        if channel.receiver_count() > 0 {
            return false;
        }
        if keys.get(digest).is_some_and(|c| Arc::ptr_eq(c, channel)) {
            keys.remove(digest);
        }
        true
    }

    #[cfg(test)]
    pub(super) fn keys_watched(&self) -> usize {
        self.lock().len()
    }
}

/// Held by an open stream: resolves once its key is no longer valid.
pub(crate) struct KeyWatch {
    verdict: watch::Receiver<Verdict>,
}

impl KeyWatch {
    /// Wait until the key is revoked or unverifiable; pending forever while it is valid.
    pub(crate) async fn ended(&mut self) -> Verdict {
        // Copied out at once: the borrow it comes in must not live across an await.
        let verdict = self
            .verdict
            .wait_for(|v| *v != Verdict::Valid)
            .await
            .map(|v| *v);
        match verdict {
            Ok(verdict) => verdict,
            // The checking task is gone without a verdict (it never is while a stream holds
            // a receiver): nothing will end this stream early.
            Err(_) => std::future::pending().await,
        }
    }
}

impl ApiKeys {
    /// Watch the key `digest` for an open stream: the stream ends when the returned watch
    /// resolves. The first stream of a key starts its checking task; the last one to go
    /// stops it.
    pub(crate) fn watch(self: &Arc<Self>, digest: KeyDigest) -> KeyWatch {
        let mut keys = self.watchers.lock();
        if let Some(channel) = keys.get(&digest.0) {
            return KeyWatch {
                verdict: channel.subscribe(),
            };
        }
        let (sender, verdict) = watch::channel(Verdict::Valid);
        let channel = Arc::new(sender);
        keys.insert(digest.0, Arc::clone(&channel));
        drop(keys);
        tokio::spawn(Arc::clone(self).recheck(digest.0, channel));
        KeyWatch { verdict }
    }

    /// The checking task of one key: until its last stream goes, or it ends them.
    async fn recheck(self: Arc<Self>, digest: [u8; 32], channel: Channel) {
        let mut ticks = tokio::time::interval(self.recheck_every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // The first tick is immediate; the stream was just authorized.
        let mut verified = Instant::now();
        let verdict = loop {
            tokio::select! {
                () = channel.closed() => {
                    if self.watchers.forget_if_unwatched(&digest, &channel) {
                        return;
                    }
                    continue;
                }
                _ = ticks.tick() => {}
            }
            let started = Instant::now();
            match self.scope_of_digest(digest).await {
                Ok(Some(_)) => verified = started,
                Ok(None) => break Verdict::Revoked,
                Err(e) if verified.elapsed() < self.unverified_for => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "cannot re-check the API key of open streams; they keep running for now"
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        unverified_for = ?self.unverified_for,
                        "cannot re-check the API key of open streams; ending them"
                    );
                    break Verdict::Unverifiable;
                }
            }
        };
        self.watchers.end(&digest, Some(&channel), verdict);
    }
}
