//! Signing keys, the JWKS, and signing and verifying JWTs; hashing of opaque single-use values.

pub mod keys;
pub mod secrets;

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::clock::{SharedClock, UnixTime};
use crate::config::{SigningAlg, TokenSettings};
use crate::store::{SigningKeyRecord, Store, StoreError};

pub use keys::KeyEncryptionKey;
pub use secrets::SecretHasher;

/// Grace added to a retired key's publication so that clocks a little behind still verify.
const PUBLICATION_GRACE_SECS: i64 = 300;
/// An unknown `kid` re-reads the keys at most this often, so made-up key ids cannot turn
/// every request into a database read and a key unsealing.
const MIN_FORCED_REFRESH_SECS: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("key material error: {0}")]
    KeyMaterial(&'static str),
    #[error("no active signing key for {0}")]
    NoActiveKey(&'static str),
    #[error("token is invalid")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token is expired or not yet valid")]
    Expired,
    #[error("token claims do not have the expected shape")]
    Claims,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keys could not be read again just now (another request's attempt failed).
    #[error("the signing keys could not be read")]
    KeysUnreadable,
}

impl TokenError {
    /// The server could not check the token (its database or keys failed), as opposed to the
    /// token failing the check: the caller answers with an error, not with "invalid".
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Store(_) | Self::KeysUnreadable)
    }
}

/// A fresh opaque value with 256 bits of randomness, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored in place of an opaque value, so a database leak reveals no usable code.
pub fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

struct LoadedKey {
    kid: String,
    alg: SigningAlg,
    retired_at: Option<UnixTime>,
    decoding: DecodingKey,
    /// ES256: the public point (uncompressed), which `ring` verifies signatures with.
    es256_public: Option<Vec<u8>>,
    /// Present only for active keys: retired keys never sign again.
    encoding: Option<Signer>,
    /// Authenticates the access tokens this key signs (see `sign_access_token`). `None` for a
    /// retired key whose private half cannot be unsealed: its tokens have their signature checked.
    tag_key: Option<ring::hmac::Key>,
}

/// An active key ready to sign, parsed once. Both sign through `ring`: its P-256 is
/// constant-time assembly, several times faster than the `p256` crate that jsonwebtoken's
/// RustCrypto backend uses (which also re-parses the key on every token), and its RSA is
/// constant-time, unlike the `rsa` crate (RUSTSEC-2023-0071). Gatehouse writes the JWS itself.
enum Signer {
    Es256(ring::signature::EcdsaKeyPair),
    Rs256(ring::rsa::KeyPair),
}

struct KeyCache {
    loaded_at: UnixTime,
    keys: Vec<Arc<LoadedKey>>,
}

/// Owns the signing keys of this node. Keys live in the database so every node signs with the
/// same active key; each node re-reads them after `key_cache_secs`, and at once when it meets an
/// unknown `kid`, so a rotation needs no restart.
pub struct KeyManager {
    store: Arc<dyn Store>,
    kek: KeyEncryptionKey,
    clock: SharedClock,
    settings: TokenSettings,
    cache: RwLock<Option<KeyCache>>,
    /// Held while the keys are read again: once they are stale one request reads them and the
    /// others wait for its result instead of each reading and unsealing them too; a rotation
    /// or withdrawal reading them cannot be overwritten by a read that started before it.
    refreshing: tokio::sync::Mutex<()>,
    /// Reads of the keys finished, successful or not: a waiter that sees another's attempt
    /// fail gives up at once instead of each waiting out the database in turn.
    read_attempts: std::sync::atomic::AtomicU64,
    /// The longest access token lifetime any stored client has (the console's clients
    /// included), read with the keys: a retired key stays published while such tokens live.
    longest_client_lifetime: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeySummary {
    pub kid: String,
    pub alg: String,
    pub created_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    pub published: bool,
    /// For a retired key: until when it stays published, so its tokens still verify.
    pub published_until: Option<UnixTime>,
}

impl KeyManager {
    pub fn new(store: Arc<dyn Store>, kek: KeyEncryptionKey, clock: SharedClock, settings: TokenSettings) -> Self {
        let longest_client_lifetime = std::sync::atomic::AtomicI64::new(settings.longest_client_access_token_secs);
        Self {
            store,
            kek,
            clock,
            settings,
            cache: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            read_attempts: 0.into(),
            longest_client_lifetime,
        }
    }

