-- Sessions with refresh tokens. A session is one family of refresh tokens: each rotation marks
-- the presented token used and inserts its successor, in the same transaction as the log's
-- commits (the ledger's writer), so exactly one successor ever exists.
CREATE TABLE refresh_sessions (
    sid        TEXT    PRIMARY KEY,
    sub        TEXT    NOT NULL,
    gen        INTEGER NOT NULL,   -- the subject's generation at the start: a later subject
                                   -- revocation raises it, and the session is over
    grant_json TEXT    NOT NULL,   -- aud, custom claims and access-token ttl to issue with
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL    -- absolute end (--session-max-lifetime)
) STRICT;

CREATE TABLE refresh_tokens (
    hash       BLOB    PRIMARY KEY,  -- SHA-256 of the token; the token itself is never stored
    sid        TEXT    NOT NULL REFERENCES refresh_sessions (sid),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at_ms INTEGER,              -- when it was rotated; NULL while it is live
    successor  BLOB,                 -- hash of the token it was rotated into
    sealed     BLOB                  -- its rotation's answer, encrypted under the token itself
                                     -- (kept only with a reuse interval, for a retried rotation)
) STRICT;
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);

-- Every session ever revoked (its log row goes once its access tokens have expired; this one
-- stays): a revoked session never rotates, nor starts again with refresh tokens.
CREATE TABLE revoked_sessions (
    sid   TEXT    PRIMARY KEY,
    at_ms INTEGER NOT NULL
) STRICT;
