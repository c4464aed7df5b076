//! The upstream OpenID Connect connector: authorization code flow with PKCE, `state` and
//! `nonce`, ID token validation with the provider's published keys, optional UserInfo, and the
//! mapping of the verified claims onto an `UpstreamIdentity`.
//!
//! Discovery and JWKS documents are cached per node. A token signed with a key id the cached
//! set lacks triggers one refresh of the set (at most every `JWKS_REFRESH_MIN_INTERVAL_SECS`),
//! so the provider can rotate keys without anyone restarting the broker.

use std::future::Future;
use std::pin::Pin;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IssuerUrl,
    JsonWebKeySet, LoginHint, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::clock::UnixTime;
use crate::config::{ClaimMapping, OidcConnectorSettings};
use crate::upstream::http::{self, HttpError, read_capped, transport_reason};
use crate::upstream::{FetchFor, UpstreamIdentity};

/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL_SECS: i64 = 3600;
/// An unknown key id refreshes the key set at most this often, so forged tokens with random
/// key ids cannot make the broker hammer the provider.
pub const JWKS_REFRESH_MIN_INTERVAL_SECS: i64 = 30;
/// Discovery, JWKS, token and UserInfo responses are small; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 512 * 1024;
/// After a failed fetch, how long before the provider is asked again.
const FAILURE_BACKOFF_SECS: i64 = 60;
/// How long the browser may take at the provider before the login expires.
pub const LOGIN_LIFETIME_SECS: i64 = 900;
const MAX_GROUPS: usize = 256;
const MAX_CLAIM_CHARS: usize = 256;
/// The signature algorithms accepted on ID tokens, when the provider advertises them.
const SUPPORTED_ALGS: [CoreJwsSigningAlgorithm; 6] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EdDsa,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// Every claim of a token or UserInfo response beyond the standard ones, kept as JSON so a
/// configured claim name can point anywhere.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

type UpstreamIdTokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type UpstreamTokenResponse = StandardTokenResponse<UpstreamIdTokenFields, CoreTokenType>;
type UpstreamClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    UpstreamTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider's discovery document was refused: {0}")]
    Discovery(String),
    #[error("the token request failed: {0}")]
    TokenExchange(String),
    /// The token endpoint answered `invalid_client`: Gatehouse's client id or secret is wrong
    /// there, which only an administrator can fix.
    #[error("the provider refused Gatehouse's client credentials: {0}")]
    ClientRejected(String),
    #[error("the ID token was refused: {detail}")]
    InvalidIdToken { code: &'static str, detail: String },
    #[error("the UserInfo response was refused: {0}")]
    UserInfo(String),
    #[error("the verified claims are not usable: {0}")]
    Claims(&'static str),
}

impl OidcError {
    /// The reason a refused sign-in is recorded under (the audit log and the connector's page).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Discovery(_) => "discovery_failed",
            Self::TokenExchange(_) | Self::ClientRejected(_) => "token_endpoint_error",
            Self::InvalidIdToken { code, .. } => code,
            Self::UserInfo(_) => "userinfo_invalid",
            Self::Claims(_) => "claims_unusable",
        }
    }

    /// The values involved, for the administrator: never a token or the client secret.
    pub fn explain(&self) -> String {
        let detail = match self {
            Self::Unreachable(detail)
            | Self::Discovery(detail)
            | Self::TokenExchange(detail)
            | Self::ClientRejected(detail)
            | Self::UserInfo(detail) => detail.as_str(),
            Self::InvalidIdToken { detail, .. } => detail.as_str(),
            Self::Claims(detail) => detail,
        };
        detail.chars().filter(|c| !c.is_control()).take(300).collect()
    }

    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "upstream_unreachable",
            Self::Discovery(_) => "upstream_discovery",
            Self::TokenExchange(_) | Self::ClientRejected(_) => "upstream_token",
            Self::InvalidIdToken { .. } => "invalid_id_token",
            Self::UserInfo(_) => "invalid_userinfo",
            Self::Claims(_) => "invalid_claims",
        }
    }
}

/// What must survive the browser's trip to the provider, kept server-side under the digest of
/// `state` and taken exactly once by the callback.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpstreamLogin {
    pub connector_id: String,
    pub pkce_verifier: String,
    pub nonce: String,
    /// The downstream pending-login id (`/login?req=`), when an app started this.
    pub pending_login: Option<String>,
    /// Digest of a value held in the browser's session, so a callback URL carried to another
    /// browser (login CSRF) is refused.
    pub browser_binding: String,
    /// Set when the app asked for a fresh sign-in: the provider's `auth_time` must not be older.
    #[serde(default)]
    pub fresh_since: Option<UnixTime>,
    /// An administrator's test sign-in: it never ends in a session, even when its console
    /// request has expired meanwhile.
    #[serde(default)]
    pub test: bool,
}

