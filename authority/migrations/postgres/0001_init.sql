-- The authority's durable state, shared by every replica. sqlx runs migrations under an
-- advisory lock, so replicas starting together apply this once.

-- The log's identity and position, in one row. Every committing transaction locks this row
-- first (SELECT ... FOR UPDATE) and holds it until it commits, so commits from all replicas
-- are serialised: `seq` is allocated gap-free and in commit order, and a transaction that
-- sees head H sees every row up to H. A plain `bigserial` would not do: a slower transaction
-- holding seq 7 may commit after seq 8 is visible, and a reader tailing `seq > 7` skips it.
CREATE TABLE log_state (
    id        SMALLINT PRIMARY KEY CHECK (id = 1),
    epoch     TEXT   NOT NULL,
    head_seq  BIGINT NOT NULL,
    -- Rows with seq <= log_floor may have been pruned (if expired): exact resumes need
    -- `since >= log_floor`. Rows above the floor are never deleted.
    log_floor BIGINT NOT NULL
);

INSERT INTO log_state (id, epoch, head_seq, log_floor)
VALUES (1, replace(gen_random_uuid()::text, '-', ''), 0, 0);

-- The revocation log. `target` is the rid, sub, sid or kid the revocation names.
CREATE TABLE revocations (
    seq        BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('token', 'subject', 'session', 'key')),
    target     TEXT   NOT NULL,
    gen        BIGINT,            -- subject: the new minimum accepted generation
    expires_at BIGINT,            -- token exp / until, Unix seconds; NULL = forever (key)
    at_ms      BIGINT NOT NULL,   -- commit time, Unix milliseconds
    token_sub  TEXT,              -- token: the token's sub, echoed by later revokes
    reason     TEXT
);

-- A token or a key is revoked at most once: a second revoke answers with the first's seq.
CREATE UNIQUE INDEX revocations_once ON revocations (kind, target) WHERE kind IN ('token', 'key');
CREATE INDEX revocations_expiry ON revocations (expires_at);

-- Current generation of every subject ever revoked. Never deleted: a generation must never go
-- back down.
CREATE TABLE subject_generations (
    sub TEXT   PRIMARY KEY,
    gen BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    seed        BYTEA   NOT NULL,      -- the 32-byte FIPS 204 seed
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT,                -- no longer signing since (Unix seconds)
    revoked_seq BIGINT,                -- seq of its key revocation
    active      BOOLEAN NOT NULL DEFAULT false
);

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;

CREATE TABLE api_keys (
    hash       BYTEA  PRIMARY KEY,     -- SHA-256 of the key; the key itself is never stored
    scope      TEXT   NOT NULL CHECK (scope IN ('admin', 'introspect', 'subscribe')),
    label      TEXT,
    created_at BIGINT NOT NULL
);
