-- The admin console and API: client versions for compare-and-swap edits, a rotated secret's
-- overlap, each identity link's last sign-in, and the indexes the console's lists and filters page through.
ALTER TABLE clients ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at BIGINT;
ALTER TABLE identity_links ADD COLUMN last_login_at BIGINT;
CREATE INDEX users_username ON users (username, id);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX audit_log_user ON audit_log (user_id, id);
CREATE INDEX audit_log_client ON audit_log (client_id, id);
CREATE INDEX sso_sessions_auth_time ON sso_sessions (auth_time, id);
