//! Sign-in flow state between a connector's start and its return: what each start stores
//! (single use, bound to the starting browser), how the return finds and spends it, the SAML
//! assertion replay cache and the ACS-to-browser hand-off. Every refusal is audited here, with a
//! fixed reason, before it is returned.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::secret::constant_time_eq;
use crate::store::{NewSingleUse, SingleUseKind, Store, StoreError};
use crate::tokens::{digest, random_token};
use crate::upstream::UpstreamIdentity;
use crate::upstream::oidc::{self, PendingUpstreamLogin};
use crate::upstream::saml::{self, PendingSamlLogin};

/// Why a connector's return was refused before its answer was looked at, or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowFailure {
    /// The callback carries no `state`.
    MissingState,
    /// No such sign-in is waiting: expired, completed, or never started.
    UnknownState,
    /// The state belongs to a sign-in started through another connector.
    StateForOtherConnector,
    /// The sign-in was started in another browser (or this one's session ended meanwhile).
    OtherBrowser,
    /// RFC 9207: the response names another issuer (mix-up).
    IssuerMismatch,
    MissingCode,
    /// The IdP's POST could not be read.
    SamlMalformed,
    /// The SAML hand-off value names no verified sign-in.
    SamlUnknownHandoff,
    /// The SAML request was spent, or the assertion accepted, before.
    SamlReplay,
}

impl FlowFailure {
    /// The audit and metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingState => "missing_state",
            Self::UnknownState => "unknown_state",
            Self::StateForOtherConnector => "state_for_other_connector",
            Self::OtherBrowser => "other_browser",
            Self::IssuerMismatch => "iss_mismatch",
            Self::MissingCode => "missing_code",
            Self::SamlMalformed => "malformed_response",
            Self::SamlUnknownHandoff => "saml_unknown_handoff",
            Self::SamlReplay => "replay",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("sign-in refused: {}", .0.reason())]
    Refused(FlowFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a connector's return came from, for the audit of a refusal.
#[derive(Debug, Clone, Copy)]
pub struct Return<'a> {
    pub connector_id: &'a str,
    pub ip: IpAddr,
    pub now: UnixTime,
}

impl Return<'_> {
    async fn refuse(&self, store: &dyn Store, failure: FlowFailure) -> FlowError {
        refuse(store, *self, failure).await
    }
}

/// Audits a refused return and gives the error to return.
pub async fn refuse(store: &dyn Store, at: Return<'_>, failure: FlowFailure) -> FlowError {
    match super::record_upstream_failure(store, at.connector_id, failure.reason(), Some(at.ip), at.now).await {
        Ok(()) => FlowError::Refused(failure),
        Err(err) => FlowError::Store(err),
    }
}

/// Whether `browser_value` (held in the browser's session) is the one whose digest a sign-in
/// recorded at its start.
pub fn same_browser(browser_value: Option<&str>, expected_digest: &str) -> bool {
    browser_value.is_some_and(|value| constant_time_eq(digest(value).as_bytes(), expected_digest.as_bytes()))
}

async fn remember<T: Serialize>(
    store: &dyn Store,
    kind: SingleUseKind,
    handle: &str,
    record: &T,
    expires_at: UnixTime,
) -> Result<(), FlowError> {
    let payload = serde_json::to_string(record).map_err(StoreError::from)?;
    store.put_single_use(kind, &digest(handle), &payload, expires_at).await?;
    Ok(())
}

async fn peek<T: DeserializeOwned>(
    store: &dyn Store,
    kind: SingleUseKind,
    key: &str,
    now: UnixTime,
) -> Result<Option<T>, FlowError> {
    match store.peek_single_use(kind, key, now).await? {
        Some(payload) => Ok(Some(serde_json::from_str(&payload).map_err(StoreError::from)?)),
        None => Ok(None),
    }
}

/// Records an OIDC sign-in start under its `state` until the callback or its expiry.
pub async fn remember_oidc_start(
    store: &dyn Store,
    state: &str,
    pending: &PendingUpstreamLogin,
    now: UnixTime,
) -> Result<(), FlowError> {
    remember(store, SingleUseKind::UpstreamState, state, pending, now + oidc::LOGIN_LIFETIME_SECS).await
}

