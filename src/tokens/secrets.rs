//! Client secrets at rest. Secrets given as plain text are stored as HMAC-SHA256 under a key
//! derived from the key-encryption key: a fast keyed hash is enough for high-entropy secrets
//! and keeps the token endpoint from spending a password hash on every request. Operators who
//! give an argon2id hash instead keep it, at the cost of one argon2 check per authentication.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;
use crate::tokens::KeyEncryptionKey;

const KEYED_PREFIX: &str = "hmac-sha256:";
const PURPOSE: &[u8] = b"gatehouse client secret hashing v1";
const SUCCESSOR_PURPOSE: &[u8] = b"gatehouse refresh token successor v1";

#[derive(Clone)]
pub struct SecretHasher {
    /// SHA-256's block size: HMAC uses a key of this length as it is.
    key: Secret<[u8; 64]>,
    successor_key: Secret<[u8; 64]>,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(********)")
    }
}

/// How a stored secret is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredSecretKind {
    Keyed,
    Argon2,
    Unknown,
}

pub fn stored_secret_kind(stored: &str) -> StoredSecretKind {
    if stored.starts_with(KEYED_PREFIX) {
        StoredSecretKind::Keyed
    } else if stored.starts_with("$argon2") {
        StoredSecretKind::Argon2
    } else {
        StoredSecretKind::Unknown
    }
}

impl SecretHasher {
    pub fn new(kek: &KeyEncryptionKey) -> Self {
        Self { key: kek.derive(PURPOSE), successor_key: kek.derive(SUCCESSOR_PURPOSE) }
    }

    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        keyed_mac(&self.key, secret)
    }

    /// The refresh token that replaces `token` when it is rotated. Derived rather than random,
    /// so that within the reuse grace period a client presenting `token` again is given the
    /// same successor (only hashes are stored); only this server can compute it.
    pub fn refresh_successor(&self, token: &str) -> String {
        URL_SAFE_NO_PAD.encode(keyed_mac(&self.successor_key, token).finalize().into_bytes())
    }

    pub fn hash(&self, secret: &str) -> String {
        format!("{KEYED_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.mac(secret).finalize().into_bytes()))
    }

    /// Constant-time check of `presented` against a keyed hash made by `hash`.
    pub fn verify_keyed(&self, stored: &str, presented: &str) -> bool {
        let Some(encoded) = stored.strip_prefix(KEYED_PREFIX) else { return false };
        let Ok(expected) = URL_SAFE_NO_PAD.decode(encoded) else { return false };
        self.mac(presented).verify_slice(&expected).is_ok()
    }
}

fn keyed_mac(key: &Secret<[u8; 64]>, value: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*key.expose()).into());
    mac.update(value.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_verify_only_their_secret_and_depend_on_the_key() {
        let hasher = SecretHasher::new(&KeyEncryptionKey::new([7; 32]));
        let stored = hasher.hash("s3cret-s3cret-s3cret");
        assert_eq!(stored_secret_kind(&stored), StoredSecretKind::Keyed);
        assert!(hasher.verify_keyed(&stored, "s3cret-s3cret-s3cret"));
        assert!(!hasher.verify_keyed(&stored, "s3cret-s3cret-s3creT"));
        assert!(!hasher.verify_keyed("hmac-sha256:not base64!", "x"));
        let other = SecretHasher::new(&KeyEncryptionKey::new([8; 32]));
        assert!(!other.verify_keyed(&stored, "s3cret-s3cret-s3cret"));
        assert_eq!(stored_secret_kind("$argon2id$v=19$..."), StoredSecretKind::Argon2);
    }

    #[test]
    fn refresh_successors_are_stable_per_token_and_key() {
        let hasher = SecretHasher::new(&KeyEncryptionKey::new([7; 32]));
        let next = hasher.refresh_successor("token-a");
        assert_eq!(next, hasher.refresh_successor("token-a"));
        assert_eq!(next.len(), 43);
        assert_ne!(next, hasher.refresh_successor("token-b"));
        assert_ne!(next, SecretHasher::new(&KeyEncryptionKey::new([8; 32])).refresh_successor("token-a"));
        assert_ne!(hasher.hash("token-a"), format!("hmac-sha256:{next}"), "the successor is not the client-secret hash");
    }
}
