//! The authorization endpoint: `response_type=code` with PKCE, `prompt`, `max_age`,
//! `login_hint`, `connector_id` and home-realm discovery; codes bound to everything that matters.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::access::Refusal;
use crate::clock::UnixTime;
use crate::provider::params::Params;
use crate::provider::{
    AUDIT_ACCESS_DENIED, CODE_LIFETIME_SECS, ErrorCode, OAuthError, Provider, ProviderResult, REQUEST_LIFETIME_SECS, has_scope,
    is_scope_token, oauth, split_scope,
};
use crate::store::{AuditEvent, AuditOutcome, ClientRecord, NewSingleUse, SingleUseKind, SsoSession, StoreError, User};
use crate::tokens::{digest, random_token};

const MAX_LOGIN_HINT_CHARS: usize = 256;
/// Ten years: anything larger is a mistake, not a policy.
const MAX_MAX_AGE_SECS: i64 = 10 * 365 * 86400;

/// Why a request cannot even be answered by redirect: the client or the redirect URI is not
/// trustworthy, so the browser gets an error page instead (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedRequest {
    #[error("the request does not name a client")]
    MissingClient,
    #[error("the client is not registered")]
    UnknownClient,
    #[error("the request has no redirect_uri")]
    MissingRedirectUri,
    #[error("the redirect_uri is not registered for this client")]
    UnregisteredRedirectUri,
    #[error("client_id or redirect_uri is repeated or too long")]
    Malformed,
}

impl UntrustedRequest {
    /// The reason logged for a refused authorization request.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingClient => "missing_client_id",
            Self::UnknownClient => "unknown_client",
            Self::MissingRedirectUri => "missing_redirect_uri",
            Self::UnregisteredRedirectUri => "unregistered_redirect_uri",
            Self::Malformed => "malformed_request",
        }
    }
}

/// A validated authorization request, stored while the user signs in or consents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The S256 PKCE challenge.
    pub code_challenge: Option<String>,
    pub prompt_none: bool,
    pub prompt_consent: bool,
    /// Set by `prompt=login` (to the request time): an older sign-in does not count.
    pub login_after: Option<UnixTime>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// The connector to sign in with: asked for, or found from the login hint's domain.
    pub connector_id: Option<String>,
    pub audience: String,
}

/// What an authorization response carries back: the RFC 6749 error or success parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: OAuthError,
}

impl AuthorizationRequest {
    /// The error answer to this request, at its redirect URI with its state.
    pub fn error_redirect(&self, error: OAuthError) -> ErrorRedirect {
        ErrorRedirect { redirect_uri: self.redirect_uri.clone(), state: self.state.clone(), error }
    }
}

/// What happens next for a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The user must sign in; `force` shows the form even to a signed-in browser.
    SignIn {
        force: bool,
    },
    Consent,
    Issue,
    /// The access policy refuses this user: the browser sees why, the app gets `access_denied`.
    Refused(Refusal),
}

/// What an authorization code stands for; stored under the code's digest for 60 seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub user_id: String,
    pub session_id: String,
    pub auth_time: UnixTime,
    pub idp: String,
    pub amr: Vec<String>,
    /// The resource (RFC 8707) the user authorized; tokens from this code are for it alone.
    pub audience: String,
    /// The grant the code becomes, fixed now so that a replay racing the redemption can name it.
    /// A code stored by a release that did not fix it yet gets a random one.
    #[serde(default = "random_grant_id")]
    pub grant_id: String,
}

