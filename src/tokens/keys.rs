//! Signing key material: generation, sealing at rest, and the public JWK.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::pkcs8::EncodePrivateKey;
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;
use crate::config::SigningAlg;
use crate::secret::Secret;
use crate::store::SigningKeyRecord;
use crate::tokens::TokenError;

const NONCE_LEN: usize = 12;
const RSA_BITS: usize = 2048;

/// The key that seals signing keys in the database (AES-256-GCM).
#[derive(Clone)]
pub struct KeyEncryptionKey(Secret<[u8; 32]>);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(********)")
    }
}

impl KeyEncryptionKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Secret::new(bytes))
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::new(bytes)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.expose())
    }

    /// A key for another purpose, derived with HKDF-SHA256 so it reveals nothing of this one.
    pub fn derive<const N: usize>(&self, purpose: &[u8]) -> Secret<[u8; N]> {
        let mut okm = [0u8; N];
        // HKDF-SHA256 expands to at most 8160 bytes; callers ask for a key's worth.
        let _ = hkdf::Hkdf::<Sha256>::new(None, self.0.expose()).expand(purpose, &mut okm);
        Secret::new(okm)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose().into())
    }

    /// Seals `plaintext`; `context` (the key id) is authenticated so a sealed key cannot be
    /// moved onto another record.
    pub(crate) fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, TokenError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .map_err(|_| TokenError::KeyMaterial("sealing failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    pub(crate) fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, TokenError> {
        if sealed.len() <= NONCE_LEN {
            return Err(TokenError::KeyMaterial("sealed key is truncated"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| TokenError::KeyMaterial("sealed key is truncated"))?;
        self.cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| TokenError::KeyMaterial("a signing key cannot be opened: wrong key-encryption key or corrupt data"))
    }
}

/// A new key pair: the record to store, sealed with `kek`.
pub fn generate(alg: SigningAlg, kek: &KeyEncryptionKey, now: UnixTime) -> Result<SigningKeyRecord, TokenError> {
    let (private_der, public_params) = match alg {
        SigningAlg::ES256 => {
            let secret = p256::SecretKey::random(&mut OsRng);
            let point = p256::EncodedPoint::from(secret.public_key());
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(TokenError::KeyMaterial("generated EC key has no affine coordinates"));
            };
            let der = secret.to_pkcs8_der().map_err(|_| TokenError::KeyMaterial("EC key encoding failed"))?;
            (
                der.as_bytes().to_vec(),
                json!({"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
            )
        }
        SigningAlg::RS256 => {
            let private = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|_| TokenError::KeyMaterial("RSA key generation failed"))?;
            let der = private.to_pkcs1_der().map_err(|_| TokenError::KeyMaterial("RSA key encoding failed"))?;
            let public = private.to_public_key();
            (
                der.as_bytes().to_vec(),
                json!({"e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()), "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be())}),
            )
        }
    };
    // RFC 7638 thumbprint: the required members, in lexicographic order, no whitespace.
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(public_params.to_string().as_bytes()));
    let mut jwk = public_params;
    if let Some(object) = jwk.as_object_mut() {
        object.insert("kid".into(), json!(kid));
        object.insert("alg".into(), json!(alg.as_str()));
        object.insert("use".into(), json!("sig"));
    }
    Ok(SigningKeyRecord {
        sealed_private_key: kek.seal(&private_der, &kid)?,
        kid,
        alg: alg.as_str().to_owned(),
        public_jwk: jwk.to_string(),
        created_at: now,
        retired_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_key_opens_only_with_the_same_kek_and_kid() {
        let kek = KeyEncryptionKey::generate();
        let record = generate(SigningAlg::ES256, &kek, 100).unwrap();
        assert!(kek.open(&record.sealed_private_key, &record.kid).is_ok());
        assert!(kek.open(&record.sealed_private_key, "other-kid").is_err());
        assert!(KeyEncryptionKey::generate().open(&record.sealed_private_key, &record.kid).is_err());
        assert!(kek.open(&record.sealed_private_key[..8], &record.kid).is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let kek = KeyEncryptionKey::generate();
        let record = generate(SigningAlg::ES256, &kek, 100).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&record.public_jwk).unwrap();
        let canonical =
            format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
        assert_eq!(record.kid, URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())));
        assert_eq!(jwk["kid"], record.kid.as_str());
        assert!(jwk.get("d").is_none(), "the public JWK must not contain the private key");
    }

    #[test]
    fn kek_debug_is_redacted() {
        let kek = KeyEncryptionKey::new([7u8; 32]);
        assert!(!format!("{kek:?}").contains('7'));
    }
}
