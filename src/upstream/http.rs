//! The HTTP client upstream connectors share: redirects are never followed (the configured
//! URL is the only one trusted), every request has a timeout, https endpoints stay https, and
//! response bodies are read in chunks up to a cap so a hostile server cannot make the broker
//! buffer without bound.

const CONNECT_TIMEOUT_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Transport(String),
    #[error("response larger than the size limit")]
    TooLarge,
}

pub fn client(timeout_secs: u64, https_only: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(https_only)
        .connect_timeout(std::time::Duration::from_secs(CONNECT_TIMEOUT_SECS.min(timeout_secs)))
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .build()
}

/// The body, refused once past `cap` bytes (announced or received).
pub async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, HttpError> {
    if response.content_length().is_some_and(|len| len > cap as u64) {
        return Err(HttpError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| HttpError::Transport(transport_reason(&err)))? {
        if body.len() + chunk.len() > cap {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What went wrong, without the URL or anything the server said.
pub fn transport_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        String::from("timed out")
    } else if err.is_connect() {
        String::from("connection failed")
    } else {
        String::from("request failed")
    }
}