/// A new grant's id: a UUIDv7 of `now`'s second (or a later one this process has made ids in),
/// then the nanoseconds since this process made its first id in that second, then random bits;
/// so ids sort in the order grants are made. Each
/// grant's entries (its row id, its refresh tokens' grant index) then land beside the previous
/// ones at the end of their index, where a random id put each on a page of its own that the
/// commit and the next checkpoint write out whole. The ordering part is time, not a count:
/// access tokens carry the id (`gid`), and two of them must not tell an application how many
/// grants were made in between.
pub fn new_grant_id(now: UnixTime) -> String {
    static ORDER: std::sync::Mutex<Option<SecondInProgress>> = std::sync::Mutex::new(None);
    let now = u64::try_from(now).unwrap_or_default();
    let (second, offset) = {
        // Consistent between any two statements, so a panic elsewhere leaves it usable.
        let mut order = ORDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A request that read the clock just before the second changed gets an id in the new
        // second, after the ids already made in it, as if it had come later.
        let current = match order.as_mut() {
            Some(current) if current.second >= now => current,
            _ => order.insert(SecondInProgress { second: now, began: std::time::Instant::now(), last: 0 }),
        };
        let mut elapsed = u64::try_from(current.began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A second that lasts past the offset's 68 s (a clock stopped, or stepped back) goes on
        // in the next one, so that ids stay ordered and unique by more than their random bits.
        if elapsed.max(current.last.saturating_add(1)) > GRANT_ID_OFFSET_MAX {
            *current = SecondInProgress { second: current.second.saturating_add(1), began: std::time::Instant::now(), last: 0 };
            elapsed = 0;
        }
        // One past the last when two ids fall in one nanosecond.
        current.last = elapsed.max(current.last.saturating_add(1));
        (current.second, current.last)
    };
    // After the version, a UUIDv7 has 12 bits (`rand_a`), then after the variant 62 (`rand_b`):
    // the offset's top 12 bits, then its other 24 and 38 random ones.
    let rand_a = u16::try_from(offset >> 24).unwrap_or(u16::MAX);
    let rand_b = ((offset & 0xFF_FFFF) << 38) | (rand::random::<u64>() >> 26);
    let [a0, a1] = rand_a.to_be_bytes();
    let [b0, b1, b2, b3, b4, b5, b6, b7] = rand_b.to_be_bytes();
    let bits = [a0, a1, b0, b1, b2, b3, b4, b5, b6, b7];
    uuid::Builder::from_unix_timestamp_millis(second.saturating_mul(1000), &bits).into_uuid().to_string()
}

/// The offset of an id in its second, in nanoseconds: 36 bits.
const GRANT_ID_OFFSET_MAX: u64 = (1 << 36) - 1;

/// The second `new_grant_id` is making ids in.
struct SecondInProgress {
    second: u64,
    began: std::time::Instant,
    last: u64,
}

fn random_grant_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Appends response parameters to a registered redirect URI, keeping its own query.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    // Nothing to add: the registered URI exactly, not with an empty `?` that some apps route
    // differently.
    if params.is_empty() {
        return redirect_uri.to_owned();
    }
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        // Registered URIs were parsed when they were registered; keep them as they are.
        Err(_) => redirect_uri.to_owned(),
    }
}

pub fn error_location(issuer: &str, redirect: &ErrorRedirect) -> String {
    let mut params = vec![("error", redirect.error.code.as_str()), ("error_description", redirect.error.description)];
    if let Some(state) = &redirect.state {
        params.push(("state", state));
    }
    params.push(("iss", issuer));
    redirect_with(&redirect.redirect_uri, &params)
}

/// The origin a redirect URI leaves to, as a CSP source, so a form whose answer redirects there
/// can be allowed to.
pub fn csp_source(redirect_uri: &str) -> Option<String> {
    let url = Url::parse(redirect_uri).ok()?;
    match url.scheme() {
        "http" | "https" => Some(url.origin().ascii_serialization()),
        scheme => Some(format!("{scheme}:")),
    }
}

