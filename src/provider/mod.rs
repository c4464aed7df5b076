//! The downstream OpenID Provider: what the apps connected to Gatehouse talk to. Everything here
//! takes plain values and the injected clock; `web::oauth` only parses HTTP and renders results.

pub mod authorize;
pub mod backchannel;
pub mod client_auth;
pub mod discovery;
pub mod introspect;
pub mod logout;
pub mod params;
pub mod token;

use std::sync::Arc;

use serde::Serialize;

use crate::access::AccessPolicy;
use crate::clock::{SharedClock, UnixTime};
use crate::config::{Config, SigningAlg};
use crate::store::{ClientRecord, Store, StoreError, User};
use crate::tokens::{KeyManager, SecretHasher, TokenError};

/// Authorization codes live this long (the and RFC 6749's "short-lived").
pub const CODE_LIFETIME_SECS: i64 = 60;
/// How long a validated authorization request waits for sign-in and consent.
pub const REQUEST_LIFETIME_SECS: i64 = 15 * 60;
/// Any single parameter longer than this is refused.
pub const MAX_PARAM_BYTES: usize = 8 * 1024;

/// Audit event kinds: an application got a user's grant (code redeemed), a grant was revoked
/// (by its client, or because its code or refresh token was replayed), an access token revoked.
pub const AUDIT_TOKEN_GRANTED: &str = "token_granted";
pub const AUDIT_GRANT_REVOKED: &str = "grant_revoked";
pub const AUDIT_ACCESS_TOKEN_REVOKED: &str = "access_token_revoked";
/// An application's access policy refused a user.
pub const AUDIT_ACCESS_DENIED: &str = "access_denied";

pub const SCOPE_OPENID: &str = "openid";
pub const SCOPE_OFFLINE_ACCESS: &str = "offline_access";
/// Scopes about the signed-in user; meaningless in a client-credentials token.
pub const USER_SCOPES: [&str; 5] = ["openid", "profile", "email", "groups", "offline_access"];

/// The error codes of RFC 6749, 6750, 7009, 8707 and OpenID Connect Core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    LoginRequired,
    ConsentRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    UnsupportedTokenType,
    InvalidToken,
    InsufficientScope,
    InteractionRequired,
    TemporarilyUnavailable,
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InteractionRequired => "interaction_required",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// A protocol error for the client: an RFC code and a fixed description, never input or internals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: &'static str,
}

pub fn oauth(code: ErrorCode, description: &'static str) -> OAuthError {
    OAuthError { code, description }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("client secret check failed to run")]
    SecretCheck,
    #[error("too many failed client authentications; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    #[error("too busy to check a client secret now")]
    Busy,
}

