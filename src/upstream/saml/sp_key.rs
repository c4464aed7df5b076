//! The SP's own keys: one RSA key signs `AuthnRequests`, another decrypts assertions, each with
//! a self-signed certificate for the metadata. They are generated once, sealed with the
//! key-encryption key and stored like the token signing keys, so every node uses the same ones;
//! each node re-reads them every `tokens.key_cache_secs`, so a rotation needs no restart.
//!
//! Private-key operations go through OpenSSL (blinded, constant-time), never the pure-Rust
//! `rsa` crate (RUSTSEC-2023-0071): anyone can make the SP sign a request by opening a login URL.

use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use sha2::Digest as _;
use tokio::sync::RwLock;

use super::decrypt::DecryptionKey;
use crate::clock::{SharedClock, UnixTime};
use crate::store::{SamlSpKeyRecord, Store, StoreError};
use crate::tokens::TokenError;
use crate::tokens::keys::KeyEncryptionKey;

const RSA_BITS: u32 = 2048;
const CERTIFICATE_LIFETIME_SECS: i64 = 10 * 365 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    Signing,
    Encryption,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Encryption => "encryption",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "signing" => Some(Self::Signing),
            "encryption" => Some(Self::Encryption),
            _ => None,
        }
    }
}

/// Where a key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing; an encryption key in this state already decrypts.
    Next,
    Active,
    /// Replaced; an encryption key still decrypts until it is removed.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    fn of(record: &SamlSpKeyRecord) -> Self {
        match (record.activated_at, record.retired_at) {
            (_, Some(_)) => Self::Retired,
            (Some(_), None) => Self::Active,
            (None, None) => Self::Next,
        }
    }
}

/// The RSA key that signs requests.
pub struct RequestSigner(PKey<Private>);

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSigner")
    }
}

impl RequestSigner {
    /// An RSASSA-PKCS1-v1_5 signature with SHA-256 over `message`.
    pub fn sign_rsa_sha256(&self, message: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.0)?;
        signer.sign_oneshot_to_vec(message)
    }
}

/// The keys in use, as one node read them.
#[derive(Debug)]
pub struct SpKeyRing {
    pub signer: RequestSigner,
    /// Published `use="signing"`: the active key first, then a next one.
    pub signing_certificates: Vec<Vec<u8>>,
    /// Every kept encryption key, newest first: whatever an IdP encrypted to, it decrypts.
    pub decryption_keys: Vec<DecryptionKey>,
    /// Published `use="encryption"`, newest first (IdPs take the first).
    pub encryption_certificates: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct SpKeySummary {
    pub kid: String,
    pub purpose: &'static str,
    pub state: KeyState,
    pub created_at: UnixTime,
}

struct CachedRing {
    loaded_at: UnixTime,
    ring: Arc<SpKeyRing>,
}

/// The SP keys of this deployment, read from the store and re-read after `refresh_secs`.
pub struct SpKeys {
    store: Arc<dyn Store>,
    kek: KeyEncryptionKey,
    clock: SharedClock,
    refresh_secs: i64,
    cache: RwLock<Option<CachedRing>>,
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpKeys").finish_non_exhaustive()
    }
}

impl SpKeys {
    pub fn new(store: Arc<dyn Store>, kek: KeyEncryptionKey, clock: SharedClock, refresh_secs: i64) -> Self {
        Self { store, kek, clock, refresh_secs, cache: RwLock::new(None) }
    }

