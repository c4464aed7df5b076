//! `/oidc/{id}`: the connector's page, the start of a sign-in through the provider, and the
//! callback the provider sends the browser back to.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::login::flow::{self, FlowFailure, Return};
use crate::login::{self, LoginError, Origin};
use crate::provider::authorize::error_location;
use crate::provider::params::Params;
use crate::provider::{ErrorCode, oauth};
use crate::session::pending;
use crate::tokens::random_token;
use crate::upstream::oidc::{OidcConnector, OidcError};
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::login::{EXPIRED_REQUEST, continue_with, pending_for, request_id, user_agent};
use crate::web::pages::{OidcConnectorPage, ReturnLink, UpstreamErrorPage, render_page};
use crate::web::sessions;

/// A random value in the browser's session; each upstream login records its digest, so the
/// callback only completes in the browser that started it.
const BINDING_KEY: &str = "upstream_binding";
const UNKNOWN_STATE: &str = "This sign-in has expired or was already completed. Go back to the application and start again.";
const MALFORMED_CALLBACK: &str = "The identity provider sent the browser back with a malformed response.";
pub(crate) const MALFORMED_POST: &str =
    "The identity provider's answer could not be read. Go back to the application and start again.";
pub(crate) const OTHER_BROWSER: &str =
    "This sign-in was started in another browser, or this browser's session ended meanwhile. Start again.";

/// How a refused return is shown; the reason is already in the audit log.
impl From<flow::FlowError> for WebError {
    fn from(err: flow::FlowError) -> Self {
        match err {
            flow::FlowError::Store(err) => err.into(),
            flow::FlowError::Refused(failure) => match failure {
                FlowFailure::MissingState | FlowFailure::IssuerMismatch | FlowFailure::MissingCode => {
                    WebError::BadRequest(MALFORMED_CALLBACK)
                }
                FlowFailure::OtherBrowser => WebError::Forbidden(OTHER_BROWSER),
                FlowFailure::SamlMalformed => WebError::BadRequest(MALFORMED_POST),
                FlowFailure::UnknownState
                | FlowFailure::StateForOtherConnector
                | FlowFailure::SamlUnknownHandoff
                | FlowFailure::SamlReplay => WebError::BadRequest(UNKNOWN_STATE),
            },
        }
    }
}

async fn connector(state: &AppState, id: &str) -> Result<std::sync::Arc<OidcConnector>, WebError> {
    state.upstreams.oidc(id).await.ok_or(WebError::NotFound)
}

pub async fn oidc_page(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let page = OidcConnectorPage {
        id: connector.id(),
        name: connector.name(),
        issuer: &connector.settings().issuer,
        client_id: &connector.settings().client_id,
        redirect_uri: connector.redirect_uri(),
    };
    Ok(render_page(&page).into_response())
}

fn query_param(params: &Params, name: &str) -> Result<Option<String>, WebError> {
    params.get(name).map(|v| v.map(str::to_owned)).map_err(|_| WebError::BadRequest(MALFORMED_CALLBACK))
}

async fn browser_binding(session: &Session) -> Result<String, WebError> {
    if let Some(existing) = session.get::<String>(BINDING_KEY).await? {
        return Ok(existing);
    }
    let fresh = random_token();
    session.insert(BINDING_KEY, &fresh).await?;
    Ok(fresh)
}

/// What every upstream sign-in start reads: the app's waiting request (`req`), if any, and the
/// digest of this browser's binding value.
pub(crate) struct SignInStart {
    pub request: Option<String>,
    pub pending: Option<crate::session::pending::PendingLogin>,
    pub binding_digest: String,
}

pub(crate) async fn sign_in_start(
    state: &AppState,
    session: &Session,
    query: Option<String>,
    ip: std::net::IpAddr,
) -> Result<SignInStart, WebError> {
    // Each start stores state until the sign-in completes or expires: counted per address.
    count_sign_in_start(state, ip)?;
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let request = request_id(params.get("req").map_err(|_| WebError::BadRequest(EXPIRED_REQUEST))?.map(str::to_owned))?;
    let pending = pending_for(state, request.as_deref()).await?;
    let binding_digest = crate::tokens::digest(&browser_binding(session).await?);
    Ok(SignInStart { request, pending, binding_digest })
}

