-- Pruning of refresh state (see `prune` in store/commit.rs): sessions past their absolute end
-- are found by their end, and a revoked session's row goes once no session revocation for
-- its sid is left in the log, which the pruning looks up by sid. The partial index covers
-- session revocations only; the query repeats its condition (`kind = 'session'`), as SQLite
-- uses a partial index only then.
CREATE INDEX refresh_sessions_expiry ON refresh_sessions (expires_at);
CREATE INDEX revocations_session ON revocations (target) WHERE kind = 'session';
