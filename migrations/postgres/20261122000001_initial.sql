-- Times are Unix seconds. Lists are JSON arrays in TEXT columns, the same on both databases.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    email TEXT,
    email_verified BOOLEAN NOT NULL,
    display_name TEXT,
    groups_json TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE identity_links (
    connector_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (connector_id, subject)
);
CREATE INDEX identity_links_user ON identity_links (user_id);

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY NOT NULL,
    secret_hash TEXT,
    redirect_uris_json TEXT NOT NULL,
    post_logout_redirect_uris_json TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    grant_types_json TEXT NOT NULL,
    name TEXT NOT NULL,
    first_party BOOLEAN NOT NULL,
    signing_alg TEXT NOT NULL,
    managed_by_config BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE connectors (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    email_domains_json TEXT NOT NULL,
    settings TEXT NOT NULL,
    managed_by_config BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    sealed_private_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
-- At most one signing key per algorithm is active.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (alg) WHERE retired_at IS NULL;

CREATE TABLE sso_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    connector_id TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX sso_sessions_user ON sso_sessions (user_id);
CREATE INDEX sso_sessions_expires ON sso_sessions (expires_at);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor TEXT,
    user_id TEXT,
    client_id TEXT,
    connector_id TEXT,
    ip TEXT,
    detail TEXT
);
CREATE INDEX audit_log_time ON audit_log (time);

-- Sign-in attempts per key (a username at a connector, or a client network) in fixed windows.
-- Incremented before the password check and released on success, so parallel guesses
-- cannot all slip under the limit.
CREATE TABLE login_attempts (
    key TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);

CREATE TABLE single_use (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX single_use_expires ON single_use (expires_at);