impl From<crate::work::PoolError> for ProviderError {
    fn from(err: crate::work::PoolError) -> Self {
        match err {
            crate::work::PoolError::Busy => Self::Busy,
            crate::work::PoolError::Interrupted => Self::SecretCheck,
        }
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// What the provider needs from the rest of the service.
pub struct Provider {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub secrets: SecretHasher,
    pub clock: SharedClock,
    /// Woken when back-channel logout notifications are queued.
    pub backchannel: Arc<tokio::sync::Notify>,
    pub clients: ClientCache,
    pub revoked: RevokedAccessTokens,
    /// Where argon2 checks of client secrets run, a bounded number at once.
    pub hashing: crate::work::BlockingPool,
    pub client_auth: client_auth::ClientAuthGuard,
}

/// How long (seconds) a node reuses a client record it read: the token and introspection
/// endpoints read the calling client on every request, and a change made elsewhere reaches
/// every node this soon.
const CLIENT_CACHE_SECS: UnixTime = 2;

/// How long (seconds) a node reuses its copy of the revoked access tokens: a revocation made at
/// another node applies here this soon; one made here applies here at once.
const REVOKED_LIST_SECS: UnixTime = 2;
/// How long a node keeps its own revocations beside its copy of the list, for `replace`.
const MADE_HERE_KEPT_SECS: UnixTime = 60;
/// Past this many unexpired revoked access tokens, each introspection asks the database instead.
const REVOKED_LIST_MAX: usize = 10_000;

/// This node's copy of the unexpired revoked access tokens (their `jti`), read whole from the
/// database at most every `REVOKED_LIST_SECS`, so introspecting a token costs no database read.
/// `None` inside: more than `REVOKED_LIST_MAX` of them, and the database is asked per token.
#[derive(Default)]
pub struct RevokedAccessTokens {
    copy: std::sync::RwLock<Option<(UnixTime, Option<std::collections::HashSet<String>>)>>,
    /// Revocations made on this node lately, with when: a read of the list that started before
    /// one committed must not drop it from the copy.
    made_here: std::sync::Mutex<Vec<(UnixTime, String)>>,
    reading: tokio::sync::Mutex<()>,
}

impl RevokedAccessTokens {
    /// `Some(revoked)` when a fresh copy answers for `jti`.
    fn answer(&self, jti: &str, now: UnixTime) -> Option<bool> {
        let copy = self.copy.read().ok()?;
        match copy.as_ref()? {
            (read_at, Some(jtis)) if (*read_at..*read_at + REVOKED_LIST_SECS).contains(&now) => Some(jtis.contains(jti)),
            _ => None,
        }
    }

    /// Whether the list should be read again: in the copy's last second of freshness, or later.
    fn due(&self, now: UnixTime) -> bool {
        let copy = self.copy.read().ok();
        copy.as_ref()
            .and_then(|copy| copy.as_ref())
            .is_none_or(|(read_at, _)| !(*read_at..*read_at + REVOKED_LIST_SECS - 1).contains(&now))
    }

    /// A revocation made on this node (and committed), applied to its copy at once.
    fn add(&self, jti: &str, now: UnixTime) {
        if let Ok(mut made_here) = self.made_here.lock() {
            // Far longer than any read of the list takes; bounds a node that only revokes.
            made_here.retain(|(at, _)| now - at <= MADE_HERE_KEPT_SECS);
            made_here.push((now, jti.to_owned()));
        }
        if let Ok(mut copy) = self.copy.write()
            && let Some((_, Some(jtis))) = copy.as_mut()
        {
            jtis.insert(jti.to_owned());
        }
    }

    /// Replaces the copy with a list read at `now`, keeping this node's recent revocations.
    fn replace(&self, listed: Option<Vec<String>>, now: UnixTime) {
        let mut listed: Option<std::collections::HashSet<String>> = listed.map(|jtis| jtis.into_iter().collect());
        if let Ok(mut made_here) = self.made_here.lock() {
            made_here.retain(|(at, _)| now - at <= REVOKED_LIST_SECS);
            if let Some(jtis) = listed.as_mut() {
                jtis.extend(made_here.iter().map(|(_, jti)| jti.clone()));
            }
        }
        if let Ok(mut copy) = self.copy.write() {
            *copy = Some((now, listed));
        }
    }
}

impl std::fmt::Debug for RevokedAccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedAccessTokens").finish_non_exhaustive()
    }
}

/// Registered clients recently read, by id. Only clients that exist are kept, so the map is
/// bounded by the number of registered clients.
#[derive(Default)]
pub struct ClientCache {
    entries: std::sync::Mutex<ClientEntries>,
}

#[derive(Default)]
struct ClientEntries {
    by_id: std::collections::HashMap<String, CachedClient>,
    /// Raised by every `forget`: a read that started before a change made here must not put
    /// the old record back.
    changes: u64,
}

struct CachedClient {
    read_at: UnixTime,
    client: Arc<ClientRecord>,
    /// A request is reading the client again (see `ClientCache::look_up`).
    reading: bool,
}

/// What the cache holds for a client id, with the count of changes when it was looked at.
enum CachedLookup {
    Fresh(Arc<ClientRecord>),
    /// Still fresh, in its last second: the caller reads the client again, the one request to,
    /// and answers from this copy if it cannot.
    ReadAgain(Arc<ClientRecord>, u64),
    Missing(u64),
}

