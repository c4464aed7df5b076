//! `/login` and `/logout`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::login::{self, LoginError, LoginPolicy, PasswordLogin};
use crate::secret::Secret;
use crate::session::pending::{self, PendingLogin};
use crate::store::{ConnectorRecord, SsoSession, User};
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::pages::{ConnectorView, ContinueUpstreamPage, LoginPage, MessagePage, render_page};
use crate::web::sessions;
use crate::web::upstream::count_sign_in_start;

const MAX_USERNAME_CHARS: usize = 256;
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_REQUEST_ID_LEN: usize = 128;
const MAX_USER_AGENT_CHARS: usize = 512;
pub(crate) const EXPIRED_REQUEST: &str =
    "This sign-in link has expired or is not valid. Go back to the application you came from and start again.";

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    req: Option<String>,
    /// `1`: list every way to sign in instead of asking for an email address first.
    choose: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IdentifyForm {
    csrf: Secret<String>,
    identifier: String,
    req: Option<String>,
}

/// The browser's last connector: an id, nothing about the person, sent only to `/login`.
const LAST_CONNECTOR_COOKIE: &str = "gatehouse_last_connector";
const LAST_CONNECTOR_MAX_AGE_SECS: i64 = 365 * 86400;

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: Secret<String>,
    connector: String,
    username: String,
    password: Secret<String>,
    req: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Secret<String>,
}

/// A pending-request id as the browser sent it: shape-checked before any lookup.
pub(crate) fn request_id(raw: Option<String>) -> Result<Option<String>, WebError> {
    match raw {
        None => Ok(None),
        Some(id) if id.is_empty() => Ok(None),
        Some(id) if id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
            Ok(Some(id))
        }
        Some(_) => Err(WebError::BadRequest(EXPIRED_REQUEST)),
    }
}

pub(crate) async fn pending_for(state: &AppState, id: Option<&str>) -> Result<Option<PendingLogin>, WebError> {
    let Some(id) = id else { return Ok(None) };
    match pending::peek(state.store.as_ref(), id, state.clock.now()).await? {
        Some(found) => Ok(Some(found)),
        None => Err(WebError::BadRequest(EXPIRED_REQUEST)),
    }
}

/// Where a redirect-style connector's sign-in starts, carrying the pending request; `None` for
/// connectors signed into on this page.
async fn upstream_start(state: &AppState, connector_id: &str, request: Option<&str>) -> Option<String> {
    let protocol = if state.upstreams.oidc(connector_id).await.is_some() {
        "oidc"
    } else if state.upstreams.saml(connector_id).await.is_some() {
        "saml"
    } else {
        return None;
    };
    Some(match request {
        Some(req) => format!("/{protocol}/{connector_id}/login?req={req}"),
        None => format!("/{protocol}/{connector_id}/login"),
    })
}

/// Where to send a signed-in browser: the pending request's resume path (consumed), else home.
pub(crate) async fn continue_to(state: &AppState, id: Option<&str>) -> Result<Response, WebError> {
    let taken = match id {
        Some(id) => pending::take(state.store.as_ref(), id, state.clock.now()).await?,
        None => None,
    };
    continue_with(id, taken)
}

/// Where a browser goes once the waiting request `id` named has been spent (`taken`): on to it,
/// home when it named none, or an error page when it had expired or was used meanwhile.
pub(crate) fn continue_with(id: Option<&str>, taken: Option<PendingLogin>) -> Result<Response, WebError> {
    match (id, taken) {
        (None, _) => Ok(Redirect::to("/").into_response()),
        (Some(_), Some(found)) => Ok(Redirect::to(&found.resume_path).into_response()),
        (Some(_), None) => Err(WebError::BadRequest(EXPIRED_REQUEST)),
    }
}

/// What the login page asks for.
enum Mode {
    /// Email (or username) first; a remembered connector is offered before it.
    Identify { remembered: Option<ConnectorView> },
    /// These ways to sign in; `None` for all. `identified` when they follow a typed identifier.
    Choose { only: Option<Vec<String>>, identified: bool },
}

struct PageInput<'a> {
    error: Option<&'a str>,
    username: &'a str,
    request: Option<&'a str>,
    pending: Option<&'a PendingLogin>,
    mode: Mode,
}

impl<'a> PageInput<'a> {
    /// The page as it was before email-first: every connector, or the one the app asked for.
    fn choose_all(
        error: Option<&'a str>,
        username: &'a str,
        request: Option<&'a str>,
        pending: Option<&'a PendingLogin>,
    ) -> Self {
        Self { error, username, request, pending, mode: Mode::Choose { only: None, identified: false } }
    }
}

