//! The OpenID Provider's HTTP side: parses requests, calls `provider`, and renders the answer
//! the RFCs prescribe (redirects, JSON errors, bearer challenges).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_sessions::Session;

use crate::access::Refusal;
use crate::provider::authorize::{AuthorizationRequest, Next, UntrustedRequest, csp_source, error_location};
use crate::provider::client_auth::{AuthMethod, parse_basic};
use crate::provider::introspect::BearerError;
use crate::provider::logout::LogoutRequest;
use crate::provider::params::Params;
use crate::provider::{ErrorCode, OAuthError, ProviderError, oauth};
use crate::session::pending::{self, PendingLogin};
use crate::store::ClientRecord;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::{InternalErrorCause, WebError};
use crate::web::pages::{AccessDeniedPage, ConsentPage, LogoutConfirmPage, MessagePage, render_page};
use crate::web::upstream::count_sign_in_start;
use crate::web::{AppState, form_action_csp, sessions};

const RESUME_PATH: &str = "/oauth2/authorize/resume";
const EXPIRED_REQUEST: &str =
    "This sign-in request has expired or is not valid. Go back to the application you came from and start again.";

/// A redirect for a GET (`302 Found`, as RFC 6749's examples) or after a form post (`303`).
fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (status, [(header::LOCATION, value)]).into_response(),
        Err(_) => WebError::BadRequest("The redirect address is not valid.").into_response(),
    }
}

/// Sets the page's CSP so its form may lead (through redirects) to `target`.
fn allow_form_target(mut response: Response, target: Option<&str>) -> Response {
    if let Some(value) = form_action_csp(target.and_then(csp_source).as_deref()) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

// ---------------------------------------------------------------------------------------------
// JSON errors of the back-channel endpoints.

/// An error answered with the RFC 6749 §5.2 JSON body.
pub struct JsonError {
    error: ProviderError,
    method: AuthMethod,
}

impl From<ProviderError> for JsonError {
    fn from(error: ProviderError) -> Self {
        Self { error, method: AuthMethod::None }
    }
}

impl From<OAuthError> for JsonError {
    fn from(error: OAuthError) -> Self {
        Self { error: error.into(), method: AuthMethod::None }
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        match self.error {
            ProviderError::OAuth(error) => {
                let status =
                    if error.code == ErrorCode::InvalidClient { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
                let body = Json(json!({ "error": error.code.as_str(), "error_description": error.description }));
                let mut response = (status, [(header::PRAGMA, "no-cache")], body).into_response();
                if error.code == ErrorCode::InvalidClient {
                    let challenge = if self.method == AuthMethod::Basic { "Basic realm=\"gatehouse\"" } else { "Basic" };
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                }
                response
            }
            ProviderError::Throttled { retry_after_secs } => {
                let body = Json(json!({
                    "error": "invalid_client",
                    "error_description": "too many failed client authentications; retry later",
                }));
                let retry_after = HeaderValue::from(retry_after_secs.max(1));
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_after)], body).into_response()
            }
            ProviderError::Busy => {
                let body = Json(json!({
                    "error": "temporarily_unavailable",
                    "error_description": "the server is busy; retry shortly",
                }));
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, HeaderValue::from_static("1"))], body).into_response()
            }
            other => {
                let body =
                    Json(json!({ "error": "server_error", "error_description": "the server could not complete the request" }));
                let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
                response.extensions_mut().insert(InternalErrorCause(other.to_string()));
                response
            }
        }
    }
}

/// The parameters of a form-encoded POST body.
fn form_params(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Params, Box<Response>> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let error = oauth(ErrorCode::InvalidRequest, "the request body is too large");
            let mut response = JsonError::from(error).into_response();
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return Err(Box::new(response));
        }
        Err(_) => {
            let error = oauth(ErrorCode::InvalidRequest, "the request body could not be read");
            return Err(Box::new(JsonError::from(error).into_response()));
        }
    };
    if !is_form(headers) {
        let error = oauth(ErrorCode::InvalidRequest, "the body must be application/x-www-form-urlencoded");
        return Err(Box::new(JsonError::from(error).into_response()));
    }
    Ok(Params::parse(&body))
}