    /// Makes sure each algorithm in `algs` has an active key, generating the missing ones.
    pub async fn ensure_active(&self, algs: &HashSet<SigningAlg>) -> Result<Vec<String>, TokenError> {
        let existing = self.store.list_signing_keys().await?;
        let mut created = Vec::new();
        for alg in algs {
            let active = existing.iter().any(|k| k.alg == alg.as_str() && k.retired_at.is_none());
            if !active {
                let record = self.generate(*alg).await?;
                match self.store.activate_signing_key(&record).await {
                    Ok(()) => created.push(record.kid),
                    // Another node created one at the same moment; theirs stays active.
                    Err(StoreError::AlreadyExists) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        self.refresh().await?;
        Ok(created)
    }

    /// Makes a new key active for every algorithm that has one. Tokens signed by the previous
    /// keys stay verifiable: those keys stay published until such tokens have expired.
    pub async fn rotate(&self) -> Result<Vec<KeySummary>, TokenError> {
        let existing = self.store.list_signing_keys().await?;
        let mut algs: Vec<SigningAlg> =
            existing.iter().filter(|k| k.retired_at.is_none()).filter_map(|k| SigningAlg::parse(&k.alg)).collect();
        if algs.is_empty() {
            algs.push(SigningAlg::ES256);
        }
        let mut rotated = Vec::new();
        for alg in algs {
            let record = self.generate(alg).await?;
            self.store.activate_signing_key(&record).await?;
            rotated.push(self.summary(&record));
        }
        self.refresh().await?;
        Ok(rotated)
    }

    async fn generate(&self, alg: SigningAlg) -> Result<SigningKeyRecord, TokenError> {
        let kek = self.kek.clone();
        let now = self.clock.now();
        // RSA generation takes long enough to stall the runtime.
        tokio::task::spawn_blocking(move || keys::generate(alg, &kek, now))
            .await
            .map_err(|_| TokenError::KeyMaterial("key generation task failed"))?
    }

    /// The longest a token signed now may stay valid: the settings' lifetimes, or a stored
    /// client's longer one.
    fn max_token_lifetime_secs(&self) -> i64 {
        let clients = self.longest_client_lifetime.load(std::sync::atomic::Ordering::Relaxed);
        self.settings.max_token_lifetime_secs().max(clients)
    }

    fn publication_end(&self, retired_at: UnixTime) -> UnixTime {
        retired_at + self.max_token_lifetime_secs() + PUBLICATION_GRACE_SECS
    }

    /// When retired keys may be deleted: nothing they signed can still be valid.
    pub fn retired_key_cutoff(&self, now: UnixTime) -> UnixTime {
        now - self.max_token_lifetime_secs() - PUBLICATION_GRACE_SECS
    }

    fn summary(&self, record: &SigningKeyRecord) -> KeySummary {
        let now = self.clock.now();
        KeySummary {
            kid: record.kid.clone(),
            alg: record.alg.clone(),
            created_at: record.created_at,
            retired_at: record.retired_at,
            published: record.retired_at.is_none_or(|retired| self.publication_end(retired) > now),
            published_until: record.retired_at.map(|retired| self.publication_end(retired)),
        }
    }

    /// Withdraws a retired key before its publication ends: tokens it signed stop verifying,
    /// here at once and on other nodes when they next read the keys (`key_cache_secs`). False
    /// when `kid` names no retired key.
    pub async fn withdraw(&self, kid: &str) -> Result<bool, TokenError> {
        let withdrawn = self.store.delete_retired_signing_key(kid).await?;
        self.refresh().await?;
        Ok(withdrawn)
    }

    pub async fn list(&self) -> Result<Vec<KeySummary>, TokenError> {
        Ok(self.store.list_signing_keys().await?.iter().map(|k| self.summary(k)).collect())
    }

    /// The JWK set: active keys and retired keys whose tokens may still be valid. Read from the
    /// database each time so a key activated on another node is published here at once.
    pub async fn jwks(&self) -> Result<serde_json::Value, TokenError> {
        let now = self.clock.now();
        let keys: Vec<serde_json::Value> = self
            .store
            .list_signing_keys()
            .await?
            .iter()
            .filter(|k| k.retired_at.is_none_or(|retired| self.publication_end(retired) > now))
            .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }

    async fn refresh(&self) -> Result<(), TokenError> {
        let _refreshing = self.refreshing.lock().await;
        self.read_keys().await
    }

    /// Reads the keys from the database into the cache, counted in `read_attempts` whether it
    /// succeeds or not; the caller holds `refreshing`.
    async fn read_keys(&self) -> Result<(), TokenError> {
        let read = self.read_keys_uncounted().await;
        self.read_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        read
    }

    async fn read_keys_uncounted(&self) -> Result<(), TokenError> {
        let now = self.clock.now();
        let longest = self.store.list_clients().await?.iter().filter_map(|c| c.access_token_lifetime_secs).max().unwrap_or(0);
        // The highest seen: tokens a removed or shortened client was issued are still valid.
        self.longest_client_lifetime.fetch_max(longest, std::sync::atomic::Ordering::Relaxed);
        // A key's material never changes under its kid, so a key already loaded in the same
        // state is kept: unsealing and parsing (an RSA key takes milliseconds) happen once.
        let loaded = self.cache.read().await.as_ref().map(|cache| cache.keys.clone()).unwrap_or_default();
        let mut keys = Vec::new();
        for record in self.store.list_signing_keys().await? {
            let Some(alg) = SigningAlg::parse(&record.alg) else { continue };
            if record.retired_at.is_some_and(|retired| self.publication_end(retired) <= now) {
                continue;
            }
            let unchanged =
                loaded.iter().find(|key| key.kid == record.kid && key.alg == alg && key.retired_at == record.retired_at);
            keys.push(match unchanged {
                Some(key) => Arc::clone(key),
                None => Arc::new(LoadedKey::load(record, alg, &self.kek)?),
            });
        }
        *self.cache.write().await = Some(KeyCache { loaded_at: now, keys });
        Ok(())
    }

    async fn cached_keys(&self, force: bool) -> Result<Vec<Arc<LoadedKey>>, TokenError> {
        let fresh_for = if force { MIN_FORCED_REFRESH_SECS } else { self.settings.key_cache_secs };
        if let Some(keys) = self.fresh_keys(fresh_for).await {
            return Ok(keys);
        }
        let attempts = self.read_attempts.load(std::sync::atomic::Ordering::Relaxed);
        let _refreshing = self.refreshing.lock().await;
        if let Some(keys) = self.fresh_keys(fresh_for).await {
            return Ok(keys);
        }
        if self.read_attempts.load(std::sync::atomic::Ordering::Relaxed) != attempts {
            return Err(TokenError::KeysUnreadable);
        }
        self.read_keys().await?;
        Ok(self.cache.read().await.as_ref().map(|c| c.keys.clone()).unwrap_or_default())
    }

    /// The cached keys, if read less than `fresh_for` seconds ago.
    async fn fresh_keys(&self, fresh_for: UnixTime) -> Option<Vec<Arc<LoadedKey>>> {
        let now = self.clock.now();
        let cache = self.cache.read().await;
        cache.as_ref().filter(|cache| now - cache.loaded_at < fresh_for).map(|cache| cache.keys.clone())
    }

    /// Signs `claims` with the active key of `alg`; `typ` goes in the header (`JWT`, `at+jwt`, …).
    pub async fn sign<T: Serialize + Sync>(&self, claims: &T, alg: SigningAlg, typ: &str) -> Result<String, TokenError> {
        let key = self.active_key(alg).await?;
        let header = encoded_header(&key, typ)?;
        let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Claims)?;
        key.sign_compact(&header, &claims)
    }

    /// Signs an RFC 9068 access token: `claims` (a JSON object without `jti`) plus a `jti`,
    /// written last, of 16 random bytes and an HMAC-SHA256 tag over the header, those bytes and
    /// every other claim, under a key derived from the signing key's private key. Only what can
    /// sign can make the tag, so introspection can authenticate Gatehouse's own tokens with one
    /// HMAC instead of a signature verification (`verify`); everyone else verifies the signature.
    pub async fn sign_access_token<T: Serialize + Sync>(&self, claims: &T, alg: SigningAlg) -> Result<String, TokenError> {
        let key = self.active_key(alg).await?;
        let header = encoded_header(&key, "at+jwt")?;
        let mut payload = serde_json::to_vec(claims).map_err(|_| TokenError::Claims)?;
        if payload.pop() != Some(b'}') || payload.len() < 2 {
            return Err(TokenError::Claims);
        }
        let mut nonce = [0u8; TAG_NONCE_LEN];
        // The thread's CSPRNG (ChaCha, seeded from the OS): no system call per token.
        rand::thread_rng().fill_bytes(&mut nonce);
        let tag_key = key.tag_key.as_ref().ok_or(TokenError::NoActiveKey(alg.as_str()))?;
        let tag = ring::hmac::sign(tag_key, &tag_input(&header, &nonce, &payload));
        let jti = URL_SAFE_NO_PAD.encode([nonce.as_slice(), tag.as_ref()].concat());
        payload.extend_from_slice(format!("{JTI_MEMBER}{jti}\"}}").as_bytes());
        key.sign_compact(&header, &payload)
    }

    async fn active_key(&self, alg: SigningAlg) -> Result<Arc<LoadedKey>, TokenError> {
        self.cached_keys(false)
            .await?
            .into_iter()
            .find(|k| k.alg == alg && k.retired_at.is_none() && k.encoding.is_some())
            .ok_or(TokenError::NoActiveKey(alg.as_str()))
    }

    /// Verifies a token signed by one of our published keys. `validation` carries the issuer
    /// and audience checks; the algorithm is pinned to the key's own, and `exp`/`nbf` are
    /// checked against the injected clock rather than the wall clock.
    pub async fn verify<T: DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let mut key = self.cached_keys(false).await?.into_iter().find(|k| k.kid == kid);
        if key.is_none() {
            key = self.cached_keys(true).await?.into_iter().find(|k| k.kid == kid);
        }
        let key = key.ok_or(TokenError::UnknownKey)?;
        let mut validation = validation.clone();
        validation.algorithms = vec![jwt_alg(key.alg)];
        // A Gatehouse access token whose tag verifies was made by a Gatehouse node: its header
        // and claims are authentic, and jsonwebtoken checks the claims. Any other token has its
        // signature checked.
        if key.tag_verifies(token) {
            if header.alg != jwt_alg(key.alg) {
                return Err(TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()));
            }
            #[allow(deprecated)]
            validation.insecure_disable_signature_validation();
        } else if let Some(public) = &key.es256_public {
            // ES256 signatures are checked here with ring (several times faster than
            // jsonwebtoken's backend), against the key the `kid` names and only with its
            // algorithm; jsonwebtoken then checks the claims of the token whose signature just
            // verified.
            if header.alg != Algorithm::ES256 {
                return Err(TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()));
            }
            let (signing_input, signature) =
                token.rsplit_once('.').ok_or(TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidToken.into()))?;
            let signature = URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidSignature.into()))?;
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
                .verify(signing_input.as_bytes(), &signature)
                .map_err(|_| TokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidSignature.into()))?;
            // Deprecated in favour of a decode that checks nothing; this one still runs the claim
            // checks (issuer, required claims), for the signature verified just above.
            #[allow(deprecated)]
            validation.insecure_disable_signature_validation();
        }
        let (validate_exp, validate_nbf, leeway) = (validation.validate_exp, validation.validate_nbf, validation.leeway);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(TokenError::Invalid)?;
        let now = self.clock.now();
        let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
        let time_claim = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        if validate_exp && time_claim("exp").is_none_or(|exp| exp + leeway <= now) {
            return Err(TokenError::Expired);
        }
        if validate_nbf && time_claim("nbf").is_some_and(|nbf| nbf - leeway > now) {
            return Err(TokenError::Expired);
        }
        serde_json::from_value(claims).map_err(|_| TokenError::Claims)
    }
}

