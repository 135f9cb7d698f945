-- The fleet, shared between replicas: each replica writes its connected subscribers here every
-- second (replacing its previous rows) and reads the others', so any replica answers
-- `GET /v1/fleet` and `wait=fleet` for the whole fleet. Rows of a replica that stopped
-- refreshing are ignored after a few seconds and deleted after a minute. Times are Unix
-- milliseconds.
CREATE TABLE fleet_replicas (
    replica TEXT PRIMARY KEY,
    updated_at BIGINT NOT NULL
);

CREATE TABLE fleet_subscribers (
    replica TEXT NOT NULL,
    id BIGINT NOT NULL,
    name TEXT,
    version TEXT,
    transport TEXT NOT NULL,
    remote TEXT,
    connected_at BIGINT NOT NULL,
    applied BIGINT,
    acked_at BIGINT,
    lag_events BIGINT,
    lag_ms BIGINT,
    last_heard BIGINT,
    resyncs BIGINT,
    acks_ignored BIGINT NOT NULL,
    PRIMARY KEY (replica, id)
);
