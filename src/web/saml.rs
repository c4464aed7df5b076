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
use serde::Deserialize;
use tower_sessions::Session;

use crate::login::flow::{self, FlowError, FlowFailure, Return, VerifiedLogin};
use crate::login::{self, Origin};
use crate::provider::ErrorCode;
use crate::provider::params::Params;
use crate::secret::Secret;
use crate::upstream::saml::{SamlConnector, SamlError};
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::login::user_agent;
use crate::web::pages::{ConfirmSignInPage, SamlConnectorPage, render_page};
use crate::web::upstream::{
    FailureCause, MALFORMED_POST, SignInStart, SignedIn, UpstreamFailure, audited_failure_page, browser_value, mapping_refused,
    refused_page, sign_in_start, start_session, upstream_failure_page,
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
const BUSY: &str = "Gatehouse is busy checking other sign-ins. Wait a moment, then reload this page to try again.";

async fn connector(state: &AppState, id: &str) -> Result<std::sync::Arc<SamlConnector>, WebError> {
    state.upstreams.saml(id).await.ok_or(WebError::NotFound)
}

pub async fn metadata(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let xml = connector.sp_metadata(state.clock.now()).await.map_err(WebError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/samlmetadata+xml")], xml).into_response())
}

/// The values an administrator gives the IdP, like `/oidc/{id}` for OpenID Connect.
pub async fn page(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let (signing_fingerprints, encryption_fingerprints) =
        connector.sp_certificate_fingerprints().await.map_err(WebError::internal)?;
    let page = SamlConnectorPage {
        id: connector.id(),
        name: connector.name(),
        entity_id: connector.entity_id(),
        acs_url: connector.acs_url(),
        metadata_url: connector.metadata_url(),
        signing_fingerprints,
        encryption_fingerprints,
        metadata_validity: match connector.sp_metadata_validity_secs() {
            86_400 => String::from("a day"),
            secs if secs % 86_400 == 0 => format!("{} days", secs / 86_400),
            secs if secs < 7200 => String::from("an hour"),
            secs => format!("{} hours", secs / 3600),
        },
    };
    Ok(render_page(&page).into_response())
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
    let connector = connector(&state, &id).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let SignInStart { request, pending, binding_digest } = sign_in_start(&state, &session, query, ip).await?;
    let now = state.clock.now();
    let force = pending.as_ref().is_some_and(|p| p.force_login);
    let mut start = match connector.begin(request, force, binding_digest, now).await {
        Ok(start) => start,
        Err(err) => return failure_page(&state, &connector, &err, (false, None), ip).await,
    };
    start.pending.test = login::is_test_of(pending.as_ref(), &id);
    flow::remember_saml_start(state.store.as_ref(), &start.relay_state, &start.pending, now).await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, start.redirect_url)]).into_response())
}

/// The assertion consumer service: verifies the response, spends the request and the assertion,
/// then sends the browser to a same-site step where its session cookie is present.
pub async fn acs(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<AcsForm>, FormRejection>,
) -> Result<Response, WebError> {
    let connector = connector(&state, &id).await?;
    let now = state.clock.now();
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let at = Return { connector_id: &id, ip, now };
    let store = state.store.as_ref();
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            if let FlowError::Store(err) = flow::refuse(store, at, FlowFailure::SamlMalformed).await {
                return Err(err.into());
            }
            return Err(WebError::from_rejection(rejection.status(), MALFORMED_POST));
        }
    };
    let relay_state = form.relay_state.filter(|r| !r.is_empty());
    if relay_state.as_ref().is_some_and(|r| r.len() > MAX_RELAY_STATE_BYTES) {
        return Err(flow::refuse(store, at, FlowFailure::SamlMalformed).await.into());
    }

    // An unknown RelayState (or none) makes the response unsolicited: the verifier then refuses
    // any InResponseTo, and everything unless the connector allows IdP-initiated sign-in.
    let pending = match flow::saml_start(store, at, relay_state.as_deref()).await {
        Ok(pending) => pending,
        Err(FlowError::Refused(failure)) => return refused_return(&state, &connector, failure, (false, None)).await,
        Err(err) => return Err(err.into()),
    };

    let verified = connector.finish(form.saml_response, pending.as_ref(), now).await;
    // Too busy to look at it: nothing is spent, so posting again (reload) can still succeed.
    if matches!(verified, Err(SamlError::Busy)) {
        state.metrics.record_login(connector.id(), "busy");
        return Err(WebError::Unavailable(BUSY));
    }
    // The request is spent whatever the outcome; of two posts racing with one, one wins.
    let spent = match &relay_state {
        Some(relay_state) if pending.is_some() => flow::spend_saml_start(store, relay_state, now).await?,
        _ => true,
    };
    let pending_login = pending.as_ref().and_then(|p| p.pending_login.clone());
    let test = pending.as_ref().is_some_and(|p| p.test);
    let (identity, assertion) = match verified {
        Ok(done) => done,
        Err(err) => return failure_page(&state, &connector, &err, (test, pending_login.as_deref()), ip).await,
    };
    if !spent {
        return failure_page(&state, &connector, &SamlError::Replay, (test, None), ip).await;
    }

    // The rules read the assertion alone, so they run before it is accepted: accepting it and
    // handing the sign-in off are then one write. An assertion they refuse is accepted once
    // too, so that posted again it is a replay, whatever the rules say by then.
    let browser_binding = pending.map(|p| p.browser_binding);
    let rule_input = crate::upstream::received_from_assertion(&assertion, crate::upstream::Bounds::Full);
    let seen = (assertion.assertion_id.as_str(), assertion.replay_until);
    let identity = match state.upstreams.rules(connector.id()).await.apply(identity, &rule_input) {
        Ok(identity) => identity,
        Err(refusal) => {
            let waiting = (test, pending_login.as_deref());
            return match flow::accept_assertion_once(store, at, seen).await {
                Ok(()) => mapping_refused(&state, (connector.id(), connector.name()), &refusal, waiting, ip).await,
                Err(FlowError::Refused(failure)) => refused_return(&state, &connector, failure, waiting).await,
                Err(err) => Err(err.into()),
            };
        }
    };
    // What the IdP sent is kept past this point only for an administrator's test sign-in.
    let received =
        if test { crate::upstream::received_from_assertion(&assertion, crate::upstream::Bounds::Shown) } else { Vec::new() };
    let record = VerifiedLogin { identity, pending_login, browser_binding, received, test };
    let handoff = match flow::accept_assertion_and_hand_off(store, at, seen, &record).await {
        Ok(handoff) => handoff,
        Err(FlowError::Refused(failure)) => {
            return refused_return(&state, &connector, failure, (test, record.pending_login.as_deref())).await;
        }
        Err(err) => return Err(err.into()),
    };
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
    let connector = connector(&state, &id).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let handoff = params.get("t").ok().flatten().ok_or(WebError::BadRequest(EXPIRED))?;
    let record = handed_off(&state, &forms, &id, handoff, ip).await?;
    if record.browser_binding.is_none() {
        let csrf = forms.token().await?;
        let who = record.identity.email.as_deref().unwrap_or(&record.identity.username);
        let page =
            ConfirmSignInPage { csrf: &csrf, connector_id: connector.id(), connector_name: connector.name(), who, handoff };
        return Ok(render_page(&page).into_response());
    }
    complete(&state, &forms, &headers, ip, handoff, record).await
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
    connector(&state, &id).await?;
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), EXPIRED))?;
    forms.verify(form.csrf.expose()).await?;
    let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
    let record = handed_off(&state, &forms, &id, &form.t, ip).await?;
    complete(&state, &forms, &headers, ip, &form.t, record).await
}