impl ClientCache {
    /// Like the revoked-token list, a copy is read again in its last second of freshness by one
    /// request while the others still use it: when it expired for every request at once, each
    /// read the client, a burst on the database every two seconds.
    fn look_up(&self, client_id: &str, now: UnixTime) -> CachedLookup {
        let Ok(mut entries) = self.entries.lock() else { return CachedLookup::Missing(u64::MAX) };
        let changes = entries.changes;
        match entries.by_id.get_mut(client_id) {
            Some(cached) if (cached.read_at..cached.read_at + CLIENT_CACHE_SECS).contains(&now) => {
                if now >= cached.read_at + CLIENT_CACHE_SECS - 1 && !cached.reading {
                    cached.reading = true;
                    CachedLookup::ReadAgain(Arc::clone(&cached.client), changes)
                } else {
                    CachedLookup::Fresh(Arc::clone(&cached.client))
                }
            }
            _ => CachedLookup::Missing(changes),
        }
    }

    /// Keeps a record read at `now`, unless a change was made here since the read began.
    fn keep(&self, client: &Arc<ClientRecord>, now: UnixTime, changes_before_reading: u64) {
        if let Ok(mut entries) = self.entries.lock()
            && entries.changes == changes_before_reading
        {
            entries
                .by_id
                .insert(client.client_id.clone(), CachedClient { read_at: now, client: Arc::clone(client), reading: false });
        }
    }

    /// Lets a later request read the client again after this one could not.
    fn reading_failed(&self, client_id: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(cached) = entries.by_id.get_mut(client_id)
        {
            cached.reading = false;
        }
    }

    /// Drops this node's copy of a client changed here, so the change applies on this node at
    /// once; other nodes pick it up when their copy expires.
    pub fn forget(&self, client_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.by_id.remove(client_id);
            entries.changes += 1;
        }
    }
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

impl Provider {
    /// The client with this id, if registered, read through a short-lived cache. Shared, not
    /// copied: a request reads it and changes nothing.
    pub async fn client(&self, client_id: &str) -> ProviderResult<Option<Arc<ClientRecord>>> {
        let now = self.clock.now();
        let (fresh_copy, changes) = match self.clients.look_up(client_id, now) {
            CachedLookup::Fresh(client) => return Ok(Some(client)),
            CachedLookup::ReadAgain(client, changes) => (Some(client), changes),
            CachedLookup::Missing(changes) => (None, changes),
        };
        match self.store.get_client(client_id).await {
            Ok(client) => {
                let client = Arc::new(client);
                self.clients.keep(&client, now, changes);
                Ok(Some(client))
            }
            Err(StoreError::NotFound) => {
                self.clients.forget(client_id);
                Ok(None)
            }
            // The copy is still within its 2 s.
            Err(_) if fresh_copy.is_some() => {
                self.clients.reading_failed(client_id);
                Ok(fresh_copy)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the access token `jti` was revoked, from this node's copy of the list when it is
    /// fresh and not too long, else from the database. One request at a time reads the list,
    /// starting a second before the copy goes stale: under steady load the others go on
    /// answering from the copy and none waits for the database (when every request found the
    /// copy stale at once, each asked the database, a burst every two seconds).
    pub async fn access_token_revoked(&self, jti: &str) -> ProviderResult<bool> {
        let now = self.clock.now();
        let from_copy = self.revoked.answer(jti, now);
        if self.revoked.due(now)
            && let Ok(_reading) = self.revoked.reading.try_lock()
            && self.revoked.due(now)
        {
            match self.store.list_revoked_access_tokens(now, REVOKED_LIST_MAX + 1).await {
                Ok(listed) => {
                    self.revoked.replace((listed.len() <= REVOKED_LIST_MAX).then_some(listed), now);
                    if let Some(revoked) = self.revoked.answer(jti, now) {
                        return Ok(revoked);
                    }
                }
                // The copy is still within its 2 s; a later request tries again.
                Err(_) if from_copy.is_some() => {}
                Err(err) => return Err(err.into()),
            }
        }
        match from_copy {
            Some(revoked) => Ok(revoked),
            None => Ok(self.store.is_access_token_revoked(jti).await?),
        }
    }

    /// Records a revocation of an access token and applies it to this node's copy at once.
    pub async fn revoke_access_token(&self, jti: &str, expires_at: UnixTime) -> ProviderResult<()> {
        self.store.revoke_access_token(jti, expires_at).await?;
        self.revoked.add(jti, self.clock.now());
        Ok(())
    }

    /// Whether the database answers: what makes a node ready for traffic.
    pub async fn database_answers(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer)
    }

    fn access_token_lifetime(&self, client: &ClientRecord) -> i64 {
        client.access_token_lifetime_secs.unwrap_or(self.config.tokens.access_token_lifetime_secs)
    }

    /// Signs an RFC 9068 access token; `exp` never passes `not_after` (the grant's end).
    async fn mint_access_token(&self, client: &ClientRecord, grant: AccessGrant<'_>) -> ProviderResult<MintedAccessToken> {
        let now = self.clock.now();
        let expires_at = (now + self.access_token_lifetime(client)).min(grant.not_after);
        let claims = AccessTokenClaims {
            iss: self.issuer(),
            sub: grant.subject,
            aud: grant.audience,
            client_id: &client.client_id,
            scope: grant.scope,
            iat: now,
            exp: expires_at,
            sid: grant.sid.as_deref(),
            auth_time: grant.auth_time,
            gid: grant.grant_id,
        };
        let token = self.keys.sign_access_token(&claims, client_alg(client)).await?;
        Ok(MintedAccessToken { token, expires_in: expires_at - now })
    }
}

/// The audit event of something that happened to a grant; `detail` is a fixed reason.
pub fn grant_event(
    kind: &str,
    outcome: crate::store::AuditOutcome,
    grant: &crate::store::GrantRecord,
    detail: &str,
    now: UnixTime,
) -> crate::store::AuditEvent {
    crate::store::AuditEvent {
        time: now,
        kind: kind.to_owned(),
        outcome,
        actor: Some(format!("client:{}", grant.client_id)),
        user_id: Some(grant.user_id.clone()),
        client_id: Some(grant.client_id.clone()),
        connector_id: Some(grant.idp.clone()),
        ip: None,
        detail: Some(detail.to_owned()),
    }
}

pub fn client_alg(client: &ClientRecord) -> SigningAlg {
    SigningAlg::parse(&client.signing_alg).unwrap_or(SigningAlg::ES256)
}

pub struct AccessGrant<'a> {
    pub subject: &'a str,
    pub audience: &'a str,
    pub scope: &'a str,
    pub sid: Option<String>,
    pub auth_time: Option<UnixTime>,
    pub grant_id: Option<&'a str>,
    pub not_after: UnixTime,
}

pub struct MintedAccessToken {
    pub token: String,
    pub expires_in: i64,
}

/// RFC 9068 claims. `gid` names the grant so revoking the grant deactivates the token. The
/// `jti` is added by `KeyManager::sign_access_token`.
#[derive(Debug, Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub iat: UnixTime,
    pub exp: UnixTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<&'a str>,
}

