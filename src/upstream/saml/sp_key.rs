//! The SP key pair every SAML connector signs requests and decrypts assertions with: RSA 2048
//! and a self-signed certificate for the metadata, generated once, sealed with the
//! key-encryption key and stored like the token signing keys, so every node uses the same one.

use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::EncodePublicKey as _;
use sha2::Digest as _;

use super::decrypt::DecryptionKey;
use crate::clock::UnixTime;
use crate::store::{SamlSpKeyRecord, Store, StoreError};
use crate::tokens::TokenError;
use crate::tokens::keys::KeyEncryptionKey;

const RSA_BITS: usize = 2048;
const CERTIFICATE_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

pub struct SpKey {
    decryption: DecryptionKey,
    signer: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for SpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpKey")
    }
}

impl SpKey {
    pub fn decryption_key(&self) -> &DecryptionKey {
        &self.decryption
    }

    pub fn signer(&self) -> &rsa::pkcs1v15::SigningKey<sha2::Sha256> {
        &self.signer
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The stored SP key, created on first use. Nodes racing at first start may each store
    /// one; all of them then use the oldest.
    pub async fn load_or_create(store: &dyn Store, kek: &KeyEncryptionKey, now: UnixTime) -> Result<Self, TokenError> {
        if store.saml_sp_key().await?.is_none() {
            let kek = kek.clone();
            let record = tokio::task::spawn_blocking(move || generate(&kek, now))
                .await
                .map_err(|_| TokenError::KeyMaterial("SP key generation was interrupted"))??;
            match store.insert_saml_sp_key(&record).await {
                Ok(()) | Err(StoreError::AlreadyExists) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let record = store.saml_sp_key().await?.ok_or(TokenError::KeyMaterial("the SP key vanished"))?;
        let der = kek.open(&record.sealed_private_key, &record.kid)?;
        let corrupt = |_| TokenError::KeyMaterial("the stored SP key is corrupt");
        let private = rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(corrupt)?;
        let decryption =
            DecryptionKey::from_pkcs1_der(&der).map_err(|_| TokenError::KeyMaterial("the stored SP key is corrupt"))?;
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
        Ok(Self { decryption, signer, certificate_der: record.certificate_der })
    }
}

fn generate(kek: &KeyEncryptionKey, now: UnixTime) -> Result<SamlSpKeyRecord, TokenError> {
    use std::str::FromStr as _;
    use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
    use x509_cert::der::Encode as _;
    use x509_cert::time::{Time, Validity};

    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
        .map_err(|_| TokenError::KeyMaterial("RSA key generation failed"))?;
    let public_der =
        private.to_public_key().to_public_key_der().map_err(|_| TokenError::KeyMaterial("RSA key encoding failed"))?;
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::try_from(public_der.as_bytes()).map_err(certificate_failed)?;
    let start = std::time::Duration::from_secs(u64::try_from(now).unwrap_or_default());
    let validity = Validity {
        not_before: Time::UtcTime(x509_cert::der::asn1::UtcTime::from_unix_duration(start).map_err(certificate_failed)?),
        not_after: Time::UtcTime(
            x509_cert::der::asn1::UtcTime::from_unix_duration(start + std::time::Duration::from_secs(CERTIFICATE_LIFETIME_SECS))
                .map_err(certificate_failed)?,
        ),
    };
    let fingerprint = sha2::Sha256::digest(public_der.as_bytes());
    let serial =
        x509_cert::serial_number::SerialNumber::new(fingerprint.get(..16).unwrap_or_default()).map_err(certificate_failed)?;
    let subject = x509_cert::name::Name::from_str("CN=Gatehouse SAML SP").map_err(certificate_failed)?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private.clone());
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer).map_err(certificate_failed)?;
    let certificate = builder.build::<rsa::pkcs1v15::Signature>().map_err(certificate_failed)?;
    let certificate_der = certificate.to_der().map_err(certificate_failed)?;
    let kid = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha2::Sha256::digest(&certificate_der));
    let private_der = private.to_pkcs1_der().map_err(|_| TokenError::KeyMaterial("RSA key encoding failed"))?;
    Ok(SamlSpKeyRecord { sealed_private_key: kek.seal(private_der.as_bytes(), &kid)?, kid, certificate_der, created_at: now })
}

fn certificate_failed<E>(_: E) -> TokenError {
    TokenError::KeyMaterial("SP certificate generation failed")
}