/// The verified sign-in a hand-off value names, checked against this connector and browser.
async fn handed_off(
    state: &AppState,
    forms: &Forms,
    id: &str,
    handoff: &str,
    ip: std::net::IpAddr,
) -> Result<VerifiedLogin, WebError> {
    if handoff.len() > MAX_RELAY_STATE_BYTES {
        return Err(WebError::BadRequest(EXPIRED));
    }
    let at = Return { connector_id: id, ip, now: state.clock.now() };
    let browser_value = browser_value(forms.session()).await?;
    Ok(flow::handed_off(state.store.as_ref(), at, handoff, browser_value.as_deref()).await?)
}

async fn complete(
    state: &AppState,
    forms: &Forms,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
    handoff: &str,
    record: VerifiedLogin,
) -> Result<Response, WebError> {
    if !flow::take_handoff(state.store.as_ref(), handoff, state.clock.now()).await? {
        return Err(WebError::BadRequest(EXPIRED));
    }
    let origin = Origin { ip: Some(ip), user_agent: user_agent(headers) };
    let signed_in = SignedIn { identity: &record.identity, received: record.received, test: record.test };
    start_session(state, forms, signed_in, origin, record.pending_login.as_deref()).await
}

/// The page for a return the flow refused (and audited).
async fn refused_return(
    state: &AppState,
    connector: &SamlConnector,
    failure: FlowFailure,
    waiting: (bool, Option<&str>),
) -> Result<Response, WebError> {
    let (test, pending_login) = waiting;
    let failure = UpstreamFailure {
        connector_id: connector.id(),
        connector_name: connector.name(),
        reason: failure.reason(),
        recorded: failure.reason().to_owned(),
        cause: FailureCause::Answer,
        status: StatusCode::FORBIDDEN,
        test,
    };
    audited_failure_page(state, &failure, pending_login).await
}

async fn failure_page(
    state: &AppState,
    connector: &SamlConnector,
    err: &SamlError,
    waiting: (bool, Option<&str>),
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    let (test, pending_login) = waiting;
    tracing::warn!(connector = %connector.id(), error = %err, "SAML sign-in failed");
    if let SamlError::Status { code, detail } = err {
        // The top-level code says whose fault it is (Requester, Responder); the second-level
        // one says what happened.
        let denied = [Some(code.as_str()), detail.as_deref()]
            .into_iter()
            .flatten()
            .any(|c| matches!(c, "AuthnFailed" | "RequestDenied" | "NoPassive" | "NoAuthnContext"));
        let code = if denied { ErrorCode::AccessDenied } else { ErrorCode::ServerError };
        let recorded = format!("{}: {}", err.code(), err.explain());
        login::record_upstream_failure(state.store.as_ref(), connector.id(), &recorded, Some(ip), state.clock.now()).await?;
        state.metrics.record_login(connector.id(), "upstream_error");
        return refused_page(state, (connector.id(), connector.name()), code, (test, pending_login), &recorded).await;
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
        recorded: format!("{}: {}", err.code(), err.explain()),
        test,
        cause: if matches!(err, SamlError::MetadataUnavailable(_)) { FailureCause::Unreachable } else { FailureCause::Answer },
        status,
    };
    upstream_failure_page(state, &failure, pending_login, ip).await
}