/// Sends the browser to the provider.
pub async fn oidc_login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let SignInStart { request, pending, binding_digest } = sign_in_start(&state, &session, query, ip).await?;
    let now = state.clock.now();
    let login_hint = pending.as_ref().and_then(|p| p.login_hint.as_deref());
    let force = pending.as_ref().is_some_and(|p| p.force_login);
    let mut start = match connector.begin(login_hint, force, request, binding_digest, now).await {
        Ok(start) => start,
        Err(err) => return failure_page(&state, &connector, &err, (false, None), ip).await,
    };
    start.pending.test = login::is_test_of(pending.as_ref(), &id);
    flow::remember_oidc_start(state.store.as_ref(), &start.state, &start.pending, now).await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, start.authorization_url)]).into_response())
}

/// Where the provider sends the browser back, with a code or an error.
pub async fn oidc_callback(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let now = state.clock.now();
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let at = Return { connector_id: &id, ip, now };
    let browser_value = browser_value(&session).await?;
    let state_param = query_param(&params, "state")?;
    let pending = flow::take_oidc_start(state.store.as_ref(), at, state_param.as_deref(), browser_value.as_deref()).await?;
    // RFC 9207: a response that names another issuer was meant for another connector (mix-up).
    if query_param(&params, "iss")?.is_some_and(|iss| iss != connector.settings().issuer) {
        return Err(flow::refuse(state.store.as_ref(), at, FlowFailure::IssuerMismatch).await.into());
    }
    if let Some(error) = query_param(&params, "error")? {
        let code = upstream_error_code(&error);
        let shown: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        let reason = format!("upstream_error: the provider answered error={shown}");
        login::record_upstream_failure(state.store.as_ref(), &id, &reason, Some(ip), now).await?;
        state.metrics.record_login(&id, "upstream_error");
        let waiting = (pending.test, pending.pending_login.as_deref());
        return refused_page(&state, (connector.id(), connector.name()), code, waiting, &reason).await;
    }
    let Some(code) = query_param(&params, "code")? else {
        return Err(flow::refuse(state.store.as_ref(), at, FlowFailure::MissingCode).await.into());
    };
    let (identity, claims) = match connector.finish(&code, &pending, now).await {
        Ok(done) => done,
        Err(err) => return failure_page(&state, &connector, &err, (pending.test, pending.pending_login.as_deref()), ip).await,
    };
    let origin = Origin { ip: Some(ip), user_agent: user_agent(&headers) };
    let failure = (connector.id(), connector.name());
    let rule_input = crate::upstream::received_from_claims(&claims, crate::upstream::Bounds::Full);
    let pending_login = pending.pending_login.as_deref();
    let identity = match apply_rules(&state, failure, identity, &rule_input, (pending.test, pending_login), ip).await? {
        Ok(identity) => identity,
        Err(page) => return Ok(page),
    };
    let received =
        if pending.test { crate::upstream::received_from_claims(&claims, crate::upstream::Bounds::Shown) } else { Vec::new() };
    let signed_in = SignedIn { identity: &identity, received, test: pending.test };
    start_session(&state, &forms, signed_in, origin, pending_login).await
}

/// The identity after the connector's mapping rules, or the page for a sign-in they refuse
/// (recorded with the rule at fault): never a half-mapped user.
pub(crate) async fn apply_rules(
    state: &AppState,
    connector: (&str, &str),
    identity: crate::upstream::UpstreamIdentity,
    received: &crate::upstream::Received,
    waiting: (bool, Option<&str>),
    ip: std::net::IpAddr,
) -> Result<Result<crate::upstream::UpstreamIdentity, Response>, WebError> {
    match state.upstreams.rules(connector.0).await.apply(identity, received) {
        Ok(identity) => Ok(Ok(identity)),
        Err(err) => Ok(Err(mapping_refused(state, connector, &err, waiting, ip).await?)),
    }
}