impl std::fmt::Debug for PendingUpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpstreamLogin").field("connector_id", &self.connector_id).finish_non_exhaustive()
    }
}

/// The redirect to the provider, and what to keep until the browser comes back.
pub struct LoginStart {
    pub authorization_url: String,
    pub state: String,
    pub pending: PendingUpstreamLogin,
}

/// What discovery found, as the console shows it when a connector is saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoverySummary {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    /// The provider's ID token algorithms that Gatehouse accepts.
    pub signing_algs: Vec<String>,
    /// How many keys its key set holds.
    pub keys: usize,
}

pub fn callback_path(connector_id: &str) -> String {
    format!("/oidc/{connector_id}/callback")
}

#[derive(Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: UnixTime,
    jwks_fetched_at: UnixTime,
}

pub struct OidcConnector {
    id: String,
    name: String,
    settings: OidcConnectorSettings,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    discovered: RwLock<Option<Discovered>>,
    /// One fetch at a time per connector: a burst of logins after expiry fetches once.
    fetching: Mutex<()>,
    /// When discovery last failed with nothing cached: logins fail fast for a while instead of
    /// each waiting out the timeout in turn.
    failed_at: std::sync::Mutex<Option<UnixTime>>,
    missing_claims: super::MissingClaims,
}

impl std::fmt::Debug for OidcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnector").field("id", &self.id).field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

