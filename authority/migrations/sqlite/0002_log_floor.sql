-- Log retention. Rows with seq <= log_floor may have been pruned (if they had expired), so a
-- stream client can resume exactly only from `since >= log_floor`; older positions get `reset`.
-- Rows above the floor are never deleted.
INSERT INTO meta (name, value) VALUES ('log_floor', '0');
