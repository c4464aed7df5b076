//! `/saml/{id}`: the SP metadata, the start of a sign-in (HTTP-Redirect to the IdP) and the
//! assertion consumer service (HTTP-POST from the IdP).
//!
//! The ACS is a cross-site POST, which carries no `SameSite=Lax` cookie, so its state is found
//! by `RelayState` on the server; the session is started one same-site redirect later, where
//! the cookie proves the browser is the one that started the sign-in.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::login::{self, Origin};
use crate::provider::ErrorCode;
use crate::provider::params::Params;
use crate::secret::Secret;
use crate::store::{SingleUseKind, StoreError};
use crate::tokens::{digest, random_token};
use crate::upstream::UpstreamIdentity;
use crate::upstream::saml::{LOGIN_LIFETIME_SECS, PendingSamlLogin, SamlConnector, SamlError};
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::login::user_agent;
use crate::web::pages::{ConfirmSignInPage, render_page};
use crate::web::upstream::{
    OTHER_BROWSER, SignInStart, UpstreamFailure, bound_to_this_browser, refused_page, sign_in_start, start_session,
    upstream_failure_page,
};

/// What the IdP's HTTP-POST binding sends; nothing else is read from the body.
#[derive(Deserialize)]
pub struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// Our `RelayState` values are 43 characters; the binding allows at most 80 bytes.
const MAX_RELAY_STATE_BYTES: usize = 80;
const EXPIRED: &str = "This sign-in has expired or was already completed. Go back to the application and start again.";
const MALFORMED_POST: &str = "The identity provider's answer could not be read. Go back to the application and start again.";
const BUSY: &str = "Gatehouse is busy checking other sign-ins. Wait a moment, then reload this page to try again.";

fn connector<'a>(state: &'a AppState, id: &str) -> Result<&'a std::sync::Arc<SamlConnector>, WebError> {
    state.upstreams.saml(id).ok_or(WebError::NotFound)
}

pub async fn metadata(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let connector = connector(&state, &id)?;
    let xml = connector.sp_metadata(state.clock.now()).await.map_err(WebError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/samlmetadata+xml")], xml).into_response())
}

/// Sends the browser to the IdP with an `AuthnRequest`.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id)?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let SignInStart { request, pending, binding_digest } = sign_in_start(&state, &session, query, ip).await?;
    let now = state.clock.now();
    let force = pending.as_ref().is_some_and(|p| p.force_login);
    let start = match connector.begin(request, force, binding_digest, now).await {
        Ok(start) => start,
        Err(err) => return failure_page(&state, connector, &err, None, ip).await,
    };
    let payload = serde_json::to_string(&start.pending).map_err(WebError::internal)?;
    state
        .store
        .put_single_use(SingleUseKind::SamlRequestId, &digest(&start.relay_state), &payload, now + LOGIN_LIFETIME_SECS)
        .await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, start.redirect_url)]).into_response())
}

/// A verified sign-in between the ACS and the finishing step.
#[derive(Serialize, Deserialize)]
struct VerifiedLogin {
    identity: UpstreamIdentity,
    pending_login: Option<String>,
    /// `None` for an IdP-initiated sign-in, which no browser started.
    browser_binding: Option<String>,
}

/// The same-site hop after the ACS takes a moment; an IdP-initiated sign-in waits for the
/// person to read the confirmation page.
const VERIFIED_LOGIN_LIFETIME_SECS: i64 = 60;
const UNSOLICITED_LOGIN_LIFETIME_SECS: i64 = 600;

