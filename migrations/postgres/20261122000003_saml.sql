-- The SAML SP key pair (see src/upstream/saml/sp_key.rs); the oldest row is the one in use.
CREATE TABLE saml_sp_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    certificate_der BYTEA NOT NULL,
    sealed_private_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
