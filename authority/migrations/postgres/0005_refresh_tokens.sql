-- Sessions with refresh tokens. A session is one family of refresh tokens: each rotation marks
-- the presented token used and inserts its successor, in the same transaction as the log's
-- commits (the ledger's writer), so exactly one successor ever exists.
CREATE TABLE refresh_sessions (
    sid        TEXT    PRIMARY KEY,
    sub        TEXT    NOT NULL,
    gen        BIGINT NOT NULL,   -- the subject's generation at the start: a later subject
                                   -- revocation raises it, and the session is over
    grant_json TEXT    NOT NULL,   -- aud, custom claims and access-token ttl to issue with
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL    -- absolute end (--session-max-lifetime)
);

CREATE TABLE refresh_tokens (
    hash       BYTEA    PRIMARY KEY,  -- SHA-256 of the token; the token itself is never stored
    sid        TEXT    NOT NULL REFERENCES refresh_sessions (sid),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at_ms BIGINT,              -- when it was rotated; NULL while it is live
    successor  BYTEA,                 -- hash of the token it was rotated into
    sealed     BYTEA                  -- its rotation's answer, encrypted under the token itself
                                     -- (kept only with a reuse interval, for a retried rotation)
);
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);

-- Every session ever revoked (its log row goes once its access tokens have expired; this one
-- stays): a revoked session never rotates, nor starts again with refresh tokens.
CREATE TABLE revoked_sessions (
    sid   TEXT    PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