/// The assertion consumer service: verifies the response, spends the request and the assertion,
/// then sends the browser to a same-site step where its session cookie is present.
pub async fn acs(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<AcsForm>, FormRejection>,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id)?;
    let now = state.clock.now();
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            login::record_upstream_failure(state.store.as_ref(), &id, "saml_malformed", Some(ip), now).await?;
            return Err(WebError::from_rejection(rejection.status(), MALFORMED_POST));
        }
    };
    let relay_state = form.relay_state.filter(|r| !r.is_empty());
    if relay_state.as_ref().is_some_and(|r| r.len() > MAX_RELAY_STATE_BYTES) {
        login::record_upstream_failure(state.store.as_ref(), &id, "saml_malformed", Some(ip), now).await?;
        return Err(WebError::BadRequest(MALFORMED_POST));
    }

    // An unknown RelayState (or none) makes the response unsolicited: the verifier then refuses
    // any InResponseTo, and everything unless the connector allows IdP-initiated sign-in.
    let state_key = relay_state.as_deref().map(digest);
    let mut pending = None;
    if let Some(key) = &state_key
        && let Some(payload) = state.store.peek_single_use(SingleUseKind::SamlRequestId, key, now).await?
    {
        let found: PendingSamlLogin = serde_json::from_str(&payload).map_err(WebError::internal)?;
        if found.connector_id != id {
            return failure_page(&state, connector, &SamlError::InResponseTo, None, ip).await;
        }
        pending = Some(found);
    }

    let verified = connector.finish(form.saml_response, pending.as_ref(), now).await;
    // Too busy to look at it: nothing is spent, so posting again (reload) can still succeed.
    if matches!(verified, Err(SamlError::Busy)) {
        state.metrics.record_login(connector.id(), "busy");
        return Err(WebError::Unavailable(BUSY));
    }
    // The request is spent whatever the outcome; of two posts racing with one, one wins.
    let spent = match &state_key {
        Some(key) if pending.is_some() => state.store.take_single_use(SingleUseKind::SamlRequestId, key, now).await?.is_some(),
        _ => true,
    };
    let pending_login = pending.as_ref().and_then(|p| p.pending_login.clone());
    let (identity, assertion) = match verified {
        Ok(done) => done,
        Err(err) => return failure_page(&state, connector, &err, pending_login.as_deref(), ip).await,
    };
    if !spent {
        return failure_page(&state, connector, &SamlError::Replay, None, ip).await;
    }
    // Remembered until it expires, on every node: the same assertion is accepted once.
    let replay_key = digest(&format!("{id}\n{}", assertion.assertion_id));
    match state.store.put_single_use(SingleUseKind::SamlAssertionId, &replay_key, "", assertion.replay_until).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return failure_page(&state, connector, &SamlError::Replay, pending_login.as_deref(), ip).await;
        }
        Err(err) => return Err(err.into()),
    }

    let handoff = random_token();
    let browser_binding = pending.map(|p| p.browser_binding);
    let lifetime = if browser_binding.is_some() { VERIFIED_LOGIN_LIFETIME_SECS } else { UNSOLICITED_LOGIN_LIFETIME_SECS };
    let record = VerifiedLogin { identity, pending_login, browser_binding };
    let payload = serde_json::to_string(&record).map_err(WebError::internal)?;
    state.store.put_single_use(SingleUseKind::SamlVerifiedLogin, &digest(&handoff), &payload, now + lifetime).await?;
    Ok(Redirect::to(&format!("/saml/{id}/finish?t={handoff}")).into_response())
}

/// Where the ACS sends the browser: a same-site GET, so its `SameSite=Lax` session cookie is
/// here to prove it is the browser that started the sign-in. The session starts here; an
/// IdP-initiated sign-in, which no browser started, asks the person to confirm first.
pub async fn finish(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    forms: Forms,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id)?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let handoff = params.get("t").ok().flatten().ok_or(WebError::BadRequest(EXPIRED))?;
    let (key, record) = handed_off(&state, &forms, &id, handoff, ip).await?;
    if record.browser_binding.is_none() {
        let csrf = forms.token().await?;
        let who = record.identity.email.as_deref().unwrap_or(&record.identity.username);
        let page =
            ConfirmSignInPage { csrf: &csrf, connector_id: connector.id(), connector_name: connector.name(), who, handoff };
        return Ok(render_page(&page).into_response());
    }
    complete(&state, &forms, &headers, ip, &key, record).await
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: Secret<String>,
    t: String,
}