/// The page for a sign-in the connector's mapping rules refuse, recorded with the rule at fault.
pub(crate) async fn mapping_refused(
    state: &AppState,
    connector: (&str, &str),
    err: &crate::mapping::rules::RuleError,
    waiting: (bool, Option<&str>),
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    let (test, pending_login) = waiting;
    let (connector_id, connector_name) = connector;
    let failure = UpstreamFailure {
        connector_id,
        connector_name,
        reason: "mapping_failed",
        recorded: format!("mapping_failed: mapping.{err}"),
        cause: FailureCause::Answer,
        status: StatusCode::FORBIDDEN,
        test,
    };
    upstream_failure_page(state, &failure, pending_login, ip).await
}

/// A failed test sign-in goes back to the console, which shows this failure: it is kept under
/// a fresh single-use id only this redirect carries, so no one else's failure is shown. The
/// failure page's generic message is for people signing in.
async fn failed_test(
    state: &AppState,
    test: bool,
    pending_login: Option<&str>,
    connector_id: &str,
    recorded: &str,
) -> Result<Option<Response>, WebError> {
    if !test {
        return Ok(None);
    }
    let path = login::fail_test(state.store.as_ref(), pending_login, connector_id, recorded, state.clock.now())
        .await
        .map_err(WebError::internal)?;
    Ok(Some(axum::response::Redirect::to(&path).into_response()))
}

/// Where a test sign-in's result is kept: the administrator's own browser session.
pub(crate) const TEST_RESULT_KEY: &str = "connector_test";

const EXPIRED_TEST: &str = "This test sign-in has expired or was already completed. Start a new test from the provider's page.";

/// Who an upstream sign-in vouched for, what the IdP sent, and whether it is a test.
pub(crate) struct SignedIn<'a> {
    pub identity: &'a crate::upstream::UpstreamIdentity,
    pub received: crate::upstream::Received,
    pub test: bool,
}

/// The end of every upstream sign-in: map the identity, start the SSO session in this browser,
/// and continue the app's waiting request (or go home).
pub(crate) async fn start_session(
    state: &AppState,
    forms: &Forms,
    signed_in: SignedIn<'_>,
    origin: Origin,
    pending_login: Option<&str>,
) -> Result<Response, WebError> {
    let SignedIn { identity, received, test } = signed_in;
    let connector_id = identity.connector_id.as_str();
    // An administrator's test: the result goes to their console, and no one is signed in,
    // even when the console's request has expired or was used meanwhile.
    if test {
        let link = state.upstreams.link_policy(connector_id).await;
        let now = state.clock.now();
        let Some(result) =
            login::test_sign_in(state.store.as_ref(), pending_login, identity, link, received, &origin, now).await?
        else {
            return Err(WebError::BadRequest(EXPIRED_TEST));
        };
        forms.session().insert(TEST_RESULT_KEY, &result).await?;
        return Ok(axum::response::Redirect::to(&login::test_result_path(connector_id)).into_response());
    }
    let link = state.upstreams.link_policy(connector_id).await;
    let signed_in =
        login::sign_in(state.store.as_ref(), &state.config.session, identity, link, origin, pending_login, state.clock.now());
    match signed_in.await {
        Ok(started) => {
            state.metrics.record_login(connector_id, "success");
            sessions::attach(state, forms.session(), &started.session).await?;
            forms.renew();
            let cookie = crate::web::login::last_connector_cookie(state, Some(connector_id));
            Ok(crate::web::login::with_cookie(continue_with(pending_login, started.resumed)?, cookie))
        }
        Err(LoginError::Disabled) => {
            state.metrics.record_login(connector_id, "disabled");
            Err(WebError::Forbidden("This account is disabled. Contact your administrator."))
        }
        Err(LoginError::LinkRefused(_)) => {
            state.metrics.record_login(connector_id, "link_refused");
            Err(WebError::Forbidden(
                "Gatehouse could not match this sign-in to your account. Contact your administrator, who can link it.",
            ))
        }
        Err(err) => Err(WebError::internal(err)),
    }
}