async fn connector_view(state: &AppState, option: login::SignInOption, request: Option<&str>) -> Option<ConnectorView> {
    let start = match option.password_form {
        true => None,
        false => Some(upstream_start(state, &option.connector_id, request).await?),
    };
    Some(ConnectorView { id: option.connector_id, name: option.name, start })
}

/// Renders the login page from the connectors the handler read.
async fn login_page(
    state: &AppState,
    forms: &Forms,
    status: StatusCode,
    connectors: &[ConnectorRecord],
    input: PageInput<'_>,
) -> Result<Response, WebError> {
    let csrf = forms.token().await?;
    let asked_for = input.pending.and_then(|p| p.connector_id.as_deref());
    let options = login::sign_in_options(connectors, asked_for);
    let email_first = options.iter().any(|o| !o.password_form);
    let (identify, remembered, identified) = match &input.mode {
        Mode::Identify { remembered } => (true, remembered.as_ref(), false),
        // "Signing in as … · Use another account" belongs to email-first pages only.
        Mode::Choose { identified, .. } => (false, None, *identified && email_first),
    };
    let mut connectors = Vec::new();
    if let Mode::Choose { only, .. } = &input.mode {
        for option in options.into_iter().filter(|o| only.as_ref().is_none_or(|only| only.contains(&o.connector_id))) {
            connectors.extend(connector_view(state, option, input.request).await);
        }
    }
    let page = LoginPage {
        csrf: &csrf,
        connectors,
        error: input.error,
        username: input.username,
        request: input.request,
        client_name: input.pending.and_then(|p| p.client_name.as_deref()),
        identify,
        remembered,
        identified,
    };
    let mut response = (status, render_page(&page)).into_response();
    // Signing in for an app ends in a redirect to the app, which `form-action` must allow.
    let target = input.pending.and_then(|p| p.form_target.as_deref()).and_then(crate::provider::authorize::csp_source);
    if let Some(csp) = crate::web::form_action_csp(target.as_deref()) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(response)
}

/// The connector this browser last signed in with, if it still exists.
fn remembered_connector(headers: &HeaderMap, options: &[login::SignInOption]) -> Option<login::SignInOption> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(LAST_CONNECTOR_COOKIE)?.strip_prefix('='))?;
    options.iter().find(|o| o.connector_id == value).cloned()
}

/// `Set-Cookie` remembering (or, with `None`, forgetting) the connector this browser used.
pub(crate) fn last_connector_cookie(state: &AppState, connector_id: Option<&str>) -> Option<HeaderValue> {
    let secure = if state.config.issuer_is_https() { "; Secure" } else { "" };
    let cookie = match connector_id {
        Some(id) if id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => format!(
            "{LAST_CONNECTOR_COOKIE}={id}; Path=/login; Max-Age={LAST_CONNECTOR_MAX_AGE_SECS}; HttpOnly; SameSite=Lax{secure}"
        ),
        Some(_) => return None,
        None => format!("{LAST_CONNECTOR_COOKIE}=; Path=/login; Max-Age=0; HttpOnly; SameSite=Lax{secure}"),
    };
    HeaderValue::from_str(&cookie).ok()
}

pub(crate) fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(|_| WebError::BadRequest(EXPIRED_REQUEST))?;
    let request = request_id(query.req)?;
    let pending = pending_for(&state, request.as_deref()).await?;
    // Already signed in: a second application gets through without asking again, unless it
    // asked for a fresh sign-in.
    let force = pending.as_ref().is_some_and(|p| p.force_login);
    if !force && sessions::current(&state, &session).await?.is_some() {
        return continue_to(&state, request.as_deref()).await;
    }
    // Home-realm discovery chose a provider elsewhere: go straight there.
    if let Some(id) = pending.as_ref().and_then(|p| p.connector_id.as_deref())
        && let Some(start) = upstream_start(&state, id, request.as_deref()).await
    {
        return Ok(Redirect::to(&start).into_response());
    }
    let hint = pending.as_ref().and_then(|p| p.login_hint.as_deref());
    let asked_for = pending.as_ref().and_then(|p| p.connector_id.as_deref());
    let connectors = login::connectors(state.store.as_ref()).await?;
    let options = login::sign_in_options(&connectors, asked_for);
    let email_first = asked_for.is_none() && options.iter().any(|o| !o.password_form);
    let mut input = PageInput::choose_all(None, hint.unwrap_or_default(), request.as_deref(), pending.as_ref());
    if email_first && query.choose.as_deref() != Some("1") {
        input.mode = match hint {
            // The app named the person but not their provider: route the hint as if typed.
            Some(hint) => discovered_mode(&login::discover(&connectors, hint)),
            None => {
                let remembered = match remembered_connector(&headers, &options) {
                    Some(option) => connector_view(&state, option, request.as_deref()).await,
                    None => None,
                };
                Mode::Identify { remembered }
            }
        };
    }
    login_page(&state, &forms, StatusCode::OK, &connectors, input).await
}