/// The OIDC sign-in a callback's `state` names, spent. It is read first and taken only once
/// this browser and connector are the right ones, so a callback URL replayed from elsewhere
/// cannot spend the real user's sign-in; of two callbacks racing with one state, one wins.
pub async fn take_oidc_start(
    store: &dyn Store,
    at: Return<'_>,
    state: Option<&str>,
    browser_value: Option<&str>,
) -> Result<PendingUpstreamLogin, FlowError> {
    let Some(state) = state else { return Err(at.refuse(store, FlowFailure::MissingState).await) };
    let key = digest(state);
    let pending: PendingUpstreamLogin = match peek(store, SingleUseKind::UpstreamState, &key, at.now).await? {
        Some(pending) => pending,
        None => return Err(at.refuse(store, FlowFailure::UnknownState).await),
    };
    if pending.connector_id != at.connector_id {
        return Err(at.refuse(store, FlowFailure::StateForOtherConnector).await);
    }
    if !same_browser(browser_value, &pending.browser_binding) {
        return Err(at.refuse(store, FlowFailure::OtherBrowser).await);
    }
    if store.take_single_use(SingleUseKind::UpstreamState, &key, at.now).await?.is_none() {
        return Err(at.refuse(store, FlowFailure::UnknownState).await);
    }
    Ok(pending)
}

/// Records a SAML sign-in start under its `RelayState` until the IdP answers or it expires.
pub async fn remember_saml_start(
    store: &dyn Store,
    relay_state: &str,
    pending: &PendingSamlLogin,
    now: UnixTime,
) -> Result<(), FlowError> {
    remember(store, SingleUseKind::SamlRequestId, relay_state, pending, now + saml::LOGIN_LIFETIME_SECS).await
}

/// The SAML sign-in a `RelayState` names, not yet spent; `None` (an unsolicited response) when
/// it names none. A sign-in started through another connector is refused, and so is one already
/// spent: the same response posted again is a replay.
pub async fn saml_start(
    store: &dyn Store,
    at: Return<'_>,
    relay_state: Option<&str>,
) -> Result<Option<PendingSamlLogin>, FlowError> {
    let Some(relay_state) = relay_state else { return Ok(None) };
    let found: Option<PendingSamlLogin> = peek(store, SingleUseKind::SamlRequestId, &digest(relay_state), at.now).await?;
    match found {
        Some(pending) if pending.connector_id != at.connector_id => {
            Err(at.refuse(store, FlowFailure::StateForOtherConnector).await)
        }
        None if store.peek_single_use(SingleUseKind::SamlRequestSpent, &digest(relay_state), at.now).await?.is_some() => {
            Err(at.refuse(store, FlowFailure::SamlReplay).await)
        }
        found => Ok(found),
    }
}

/// Spends the SAML sign-in `relay_state` named, whatever the IdP's answer; `false` when a
/// concurrent post spent it first.
pub async fn spend_saml_start(store: &dyn Store, relay_state: &str, now: UnixTime) -> Result<bool, FlowError> {
    let spent_until = now + saml::LOGIN_LIFETIME_SECS;
    let key = digest(relay_state);
    Ok(store
        .take_single_use_leaving_mark(SingleUseKind::SamlRequestId, &key, now, SingleUseKind::SamlRequestSpent, spent_until)
        .await?)
}

/// The replay cache's key of an assertion: its id at this connector.
fn assertion_key(connector_id: &str, assertion_id: &str) -> String {
    digest(&format!("{connector_id}\n{assertion_id}"))
}

/// Remembers an assertion until it expires, on every node, so it is accepted once; one that
/// was remembered already is refused (and audited) as a replay.
pub async fn accept_assertion_once(store: &dyn Store, at: Return<'_>, assertion: (&str, UnixTime)) -> Result<(), FlowError> {
    let (assertion_id, replay_until) = assertion;
    let key = assertion_key(at.connector_id, assertion_id);
    match store.put_single_use(SingleUseKind::SamlAssertionId, &key, "", replay_until).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists) => Err(at.refuse(store, FlowFailure::SamlReplay).await),
        Err(err) => Err(err.into()),
    }
}

