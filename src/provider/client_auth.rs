//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, and `none` for public clients.

use base64::Engine;
use url::form_urlencoded;

use crate::password;
use crate::provider::params::Params;
use crate::provider::{ErrorCode, OAuthError, Provider, ProviderError, ProviderResult, oauth};
use crate::secret::Secret;
use crate::store::ClientRecord;
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

impl Provider {
    /// Authenticates the client of a back-channel request. A public client is accepted only
    /// when `allow_public` (the token endpoint, where PKCE then binds the code).
    pub async fn authenticate_client(
        &self,
        basic: Option<BasicCredentials>,
        params: &Params,
        allow_public: bool,
    ) -> Result<ClientRecord, ClientAuthFailure> {
        let method = match (&basic, params.get("client_secret")) {
            (Some(_), _) => AuthMethod::Basic,
            (None, Ok(Some(_))) => AuthMethod::Post,
            _ => AuthMethod::None,
        };
        self.authenticate(basic, params, allow_public).await.map_err(|error| ClientAuthFailure { error, method })
    }

    async fn authenticate(
        &self,
        basic: Option<BasicCredentials>,
        params: &Params,
        allow_public: bool,
    ) -> ProviderResult<ClientRecord> {
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
        let unknown = oauth(ErrorCode::InvalidClient, "client authentication failed");
        let Some(client) = self.client(&client_id).await? else { return Err(unknown.into()) };
        match (&client.secret_hash, presented) {
            (None, None) if allow_public => Ok(client),
            (None, None) => Err(oauth(ErrorCode::InvalidClient, "this endpoint needs an authenticated client").into()),
            (None, Some(_)) | (Some(_), None) => Err(unknown.into()),
            (Some(stored), Some(presented)) => {
                if self.secret_matches(stored, presented).await? {
                    Ok(client)
                } else {
                    Err(unknown.into())
                }
            }
        }
    }

    async fn secret_matches(&self, stored: &str, presented: Secret<String>) -> ProviderResult<bool> {
        match stored_secret_kind(stored) {
            StoredSecretKind::Keyed => Ok(self.secrets.verify_keyed(stored, presented.expose())),
            StoredSecretKind::Argon2 => {
                let stored = stored.to_owned();
                // argon2 takes tens of milliseconds: keep it off the async workers.
                tokio::task::spawn_blocking(move || password::verify(&stored, presented.expose()))
                    .await
                    .map_err(|_| ProviderError::SecretCheck)
            }
            StoredSecretKind::Unknown => Ok(false),
        }
    }
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