/// Answers a form-encoded back-channel request with `handle`'s response or its JSON error,
/// never cached.
async fn answer_form<Fut>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    handle: impl FnOnce(Params) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Result<Response, JsonError>>,
{
    let response = match form_params(headers, body) {
        Ok(params) => handle(params).await.unwrap_or_else(IntoResponse::into_response),
        Err(response) => *response,
    };
    no_store(response)
}

/// Authenticates the calling client, or answers `invalid_client` with the right challenge.
async fn calling_client(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    params: &Params,
    allow_public: bool,
) -> Result<Arc<ClientRecord>, JsonError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let parsed = value.to_str().map_err(|_| oauth(ErrorCode::InvalidClient, "the Authorization header is malformed"));
            match parsed.and_then(parse_basic) {
                Ok(basic) => Some(basic),
                Err(error) => return Err(JsonError { error: error.into(), method: AuthMethod::Basic }),
            }
        }
    };
    let ip = client_ip(peer, headers, &state.config.trusted_proxies);
    state
        .provider
        .authenticate_client(basic, params, allow_public, ip)
        .await
        .map_err(|failure| JsonError { error: failure.error, method: failure.method })
}

// ---------------------------------------------------------------------------------------------
// Discovery.

pub async fn discovery(State(state): State<AppState>) -> Response {
    let mut response = Json(state.provider.discovery()).into_response();
    // Public, identical for everyone, and read by every client at start-up.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

// ---------------------------------------------------------------------------------------------
// Authorization.

pub async fn authorize_get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let ip = client_ip(peer, &headers, &state.config.trusted_proxies);
    authorize(&state, &session, &params, ip).await
}

/// A form POST from another site arrives without the `SameSite=Lax` session cookie, so the
/// browser is sent to the same request as a GET, which carries it.
fn as_get(path: &str, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, WebError> {
    let body = body.map_err(|rejection| WebError::from_rejection(rejection.status(), "The request could not be read."))?;
    if !is_form(headers) {
        return Err(WebError::UnsupportedMediaType);
    }
    let query = std::str::from_utf8(&body).map_err(|_| WebError::BadRequest("The request is malformed."))?;
    if query.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(WebError::BadRequest("The request is malformed."));
    }
    Ok(redirect(StatusCode::SEE_OTHER, &format!("{path}?{query}")))
}

pub async fn authorize_post(headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, WebError> {
    as_get(crate::provider::discovery::AUTHORIZE_PATH, &headers, body)
}

fn untrusted_message(reason: UntrustedRequest) -> &'static str {
    match reason {
        UntrustedRequest::MissingClient => "The application did not say who it is (client_id is missing).",
        UntrustedRequest::UnknownClient => "The application is not registered with Gatehouse.",
        UntrustedRequest::MissingRedirectUri => "The application did not say where to return to (redirect_uri is missing).",
        UntrustedRequest::UnregisteredRedirectUri => {
            "The application asked to return to an address that is not registered for it, so Gatehouse will not send you there."
        }
        UntrustedRequest::Malformed => "The sign-in request is malformed.",
    }
}

async fn authorize(state: &AppState, session: &Session, params: &Params, ip: IpAddr) -> Result<Response, WebError> {
    let provider = &state.provider;
    let (client, redirect_uri) = match provider.authorization_client(params).await.map_err(WebError::from)? {
        Ok(found) => found,
        Err(reason) => return Err(WebError::BadRequest(untrusted_message(reason))),
    };
    match provider.validate_authorization(&client, &redirect_uri, params).await.map_err(WebError::from)? {
        Ok(request) => proceed(state, session, &client, request, None, Some(ip)).await,
        Err(error) => Ok(redirect(StatusCode::FOUND, &error_location(provider.issuer(), &error))),
    }
}