fn discovered_mode(discovery: &login::Discovery) -> Mode {
    match discovery {
        login::Discovery::Connector(id) => Mode::Choose { only: Some(vec![id.clone()]), identified: true },
        login::Discovery::Choose(ids) => Mode::Choose { only: Some(ids.clone()), identified: true },
    }
}

const MAX_IDENTIFIER_CHARS: usize = 256;

/// The email-first step: routes what the person typed to their connector.
pub async fn identify(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    form: Result<Form<IdentifyForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| {
        WebError::from_rejection(rejection.status(), "The sign-in form was incomplete. Reload the page and try again.")
    })?;
    forms.verify(form.csrf.expose()).await?;
    let request = request_id(form.req)?;
    let pending = pending_for(&state, request.as_deref()).await?;
    if sessions::current(&state, &session).await?.is_some() && !pending.as_ref().is_some_and(|p| p.force_login) {
        return continue_to(&state, request.as_deref()).await;
    }
    let identifier = form.identifier.trim();
    let problem = if identifier.is_empty() {
        Some("Enter your email address or username.")
    } else if identifier.chars().count() > MAX_IDENTIFIER_CHARS
        || identifier.chars().any(|c| c.is_control() || c.is_whitespace())
        || identifier.ends_with('@')
        || identifier.starts_with('@')
    {
        Some("That is not an email address or username. Check it and try again.")
    } else {
        None
    };
    let connectors = login::connectors(state.store.as_ref()).await?;
    if let Some(problem) = problem {
        let shown: String = identifier.chars().filter(|c| !c.is_control()).take(MAX_IDENTIFIER_CHARS).collect();
        let input = PageInput {
            mode: Mode::Identify { remembered: None },
            ..PageInput::choose_all(Some(problem), &shown, request.as_deref(), pending.as_ref())
        };
        return login_page(&state, &forms, StatusCode::BAD_REQUEST, &connectors, input).await;
    }
    let discovery = login::discover(&connectors, identifier);
    // A provider that is signed into by a redirect (not a password form here).
    if let login::Discovery::Connector(id) = &discovery
        && upstream_start(&state, id, None).await.is_some()
    {
        // What an anonymous visitor makes the server store is counted per address.
        count_sign_in_start(&state, client_ip(addr, &headers, &state.config.trusted_proxies))?;
        // The upstream sign-in reads the hint from a pending request: this one, with the hint.
        let routed = PendingLogin {
            login_hint: Some(identifier.to_owned()),
            connector_id: Some(id.clone()),
            ..pending.clone().unwrap_or_else(|| PendingLogin { resume_path: String::from("/"), ..PendingLogin::default() })
        };
        let routed_id = pending::create(state.store.as_ref(), &routed, crate::provider::REQUEST_LIFETIME_SECS, state.clock.now())
            .await
            .map_err(WebError::internal)?;
        if let Some(start) = upstream_start(&state, id, Some(&routed_id)).await {
            let name = login::connector_name(&connectors, id);
            return Ok(render_page(&ContinueUpstreamPage { name: &name, target: &start }).into_response());
        }
    }
    let input = PageInput {
        mode: discovered_mode(&discovery),
        ..PageInput::choose_all(None, identifier, request.as_deref(), pending.as_ref())
    };
    login_page(&state, &forms, StatusCode::OK, &connectors, input).await
}