const TOO_MANY_STARTS: &str = "Too many sign-ins were started from your network in the last minute. Wait a minute and try again.";

/// Counts a sign-in start from `ip`; refused past `login.max_starts_per_ip_per_minute`.
pub(crate) fn count_sign_in_start(state: &AppState, ip: std::net::IpAddr) -> Result<(), WebError> {
    let started = state.starts.hit(&login::client_network(ip), state.clock.now());
    if started > state.config.login.max_starts_per_ip_per_minute {
        return Err(WebError::TooManyRequests(TOO_MANY_STARTS));
    }
    Ok(())
}

/// The value this browser's session holds to prove it started a sign-in.
pub(crate) async fn browser_value(session: &Session) -> Result<Option<String>, WebError> {
    Ok(session.get::<String>(BINDING_KEY).await?)
}

/// The downstream error an upstream `error=` becomes. Errors that mean the broker itself is
/// misconfigured at the provider are the server's problem, not the app's request's.
fn upstream_error_code(error: &str) -> ErrorCode {
    match error {
        "access_denied" => ErrorCode::AccessDenied,
        "login_required" => ErrorCode::LoginRequired,
        "consent_required" => ErrorCode::ConsentRequired,
        "interaction_required" | "account_selection_required" => ErrorCode::InteractionRequired,
        "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
        _ => ErrorCode::ServerError,
    }
}

/// What the person is told, and the `error_description` the app gets.
fn refusal(code: ErrorCode) -> (&'static str, &'static str) {
    match code {
        ErrorCode::AccessDenied => {
            ("The identity provider did not let you sign in (access denied).", "the identity provider denied the sign-in")
        }
        ErrorCode::TemporarilyUnavailable => (
            "The identity provider is temporarily unavailable. Try again in a few minutes.",
            "the identity provider is temporarily unavailable",
        ),
        ErrorCode::ServerError => (
            "The identity provider reported an error. If it keeps happening, contact your administrator.",
            "the identity provider reported an error",
        ),
        _ => (
            "The identity provider could not sign you in without your interaction.",
            "the identity provider requires interaction",
        ),
    }
}

fn failed_title(connector_name: &str) -> String {
    format!("Sign-in with {connector_name} failed")
}

/// The page for a provider's refusal. If an app was waiting, its request is ended and the page
/// links back to it with the matching OAuth error (its registered redirect URI only).
pub(crate) async fn refused_page(
    state: &AppState,
    connector: (&str, &str),
    code: ErrorCode,
    waiting: (bool, Option<&str>),
    recorded: &str,
) -> Result<Response, WebError> {
    let (connector_id, connector_name) = connector;
    let (test, pending_login) = waiting;
    if let Some(result) = failed_test(state, test, pending_login, connector_id, recorded).await? {
        return Ok(result);
    }
    let (message, description) = refusal(code);
    let return_to = app_return_link(state, pending_login, oauth(code, description)).await?;
    let page = UpstreamErrorPage { title: &failed_title(connector_name), message, return_to };
    Ok((StatusCode::FORBIDDEN, render_page(&page)).into_response())
}

/// The page for a sign-in that could not be completed or verified; the cause goes to the audit
/// trail and the log, never to the page.
async fn failure_page(
    state: &AppState,
    connector: &OidcConnector,
    err: &OidcError,
    waiting: (bool, Option<&str>),
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    let (test, pending_login) = waiting;
    let failure = UpstreamFailure {
        connector_id: connector.id(),
        connector_name: connector.name(),
        reason: err.reason(),
        recorded: format!("{}: {}", err.code(), err.explain()),
        cause: match err {
            OidcError::Unreachable(_) => FailureCause::Unreachable,
            OidcError::ClientRejected(_) => FailureCause::CredentialsRefused,
            _ => FailureCause::Answer,
        },
        status: StatusCode::BAD_GATEWAY,
        test,
    };
    tracing::warn!(connector = %connector.id(), error = %err, "upstream sign-in failed");
    upstream_failure_page(state, &failure, pending_login, ip).await
}