/// Takes a valid request as far as it can go: to sign-in, to consent, or back with a code.
async fn proceed(
    state: &AppState,
    session: &Session,
    client: &ClientRecord,
    request: AuthorizationRequest,
    stored_id: Option<String>,
    fresh_from: Option<IpAddr>,
) -> Result<Response, WebError> {
    let provider = &state.provider;
    let current = sessions::current(state, session).await?;
    // A new request that must wait for sign-in is stored until then: counted per address.
    if let (Some(ip), None) = (fresh_from, &current) {
        count_sign_in_start(state, ip)?;
    }
    let signed_in = current.as_ref().map(|(sso, user)| (sso, user));
    let next = provider.next_step(&request, client, signed_in).await.map_err(WebError::from)?;
    match (next, current) {
        (Ok(Next::Issue), Some((sso, user))) => {
            let issued = provider.issue_code(&request, client, &sso, &user, stored_id.as_deref()).await;
            let location = match issued.map_err(WebError::from)? {
                Ok(location) => location,
                Err(refusal) => return access_denied_page(state, client, &request, &user, refusal).await,
            };
            state.metrics.record_authorization(&client.client_id);
            Ok(redirect(StatusCode::FOUND, &location))
        }
        (Ok(Next::SignIn { force }), _) => send_to_sign_in(state, client, &request, stored_id, force).await,
        // `decide` never asks a browser without a session for anything but sign-in.
        (Ok(Next::Issue | Next::Consent), None) => send_to_sign_in(state, client, &request, stored_id, false).await,
        (Ok(Next::Refused(refusal)), Some((_, user))) => {
            if let Some(id) = &stored_id {
                provider.discard_request(id).await.map_err(WebError::from)?;
            }
            access_denied_page(state, client, &request, &user, refusal).await
        }
        (Ok(Next::Refused(_)), None) => send_to_sign_in(state, client, &request, stored_id, false).await,
        (Ok(Next::Consent), Some(_)) => {
            let id = match stored_id {
                Some(id) => id,
                None => provider.store_request(&request).await.map_err(WebError::from)?,
            };
            Ok(redirect(StatusCode::FOUND, &format!("/oauth2/consent?request={id}")))
        }
        (Err(error), _) => {
            if let Some(id) = &stored_id {
                provider.discard_request(id).await.map_err(WebError::from)?;
            }
            Ok(redirect(StatusCode::FOUND, &error_location(provider.issuer(), &request.error_redirect(error))))
        }
    }
}

/// Tells a signed-in person they may not use the application and why, with a link that
/// carries `access_denied` back to it (a registered redirect URI) and one to the portal.
async fn access_denied_page(
    state: &AppState,
    client: &ClientRecord,
    request: &AuthorizationRequest,
    user: &crate::store::User,
    refusal: Refusal,
) -> Result<Response, WebError> {
    let app = client.name.as_str();
    let advice = match refusal {
        Refusal::NotInAllowedGroup => match client.access.allowed_groups.as_slice() {
            [group] => format!("Ask your administrator for the {group} group."),
            groups => format!("Ask your administrator to add you to one of these groups: {}.", groups.join(", ")),
        },
        Refusal::ConnectorNotAllowed => {
            let connectors = crate::login::connectors(state.store.as_ref()).await?;
            let names: Vec<String> =
                client.access.allowed_connectors.iter().map(|id| crate::login::connector_name(&connectors, id)).collect();
            format!("{app} accepts accounts from {} only. Sign out, then sign in with one of those.", names.join(", "))
        }
    };
    let denied = request.error_redirect(oauth(ErrorCode::AccessDenied, "the user may not use this application"));
    let page = AccessDeniedPage {
        app,
        advice: &advice,
        username: &user.username,
        return_to: error_location(state.provider.issuer(), &denied),
    };
    Ok((StatusCode::FORBIDDEN, render_page(&page)).into_response())
}

