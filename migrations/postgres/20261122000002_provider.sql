-- The downstream OpenID Provider: client settings, grants with their refresh tokens, revoked
-- access tokens, remembered consent, and the back-channel logout queue.

ALTER TABLE clients ADD COLUMN access_token_lifetime_secs BIGINT;
ALTER TABLE clients ADD COLUMN issue_refresh_token BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE clients ADD COLUMN default_audience TEXT;
ALTER TABLE clients ADD COLUMN resources_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN backchannel_logout_uri TEXT;

-- What one authorization (a redeemed code) gave one client: every access and refresh token
-- issued from it points here, so revoking the grant revokes them all.
CREATE TABLE grants (
    id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT,
    code_hash TEXT,
    scope TEXT NOT NULL,
    audience TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    amr_json TEXT NOT NULL,
    idp TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX grants_code ON grants (code_hash);
CREATE INDEX grants_session ON grants (session_id);
CREATE INDEX grants_expires ON grants (expires_at);

-- Only hashes: a copy of this table redeems nothing.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    grant_id TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE revoked_access_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens (expires_at);

CREATE TABLE consents (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Logout notifications still to deliver. A row is leased by one node at a time and deleted
-- once delivered, so a restart or a second node loses and duplicates nothing.
CREATE TABLE backchannel_logouts (
    id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    sid TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX backchannel_logouts_due ON backchannel_logouts (next_attempt_at);