impl OidcConnector {
    /// `issuer` is this broker's public base URL, which the callback hangs off.
    pub fn new(id: &str, name: &str, settings: OidcConnectorSettings, issuer: &str) -> Result<Self, OidcError> {
        let redirect_uri = RedirectUrl::new(format!("{issuer}{}", callback_path(id)))
            .map_err(|err| OidcError::Discovery(format!("callback URL: {err}")))?;
        // A provider that redirects its metadata or token endpoint elsewhere is not followed:
        // the issuer named in the configuration is the only one trusted.
        // The secret, codes and tokens never travel in clear to an https provider's endpoints.
        let http = http::client(settings.timeout_secs, settings.issuer.starts_with("https://"))
            .map_err(|err| OidcError::Unreachable(err.to_string()))?;
        Ok(Self {
            id: id.to_owned(),
            name: name.to_owned(),
            settings,
            redirect_uri,
            http,
            discovered: RwLock::new(None),
            fetching: Mutex::new(()),
            failed_at: std::sync::Mutex::new(None),
            missing_claims: super::MissingClaims::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Shown to people: the login button, error pages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &OidcConnectorSettings {
        &self.settings
    }

    /// When fetching the provider's discovery document last failed, unless it succeeded since.
    pub fn last_failure_at(&self) -> Option<UnixTime> {
        self.failed_at.lock().ok().and_then(|failed| *failed)
    }

    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// Fetches the discovery document and the key set now, for an admin checking the
    /// connector before saving it.
    pub async fn check(&self, now: UnixTime, fetch_for: FetchFor) -> Result<DiscoverySummary, OidcError> {
        let metadata = self.discover(now, fetch_for).await?.metadata;
        let algs = allowed_algs(&metadata);
        let keys = metadata.jwks().keys().len();
        if keys == 0 {
            return Err(OidcError::Discovery(String::from("the provider's key set (jwks_uri) is empty")));
        }
        let alg_name = |alg: &CoreJwsSigningAlgorithm| {
            serde_json::to_value(alg).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        };
        Ok(DiscoverySummary {
            authorization_endpoint: metadata.authorization_endpoint().to_string(),
            token_endpoint: metadata.token_endpoint().map(ToString::to_string).unwrap_or_default(),
            userinfo_endpoint: metadata.userinfo_endpoint().map(ToString::to_string),
            jwks_uri: metadata.jwks_uri().to_string(),
            signing_algs: algs.iter().map(alg_name).collect(),
            keys,
        })
    }

    /// Starts a login: the URL to send the browser to, and the state to keep.
    pub async fn begin(
        &self,
        login_hint: Option<&str>,
        force_login: bool,
        pending_login: Option<String>,
        browser_binding: String,
        now: UnixTime,
    ) -> Result<LoginStart, OidcError> {
        let client = self.client(self.metadata(now).await?.metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(hint) = login_hint {
            request = request.set_login_hint(LoginHint::new(hint.to_owned()));
        }
        if force_login {
            request = request.add_prompt(CoreAuthPrompt::Login).set_max_age(std::time::Duration::ZERO);
        }
        let (url, state, nonce) = request.url();
        let pending = PendingUpstreamLogin {
            connector_id: self.id.clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            pending_login,
            browser_binding,
            fresh_since: force_login.then_some(now),
            test: false,
        };
        Ok(LoginStart { authorization_url: url.to_string(), state: state.secret().clone(), pending })
    }

    /// Finishes a login: redeems the code, verifies the ID token (and UserInfo), and returns
    /// who signed in with the verified claims it was read from.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingUpstreamLogin,
        now: UnixTime,
    ) -> Result<(UpstreamIdentity, Value), OidcError> {
        let discovered = self.metadata(now).await?;
        let algs = allowed_algs(&discovered.metadata);
        let client = self.client(discovered.metadata);
        let http = self.http_client();
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| OidcError::TokenExchange(err.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let id_token = response.id_token().ok_or(OidcError::TokenExchange(String::from("the response has no id_token")))?;
        let nonce = Nonce::new(pending.nonce.clone());

        let mut claims = match self.verify(&client, &algs, id_token, &nonce, pending.fresh_since, now) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                if self.refresh_keys(discovered.jwks_fetched_at, now).await? =>
            {
                let metadata = self.metadata(now).await?.metadata;
                let algs = allowed_algs(&metadata);
                self.verify(&self.client(metadata), &algs, id_token, &nonce, pending.fresh_since, now)
            }
            other => other,
        }
        .map_err(id_token_refusal)?;

        if self.settings.userinfo {
            let subject = claims.get("sub").and_then(Value::as_str).map(|s| openidconnect::SubjectIdentifier::new(s.to_owned()));
            let userinfo: UserInfoClaims<OtherClaims, CoreGenderClaim> = client
                .user_info(response.access_token().clone(), subject)
                .map_err(|err| OidcError::UserInfo(err.to_string()))?
                .request_async(&http)
                .await
                .map_err(|err| match err {
                    openidconnect::UserInfoError::Request(err) => OidcError::Unreachable(err.to_string()),
                    other => OidcError::UserInfo(other.to_string()),
                })?;
            let extra = serde_json::to_value(&userinfo).map_err(|err| OidcError::UserInfo(err.to_string()))?;
            // The ID token's claims win; UserInfo fills in what it left out.
            if let (Value::Object(base), Value::Object(extra)) = (&mut claims, extra) {
                for (name, value) in extra {
                    base.entry(name).or_insert(value);
                }
            }
        }
        let identity = identity_from_claims(&self.id, &self.settings, &claims)?;
        let mapping = &self.settings.claims;
        let present = |name: &str| find_claim(&claims, name).is_some();
        self.missing_claims.note(
            &self.id,
            &[
                ("email", &mapping.email, present(&mapping.email)),
                ("name", &mapping.name, present(&mapping.name)),
                ("groups", &mapping.groups, present(&mapping.groups)),
            ],
            || claims.as_object().map(|object| object.keys().cloned().collect()).unwrap_or_default(),
        );
        Ok((identity, claims))
    }

    fn verify(
        &self,
        client: &UpstreamClient,
        algs: &[CoreJwsSigningAlgorithm],
        id_token: &openidconnect::IdToken<
            OtherClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >,
        nonce: &Nonce,
        fresh_since: Option<UnixTime>,
        now: UnixTime,
    ) -> Result<Value, ClaimsVerificationError> {
        let skew = self.settings.clock_skew_secs;
        let lenient_now = chrono::DateTime::from_timestamp(now - skew, 0)
            .ok_or_else(|| ClaimsVerificationError::Other(String::from("the clock is out of range")))?;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(algs.iter().cloned())
            .set_time_fn(move || lenient_now)
            .set_issue_time_verifier_fn(move |iat| {
                if iat.timestamp() > now + skew { Err(String::from("issued in the future")) } else { Ok(()) }
            })
            // A fresh sign-in was asked for: an upstream session reused silently would let the
            // app believe in an authentication that did not happen.
            .set_auth_time_verifier_fn(move |auth_time| match (fresh_since, auth_time) {
                (None, _) => Ok(()),
                (Some(since), Some(at)) if at.timestamp() >= since - skew => Ok(()),
                (Some(_), _) => Err(String::from("the provider did not authenticate the user afresh")),
            });
        let claims = id_token.claims(&verifier, nonce)?;
        // openidconnect leaves `azp` to the caller: when present it must name this client.
        if claims.authorized_party().is_some_and(|azp| azp.as_str() != self.settings.client_id) {
            return Err(ClaimsVerificationError::InvalidAudience(String::from("azp names another client")));
        }
        serde_json::to_value(claims).map_err(|err| ClaimsVerificationError::Other(err.to_string()))
    }

    fn client(&self, metadata: CoreProviderMetadata) -> UpstreamClient {
        let basic_supported = metadata.token_endpoint_auth_methods_supported().is_none_or(|methods| {
            methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                || !methods.contains(&CoreClientAuthMethod::ClientSecretPost)
        });
        let client = UpstreamClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.as_ref().map(|s| ClientSecret::new(s.expose().clone())),
        )
        .set_redirect_uri(self.redirect_uri.clone());
        if basic_supported { client } else { client.set_auth_type(AuthType::RequestBody) }
    }

    /// The provider's metadata and keys: cached, fetched again once stale. A failed refetch
    /// keeps the last good copy, so a provider blip does not stop sign-ins.
    async fn metadata(&self, now: UnixTime) -> Result<Discovered, OidcError> {
        self.discover(now, FetchFor::SignIn).await
    }

    /// A check asks the provider every time (and refreshes the cache when it answers); a
    /// sign-in uses the cached copy while it is fresh.
    async fn discover(&self, now: UnixTime, fetch_for: FetchFor) -> Result<Discovered, OidcError> {
        let fresh = |d: &&Discovered| fetch_for == FetchFor::SignIn && now - d.fetched_at < DISCOVERY_TTL_SECS;
        if let Some(found) = self.discovered.read().await.as_ref().filter(fresh) {
            return Ok(found.clone());
        }
        let pausing = self.failed_at.lock().is_ok_and(|failed| failed.is_some_and(|at| now - at < FAILURE_BACKOFF_SECS));
        if pausing && fetch_for == FetchFor::SignIn {
            return Err(OidcError::Unreachable(String::from("failed moments ago; not retrying yet")));
        }
        let _one_fetch = self.fetching.lock().await;
        if let Some(found) = self.discovered.read().await.as_ref().filter(fresh) {
            return Ok(found.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(|err| OidcError::Discovery(err.to_string()))?;
        let http = self.http_client();
        match CoreProviderMetadata::discover_async(issuer, &http).await {
            Ok(metadata) => {
                check_metadata(&metadata)?;
                let fresh = Discovered { metadata, fetched_at: now, jwks_fetched_at: now };
                *self.discovered.write().await = Some(fresh.clone());
                if let Ok(mut failed) = self.failed_at.lock() {
                    *failed = None;
                }
                Ok(fresh)
            }
            Err(err) => {
                let err = discovery_error(err);
                // Sign-ins go on with whatever copy there is; the check reports the failure.
                if fetch_for == FetchFor::Check {
                    return Err(err);
                }
                let mut cached = self.discovered.write().await;
                match cached.as_mut() {
                    Some(stale) => {
                        tracing::warn!(connector = %self.id, error = %err, "discovery failed; using the last good metadata");
                        // Try again after a minute, not on every login.
                        stale.fetched_at = now - DISCOVERY_TTL_SECS + FAILURE_BACKOFF_SECS;
                        Ok(stale.clone())
                    }
                    None => {
                        if let Ok(mut failed) = self.failed_at.lock() {
                            *failed = Some(now);
                        }
                        Err(err)
                    }
                }
            }
        }
    }

    /// Fetches the key set again unless that happened too recently; `true` when the cached set
    /// is newer than the one fetched at `seen`, so verifying again is worthwhile.
    async fn refresh_keys(&self, seen: UnixTime, now: UnixTime) -> Result<bool, OidcError> {
        let _one_fetch = self.fetching.lock().await;
        let jwks_uri = {
            let cached = self.discovered.read().await;
            match cached.as_ref() {
                // Another login refreshed the keys while this one waited.
                Some(d) if d.jwks_fetched_at > seen => return Ok(true),
                Some(d) if now - d.jwks_fetched_at >= JWKS_REFRESH_MIN_INTERVAL_SECS => d.metadata.jwks_uri().clone(),
                _ => return Ok(false),
            }
        };
        let http = self.http_client();
        let keys: CoreJsonWebKeySet =
            JsonWebKeySet::fetch_async(&jwks_uri, &http).await.map_err(|err| OidcError::Unreachable(err.to_string()))?;
        let mut cached = self.discovered.write().await;
        if let Some(d) = cached.as_mut() {
            d.metadata = d.metadata.clone().set_jwks(keys);
            d.jwks_fetched_at = now;
        }
        tracing::info!(connector = %self.id, "refreshed the provider's signing keys");
        Ok(true)
    }

    fn http_client(&self) -> impl Fn(HttpRequest) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>> + '_ {
        move |request| Box::pin(send(self.http.clone(), request))
    }
}

/// Sends one request; the body is read in chunks and refused once past the cap, so a hostile
/// provider cannot make the broker buffer without bound.
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request).map_err(|err| HttpError::Transport(err.to_string()))?;
    let mut response = http.execute(request).await.map_err(|err| HttpError::Transport(transport_reason(&err)))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_capped(&mut response, MAX_RESPONSE_BYTES).await?;
    let mut built = HttpResponse::new(body);
    *built.status_mut() = status;
    *built.headers_mut() = headers;
    Ok(built)
}

fn discovery_error(err: openidconnect::DiscoveryError<HttpError>) -> OidcError {
    match err {
        openidconnect::DiscoveryError::Request(err) => OidcError::Unreachable(err.to_string()),
        openidconnect::DiscoveryError::Response(status, _, _) => OidcError::Unreachable(format!("HTTP {status}")),
        openidconnect::DiscoveryError::Parse(err) => OidcError::Discovery(format!("unparseable document at {}", err.path())),
        openidconnect::DiscoveryError::Validation(reason) => OidcError::Discovery(reason),
        other => OidcError::Discovery(other.to_string()),
    }
}

/// Names what about the ID token was refused, so the console can say what to fix.
fn id_token_refusal(err: ClaimsVerificationError) -> OidcError {
    let code = match &err {
        ClaimsVerificationError::Expired(_) => "clock_skew",
        ClaimsVerificationError::InvalidAudience(_) => "audience_mismatch",
        ClaimsVerificationError::InvalidIssuer(_) => "iss_mismatch",
        ClaimsVerificationError::InvalidNonce(_) => "nonce_mismatch",
        ClaimsVerificationError::InvalidAuthTime(_) => "not_fresh",
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::DisallowedAlg(_)) => "algorithm_refused",
        ClaimsVerificationError::SignatureVerification(_) => "signature_invalid",
        _ => "id_token_invalid",
    };
    OidcError::InvalidIdToken { code, detail: err.to_string() }
}

