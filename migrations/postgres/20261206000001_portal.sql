-- The portal and access policy: who may use each application, which groups it is told about,
-- and how the launcher shows and opens it; each a JSON document read with the client.
ALTER TABLE clients ADD COLUMN access_policy_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN portal_json TEXT NOT NULL DEFAULT '{}';
-- The portal's connected apps: each application's newest unrevoked grant of a person.
CREATE INDEX grants_user_client_live ON grants (user_id, client_id, created_at, id) WHERE revoked_at IS NULL;
