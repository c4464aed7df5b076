-- The SAML SP key pair (see src/upstream/saml/sp_key.rs); the oldest row is the one in use.
CREATE TABLE saml_sp_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    certificate_der BLOB NOT NULL,
    sealed_private_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