fn token_error(err: RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>) -> OidcError {
    match err {
        RequestTokenError::ServerResponse(response) => {
            let description = response.error_description().map(|d| format!(" ({d})")).unwrap_or_default();
            let detail = format!("error={}{description}", response.error().as_ref());
            if *response.error() == CoreErrorResponseType::InvalidClient {
                OidcError::ClientRejected(detail)
            } else {
                OidcError::TokenExchange(detail)
            }
        }
        RequestTokenError::Request(err) => OidcError::Unreachable(err.to_string()),
        RequestTokenError::Parse(err, _) => OidcError::TokenExchange(format!("unparseable token response at {}", err.path())),
        RequestTokenError::Other(reason) => OidcError::TokenExchange(reason),
    }
}

/// A provider whose ID tokens we could never verify is misconfigured; better found at
/// discovery than at the first login.
fn check_metadata(metadata: &CoreProviderMetadata) -> Result<(), OidcError> {
    let algs = metadata.id_token_signing_alg_values_supported();
    if !algs.iter().any(|alg| SUPPORTED_ALGS.contains(alg)) {
        return Err(OidcError::Discovery(String::from("the provider signs ID tokens with no algorithm this broker accepts")));
    }
    Ok(())
}

/// The algorithms this provider advertises that are also on our list; never `none` or HMAC.
fn allowed_algs(metadata: &CoreProviderMetadata) -> Vec<CoreJwsSigningAlgorithm> {
    metadata.id_token_signing_alg_values_supported().iter().filter(|alg| SUPPORTED_ALGS.contains(alg)).cloned().collect()
}