/// Length of the random part of an access token's `jti`.
const TAG_NONCE_LEN: usize = 16;
/// How an access token's payload ends: `…,"jti":"<nonce and tag>"}`.
const JTI_MEMBER: &str = ",\"jti\":\"";

/// The tag key of a signing key, derived (HKDF-SHA256) from its private key: making a tag takes
/// what making a signature takes.
fn access_token_tag_key(private_key_der: &[u8]) -> ring::hmac::Key {
    let mut secret = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit, so expanding cannot fail.
    let _ = hkdf::Hkdf::<Sha256>::new(None, private_key_der).expand(b"gatehouse access-token tag v1", &mut secret);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)
}

/// What the tag covers: the encoded header, the random bytes and the claims before `jti` (the
/// payload's bytes up to `JTI_MEMBER`). The header is base64url, so the 0 byte cannot occur in
/// it, and the random part has a fixed length: no two inputs read the same.
fn tag_input(header: &str, nonce: &[u8], claims_before_jti: &[u8]) -> Vec<u8> {
    [header.as_bytes(), &[0], nonce, claims_before_jti].concat()
}

fn encoded_header(key: &LoadedKey, typ: &str) -> Result<String, TokenError> {
    let mut header = Header::new(jwt_alg(key.alg));
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.to_owned());
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| TokenError::Claims)?))
}

