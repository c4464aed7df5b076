//! Synchronizer-token CSRF protection: one random token per browser session, checked in
//! constant time on every form post.

use tower_sessions::Session;

use crate::secret::constant_time_eq;
use crate::tokens::random_token;
use crate::web::error::WebError;

const CSRF_KEY: &str = "csrf";

/// The session's token, created on first use.
pub async fn token(session: &Session) -> Result<String, WebError> {
    if let Some(existing) = session.get::<String>(CSRF_KEY).await? {
        return Ok(existing);
    }
    renew(session).await
}

/// Replaces the token, so a token seen before sign-in is worthless after it.
pub async fn renew(session: &Session) -> Result<String, WebError> {
    let fresh = random_token();
    session.insert(CSRF_KEY, &fresh).await?;
    Ok(fresh)
}

pub async fn verify(session: &Session, submitted: &str) -> Result<(), WebError> {
    let expected = session.get::<String>(CSRF_KEY).await?;
    match expected {
        Some(expected) if constant_time_eq(expected.as_bytes(), submitted.as_bytes()) => Ok(()),
        _ => Err(WebError::Forbidden(
            "This form has expired or did not come from this site. Go back, reload the page and try again.",
        )),
    }
}
