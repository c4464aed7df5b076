//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): which session to end and where
//! the browser may go afterwards. Ending the session itself is `session::end`.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::provider::params::Params;
use crate::provider::{ErrorCode, OAuthError, Provider, ProviderResult, oauth};
use crate::store::{ClientRecord, StoreError};

/// A validated logout request.
#[derive(Debug, Clone)]
pub struct LogoutRequest {
    pub client: Option<ClientRecord>,
    /// Registered for `client`, exactly; otherwise the request was refused.
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    /// The user the `id_token_hint` names, when one was given.
    pub hint_subject: Option<String>,
}

impl LogoutRequest {
    /// Where to send the browser once signed out, with `state` when the app sent one.
    pub fn redirect(&self) -> Option<String> {
        let uri = self.post_logout_redirect_uri.as_deref()?;
        let params: Vec<(&str, &str)> = self.state.iter().map(|s| ("state", s.as_str())).collect();
        Some(crate::provider::authorize::redirect_with(uri, &params))
    }
}

fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

impl Provider {
    /// Checks a logout request. Errors are shown to the user, never redirected: the redirect
    /// target is what failed to check.
    pub async fn validate_logout(&self, params: &Params) -> ProviderResult<Result<LogoutRequest, OAuthError>> {
        if let Err(error) = params.check_all() {
            return Ok(Err(error));
        }
        let hint = match params.get("id_token_hint") {
            Ok(hint) => hint,
            Err(error) => return Ok(Err(error)),
        };
        let hint_claims = match hint {
            None => None,
            Some(token) => {
                // Only an ID token: an access or logout token of ours is not a hint.
                let typ = jsonwebtoken::decode_header(token).ok().and_then(|h| h.typ);
                if typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
                    return Ok(Err(oauth(ErrorCode::InvalidRequest, "id_token_hint is not a valid ID token from this server")));
                }
                // An expired ID token still names the session to end (RP-Initiated Logout §2).
                let mut validation = Validation::new(Algorithm::ES256);
                validation.set_issuer(&[self.issuer()]);
                validation.validate_aud = false;
                validation.validate_exp = false;
                validation.set_required_spec_claims(&["iss", "sub", "aud"]);
                match self.keys.verify::<Value>(token, &validation).await {
                    Ok(claims) => Some(claims),
                    Err(err) if err.is_server_fault() => return Err(err.into()),
                    Err(_) => {
                        return Ok(Err(oauth(
                            ErrorCode::InvalidRequest,
                            "id_token_hint is not a valid ID token from this server",
                        )));
                    }
                }
            }
        };
        let hint_audiences = hint_claims.as_ref().map(audiences).unwrap_or_default();
        let client_id = match params.get("client_id") {
            Ok(Some(id)) => {
                if hint_claims.is_some() && !hint_audiences.iter().any(|aud| aud == id) {
                    return Ok(Err(oauth(ErrorCode::InvalidRequest, "client_id does not match the id_token_hint")));
                }
                Some(id.to_owned())
            }
            Ok(None) => hint_audiences.first().cloned(),
            Err(error) => return Ok(Err(error)),
        };
        let client = match client_id {
            None => None,
            Some(id) => match self.store.get_client(&id).await {
                Ok(client) => Some(client),
                Err(StoreError::NotFound) => return Ok(Err(oauth(ErrorCode::InvalidRequest, "the client is not registered"))),
                Err(err) => return Err(err.into()),
            },
        };
        let post_logout_redirect_uri = match params.get("post_logout_redirect_uri") {
            Ok(None) => None,
            Ok(Some(uri)) => match &client {
                Some(client) if client.post_logout_redirect_uris.iter().any(|registered| registered == uri) => {
                    Some(uri.to_owned())
                }
                Some(_) => {
                    return Ok(Err(oauth(
                        ErrorCode::InvalidRequest,
                        "post_logout_redirect_uri is not registered for this client",
                    )));
                }
                None => {
                    return Ok(Err(oauth(
                        ErrorCode::InvalidRequest,
                        "post_logout_redirect_uri needs client_id or id_token_hint",
                    )));
                }
            },
            Err(error) => return Ok(Err(error)),
        };
        let state = match params.get("state") {
            Ok(state) => state.map(str::to_owned),
            Err(error) => return Ok(Err(error)),
        };
        let hint_subject = hint_claims.as_ref().and_then(|c| c.get("sub")).and_then(Value::as_str).map(str::to_owned);
        Ok(Ok(LogoutRequest { client, post_logout_redirect_uri, state, hint_subject }))
    }
}