/// "Use another account": forgets the remembered connector and asks for an email again.
pub async fn forget(
    State(state): State<AppState>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(|_| WebError::BadRequest(EXPIRED_REQUEST))?;
    let request = request_id(query.req)?;
    let location = match &request {
        Some(req) => format!("/login?req={req}"),
        None => String::from("/login"),
    };
    Ok(with_cookie(Redirect::to(&location).into_response(), last_connector_cookie(&state, None)))
}

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(MAX_USER_AGENT_CHARS).collect())
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| {
        WebError::from_rejection(rejection.status(), "The sign-in form was incomplete. Reload the page and try again.")
    })?;
    forms.verify(form.csrf.expose()).await?;
    let request = request_id(form.req)?;
    let pending = pending_for(&state, request.as_deref()).await?;

    let username = form.username.trim();
    let problem = if username.is_empty() || form.password.expose().is_empty() {
        Some("Enter your username and password.")
    } else if username.chars().count() > MAX_USERNAME_CHARS || username.chars().any(char::is_control) {
        Some("That username is not valid.")
    } else if form.password.expose().len() > MAX_PASSWORD_BYTES {
        Some("That password is too long.")
    } else {
        None
    };
    let retry = |error: &'static str, status: StatusCode, username: String| {
        let connector_id = form.connector.clone();
        let state = state.clone();
        let forms = &forms;
        let request = request.clone();
        let pending = pending.clone();
        async move {
            // The password form of the connector that was used, as discovery would show it.
            let input = PageInput {
                mode: Mode::Choose { only: Some(vec![connector_id]), identified: true },
                ..PageInput::choose_all(Some(error), &username, request.as_deref(), pending.as_ref())
            };
            let connectors = login::connectors(state.store.as_ref()).await?;
            login_page(&state, forms, status, &connectors, input).await
        }
    };
    if let Some(problem) = problem {
        let shown: String = username.chars().take(MAX_USERNAME_CHARS).filter(|c| !c.is_control()).collect();
        return retry(problem, StatusCode::BAD_REQUEST, shown).await;
    }

    let attempt = PasswordLogin {
        connector_id: form.connector.clone(),
        username: username.to_owned(),
        password: form.password,
        ip: Some(client_ip(addr, &headers, &state.config.trusted_proxies)),
        user_agent: user_agent(&headers),
        pending_login: request.clone(),
    };
    let policy = LoginPolicy { login: &state.config.login, session: &state.config.session, hashing: &state.hashing };
    let result = login::password_login(&state.store, policy, attempt, state.clock.now()).await;
    match result {
        Ok(started) => {
            state.metrics.record_login(&form.connector, "success");
            sessions::attach(&state, &session, &started.session).await?;
            forms.renew();
            let cookie = last_connector_cookie(&state, Some(&form.connector));
            Ok(with_cookie(continue_with(request.as_deref(), started.resumed)?, cookie))
        }
        Err(err) => {
            // A connector id that does not exist is input, not a label: it would grow the series.
            let label = if matches!(err, LoginError::UnknownConnector) { "unknown" } else { form.connector.as_str() };
            state.metrics.record_login(label, err.reason());
            let username = username.to_owned();
            match err {
                // Not 401: that status requires an HTTP authentication challenge, and this is a form.
                LoginError::InvalidCredentials => retry("Invalid username or password.", StatusCode::OK, username).await,
                LoginError::Throttled => {
                    retry(
                        "Too many failed sign-in attempts. Wait a few minutes and try again.",
                        StatusCode::TOO_MANY_REQUESTS,
                        username,
                    )
                    .await
                }
                LoginError::Disabled => {
                    retry("This account is disabled. Contact your administrator.", StatusCode::FORBIDDEN, username).await
                }
                LoginError::UnknownConnector => Err(WebError::BadRequest("That sign-in method does not exist.")),
                LoginError::Busy => Err(WebError::Unavailable("Gatehouse is busy. Wait a moment and sign in again.")),
                // Password sign-ins link nothing by email; this cannot happen here.
                LoginError::LinkRefused(_) | LoginError::Interrupted | LoginError::Store(_) => Err(WebError::internal(err)),
            }
        }
    }
}

/// A cross-site GET must not be able to sign someone out, so those get a confirmation form;
/// a navigation from this site, a typed address, or a non-browser client signs out at once.
fn is_cross_site(headers: &HeaderMap) -> bool {
    matches!(headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()), Some("cross-site" | "same-site"))
}

pub async fn logout_page(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let signed_in = sessions::current(&state, &session).await?;
    if signed_in.is_some() && is_cross_site(&headers) {
        let csrf = forms.token().await?;
        let page = MessagePage {
            title: "Sign out",
            message: "Do you want to sign out of Gatehouse?",
            logout_csrf: Some(&csrf),
            signed_out: false,
        };
        return Ok(render_page(&page).into_response());
    }
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    end_session(&state, &session, signed_in, ip).await
}

pub async fn logout(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) =
        form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The sign-out form was incomplete."))?;
    forms.verify(form.csrf.expose()).await?;
    let signed_in = sessions::current(&state, &session).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    end_session(&state, &session, signed_in, ip).await
}

/// Ends the browser's session; `signed_in` is what the handler already resolved, for the audit.
async fn end_session(
    state: &AppState,
    session: &Session,
    signed_in: Option<(SsoSession, User)>,
    ip: IpAddr,
) -> Result<Response, WebError> {
    sessions::sign_out(state, session, signed_in, sessions::SignOut { ip, client_id: None, detail: None }).await?;
    let page =
        MessagePage { title: "Signed out", message: "You are signed out of Gatehouse.", logout_csrf: None, signed_out: true };
    Ok(render_page(&page).into_response())
}
