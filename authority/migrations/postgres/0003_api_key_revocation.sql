-- API keys can be revoked. A revoked key's row stays, with the time it was revoked, so the
-- list of keys keeps an audit trail; lookups ignore it. NULL while the key is in force.
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