impl LoadedKey {
    /// A stored key, parsed once. Its private half is unsealed for the tag key; only an active key
    /// keeps a signer.
    fn load(record: SigningKeyRecord, alg: SigningAlg, kek: &KeyEncryptionKey) -> Result<Self, TokenError> {
        let jwk: Jwk =
            serde_json::from_str(&record.public_jwk).map_err(|_| TokenError::KeyMaterial("stored public key is not a JWK"))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(TokenError::Invalid)?;
        let der = match kek.open(&record.sealed_private_key, &record.kid) {
            Ok(der) => Some(der),
            // A retired key only verifies, which needs no private half.
            Err(err) if record.retired_at.is_some() => {
                tracing::warn!(kid = %record.kid, error = %err, "a retired signing key cannot be unsealed; its tokens are checked by signature");
                None
            }
            Err(err) => return Err(err),
        };
        let encoding = match (&der, record.retired_at) {
            (Some(der), None) => Some(match alg {
                SigningAlg::ES256 => Signer::Es256(es256_key_pair(der)?),
                SigningAlg::RS256 => Signer::Rs256(
                    ring::rsa::KeyPair::from_der(der).map_err(|_| TokenError::KeyMaterial("stored RSA key is not PKCS#1"))?,
                ),
            }),
            _ => None,
        };
        let es256_public = match alg {
            SigningAlg::ES256 => Some(es256_public_point(&jwk)?),
            SigningAlg::RS256 => None,
        };
        let tag_key = der.as_deref().map(access_token_tag_key);
        Ok(Self { kid: record.kid, alg, retired_at: record.retired_at, decoding, es256_public, encoding, tag_key })
    }

