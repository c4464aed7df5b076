-- A person's sessions, newest first (the portal, a user's page in the console), read in index
-- order instead of filtered out of everyone's.
DROP INDEX sso_sessions_user;
CREATE INDEX sso_sessions_user ON sso_sessions (user_id, auth_time, id);
-- When a grant was last refreshed (the portal's "last used") is the index's last entry for the
-- grant, not a read of every token it was ever given.
DROP INDEX refresh_tokens_grant;
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id, issued_at);