async fn send_to_sign_in(
    state: &AppState,
    client: &ClientRecord,
    request: &AuthorizationRequest,
    stored_id: Option<String>,
    force: bool,
) -> Result<Response, WebError> {
    let now = state.clock.now();
    let id = match (stored_id, request.max_age) {
        (Some(id), None) => id,
        // A sign-in from now on satisfies `max_age`; checking the age again when the browser
        // comes back a second later could otherwise send it round in circles.
        (stored_id, Some(_)) => {
            if let Some(old) = stored_id {
                state.provider.discard_request(&old).await.map_err(WebError::from)?;
            }
            let fresh = AuthorizationRequest { login_after: Some(now), max_age: None, ..request.clone() };
            state.provider.store_request(&fresh).await.map_err(WebError::from)?
        }
        (None, None) => state.provider.store_request(request).await.map_err(WebError::from)?,
    };
    let pending = PendingLogin {
        client_name: Some(client.name.clone()),
        resume_path: format!("{RESUME_PATH}?request={id}"),
        connector_id: request.connector_id.clone(),
        login_hint: request.login_hint.clone(),
        // A fresh sign-in was asked for even if this browser has no session: an upstream
        // provider may still have one, which must not be reused silently.
        force_login: force || request.login_after.is_some(),
        form_target: Some(request.redirect_uri.clone()),
        authorization_request: Some(id.clone()),
        test_of: None,
        test_failure: None,
    };
    let pending_id = pending::create(state.store.as_ref(), &pending, crate::provider::REQUEST_LIFETIME_SECS, now)
        .await
        .map_err(WebError::internal)?;
    Ok(redirect(StatusCode::FOUND, &format!("/login?req={pending_id}")))
}

/// The stored request an id names, with its client; an error page when either is gone.
async fn stored_request(
    state: &AppState,
    id: Option<&str>,
) -> Result<(String, AuthorizationRequest, Arc<ClientRecord>), WebError> {
    let id = id.filter(|id| id.len() <= 128).ok_or(WebError::BadRequest(EXPIRED_REQUEST))?;
    let request = state.provider.load_request(id).await.map_err(WebError::from)?.ok_or(WebError::BadRequest(EXPIRED_REQUEST))?;
    let client =
        state.provider.client(&request.client_id).await.map_err(WebError::from)?.ok_or(WebError::BadRequest(EXPIRED_REQUEST))?;
    Ok((id.to_owned(), request, client))
}

fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, WebError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    params.get(name).map(|v| v.map(str::to_owned)).map_err(|_| WebError::BadRequest(EXPIRED_REQUEST))
}

/// Where the browser comes back after signing in.
pub async fn authorize_resume(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let id = query_value(query.as_deref(), "request")?;
    let (id, request, client) = stored_request(&state, id.as_deref()).await?;
    proceed(&state, &session, &client, request, Some(id), None).await
}

// ---------------------------------------------------------------------------------------------
// Consent.

pub fn describe_scope(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are",
        "profile" => "See your name and username",
        "email" => "See your email address",
        "groups" => "See the groups you belong to",
        "offline_access" => "Stay connected to your account while you are away",
        _ => "Use an additional permission it was registered for",
    }
}

pub async fn consent_page(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let id = query_value(query.as_deref(), "request")?;
    let (id, request, client) = stored_request(&state, id.as_deref()).await?;
    let Some((_, user)) = sessions::current(&state, &session).await? else {
        return Ok(redirect(StatusCode::FOUND, &format!("{RESUME_PATH}?request={id}")));
    };
    let csrf = forms.token().await?;
    let mut scopes: Vec<&'static str> = Vec::new();
    for description in request.scopes.iter().map(|s| describe_scope(s)) {
        if !scopes.contains(&description) {
            scopes.push(description);
        }
    }
    let resource = (request.audience != client.audience_by_default()).then_some(request.audience.as_str());
    let page = ConsentPage { csrf: &csrf, request: &id, client_name: &client.name, username: &user.username, scopes, resource };
    Ok(allow_form_target(render_page(&page).into_response(), Some(&request.redirect_uri)))
}

