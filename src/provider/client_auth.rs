//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, and `none` for public clients.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use subtle::ConstantTimeEq as _;
use url::form_urlencoded;

use crate::clock::UnixTime;
use crate::config::ClientAuthSettings;
use crate::password;
use crate::provider::params::Params;
use crate::provider::{ErrorCode, OAuthError, Provider, ProviderError, ProviderResult, oauth};
use crate::secret::Secret;
use crate::store::ClientRecord;
use crate::throttle::WindowCounter;
use crate::tokens::secrets::{StoredSecretKind, stored_secret_kind};

/// Credentials from an `Authorization: Basic` header.
pub struct BasicCredentials {
    pub client_id: String,
    pub secret: Secret<String>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub fn parse_basic(header: &str) -> Result<BasicCredentials, OAuthError> {
    let malformed = oauth(ErrorCode::InvalidClient, "the Authorization header is malformed");
    let (scheme, encoded) = header.split_once(' ').ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| malformed)?;
    let (id, secret) = text.split_once(':').ok_or(malformed)?;
    let unescape = |part: &str| -> String {
        form_urlencoded::parse(format!("v={part}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Ok(BasicCredentials { client_id: unescape(id), secret: Secret::new(unescape(secret)) })
}

/// How the client authenticated, for the error response (RFC 6749 §5.2 wants a
/// `WWW-Authenticate` challenge when the Authorization header was used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
    None,
}

#[derive(Debug, thiserror::Error)]
#[error("client authentication failed: {error}")]
pub struct ClientAuthFailure {
    pub error: ProviderError,
    pub method: AuthMethod,
}

/// Failed client authentications counted per client and per client network, and the secrets
/// recently verified, per client. A client that authenticated moments ago keeps working while
/// someone else's wrong guesses have its id throttled, and a busy client with an argon2 hash
/// pays for argon2 once per `VERIFIED_SECRET_SECS`, not on every request.
#[derive(Debug)]
pub struct ClientAuthGuard {
    per_client: WindowCounter,
    per_network: WindowCounter,
    max_per_client: u32,
    max_per_network: u32,
    /// Keys the memory below, so it holds no secret in a form usable elsewhere.
    memory_key: Secret<[u8; 64]>,
    verified: std::sync::Mutex<std::collections::HashMap<String, VerifiedSecret>>,
}

struct VerifiedSecret {
    /// HMAC of the presented secret under `memory_key`.
    presented: [u8; 32],
    /// The stored hash it matched: a changed secret is verified afresh.
    stored: String,
    until: UnixTime,
}

impl std::fmt::Debug for VerifiedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedSecret").field("until", &self.until).finish_non_exhaustive()
    }
}

