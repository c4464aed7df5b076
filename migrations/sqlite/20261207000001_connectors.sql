-- Connectors as data: each change raises `version`, which every node's registry compares to
-- rebuild what changed; a disabled connector stays listed but signs no one in. An upstream
-- client secret is sealed with the key-encryption key, apart from the settings document.
ALTER TABLE connectors ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE connectors ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE connectors ADD COLUMN sealed_secret BLOB;
-- Linking a first sign-in by email (a connector's link_by_email) looks users up by address.
CREATE INDEX users_email_lower ON users (LOWER(email));
