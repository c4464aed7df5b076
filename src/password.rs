//! argon2id password hashing for user passwords and client secrets.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

/// A PHC string with argon2's recommended parameters (argon2id, 19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| HashError)
}

/// Checks `password` against a PHC string. The comparison inside is constant-time; a hash that
/// does not parse verifies nothing.
pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the same work as checking a real password, so an unknown username takes as long to
/// refuse as a wrong password.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash("gatehouse-dummy-password").ok()) {
        let _ = verify(phc, password);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "correct horsf"));
        assert!(!verify("not a hash", "correct horse"));
    }
}