/// What the person is told a failed upstream sign-in was: the cause decides what they can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureCause {
    /// The IdP answered, and the answer was refused.
    Answer,
    /// The IdP could not be reached: worth retrying.
    Unreachable,
    /// The IdP refused Gatehouse's own client credentials: only an administrator can fix it.
    CredentialsRefused,
}

/// A sign-in through an upstream connector that could not be completed or verified.
pub(crate) struct UpstreamFailure<'a> {
    pub connector_id: &'a str,
    pub connector_name: &'a str,
    /// The metrics label.
    pub reason: &'static str,
    /// What the audit log records: the reason's code and the values involved.
    pub recorded: String,
    pub cause: FailureCause,
    pub status: StatusCode,
    /// An administrator's test sign-in: the failure is shown in the console.
    pub test: bool,
}

/// Audits and counts the failure and renders its page.
pub(crate) async fn upstream_failure_page(
    state: &AppState,
    failure: &UpstreamFailure<'_>,
    pending_login: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    let now = state.clock.now();
    login::record_upstream_failure(state.store.as_ref(), failure.connector_id, &failure.recorded, Some(ip), now).await?;
    audited_failure_page(state, failure, pending_login).await
}

/// Counts a failure already audited and renders its page.
pub(crate) async fn audited_failure_page(
    state: &AppState,
    failure: &UpstreamFailure<'_>,
    pending_login: Option<&str>,
) -> Result<Response, WebError> {
    state.metrics.record_login(failure.connector_id, failure.reason);
    if let Some(result) = failed_test(state, failure.test, pending_login, failure.connector_id, &failure.recorded).await? {
        return Ok(result);
    }
    let (message, code) = match failure.cause {
        FailureCause::Unreachable => {
            ("The identity provider could not be reached. Try again in a few minutes.", ErrorCode::TemporarilyUnavailable)
        }
        FailureCause::CredentialsRefused => (
            "The identity provider refused Gatehouse's credentials, so you are not signed in. Contact your administrator.",
            ErrorCode::ServerError,
        ),
        FailureCause::Answer => (
            "Gatehouse could not verify the answer of the identity provider, so you are not signed in. If it keeps happening, contact your administrator.",
            ErrorCode::ServerError,
        ),
    };
    // Only a finished round trip ends the app's request (callers pass none for a failed start,
    // which can be retried).
    let return_to = app_return_link(state, pending_login, oauth(code, "the sign-in at the identity provider failed")).await?;
    let page = UpstreamErrorPage { title: &failed_title(failure.connector_name), message, return_to };
    Ok((failure.status, render_page(&page)).into_response())
}

/// Ends the waiting app's request and returns the link that tells the app why.
async fn app_return_link(
    state: &AppState,
    pending_login: Option<&str>,
    error: crate::provider::OAuthError,
) -> Result<Option<ReturnLink>, WebError> {
    let Some(pending_id) = pending_login else { return Ok(None) };
    let now = state.clock.now();
    let Some(waiting) = pending::take(state.store.as_ref(), pending_id, now).await? else { return Ok(None) };
    let Some(request_id) = waiting.authorization_request else { return Ok(None) };
    let Some(request) = state.provider.load_request(&request_id).await.map_err(WebError::from)? else { return Ok(None) };
    state.provider.discard_request(&request_id).await.map_err(WebError::from)?;
    let href = error_location(state.provider.issuer(), &request.error_redirect(error));
    let name = waiting.client_name.unwrap_or_else(|| String::from("the application"));
    Ok(Some(ReturnLink { href, name }))
}