#[derive(serde::Deserialize)]
pub struct ConsentForm {
    csrf: crate::secret::Secret<String>,
    request: String,
    decision: String,
}

pub async fn consent_submit(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    form: Result<axum::Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, WebError> {
    let axum::Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    forms.verify(form.csrf.expose()).await?;
    let (id, request, client) = stored_request(&state, Some(&form.request)).await?;
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(redirect(StatusCode::SEE_OTHER, &format!("{RESUME_PATH}?request={id}")));
    };
    let provider = &state.provider;
    let location = match form.decision.as_str() {
        "allow" => {
            let issued = provider.issue_code(&request, &client, &sso, &user, Some(&id)).await;
            let location = match issued.map_err(WebError::from)? {
                Ok(location) => location,
                Err(refusal) => return access_denied_page(&state, &client, &request, &user, refusal).await,
            };
            provider.record_consent(&user.id, &request).await.map_err(WebError::from)?;
            state.metrics.record_authorization(&client.client_id);
            location
        }
        _ => {
            provider.discard_request(&id).await.map_err(WebError::from)?;
            let denied = request.error_redirect(oauth(ErrorCode::AccessDenied, "the user did not allow access"));
            error_location(provider.issuer(), &denied)
        }
    };
    Ok(redirect(StatusCode::SEE_OTHER, &location))
}

// ---------------------------------------------------------------------------------------------
// Token, introspection, revocation.

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (state, headers) = (&state, &headers);
    answer_form(headers, body, |params| async move {
        let client = calling_client(state, peer, headers, &params, true).await?;
        let issued = state.provider.token(&client, &params).await?;
        state.metrics.record_grant(params.get("grant_type").ok().flatten().unwrap_or_default());
        Ok(Json(issued).into_response())
    })
    .await
}

pub async fn introspect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (state, headers) = (&state, &headers);
    answer_form(headers, body, |params| async move {
        let caller = calling_client(state, peer, headers, &params, false).await?;
        Ok(Json(state.provider.introspect(&caller, &params).await?).into_response())
    })
    .await
}

pub async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (state, headers) = (&state, &headers);
    answer_form(headers, body, |params| async move {
        let client = calling_client(state, peer, headers, &params, true).await?;
        state.provider.revoke(&client, &params).await?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// UserInfo.

fn bearer_challenge(status: StatusCode, error: Option<&'static str>) -> Response {
    let challenge = match error {
        Some(code) => format!("Bearer realm=\"gatehouse\", error=\"{code}\""),
        None => String::from("Bearer realm=\"gatehouse\""),
    };
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn userinfo(state: &AppState, headers: &HeaderMap, body_token: Option<String>) -> Response {
    let header_token = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Some(token.trim().to_owned())
            }
            _ => return bearer_challenge(StatusCode::UNAUTHORIZED, Some("invalid_request")),
        },
        Some(Err(_)) => return bearer_challenge(StatusCode::UNAUTHORIZED, Some("invalid_request")),
    };
    let token = match (header_token, body_token) {
        (Some(_), Some(_)) => return bearer_challenge(StatusCode::BAD_REQUEST, Some("invalid_request")),
        (Some(token), None) | (None, Some(token)) => token,
        (None, None) => return bearer_challenge(StatusCode::UNAUTHORIZED, None),
    };
    if token.len() > crate::provider::MAX_PARAM_BYTES {
        return bearer_challenge(StatusCode::UNAUTHORIZED, Some("invalid_token"));
    }
    match state.provider.userinfo(&token).await {
        Ok(Ok(claims)) => no_store(Json(claims).into_response()),
        Ok(Err(BearerError::InvalidToken)) => bearer_challenge(StatusCode::UNAUTHORIZED, Some("invalid_token")),
        Ok(Err(BearerError::InsufficientScope)) => bearer_challenge(StatusCode::FORBIDDEN, Some("insufficient_scope")),
        Err(err) => JsonError::from(err).into_response(),
    }
}