/// The confirmation of an IdP-initiated sign-in, posted from this site's own page.
pub async fn finish_confirmed(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    forms: Forms,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Result<Response, WebError> {
    connector(&state, &id)?;
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), EXPIRED))?;
    forms.verify(form.csrf.expose()).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let (key, record) = handed_off(&state, &forms, &id, &form.t, ip).await?;
    complete(&state, &forms, &headers, ip, &key, record).await
}

/// The verified sign-in a hand-off value names, read (not yet taken) and checked against this
/// connector and, for a sign-in a browser started, this browser.
async fn handed_off(
    state: &AppState,
    forms: &Forms,
    id: &str,
    handoff: &str,
    ip: std::net::IpAddr,
) -> Result<(String, VerifiedLogin), WebError> {
    let now = state.clock.now();
    if handoff.len() > MAX_RELAY_STATE_BYTES {
        return Err(WebError::BadRequest(EXPIRED));
    }
    // Read first, taken only once this browser is the right one, so a handoff URL carried to
    // another browser cannot spend the real user's sign-in.
    let key = digest(handoff);
    let Some(payload) = state.store.peek_single_use(SingleUseKind::SamlVerifiedLogin, &key, now).await? else {
        login::record_upstream_failure(state.store.as_ref(), id, "saml_unknown_handoff", Some(ip), now).await?;
        return Err(WebError::BadRequest(EXPIRED));
    };
    let record: VerifiedLogin = serde_json::from_str(&payload).map_err(WebError::internal)?;
    if record.identity.connector_id != id {
        return Err(WebError::BadRequest(EXPIRED));
    }
    if let Some(expected) = &record.browser_binding
        && !bound_to_this_browser(forms.session(), expected).await?
    {
        login::record_upstream_failure(state.store.as_ref(), id, "other_browser", Some(ip), now).await?;
        return Err(WebError::Forbidden(OTHER_BROWSER));
    }
    Ok((key, record))
}

async fn complete(
    state: &AppState,
    forms: &Forms,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
    key: &str,
    record: VerifiedLogin,
) -> Result<Response, WebError> {
    if state.store.take_single_use(SingleUseKind::SamlVerifiedLogin, key, state.clock.now()).await?.is_none() {
        return Err(WebError::BadRequest(EXPIRED));
    }
    let origin = Origin { ip: Some(ip), user_agent: user_agent(headers) };
    start_session(state, forms, &record.identity, origin, record.pending_login.as_deref()).await
}

async fn failure_page(
    state: &AppState,
    connector: &SamlConnector,
    err: &SamlError,
    pending_login: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    tracing::warn!(connector = %connector.id(), error = %err, "SAML sign-in failed");
    if let SamlError::Status { code, detail } = err {
        // The top-level code says whose fault it is (Requester, Responder); the second-level
        // one says what happened.
        let denied = [Some(code.as_str()), detail.as_deref()]
            .into_iter()
            .flatten()
            .any(|c| matches!(c, "AuthnFailed" | "RequestDenied" | "NoPassive" | "NoAuthnContext"));
        let (reason, code) = if denied {
            ("upstream_error:access_denied", ErrorCode::AccessDenied)
        } else {
            ("upstream_error:server_error", ErrorCode::ServerError)
        };
        login::record_upstream_failure(state.store.as_ref(), connector.id(), reason, Some(ip), state.clock.now()).await?;
        state.metrics.record_login(connector.id(), "upstream_error");
        return refused_page(state, connector.name(), code, pending_login).await;
    }
    let status = match err {
        SamlError::SpKeys(_) => return Err(WebError::Internal(err.to_string())),
        SamlError::MetadataUnavailable(_) | SamlError::Metadata(_) => StatusCode::BAD_GATEWAY,
        SamlError::Malformed(_) | SamlError::TooCostly(_) => StatusCode::BAD_REQUEST,
        SamlError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    let failure = UpstreamFailure {
        connector_id: connector.id(),
        connector_name: connector.name(),
        reason: err.reason(),
        unreachable: matches!(err, SamlError::MetadataUnavailable(_)),
        status,
    };
    upstream_failure_page(state, &failure, pending_login, ip).await
}
