-- The authority's durable state. `seq` is assigned inside the committing transaction from
-- meta.head_seq, so it is gap-free and in commit order even after old rows are cleaned up.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

INSERT INTO meta (name, value) VALUES
    ('epoch', lower(hex(randomblob(16)))),
    ('head_seq', '0');

-- The revocation log. `target` is the rid, sub, sid or kid the revocation names.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('token', 'subject', 'session', 'key')),
    target     TEXT    NOT NULL,
    gen        INTEGER,            -- subject: the new minimum accepted generation
    expires_at INTEGER,            -- token exp / until, Unix seconds; NULL = forever (key)
    at_ms      INTEGER NOT NULL,   -- commit time, Unix milliseconds
    token_sub  TEXT,               -- token: the token's sub, echoed by later revokes
    reason     TEXT
) STRICT;

-- A token or a key is revoked at most once: a second revoke answers with the first's seq.
CREATE UNIQUE INDEX revocations_once ON revocations (kind, target) WHERE kind IN ('token', 'key');
CREATE INDEX revocations_expiry ON revocations (expires_at);

-- Current generation of every subject ever revoked. Never deleted: a generation must never go
-- back down, or a token issued after an old revocation could be caught by a new one too late.
CREATE TABLE subject_generations (
    sub TEXT PRIMARY KEY,
    gen INTEGER NOT NULL
) STRICT;

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    seed        BLOB    NOT NULL,      -- the 32-byte FIPS 204 seed
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER,               -- no longer signing since (Unix seconds)
    revoked_seq INTEGER,               -- seq of its key revocation
    active      INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
) STRICT;

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active = 1;

CREATE TABLE api_keys (
    hash       BLOB    PRIMARY KEY,    -- SHA-256 of the key; the key itself is never stored
    scope      TEXT    NOT NULL CHECK (scope IN ('admin', 'introspect', 'subscribe')),
    label      TEXT,
    created_at INTEGER NOT NULL
) STRICT;