fn is_pkce_value(value: &str) -> bool {
    value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Provider {
    /// Finds the client and its exact registered redirect URI, or says why the request cannot
    /// be answered by redirect.
    pub async fn authorization_client(
        &self,
        params: &Params,
    ) -> ProviderResult<Result<(ClientRecord, String), UntrustedRequest>> {
        let found = self.find_authorization_client(params).await?;
        if let Err(refusal) = &found {
            // Never the submitted redirect URI (it may be an attacker's); the client id only when
            // it names a registered client.
            let registered = match refusal {
                UntrustedRequest::MissingRedirectUri | UntrustedRequest::UnregisteredRedirectUri => {
                    params.get("client_id").ok().flatten()
                }
                _ => None,
            };
            tracing::info!(
                client_id = registered.unwrap_or_default(),
                reason = refusal.code(),
                "authorization request refused: {refusal}"
            );
        }
        Ok(found)
    }

    async fn find_authorization_client(
        &self,
        params: &Params,
    ) -> ProviderResult<Result<(ClientRecord, String), UntrustedRequest>> {
        let (Ok(client_id), Ok(redirect_uri)) = (params.get("client_id"), params.get("redirect_uri")) else {
            return Ok(Err(UntrustedRequest::Malformed));
        };
        let Some(client_id) = client_id else { return Ok(Err(UntrustedRequest::MissingClient)) };
        let client = match self.store.get_client(client_id).await {
            Ok(client) => client,
            Err(StoreError::NotFound) => return Ok(Err(UntrustedRequest::UnknownClient)),
            Err(err) => return Err(err.into()),
        };
        let Some(redirect_uri) = redirect_uri else { return Ok(Err(UntrustedRequest::MissingRedirectUri)) };
        // Exact string match (RFC 9700 §4.1.3): no prefix, no normalisation.
        if !client.redirect_uris.iter().any(|registered| registered == redirect_uri) {
            return Ok(Err(UntrustedRequest::UnregisteredRedirectUri));
        }
        let redirect_uri = redirect_uri.to_owned();
        Ok(Ok((client, redirect_uri)))
    }

    /// Validates everything else. Errors go back to the client's redirect URI.
    pub async fn validate_authorization(
        &self,
        client: &ClientRecord,
        redirect_uri: &str,
        params: &Params,
    ) -> ProviderResult<Result<AuthorizationRequest, ErrorRedirect>> {
        let state = params.get("state").ok().flatten().map(str::to_owned);
        let fail =
            |error: OAuthError| Ok(Err(ErrorRedirect { redirect_uri: redirect_uri.to_owned(), state: state.clone(), error }));
        match self.check_authorization(client, redirect_uri, params).await {
            Ok(Ok(request)) => Ok(Ok(request)),
            Ok(Err(error)) => fail(error),
            Err(err) => Err(err),
        }
    }

    async fn check_authorization(
        &self,
        client: &ClientRecord,
        redirect_uri: &str,
        params: &Params,
    ) -> ProviderResult<Result<AuthorizationRequest, OAuthError>> {
        let now = self.clock.now();
        macro_rules! check {
            ($e:expr) => {
                match $e {
                    Ok(value) => value,
                    Err(error) => return Ok(Err(error)),
                }
            };
        }
        macro_rules! refuse {
            ($code:expr, $text:expr) => {
                return Ok(Err(oauth($code, $text)))
            };
        }
        check!(params.check_all());
        if params.get("request").ok().flatten().is_some() {
            refuse!(ErrorCode::RequestNotSupported, "request objects are not supported");
        }
        if params.get("request_uri").ok().flatten().is_some() {
            refuse!(ErrorCode::RequestUriNotSupported, "request_uri is not supported");
        }
        match check!(params.get("response_type")) {
            None => refuse!(ErrorCode::InvalidRequest, "response_type is required"),
            Some("code") => {}
            Some(_) => refuse!(ErrorCode::UnsupportedResponseType, "only response_type=code is supported"),
        }
        if !matches!(check!(params.get("response_mode")), None | Some("query")) {
            refuse!(ErrorCode::InvalidRequest, "only response_mode=query is supported");
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            refuse!(ErrorCode::UnauthorizedClient, "this client may not use the authorization code grant");
        }

        let Some(scope) = check!(params.get("scope")) else { refuse!(ErrorCode::InvalidScope, "scope is required") };
        let scopes = split_scope(scope);
        if scopes.is_empty() || !scopes.iter().all(|s| is_scope_token(s)) {
            refuse!(ErrorCode::InvalidScope, "scope is malformed");
        }
        if !scopes.iter().all(|s| client.scopes.contains(s)) {
            refuse!(ErrorCode::InvalidScope, "a requested scope is not allowed for this client");
        }

        let challenge = check!(params.get("code_challenge"));
        let method = check!(params.get("code_challenge_method"));
        let code_challenge = match (challenge, method) {
            (None, None) if client.secret_hash.is_none() => {
                refuse!(ErrorCode::InvalidRequest, "public clients must use PKCE (code_challenge with S256)")
            }
            (None, None) => None,
            (None, Some(_)) => refuse!(ErrorCode::InvalidRequest, "code_challenge_method without code_challenge"),
            (Some(_), None) | (Some(_), Some("plain")) => {
                refuse!(ErrorCode::InvalidRequest, "code_challenge_method must be S256; plain is not accepted")
            }
            (Some(_), Some(other)) if other != "S256" => refuse!(ErrorCode::InvalidRequest, "code_challenge_method must be S256"),
            (Some(challenge), Some(_)) if !is_pkce_value(challenge) => {
                refuse!(ErrorCode::InvalidRequest, "code_challenge must be 43 base64url characters")
            }
            (Some(challenge), Some(_)) => Some(challenge.to_owned()),
        };

        let mut prompt_none = false;
        let mut prompt_login = false;
        let mut prompt_consent = false;
        if let Some(prompt) = check!(params.get("prompt")) {
            for value in prompt.split(' ').filter(|v| !v.is_empty()) {
                match value {
                    "none" => prompt_none = true,
                    "login" | "select_account" => prompt_login = true,
                    "consent" => prompt_consent = true,
                    _ => refuse!(ErrorCode::InvalidRequest, "prompt has an unknown value"),
                }
            }
            if prompt_none && (prompt_login || prompt_consent) {
                refuse!(ErrorCode::InvalidRequest, "prompt=none cannot be combined with other values");
            }
        }
        let max_age = match check!(params.get("max_age")) {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(secs) if (0..=MAX_MAX_AGE_SECS).contains(&secs) => Some(secs),
                _ => refuse!(ErrorCode::InvalidRequest, "max_age must be a non-negative number of seconds"),
            },
        };
        let login_hint = check!(params.get("login_hint")).map(str::to_owned);
        if login_hint.as_deref().is_some_and(|h| h.chars().count() > MAX_LOGIN_HINT_CHARS || h.chars().any(char::is_control)) {
            refuse!(ErrorCode::InvalidRequest, "login_hint is not valid");
        }

        let connectors = self.store.list_connectors().await?;
        let connector_id = match check!(params.get("connector_id")) {
            Some(id) if connectors.iter().any(|c| c.id == id) => Some(id.to_owned()),
            Some(_) => refuse!(ErrorCode::InvalidRequest, "connector_id names no connector"),
            None => login_hint.as_deref().and_then(|hint| crate::login::connectors_for_address(&connectors, hint)).and_then(
                |matching| match matching.as_slice() {
                    [only] => Some(only.id.clone()),
                    _ => None,
                },
            ),
        };

        let audience = match check!(params.get("resource")) {
            Some(resource) if client.resources.iter().any(|r| r == resource) => resource.to_owned(),
            Some(_) => refuse!(ErrorCode::InvalidTarget, "the resource is not one this client may use"),
            None => client.audience_by_default().to_owned(),
        };

        Ok(Ok(AuthorizationRequest {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state: check!(params.get("state")).map(str::to_owned),
            nonce: check!(params.get("nonce")).map(str::to_owned),
            code_challenge,
            prompt_none,
            prompt_consent,
            login_after: prompt_login.then_some(now),
            max_age,
            login_hint,
            connector_id,
            audience,
        }))
    }

    /// Keeps a request while the user signs in or consents; returns its opaque id.
    pub async fn store_request(&self, request: &AuthorizationRequest) -> ProviderResult<String> {
        let id = random_token();
        let payload = serde_json::to_string(request).map_err(StoreError::from)?;
        let expires_at = self.clock.now() + REQUEST_LIFETIME_SECS;
        self.store.put_single_use(SingleUseKind::AuthorizationRequest, &digest(&id), &payload, expires_at).await?;
        Ok(id)
    }

    pub async fn load_request(&self, id: &str) -> ProviderResult<Option<AuthorizationRequest>> {
        let payload = self.store.peek_single_use(SingleUseKind::AuthorizationRequest, &digest(id), self.clock.now()).await?;
        Ok(payload.map(|p| serde_json::from_str(&p)).transpose().map_err(StoreError::from)?)
    }

    pub async fn discard_request(&self, id: &str) -> ProviderResult<()> {
        self.store.take_single_use(SingleUseKind::AuthorizationRequest, &digest(id), self.clock.now()).await?;
        Ok(())
    }

    /// Decides the next step for a request given the browser's session and its user. The
    /// access policy is checked once the user is known, before consent is asked for.
    pub async fn next_step(
        &self,
        request: &AuthorizationRequest,
        client: &ClientRecord,
        signed_in: Option<(&SsoSession, &User)>,
    ) -> ProviderResult<Result<Next, OAuthError>> {
        let session = signed_in.map(|(session, _)| session);
        let consent = match session {
            Some(session) if !client.first_party => self.store.get_consent(&session.user_id, &client.client_id).await?,
            _ => None,
        };
        let decision = decide(request, client.first_party, session, consent.as_deref(), self.clock.now());
        let needs_sign_in = match &decision {
            Ok(Next::SignIn { .. }) => true,
            Err(error) => error.code == ErrorCode::LoginRequired,
            Ok(_) => false,
        };
        if let (Some((session, user)), false) = (signed_in, needs_sign_in)
            && let Err(refusal) = self.check_access(client, user, &session.connector_id, "authorize").await?
        {
            if request.prompt_none {
                return Ok(Err(oauth(ErrorCode::AccessDenied, "the user may not use this application")));
            }
            return Ok(Ok(Next::Refused(refusal)));
        }
        Ok(decision)
    }

    /// Checks the client's access policy for a user signed in through `connector_id`; a
    /// refusal is audited with its reason and where it happened (`authorize`, `refresh`).
    pub async fn check_access(
        &self,
        client: &ClientRecord,
        user: &User,
        connector_id: &str,
        stage: &str,
    ) -> ProviderResult<Result<(), Refusal>> {
        let Err(refusal) = client.access.check(&user.groups, connector_id) else { return Ok(Ok(())) };
        self.store
            .record_audit(&AuditEvent {
                time: self.clock.now(),
                kind: AUDIT_ACCESS_DENIED.to_owned(),
                outcome: AuditOutcome::Failure,
                actor: Some(user.username.clone()),
                user_id: Some(user.id.clone()),
                client_id: Some(client.client_id.clone()),
                connector_id: Some(connector_id.to_owned()),
                ip: None,
                detail: Some(format!("{} at {stage}", refusal.reason())),
            })
            .await?;
        Ok(Err(refusal))
    }

    /// Issues a code for the signed-in user and returns the redirect that carries it; never to a
    /// user the client's access policy refuses, whichever path (a prompt-free authorization, a
    /// consent that was open while the user lost access) led here. The request it answers, when
    /// it was stored (`stored_id`), is discarded on a refusal too; with a code, in the code's
    /// write.
    pub async fn issue_code(
        &self,
        request: &AuthorizationRequest,
        client: &ClientRecord,
        session: &SsoSession,
        user: &User,
        stored_id: Option<&str>,
    ) -> ProviderResult<Result<String, Refusal>> {
        if let Err(refusal) = self.check_access(client, user, &session.connector_id, "issue").await? {
            if let Some(id) = stored_id {
                self.discard_request(id).await?;
            }
            return Ok(Err(refusal));
        }
        let amr = match self.store.get_connector(&session.connector_id).await {
            Ok(connector) => crate::upstream::ConnectorType::of(&connector.kind).map(|kind| kind.amr()).unwrap_or_default(),
            Err(StoreError::NotFound) => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        let grant = CodeGrant {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            user_id: user.id.clone(),
            session_id: session.id.clone(),
            auth_time: session.auth_time,
            idp: session.connector_id.clone(),
            amr,
            audience: request.audience.clone(),
            grant_id: new_grant_id(self.clock.now()),
        };
        let code = random_token();
        let payload = serde_json::to_string(&grant).map_err(StoreError::from)?;
        let code_key = digest(&code);
        let record = NewSingleUse {
            kind: SingleUseKind::AuthorizationCode,
            key: &code_key,
            payload: &payload,
            expires_at: self.clock.now() + CODE_LIFETIME_SECS,
        };
        match stored_id {
            Some(id) => {
                let request_key = digest(id);
                self.store.put_single_use_discarding(&record, (SingleUseKind::AuthorizationRequest, &request_key)).await?;
            }
            None => self.store.put_single_use(record.kind, record.key, record.payload, record.expires_at).await?,
        }
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        params.push(("iss", self.issuer()));
        Ok(Ok(redirect_with(&request.redirect_uri, &params)))
    }

    /// Remembers that the user approved these scopes for the client.
    pub async fn record_consent(&self, user_id: &str, request: &AuthorizationRequest) -> ProviderResult<()> {
        let mut scopes = self.store.get_consent(user_id, &request.client_id).await?.unwrap_or_default();
        for scope in &request.scopes {
            if !has_scope(&scopes, scope) {
                scopes.push(scope.clone());
            }
        }
        self.store.put_consent(user_id, &request.client_id, &scopes, self.clock.now()).await?;
        Ok(())
    }
}

/// The decision itself, on plain values.
pub fn decide(
    request: &AuthorizationRequest,
    first_party: bool,
    session: Option<&SsoSession>,
    consent: Option<&[String]>,
    now: UnixTime,
) -> Result<Next, OAuthError> {
    let stale = |session: &SsoSession| {
        request.login_after.is_some_and(|after| session.auth_time < after)
            || request.max_age.is_some_and(|max_age| now - session.auth_time > max_age)
    };
    match session {
        None if request.prompt_none => return Err(oauth(ErrorCode::LoginRequired, "the user is not signed in")),
        None => return Ok(Next::SignIn { force: false }),
        Some(session) if stale(session) => {
            if request.prompt_none {
                return Err(oauth(ErrorCode::LoginRequired, "the user must sign in again"));
            }
            return Ok(Next::SignIn { force: true });
        }
        Some(_) => {}
    }
    if first_party {
        return Ok(Next::Issue);
    }
    let covered = consent.is_some_and(|granted| request.scopes.iter().all(|s| granted.contains(s)));
    if covered && !request.prompt_consent {
        return Ok(Next::Issue);
    }
    if request.prompt_none {
        return Err(oauth(ErrorCode::ConsentRequired, "the user has not approved this application"));
    }
    Ok(Next::Consent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_ids_sort_in_the_order_they_are_made_and_hold_a_time_not_a_count() {
        let same_second: Vec<String> = (0..1000).map(|_| new_grant_id(1_800_000_000)).collect();
        assert!(same_second.windows(2).all(|pair| pair[0] < pair[1]), "ids of one second out of order");
        let later = new_grant_id(1_800_000_001);
        assert!(same_second.iter().all(|id| *id < later));
        assert!(same_second.iter().all(|id| uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)));
        let distinct: std::collections::HashSet<&String> = same_second.iter().collect();
        assert_eq!(distinct.len(), same_second.len());

        // In the same test: the order is kept for one second at a time, process-wide.
        let first = new_grant_id(1_900_000_000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = new_grant_id(1_900_000_000);
        let apart = offset_in_second(&second) - offset_in_second(&first);
        assert!(apart >= 5_000_000, "two ids 5 ms apart are {apart} apart, as a count would be");
        assert!(new_grant_id(1_899_999_999) > second, "a clock read before the second changed still sorts after");
    }

    /// The nanoseconds a grant id holds after its second.
    fn offset_in_second(id: &str) -> u64 {
        let bytes = *uuid::Uuid::parse_str(id).unwrap().as_bytes();
        let rand_a = u64::from(u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0FFF);
        let rand_b = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) & ((1 << 62) - 1);
        (rand_a << 24) | (rand_b >> 38)
    }

    #[test]
    fn redirects_keep_the_registered_uri_and_add_only_given_parameters() {
        assert_eq!(redirect_with("http://localhost:3000/", &[]), "http://localhost:3000/");
        assert_eq!(redirect_with("https://app.example/cb?tab=1", &[]), "https://app.example/cb?tab=1");
        assert_eq!(redirect_with("https://app.example/cb?tab=1", &[("state", "a b")]), "https://app.example/cb?tab=1&state=a+b");
    }

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            scopes: vec!["openid".into(), "email".into()],
            state: None,
            nonce: None,
            code_challenge: None,
            prompt_none: false,
            prompt_consent: false,
            login_after: None,
            max_age: None,
            login_hint: None,
            connector_id: None,
            audience: "app".into(),
        }
    }

    fn session(auth_time: UnixTime) -> SsoSession {
        SsoSession {
            id: "s".into(),
            user_id: "u".into(),
            connector_id: "local".into(),
            auth_time,
            last_seen_at: auth_time,
            expires_at: auth_time + 3600,
            revoked_at: None,
            ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn sign_in_prompt_and_max_age() {
        let now = 1000;
        assert_eq!(decide(&request(), true, None, None, now), Ok(Next::SignIn { force: false }));
        assert_eq!(decide(&request(), true, Some(&session(900)), None, now), Ok(Next::Issue));
        let none = AuthorizationRequest { prompt_none: true, ..request() };
        assert_eq!(decide(&none, true, None, None, now).unwrap_err().code, ErrorCode::LoginRequired);
        let login = AuthorizationRequest { login_after: Some(now), ..request() };
        assert_eq!(decide(&login, true, Some(&session(900)), None, now), Ok(Next::SignIn { force: true }));
        assert_eq!(decide(&login, true, Some(&session(now)), None, now), Ok(Next::Issue));
        let max_age = AuthorizationRequest { max_age: Some(60), ..request() };
        assert_eq!(decide(&max_age, true, Some(&session(900)), None, now), Ok(Next::SignIn { force: true }));
        assert_eq!(decide(&max_age, true, Some(&session(950)), None, now), Ok(Next::Issue));
    }

    #[test]
    fn consent_is_asked_once_unless_prompted() {
        let now = 1000;
        let s = session(900);
        assert_eq!(decide(&request(), false, Some(&s), None, now), Ok(Next::Consent));
        let partial = vec![String::from("openid")];
        assert_eq!(decide(&request(), false, Some(&s), Some(&partial), now), Ok(Next::Consent));
        let granted = vec![String::from("openid"), String::from("email"), String::from("profile")];
        assert_eq!(decide(&request(), false, Some(&s), Some(&granted), now), Ok(Next::Issue));
        let again = AuthorizationRequest { prompt_consent: true, ..request() };
        assert_eq!(decide(&again, false, Some(&s), Some(&granted), now), Ok(Next::Consent));
        let none = AuthorizationRequest { prompt_none: true, ..request() };
        assert_eq!(decide(&none, false, Some(&s), None, now).unwrap_err().code, ErrorCode::ConsentRequired);
    }

    #[test]
    fn redirects_keep_the_registered_query_and_csp_names_the_origin() {
        assert_eq!(redirect_with("https://a.example/cb?x=1", &[("code", "c d")]), "https://a.example/cb?x=1&code=c+d");
        assert_eq!(csp_source("https://a.example:8443/cb").as_deref(), Some("https://a.example:8443"));
        assert_eq!(csp_source("com.example.app:/cb").as_deref(), Some("com.example.app:"));
    }
}