const VERIFIED_SECRET_SECS: UnixTime = 300;
/// Bounds the per-network counters; per-client keys are bounded by the registered clients.
const MAX_TRACKED_NETWORKS: usize = 100_000;
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl ClientAuthGuard {
    pub fn new(settings: &ClientAuthSettings) -> Self {
        let mut memory_key = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut memory_key);
        Self {
            per_client: WindowCounter::new(settings.failure_window_secs, MAX_TRACKED_CLIENTS),
            per_network: WindowCounter::new(settings.failure_window_secs, MAX_TRACKED_NETWORKS),
            max_per_client: settings.max_failures_per_client,
            max_per_network: settings.max_failures_per_ip,
            memory_key: Secret::new(memory_key),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn mac(&self, secret: &str) -> [u8; 32] {
        use hmac::{Mac as _, digest::KeyInit};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new(&(*self.memory_key.expose()).into());
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn recently_verified(&self, client_id: &str, stored: &str, presented: &str, now: UnixTime) -> bool {
        let mac = self.mac(presented);
        self.verified.lock().ok().is_some_and(|verified| {
            verified.get(client_id).is_some_and(|known| {
                known.until > now && known.stored == stored && bool::from(known.presented.as_slice().ct_eq(mac.as_slice()))
            })
        })
    }

    fn remember(&self, client_id: &str, stored: &str, presented: &str, now: UnixTime) {
        let presented = self.mac(presented);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_TRACKED_CLIENTS {
                verified.retain(|_, known| known.until > now);
            }
            if verified.len() < MAX_TRACKED_CLIENTS {
                verified.insert(
                    client_id.to_owned(),
                    VerifiedSecret { presented, stored: stored.to_owned(), until: now + VERIFIED_SECRET_SECS },
                );
            }
        }
        self.per_client.clear(client_id);
    }

    /// Seconds to wait when this client id or network has failed too often in this window.
    fn throttled(&self, client_id: &str, network: &str, now: UnixTime) -> Option<i64> {
        let over = self.per_client.count(client_id, now) >= self.max_per_client
            || self.per_network.count(network, now) >= self.max_per_network;
        over.then(|| self.per_client.retry_after(now).max(1))
    }

    fn failed(&self, client_id: &str, network: &str, now: UnixTime) {
        self.per_client.hit(client_id, now);
        self.per_network.hit(network, now);
    }
}

impl Provider {
    /// Authenticates the client of a back-channel request from `ip`. A public client is
    /// accepted only when `allow_public` (the token endpoint, where PKCE then binds the code).
    pub async fn authenticate_client(
        &self,
        basic: Option<BasicCredentials>,
        params: &Params,
        allow_public: bool,
        ip: IpAddr,
    ) -> Result<Arc<ClientRecord>, ClientAuthFailure> {
        let method = match (&basic, params.get("client_secret")) {
            (Some(_), _) => AuthMethod::Basic,
            (None, Ok(Some(_))) => AuthMethod::Post,
            _ => AuthMethod::None,
        };
        self.authenticate(basic, params, allow_public, ip).await.map_err(|error| {
            // The reason, never the submitted id or secret; the request id is on the span.
            match &error {
                ProviderError::OAuth(refusal) => {
                    tracing::info!(reason = refusal.code.as_str(), "client authentication refused: {}", refusal.description);
                }
                ProviderError::Throttled { .. } => {
                    tracing::info!(reason = "throttled", "client authentication refused: too many failures");
                }
                _ => {}
            }
            ClientAuthFailure { error, method }
        })
    }

    async fn authenticate(
        &self,
        basic: Option<BasicCredentials>,
        params: &Params,
        allow_public: bool,
        ip: IpAddr,
    ) -> ProviderResult<Arc<ClientRecord>> {
        let body_id = params.get("client_id")?;
        let body_secret = params.get("client_secret")?;
        let (client_id, presented) = match basic {
            Some(_) if body_secret.is_some() => {
                return Err(oauth(ErrorCode::InvalidRequest, "use one client authentication method, not two").into());
            }
            Some(basic) => {
                if body_id.is_some_and(|id| id != basic.client_id) {
                    return Err(oauth(ErrorCode::InvalidClient, "client_id does not match the Authorization header").into());
                }
                (basic.client_id, Some(basic.secret))
            }
            None => {
                let id = body_id.ok_or(oauth(ErrorCode::InvalidClient, "client authentication is required"))?;
                (id.to_owned(), body_secret.map(|s| Secret::new(s.to_owned())))
            }
        };
        let client = self.client(&client_id).await?;
        // A public client proves nothing and costs nothing to check.
        if let Some(client) = &client
            && client.secret_hash.is_none()
            && presented.is_none()
        {
            return if allow_public {
                Ok(Arc::clone(client))
            } else {
                Err(oauth(ErrorCode::InvalidClient, "this endpoint needs an authenticated client").into())
            };
        }
        let now = self.clock.now();
        let network = crate::login::client_network(ip);
        let guard = &self.client_auth;
        if let (Some(client), Some(presented)) = (&client, &presented)
            && accepted_secrets(client, now)
                .any(|stored| guard.recently_verified(&client.client_id, stored, presented.expose(), now))
        {
            return Ok(Arc::clone(client));
        }
        if let Some(retry_after_secs) = guard.throttled(&client_id, &network, now) {
            return Err(ProviderError::Throttled { retry_after_secs });
        }
        if let (Some(client), Some(presented)) = (client, presented) {
            for stored in accepted_secrets(&client, now) {
                if self.secret_matches(stored, &presented).await? {
                    guard.remember(&client.client_id, stored, presented.expose(), now);
                    return Ok(Arc::clone(&client));
                }
            }
        }
        guard.failed(&client_id, &network, now);
        Err(oauth(ErrorCode::InvalidClient, "client authentication failed").into())
    }

    async fn secret_matches(&self, stored: &str, presented: &Secret<String>) -> ProviderResult<bool> {
        match stored_secret_kind(stored) {
            StoredSecretKind::Keyed => Ok(self.secrets.verify_keyed(stored, presented.expose())),
            StoredSecretKind::Argon2 => {
                let stored = stored.to_owned();
                let presented = presented.clone();
                // argon2 takes tens of milliseconds and 19 MiB: a bounded number run at once.
                self.hashing.run(move || password::verify(&stored, presented.expose())).await.map_err(ProviderError::from)
            }
            StoredSecretKind::Unknown => Ok(false),
        }
    }
}

/// The secrets a client may authenticate with now: its own, and the one a rotation replaced
/// while its overlap lasts.
fn accepted_secrets(client: &ClientRecord, now: UnixTime) -> impl Iterator<Item = &str> {
    let previous =
        client.previous_secret_hash.as_deref().filter(|_| client.previous_secret_expires_at.is_some_and(|end| end > now));
    client.secret_hash.as_deref().into_iter().chain(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("my%20app:p%3Ass+word"));
        let creds = parse_basic(&header).unwrap();
        assert_eq!(creds.client_id, "my app");
        assert_eq!(creds.secret.expose(), "p:ss word");
        assert!(parse_basic("Bearer abc").is_err());
        assert!(parse_basic("Basic !!!").is_err());
        assert!(!format!("{creds:?}").contains("p:ss word"));
    }
}