/// Turns verified claims (a JSON object) into the shared identity shape.
pub fn identity_from_claims(
    connector_id: &str,
    settings: &OidcConnectorSettings,
    claims: &Value,
) -> Result<UpstreamIdentity, OidcError> {
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err(OidcError::Claims("the subject is missing or malformed"));
    }
    let mapping: &ClaimMapping = &settings.claims;
    let email = text_claim(claims, &mapping.email).filter(|e| e.contains('@'));
    let email_verified = email.is_some() && (settings.trust_email || bool_claim(claims, "email_verified"));
    let name = text_claim(claims, &mapping.name);
    let username = text_claim(claims, &mapping.username).or_else(|| email.clone()).unwrap_or_else(|| subject.to_owned());
    Ok(UpstreamIdentity {
        connector_id: connector_id.to_owned(),
        subject: subject.to_owned(),
        username,
        email,
        email_verified,
        name,
        groups: list_claim(claims, &mapping.groups),
    })
}

/// A claim by its whole name (URI-style names contain dots), else as a dotted path.
pub fn find_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(found) = claims.get(name) {
        return Some(found);
    }
    name.split('.').try_fold(claims, |node, part| node.get(part))
}

fn clean(text: &str) -> Option<String> {
    let cleaned: String = text.chars().filter(|c| !c.is_control()).take(MAX_CLAIM_CHARS).collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn text_claim(claims: &Value, name: &str) -> Option<String> {
    find_claim(claims, name).and_then(Value::as_str).and_then(clean)
}

/// Some providers send booleans as strings.
fn bool_claim(claims: &Value, name: &str) -> bool {
    match find_claim(claims, name) {
        Some(Value::Bool(value)) => *value,
        Some(Value::String(value)) => value == "true",
        _ => false,
    }
}

fn list_claim(claims: &Value, name: &str) -> Vec<String> {
    let mut groups: Vec<String> = match find_claim(claims, name) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).filter_map(clean).collect(),
        Some(Value::String(single)) => clean(single).into_iter().collect(),
        _ => Vec::new(),
    };
    groups.sort();
    groups.dedup();
    groups.truncate(MAX_GROUPS);
    groups
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::secret::Secret;

    fn settings() -> OidcConnectorSettings {
        OidcConnectorSettings {
            issuer: "https://idp.example".into(),
            client_id: "gatehouse".into(),
            client_secret: Some(Secret::new("s".into())),
            scopes: vec!["openid".into()],
            claims: ClaimMapping {
                username: "preferred_username".into(),
                email: "email".into(),
                name: "name".into(),
                groups: "realm_access.roles".into(),
            },
            userinfo: false,
            trust_email: false,
            timeout_secs: 5,
            clock_skew_secs: 60,
        }
    }

    #[test]
    fn claims_map_onto_the_identity_by_subject_never_by_email() {
        let claims = json!({
            "sub": "u-123", "email": "alice@corp.example", "email_verified": "true", "name": "Alice\u{7}",
            "realm_access": {"roles": ["ops", "eng", "eng"]}
        });
        let identity = identity_from_claims("corp", &settings(), &claims).unwrap();
        assert_eq!(identity.subject, "u-123");
        assert_eq!(identity.username, "alice@corp.example");
        assert!(identity.email_verified);
        assert_eq!(identity.name.as_deref(), Some("Alice"));
        assert_eq!(identity.groups, vec!["eng".to_owned(), "ops".to_owned()]);
    }

    #[test]
    fn whole_claim_names_win_over_dotted_paths() {
        let claims = json!({"https://corp.example/groups": ["a"], "https://corp": {"example/groups": ["b"]}});
        assert_eq!(list_claim(&claims, "https://corp.example/groups"), vec!["a".to_owned()]);
        assert_eq!(list_claim(&json!({"groups": "solo"}), "groups"), vec!["solo".to_owned()]);
        assert!(list_claim(&json!({"groups": 5}), "groups").is_empty());
    }

    #[test]
    fn unverified_email_stays_unverified_unless_trusted() {
        let claims = json!({"sub": "x", "email": "a@b.example"});
        assert!(!identity_from_claims("c", &settings(), &claims).unwrap().email_verified);
        let trusting = OidcConnectorSettings { trust_email: true, ..settings() };
        assert!(identity_from_claims("c", &trusting, &claims).unwrap().email_verified);
    }

    #[test]
    fn missing_or_malformed_subject_is_refused() {
        for claims in [json!({}), json!({"sub": ""}), json!({"sub": 7}), json!({"sub": "a\nb"})] {
            assert!(matches!(identity_from_claims("c", &settings(), &claims), Err(OidcError::Claims(_))), "{claims}");
        }
    }
}