/// Space-separated scope tokens, in request order, without repeats.
pub fn split_scope(scope: &str) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !scopes.iter().any(|s| s == token) {
            scopes.push(token.to_owned());
        }
    }
    scopes
}

/// RFC 6749 §3.3: printable ASCII except space, `"` and `\`.
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

pub fn has_scope(scopes: &[String], wanted: &str) -> bool {
    scopes.iter().any(|s| s == wanted)
}

/// The user claims a set of scopes releases to an application, for ID tokens and UserInfo alike;
/// `access` says which of the user's groups that application is told about.
pub fn user_claims(user: &User, scopes: &[String], access: &AccessPolicy) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut claims = serde_json::Map::new();
    if has_scope(scopes, "profile") {
        if let Some(name) = &user.display_name {
            claims.insert("name".into(), Value::from(name.clone()));
        }
        claims.insert("preferred_username".into(), Value::from(user.username.clone()));
        claims.insert("updated_at".into(), Value::from(user.updated_at));
    }
    if has_scope(scopes, "email")
        && let Some(email) = &user.email
    {
        claims.insert("email".into(), Value::from(email.clone()));
        claims.insert("email_verified".into(), Value::from(user.email_verified));
    }
    if has_scope(scopes, "groups") {
        claims.insert("groups".into(), Value::from(access.visible_groups(&user.groups)));
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert_eq!(split_scope("openid  email openid"), vec!["openid", "email"]);
        assert!(is_scope_token("api:read"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token("a\\b"));
        assert!(!is_scope_token("é"));
        assert!(!is_scope_token(""));
    }
}
