-- SAML SP keys: one key per job (signing requests, decrypting assertions), each rotated through
-- the states next (published, activated_at unset), active, and retired (kept, retired_at set).
ALTER TABLE saml_sp_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'encryption';
ALTER TABLE saml_sp_keys ADD COLUMN activated_at BIGINT;
ALTER TABLE saml_sp_keys ADD COLUMN retired_at BIGINT;
-- Earlier releases used the oldest row for both jobs: it stays the encryption key, so what IdPs
-- encrypt to it still decrypts, and a signing key of its own is generated at the next start.
-- Rows that lost the first-start race were never used.
DELETE FROM saml_sp_keys WHERE kid NOT IN (SELECT kid FROM saml_sp_keys ORDER BY created_at, kid LIMIT 1);
UPDATE saml_sp_keys SET activated_at = created_at;
CREATE UNIQUE INDEX saml_sp_keys_one_active ON saml_sp_keys (purpose) WHERE activated_at IS NOT NULL AND retired_at IS NULL;

-- A resource server's client may read any token at the introspection endpoint.
ALTER TABLE clients ADD COLUMN introspect_any BOOLEAN NOT NULL DEFAULT FALSE;

-- Where a logout notification goes and how it is signed, captured when it is queued, so a
-- client removed meanwhile is still told.
ALTER TABLE backchannel_logouts ADD COLUMN uri TEXT;
ALTER TABLE backchannel_logouts ADD COLUMN signing_alg TEXT;
