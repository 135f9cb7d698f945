-- The transparency log (PROTOCOL.md "Transparency log"): every revocation is a leaf of one
-- RFC 9162 Merkle tree per epoch, leaf `seq - 1`.

-- Every leaf hash of the epoch, written in the same transaction as its revocation row and
-- never pruned with it: proofs stay available after `--log-retention` deletes the events, and
-- a row changed or deleted behind the authority's back no longer matches its leaf.
CREATE TABLE log_leaves (
    seq  INTEGER PRIMARY KEY,
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

-- The tree's frontier at the head (`Frontier::to_bytes`), updated by every commit that
-- appends, so a restart continues the same tree. One row; absent = the empty tree.
CREATE TABLE log_tree (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    frontier BLOB    NOT NULL
) STRICT;

-- The log's signing keys (never a token key). A key signs from `signs_from` (Unix ms) on,
-- once agents had time to fetch it from the JWKS; the newest such key signs.
CREATE TABLE log_keys (
    kid        TEXT    PRIMARY KEY,
    seed       BLOB    NOT NULL,      -- the 32-byte FIPS 204 seed
    created_at INTEGER NOT NULL,      -- Unix ms
    signs_from INTEGER NOT NULL       -- Unix ms
) STRICT;

-- The latest checkpoint signed (the largest size; the newest of that size): at start the
-- stored leaves must still give its root.
CREATE TABLE log_checkpoint (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    note TEXT    NOT NULL
) STRICT;
