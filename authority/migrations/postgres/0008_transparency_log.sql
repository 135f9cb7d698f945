-- The transparency log (PROTOCOL.md "Transparency log"): every revocation is a leaf of one
-- RFC 9162 Merkle tree per epoch, leaf `seq - 1`.

-- Every leaf hash of the epoch, written in the same transaction as its revocation row and
-- never pruned with it: proofs stay available after `--log-retention` deletes the events, and
-- a row changed or deleted behind the authority's back no longer matches its leaf.
CREATE TABLE log_leaves (
    seq  BIGINT PRIMARY KEY,
    hash BYTEA  NOT NULL CHECK (length(hash) = 32)
);

-- The tree's frontier at the head (`Frontier::to_bytes`), beside the head it belongs to and
-- updated under the same row lock: whichever replica commits continues the same tree.
-- NULL = the empty tree.
ALTER TABLE log_state ADD COLUMN frontier BYTEA;

-- The log's signing keys (never a token key). A key signs from `signs_from` (Unix ms) on,
-- once agents had time to fetch it from the JWKS; the newest such key signs.
CREATE TABLE log_keys (
    kid        TEXT   PRIMARY KEY,
    seed       BYTEA  NOT NULL,       -- the 32-byte FIPS 204 seed
    created_at BIGINT NOT NULL,       -- Unix ms
    signs_from BIGINT NOT NULL        -- Unix ms
);

-- The latest checkpoint any replica signed (the largest size; the newest of that size): the
-- stored leaves must still give its root.
CREATE TABLE log_checkpoint (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    note TEXT   NOT NULL
);
