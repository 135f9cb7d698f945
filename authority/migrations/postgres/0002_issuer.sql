-- The issuer (`iss`) of this database's tokens, recorded by the first start. Every replica must
-- be configured with it: one with another `--issuer` would issue tokens the others reject, so
-- it refuses to start. NULL until the first start records it.
ALTER TABLE log_state ADD COLUMN issuer TEXT;