    /// Makes sure an active key exists for each job, generating what is missing, and loads them.
    /// Nodes racing at first start may each generate one; the store keeps one active per job.
    pub async fn ensure_active(&self) -> Result<Vec<SpKeySummary>, TokenError> {
        let existing = self.store.list_saml_sp_keys().await?;
        let mut created = Vec::new();
        for purpose in [KeyPurpose::Signing, KeyPurpose::Encryption] {
            let has_active = existing.iter().any(|k| k.purpose == purpose.as_str() && KeyState::of(k) == KeyState::Active);
            if !has_active {
                let record = self.generate(purpose, true).await?;
                match self.store.insert_saml_sp_key(&record).await {
                    Ok(()) => created.push(summary(&record)),
                    Err(StoreError::AlreadyExists) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        self.refresh().await?;
        Ok(created)
    }

    async fn generate(&self, purpose: KeyPurpose, active: bool) -> Result<SamlSpKeyRecord, TokenError> {
        let kek = self.kek.clone();
        let now = self.clock.now();
        // RSA generation takes long enough to stall the runtime.
        tokio::task::spawn_blocking(move || generate(purpose, active, &kek, now))
            .await
            .map_err(|_| TokenError::KeyMaterial("SP key generation was interrupted"))?
    }

    /// The keys to use now.
    pub async fn ring(&self) -> Result<Arc<SpKeyRing>, TokenError> {
        let now = self.clock.now();
        if let Some(cached) = self.cache.read().await.as_ref()
            && now - cached.loaded_at < self.refresh_secs
        {
            return Ok(cached.ring.clone());
        }
        self.refresh().await
    }

    async fn refresh(&self) -> Result<Arc<SpKeyRing>, TokenError> {
        let records = self.store.list_saml_sp_keys().await?;
        let kek = self.kek.clone();
        // Unsealing and parsing a few RSA keys is quick, but it is CPU work all the same.
        let ring = tokio::task::spawn_blocking(move || build_ring(&records, &kek))
            .await
            .map_err(|_| TokenError::KeyMaterial("loading the SP keys was interrupted"))??;
        let ring = Arc::new(ring);
        *self.cache.write().await = Some(CachedRing { loaded_at: self.clock.now(), ring: ring.clone() });
        Ok(ring)
    }

    pub async fn list(&self) -> Result<Vec<SpKeySummary>, TokenError> {
        Ok(self.store.list_saml_sp_keys().await?.iter().map(summary).collect())
    }

    /// Step one of a rotation: new signing and encryption keys, published in the metadata (the
    /// encryption key first, and decrypting at once); requests are still signed with the
    /// active key. Returns the new keys.
    pub async fn publish_next(&self) -> Result<Vec<SpKeySummary>, TokenError> {
        let existing = self.store.list_saml_sp_keys().await?;
        if existing.iter().any(|k| KeyState::of(k) == KeyState::Next) {
            return Err(TokenError::KeyMaterial(
                "new SP keys are already published; activate them (rotate-sp-key) or remove them first",
            ));
        }
        let mut published = Vec::new();
        for purpose in [KeyPurpose::Signing, KeyPurpose::Encryption] {
            let record = self.generate(purpose, false).await?;
            self.store.insert_saml_sp_key(&record).await?;
            published.push(summary(&record));
        }
        self.forget().await;
        Ok(published)
    }

    /// The rotation: the published next keys (made now if there are none) become active; the
    /// keys they replace are retired. A retired encryption key keeps decrypting until removed.
    pub async fn rotate(&self) -> Result<Vec<SpKeySummary>, TokenError> {
        let mut waiting: Vec<SpKeySummary> = self.list().await?.into_iter().filter(|k| k.state == KeyState::Next).collect();
        if waiting.is_empty() {
            waiting = self.publish_next().await?;
        }
        let kids: Vec<String> = waiting.iter().map(|k| k.kid.clone()).collect();
        self.store.activate_saml_sp_keys(&kids, self.clock.now()).await?;
        self.forget().await;
        Ok(self.list().await?.into_iter().filter(|k| kids.contains(&k.kid)).collect())
    }

    /// Deletes a retired or next key. The active keys stay: there must always be one per job.
    pub async fn remove(&self, kid: &str) -> Result<(), TokenError> {
        let keys = self.list().await?;
        let key = keys.iter().find(|k| k.kid == kid).ok_or(TokenError::KeyMaterial("there is no SP key with this id"))?;
        if key.state == KeyState::Active {
            return Err(TokenError::KeyMaterial("an active SP key cannot be removed; rotate first"));
        }
        self.store.delete_saml_sp_key(kid).await?;
        self.forget().await;
        Ok(())
    }

    /// This handle reads the keys afresh when next used (other nodes within `refresh_secs`).
    async fn forget(&self) {
        *self.cache.write().await = None;
    }
}

fn summary(record: &SamlSpKeyRecord) -> SpKeySummary {
    SpKeySummary {
        kid: record.kid.clone(),
        purpose: KeyPurpose::parse(&record.purpose).map_or("unknown", KeyPurpose::as_str),
        state: KeyState::of(record),
        created_at: record.created_at,
    }
}

/// `records` come newest first.
fn build_ring(records: &[SamlSpKeyRecord], kek: &KeyEncryptionKey) -> Result<SpKeyRing, TokenError> {
    let corrupt = |_| TokenError::KeyMaterial("a stored SP key is corrupt");
    let of = |purpose: KeyPurpose| records.iter().filter(move |r| r.purpose == purpose.as_str());
    let active_signing = of(KeyPurpose::Signing)
        .find(|r| KeyState::of(r) == KeyState::Active)
        .ok_or(TokenError::KeyMaterial("there is no active SP signing key"))?;
    let der = kek.open(&active_signing.sealed_private_key, &active_signing.kid)?;
    let signer = RequestSigner(PKey::from_rsa(openssl::rsa::Rsa::private_key_from_der(&der).map_err(corrupt)?).map_err(corrupt)?);
    let mut signing_certificates = vec![active_signing.certificate_der.clone()];
    signing_certificates
        .extend(of(KeyPurpose::Signing).filter(|r| KeyState::of(r) == KeyState::Next).map(|r| r.certificate_der.clone()));
    // Published next first, then the active one, then those kept after a rotation.
    let mut encryption: Vec<&SamlSpKeyRecord> = of(KeyPurpose::Encryption).collect();
    encryption.sort_by_key(|r| match KeyState::of(r) {
        KeyState::Next => 0,
        KeyState::Active => 1,
        KeyState::Retired => 2,
    });
    let mut decryption_keys = Vec::new();
    let mut encryption_certificates = Vec::new();
    for record in encryption {
        let der = kek.open(&record.sealed_private_key, &record.kid)?;
        decryption_keys
            .push(DecryptionKey::from_pkcs1_der(&der).map_err(|_| TokenError::KeyMaterial("a stored SP key is corrupt"))?);
        encryption_certificates.push(record.certificate_der.clone());
    }
    if decryption_keys.is_empty() {
        return Err(TokenError::KeyMaterial("there is no SP encryption key"));
    }
    Ok(SpKeyRing { signer, signing_certificates, decryption_keys, encryption_certificates })
}

fn generate(purpose: KeyPurpose, active: bool, kek: &KeyEncryptionKey, now: UnixTime) -> Result<SamlSpKeyRecord, TokenError> {
    let failed = |_| TokenError::KeyMaterial("SP key generation failed");
    let rsa = openssl::rsa::Rsa::generate(RSA_BITS).map_err(failed)?;
    let private_der = rsa.private_key_to_der().map_err(failed)?;
    let key = PKey::from_rsa(rsa).map_err(failed)?;

    let mut name = openssl::x509::X509NameBuilder::new().map_err(failed)?;
    name.append_entry_by_text("CN", &format!("Gatehouse SAML SP {}", purpose.as_str())).map_err(failed)?;
    let name = name.build();
    let mut builder = openssl::x509::X509Builder::new().map_err(failed)?;
    builder.set_version(2).map_err(failed)?;
    let public_der = key.public_key_to_der().map_err(failed)?;
    let fingerprint = sha2::Sha256::digest(&public_der);
    let serial = openssl::bn::BigNum::from_slice(fingerprint.get(..16).unwrap_or_default()).map_err(failed)?;
    let serial = serial.to_asn1_integer().map_err(failed)?;
    builder.set_serial_number(&serial).map_err(failed)?;
    builder.set_subject_name(&name).map_err(failed)?;
    builder.set_issuer_name(&name).map_err(failed)?;
    builder.set_pubkey(&key).map_err(failed)?;
    let not_before = openssl::asn1::Asn1Time::from_unix(now).map_err(failed)?;
    builder.set_not_before(&not_before).map_err(failed)?;
    let not_after = openssl::asn1::Asn1Time::from_unix(now + CERTIFICATE_LIFETIME_SECS).map_err(failed)?;
    builder.set_not_after(&not_after).map_err(failed)?;
    builder.sign(&key, openssl::hash::MessageDigest::sha256()).map_err(failed)?;
    let certificate_der = builder.build().to_der().map_err(failed)?;

    let kid = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha2::Sha256::digest(&certificate_der));
    Ok(SamlSpKeyRecord {
        sealed_private_key: kek.seal(&private_der, &kid)?,
        kid,
        purpose: purpose.as_str().to_owned(),
        certificate_der,
        created_at: now,
        activated_at: active.then_some(now),
        retired_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_verifiably_and_decrypt() {
        let kek = KeyEncryptionKey::new([3; 32]);
        let signing = generate(KeyPurpose::Signing, true, &kek, 1_795_305_600).unwrap();
        let encryption = generate(KeyPurpose::Encryption, true, &kek, 1_795_305_600).unwrap();
        assert_ne!(signing.kid, encryption.kid);
        let ring = build_ring(&[encryption.clone(), signing.clone()], &kek).unwrap();
        assert_eq!(ring.signing_certificates, vec![signing.certificate_der.clone()]);
        assert_eq!(ring.encryption_certificates, vec![encryption.certificate_der.clone()]);

        let signature = ring.signer.sign_rsa_sha256(b"SAMLRequest=x").unwrap();
        let certificate = openssl::x509::X509::from_der(&signing.certificate_der).unwrap();
        let public = certificate.public_key().unwrap();
        let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
        assert!(verifier.verify_oneshot(&signature, b"SAMLRequest=x").unwrap());
        assert!(certificate.not_after() > openssl::asn1::Asn1Time::from_unix(1_795_305_600 + 9 * 365 * 86_400).unwrap());

        let encryption_certificate = openssl::x509::X509::from_der(&encryption.certificate_der).unwrap();
        let rsa = encryption_certificate.public_key().unwrap().rsa().unwrap();
        assert_eq!(rsa.size() * 8, RSA_BITS);
        assert!(build_ring(&[signing], &kek).is_err(), "a ring needs an encryption key");
    }
}
