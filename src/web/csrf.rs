//! CSRF protection for every form: a signed double-submit token. The browser holds a random
//! value in a cookie; each form carries an HMAC of that value and of the SSO session the
//! browser is signed in to. A page that shows a form therefore writes nothing to the database
//! (an anonymous `GET /login` costs no session row), a token from before sign-in is worthless
//! after it, and a cookie planted by a sibling site cannot be paired with a token for someone
//! else's session.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;
use tower_cookies::{Cookie, Cookies};
use tower_sessions::Session;
use tower_sessions::cookie::SameSite;

use crate::config::Config;
use crate::secret::{Secret, constant_time_eq};
use crate::tokens::{KeyEncryptionKey, random_token};
use crate::web::AppState;
use crate::web::error::WebError;

const PURPOSE: &[u8] = b"gatehouse form tokens v1";
const REJECTED: &str = "This form has expired or did not come from this site. Go back, reload the page and try again.";

/// The key and cookie settings of the form tokens.
pub struct FormTokens {
    key: Secret<[u8; 64]>,
    cookie_name: String,
    secure: bool,
}

impl std::fmt::Debug for FormTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormTokens").field("cookie_name", &self.cookie_name).finish_non_exhaustive()
    }
}

impl FormTokens {
    pub fn new(kek: &KeyEncryptionKey, config: &Config) -> Self {
        Self {
            key: kek.derive(PURPOSE),
            cookie_name: format!("{}_csrf", config.session.cookie_name),
            secure: config.issuer_is_https(),
        }
    }

    fn token_for(&self, cookie_value: &str, sso_session: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*self.key.expose()).into());
        mac.update(cookie_value.as_bytes());
        mac.update(b"\n");
        mac.update(sso_session.as_bytes());
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, mac.finalize().into_bytes())
    }
}

/// What a handler that renders or accepts a form extracts.
pub struct Forms {
    tokens: std::sync::Arc<FormTokens>,
    cookies: Cookies,
    session: Session,
}

impl FromRequestParts<AppState> for Forms {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let cookies = parts
            .extensions
            .get::<Cookies>()
            .cloned()
            .ok_or_else(|| WebError::Internal(String::from("the cookie layer is missing")))?;
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, message)| WebError::Internal(format!("the session layer is missing: {message}")))?;
        Ok(Self { tokens: state.forms.clone(), cookies, session })
    }
}

impl Forms {
    fn cookie_value(&self) -> Option<String> {
        let value = self.cookies.get(&self.tokens.cookie_name)?.value().to_owned();
        // Only values this server could have set are used; anything else is replaced.
        (value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then_some(value)
    }

    fn set_cookie(&self) -> String {
        let value = random_token();
        let cookie = Cookie::build((self.tokens.cookie_name.clone(), value.clone()))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.tokens.secure)
            .path("/")
            .build();
        self.cookies.add(cookie);
        value
    }

    async fn sso_session(&self) -> Result<String, WebError> {
        Ok(crate::web::sessions::bound_sso_id(&self.session).await?.unwrap_or_default())
    }

    /// The token for a form on the page being rendered.
    pub async fn token(&self) -> Result<String, WebError> {
        let value = match self.cookie_value() {
            Some(value) => value,
            None => self.set_cookie(),
        };
        Ok(self.tokens.token_for(&value, &self.sso_session().await?))
    }

    /// Replaces the cookie, so nothing issued before (a sign-in, say) is valid after.
    pub fn renew(&self) {
        self.set_cookie();
    }

    pub async fn verify(&self, submitted: &str) -> Result<(), WebError> {
        let Some(value) = self.cookie_value() else { return Err(WebError::Forbidden(REJECTED)) };
        let expected = self.tokens.token_for(&value, &self.sso_session().await?);
        if constant_time_eq(expected.as_bytes(), submitted.as_bytes()) { Ok(()) } else { Err(WebError::Forbidden(REJECTED)) }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}
