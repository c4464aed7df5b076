-- The portal and access policy: who may use each application, which groups it is told about,
-- and how the launcher shows and opens it; each a JSON document read with the client.
ALTER TABLE clients ADD COLUMN access_policy_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN portal_json TEXT NOT NULL DEFAULT '{}';
