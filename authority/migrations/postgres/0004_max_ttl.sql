-- The longest token lifetime (`--max-ttl`, seconds) any replica of this database was ever
-- started with: every token issued is bounded by it, so subject and session revocations are
-- kept that long. Raised (never lowered) at every start; 0 until the first start records it.
ALTER TABLE log_state ADD COLUMN max_ttl_secs BIGINT NOT NULL DEFAULT 0;