pub async fn userinfo_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    userinfo(&state, &headers, None).await
}

/// RFC 6750 §2.2 also allows the token in a form body.
pub async fn userinfo_post(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let body_token = match body {
        Ok(body) if !body.is_empty() && is_form(&headers) => match Params::parse(&body).get("access_token") {
            Ok(token) => token.map(str::to_owned),
            Err(_) => return bearer_challenge(StatusCode::BAD_REQUEST, Some("invalid_request")),
        },
        Ok(_) => None,
        Err(_) => return bearer_challenge(StatusCode::BAD_REQUEST, Some("invalid_request")),
    };
    userinfo(&state, &headers, body_token).await
}

// ---------------------------------------------------------------------------------------------
// RP-initiated logout.

pub async fn logout_get(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    forms: Forms,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    rp_logout(&state, addr, &forms, &headers, &params, false).await
}

pub async fn logout_post(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    forms: Forms,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, WebError> {
    let body = body.map_err(|rejection| WebError::from_rejection(rejection.status(), "The request could not be read."))?;
    if !is_form(&headers) {
        return Err(WebError::UnsupportedMediaType);
    }
    let params = Params::parse(&body);
    // The confirmation form posts back here with a CSRF token; an app's own POST has none and
    // becomes a GET, which carries the session cookie.
    match params.get("confirm") {
        Ok(Some(_)) => {
            let submitted = params.get("csrf").ok().flatten().unwrap_or_default();
            forms.verify(submitted).await?;
            rp_logout(&state, addr, &forms, &headers, &params, true).await
        }
        Ok(None) => as_get(crate::provider::discovery::LOGOUT_PATH, &headers, Ok(body)),
        Err(_) => Err(WebError::BadRequest("The sign-out request is malformed.")),
    }
}

const LOGOUT_FIELDS: [&str; 4] = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"];

async fn rp_logout(
    state: &AppState,
    addr: SocketAddr,
    forms: &Forms,
    headers: &HeaderMap,
    params: &Params,
    confirmed: bool,
) -> Result<Response, WebError> {
    let request = match state.provider.validate_logout(params).await.map_err(WebError::from)? {
        Ok(request) => request,
        Err(error) => return Err(WebError::BadRequest(error.description)),
    };
    let session = forms.session();
    let Some((sso, user)) = sessions::current(state, session).await? else {
        return Ok(signed_out(&request));
    };
    // The app proved which user it means (a valid ID token of this user) or the user confirmed
    // here; anything else could be a cross-site request signing people out.
    if confirmed || request.hint_subject.as_deref() == Some(user.id.as_str()) {
        let how = sessions::SignOut {
            ip: client_ip(addr, headers, &state.config.trusted_proxies),
            client_id: request.client.as_ref().map(|c| c.client_id.clone()),
            detail: Some("rp_initiated"),
        };
        sessions::sign_out(state, session, Some((sso, user)), how).await?;
        return Ok(signed_out(&request));
    }
    let csrf = forms.token().await?;
    let fields =
        LOGOUT_FIELDS.iter().filter_map(|name| params.get(name).ok().flatten().map(|value| (*name, value.to_owned()))).collect();
    let page = LogoutConfirmPage { csrf: &csrf, client_name: request.client.as_ref().map(|c| c.name.as_str()), fields };
    Ok(allow_form_target(render_page(&page).into_response(), request.post_logout_redirect_uri.as_deref()))
}

fn signed_out(request: &LogoutRequest) -> Response {
    match request.redirect() {
        Some(location) => redirect(StatusCode::SEE_OTHER, &location),
        None => {
            let page = MessagePage {
                title: "Signed out",
                message: "You are signed out of Gatehouse.",
                logout_csrf: None,
                signed_out: true,
            };
            render_page(&page).into_response()
        }
    }
}
