//! A downstream request waiting for the user to sign in. The browser carries only an opaque id
//! (`/login?req=…`); what to do after sign-in stays on the server.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::store::{SingleUseKind, Store, StoreError, StoreResult};
use crate::tokens::{digest, random_token};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Shown on the login page ("to continue to …").
    pub client_name: Option<String>,
    /// Where the browser goes once signed in: always a path on this server.
    pub resume_path: String,
    /// Offer only this connector (asked for, or found from the login hint).
    #[serde(default)]
    pub connector_id: Option<String>,
    /// Prefills the username.
    #[serde(default)]
    pub login_hint: Option<String>,
    /// Show the form even to a signed-in browser (`prompt=login`, `max_age`).
    #[serde(default)]
    pub force_login: bool,
    /// The app's redirect URI the sign-in ends at, so the form's CSP can allow that hop.
    #[serde(default)]
    pub form_target: Option<String>,
    /// The stored authorization request, so an upstream refusal can be passed on to the app.
    #[serde(default)]
    pub authorization_request: Option<String>,
    /// A test sign-in an administrator started for this connector: it ends on a result page
    /// in the console, and creates no user, link or session.
    #[serde(default)]
    pub test_of: Option<String>,
    /// A failed test's recorded reason and values, kept for the console's result page.
    #[serde(default)]
    pub test_failure: Option<String>,
}

/// A path on this server, never a way off it (`//host`, `/\host` or a scheme).
pub fn is_local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\") && !path.chars().any(char::is_control)
}

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("the resume path is not a path on this server")]
    NotLocal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn create(
    store: &dyn Store,
    pending: &PendingLogin,
    lifetime_secs: i64,
    now: UnixTime,
) -> Result<String, PendingError> {
    if !is_local_path(&pending.resume_path) {
        return Err(PendingError::NotLocal);
    }
    let id = random_token();
    let payload = serde_json::to_string(pending).map_err(StoreError::from)?;
    store.put_single_use(SingleUseKind::PendingLogin, &digest(&id), &payload, now + lifetime_secs).await?;
    Ok(id)
}

pub(super) fn decode(payload: Option<String>) -> StoreResult<Option<PendingLogin>> {
    let Some(payload) = payload else { return Ok(None) };
    let pending: PendingLogin = serde_json::from_str(&payload)?;
    Ok(is_local_path(&pending.resume_path).then_some(pending))
}

pub async fn peek(store: &dyn Store, id: &str, now: UnixTime) -> StoreResult<Option<PendingLogin>> {
    decode(store.peek_single_use(SingleUseKind::PendingLogin, &digest(id), now).await?)
}

pub async fn take(store: &dyn Store, id: &str, now: UnixTime) -> StoreResult<Option<PendingLogin>> {
    decode(store.take_single_use(SingleUseKind::PendingLogin, &digest(id), now).await?)
}

#[cfg(test)]
mod tests {
    use super::is_local_path;

    #[test]
    fn only_paths_on_this_server_are_local() {
        assert!(is_local_path("/"));
        assert!(is_local_path("/authorize/resume?x=1"));
        assert!(!is_local_path("//evil.example/"));
        assert!(!is_local_path("/\\evil.example"));
        assert!(!is_local_path("https://evil.example/"));
        assert!(!is_local_path("/a\nb"));
        assert!(!is_local_path(""));
    }
}