/// A verified SAML sign-in between the ACS and the finishing step.
#[derive(Serialize, Deserialize)]
pub struct VerifiedLogin {
    pub identity: UpstreamIdentity,
    pub pending_login: Option<String>,
    /// `None` for an IdP-initiated sign-in, which no browser started.
    pub browser_binding: Option<String>,
    /// What the IdP sent, kept only for an administrator's test sign-in.
    #[serde(default)]
    pub received: crate::upstream::Received,
    /// An administrator's test sign-in: it never ends in a session.
    #[serde(default)]
    pub test: bool,
}

/// The same-site hop after the ACS takes a moment; an IdP-initiated sign-in waits for the
/// person to read the confirmation page.
const VERIFIED_LOGIN_LIFETIME_SECS: i64 = 60;
const UNSOLICITED_LOGIN_LIFETIME_SECS: i64 = 600;

/// Accepts the assertion once: remembers its id until it expires, on every node, and in the
/// same write stores the verified sign-in for the same-site finishing step. Returns the
/// hand-off value; an assertion accepted before is refused (and audited) as a replay, and
/// nothing is stored.
pub async fn accept_assertion_and_hand_off(
    store: &dyn Store,
    at: Return<'_>,
    assertion: (&str, UnixTime),
    record: &VerifiedLogin,
) -> Result<String, FlowError> {
    let (assertion_id, replay_until) = assertion;
    let seen_key = assertion_key(at.connector_id, assertion_id);
    let seen = NewSingleUse { kind: SingleUseKind::SamlAssertionId, key: &seen_key, payload: "", expires_at: replay_until };
    let handoff = random_token();
    let handoff_key = digest(&handoff);
    let lifetime = if record.browser_binding.is_some() { VERIFIED_LOGIN_LIFETIME_SECS } else { UNSOLICITED_LOGIN_LIFETIME_SECS };
    let payload = serde_json::to_string(record).map_err(StoreError::from)?;
    let verified = NewSingleUse {
        kind: SingleUseKind::SamlVerifiedLogin,
        key: &handoff_key,
        payload: &payload,
        expires_at: at.now + lifetime,
    };
    match store.put_single_use_pair(&seen, &verified).await {
        Ok(()) => Ok(handoff),
        // The hand-off's key is 256 random bits: a taken key is the assertion's.
        Err(StoreError::AlreadyExists) => Err(at.refuse(store, FlowFailure::SamlReplay).await),
        Err(err) => Err(err.into()),
    }
}

/// The verified sign-in a hand-off value names, read (not yet taken) and checked against this
/// connector and, for a sign-in a browser started, this browser: a hand-off URL carried to
/// another browser cannot spend the real user's sign-in.
pub async fn handed_off(
    store: &dyn Store,
    at: Return<'_>,
    handoff: &str,
    browser_value: Option<&str>,
) -> Result<VerifiedLogin, FlowError> {
    let found: Option<VerifiedLogin> = peek(store, SingleUseKind::SamlVerifiedLogin, &digest(handoff), at.now).await?;
    let Some(record) = found else { return Err(at.refuse(store, FlowFailure::SamlUnknownHandoff).await) };
    if record.identity.connector_id != at.connector_id {
        return Err(FlowError::Refused(FlowFailure::SamlUnknownHandoff));
    }
    if let Some(expected) = &record.browser_binding
        && !same_browser(browser_value, expected)
    {
        return Err(at.refuse(store, FlowFailure::OtherBrowser).await);
    }
    Ok(record)
}

/// Spends the hand-off; `false` when it was spent already.
pub async fn take_handoff(store: &dyn Store, handoff: &str, now: UnixTime) -> Result<bool, FlowError> {
    Ok(store.take_single_use(SingleUseKind::SamlVerifiedLogin, &digest(handoff), now).await?.is_some())
}