    /// RFC 7515 compact serialization of `payload` under the already encoded `header`: ES256
    /// as `r || s` (RFC 7518 §3.4, 32 bytes each) or RS256 (RSASSA-PKCS1-v1_5 SHA-256).
    fn sign_compact(&self, header: &str, payload: &[u8]) -> Result<String, TokenError> {
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let rng = ring::rand::SystemRandom::new();
        let signature = match self.encoding.as_ref().ok_or(TokenError::NoActiveKey(self.alg.as_str()))? {
            Signer::Es256(key_pair) => key_pair
                .sign(&rng, message.as_bytes())
                .map_err(|_| TokenError::KeyMaterial("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
            Signer::Rs256(key_pair) => {
                let mut signature = vec![0u8; key_pair.public().modulus_len()];
                key_pair
                    .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                    .map_err(|_| TokenError::KeyMaterial("RSA signing failed"))?;
                signature
            }
        };
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Whether `token` is an access token made by `sign_access_token` with this key: its
    /// payload ends in a `jti` whose tag verifies, and its signature part has the length of this
    /// key's signatures. The signature itself is not examined: only a holder of the genuine
    /// token could present a copy with other signature bytes, and it would gain nothing.
    fn tag_verifies(&self, token: &str) -> bool {
        let Some(tag_key) = &self.tag_key else { return false };
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let signature_len = match &self.encoding {
            Some(Signer::Rs256(key_pair)) => key_pair.public().modulus_len(),
            _ if self.alg == SigningAlg::RS256 => return false,
            _ => 64,
        };
        if URL_SAFE_NO_PAD.decode(signature).map_or(true, |bytes| bytes.len() != signature_len) {
            return false;
        }
        let Ok(payload) = URL_SAFE_NO_PAD.decode(payload) else { return false };
        let Some(before_end) = payload.strip_suffix(b"\"}") else { return false };
        let Some(at) = before_end.windows(JTI_MEMBER.len()).rposition(|w| w == JTI_MEMBER.as_bytes()) else { return false };
        let (Some(claims_before_jti), Some(jti)) = (before_end.get(..at), before_end.get(at + JTI_MEMBER.len()..)) else {
            return false;
        };
        let Ok(jti) = URL_SAFE_NO_PAD.decode(jti) else { return false };
        let Some((nonce, tag)) = jti.split_at_checked(TAG_NONCE_LEN) else { return false };
        ring::hmac::verify(tag_key, &tag_input(header, nonce, claims_before_jti), tag).is_ok()
    }
}

/// The stored ES256 key (PKCS#8, as `p256` wrote it) as a `ring` key pair, from its scalar and
/// public point.
fn es256_key_pair(der: &[u8]) -> Result<ring::signature::EcdsaKeyPair, TokenError> {
    let key: p256::ecdsa::SigningKey =
        p256::pkcs8::DecodePrivateKey::from_pkcs8_der(der).map_err(|_| TokenError::KeyMaterial("stored EC key is not PKCS#8"))?;
    let public = key.verifying_key().to_encoded_point(false);
    ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.to_bytes(),
        public.as_bytes(),
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| TokenError::KeyMaterial("stored EC key is not a P-256 key"))
}

/// The uncompressed point (`04 || x || y`) of a published P-256 JWK.
fn es256_public_point(jwk: &Jwk) -> Result<Vec<u8>, TokenError> {
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm else {
        return Err(TokenError::KeyMaterial("stored ES256 public key is not an EC JWK"));
    };
    let coordinate = |value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .ok_or(TokenError::KeyMaterial("stored ES256 public key has a malformed coordinate"))
    };
    let mut point = vec![0x04];
    point.extend(coordinate(&params.x)?);
    point.extend(coordinate(&params.y)?);
    Ok(point)
}

fn jwt_alg(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::ES256 => Algorithm::ES256,
        SigningAlg::RS256 => Algorithm::RS256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(alg: SigningAlg, kek: &KeyEncryptionKey) -> LoadedKey {
        let record = keys::generate(alg, kek, 1_700_000_000).unwrap();
        LoadedKey::load(record, alg, kek).unwrap()
    }

    fn tagged(key: &LoadedKey) -> String {
        let header = encoded_header(key, "at+jwt").unwrap();
        let mut payload = br#"{"iss":"https://sso.example","sub":"svc","scope":"api:read""#.to_vec();
        let nonce = [7u8; TAG_NONCE_LEN];
        let tag = ring::hmac::sign(key.tag_key.as_ref().unwrap(), &tag_input(&header, &nonce, &payload));
        let jti = URL_SAFE_NO_PAD.encode([nonce.as_slice(), tag.as_ref()].concat());
        payload.extend_from_slice(format!("{JTI_MEMBER}{jti}\"}}").as_bytes());
        key.sign_compact(&header, &payload).unwrap()
    }

    fn with_payload(token: &str, change: impl FnOnce(String) -> String) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(change(payload)), parts[2])
    }

    #[test]
    fn a_retired_key_that_cannot_be_unsealed_still_verifies_by_signature_and_an_active_one_fails() {
        let (kek, other) = (KeyEncryptionKey::generate(), KeyEncryptionKey::generate());
        let mut record = keys::generate(SigningAlg::ES256, &kek, 1_700_000_000).unwrap();
        assert!(LoadedKey::load(record.clone(), SigningAlg::ES256, &other).is_err(), "an active key must unseal");
        record.retired_at = Some(1_700_000_100);
        let retired = LoadedKey::load(record, SigningAlg::ES256, &other).unwrap();
        assert!(retired.tag_key.is_none() && retired.encoding.is_none() && retired.es256_public.is_some());
        assert!(!retired.tag_verifies(&tagged(&loaded(SigningAlg::ES256, &kek))));
    }

    #[test]
    fn the_access_token_tag_authenticates_header_and_claims_for_one_key_only() {
        let kek = KeyEncryptionKey::generate();
        for alg in [SigningAlg::ES256, SigningAlg::RS256] {
            let key = loaded(alg, &kek);
            let token = tagged(&key);
            assert!(key.tag_verifies(&token), "{alg:?}");
            // Any change to a claim, the jti or the header breaks it.
            assert!(!key.tag_verifies(&with_payload(&token, |p| p.replace("svc", "svd"))));
            assert!(!key.tag_verifies(&with_payload(&token, |p| p.replace("api:read", "api:admin"))));
            assert!(!key.tag_verifies(&with_payload(&token, |p| p.replace(r#""}"#, r#"A"}"#))));
            assert!(!key.tag_verifies(&with_payload(&token, |p| p.replace(r#"{"iss""#, r#"{"admin":true,"iss""#))));
            let mut header_changed = token.clone();
            header_changed.insert(3, 'x');
            assert!(!key.tag_verifies(&header_changed));
            // Another signing key does not accept it.
            assert!(!loaded(alg, &kek).tag_verifies(&token));
            // A signature part that is not one of this key's signatures: refused.
            let (signed, _) = token.rsplit_once('.').unwrap();
            assert!(!key.tag_verifies(&format!("{signed}.AAAA")));
            assert!(!key.tag_verifies(&format!("{signed}.")));
        }
        // An untagged token (an ID token) is left to the signature check.
        let key = loaded(SigningAlg::ES256, &kek);
        let id_token = key.sign_compact(&encoded_header(&key, "JWT").unwrap(), br#"{"sub":"a","jti":"x"}"#).unwrap();
        assert!(!key.tag_verifies(&id_token));
    }
}
