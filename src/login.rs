//! Password sign-in through a local connector: throttling, verification, mapping to a local
//! user, the new SSO session, and the audit trail. Takes plain values and the time.

use std::sync::Arc;

use crate::clock::UnixTime;
use crate::config::{ConnectorKind, LoginSettings, SessionSettings};
use crate::mapping::{self, MappingError};
use crate::secret::Secret;
use crate::session::{self, NewSession};
use crate::store::{AuditEvent, AuditKey, AuditOutcome, SsoSession, Store, StoreError, User};
use crate::upstream::local::{self, LocalLoginError};

pub const AUDIT_LOGIN: &str = "login";
pub const AUDIT_LOGIN_THROTTLED: &str = "login_throttled";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed attempts")]
    Throttled,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("account disabled")]
    Disabled,
    #[error("no such password connector")]
    UnknownConnector,
    #[error("password check did not complete")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    /// The label used in metrics and audit details; never derived from input.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Disabled => "disabled",
            Self::UnknownConnector => "unknown_connector",
            Self::Interrupted | Self::Store(_) => "error",
        }
    }
}

#[derive(Debug)]
pub struct PasswordLogin {
    pub connector_id: String,
    pub username: String,
    pub password: Secret<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub struct LoginPolicy<'a> {
    pub login: &'a LoginSettings,
    pub session: &'a SessionSettings,
}

pub async fn password_login(
    store: &Arc<dyn Store>,
    policy: LoginPolicy<'_>,
    attempt: PasswordLogin,
    now: UnixTime,
) -> Result<(SsoSession, User), LoginError> {
    let users = match store.get_connector(&attempt.connector_id).await {
        Ok(record) => match serde_json::from_str::<ConnectorKind>(&record.settings) {
            Ok(ConnectorKind::Local { users }) => users,
            Err(_) => return Err(LoginError::UnknownConnector),
        },
        Err(StoreError::NotFound) => return Err(LoginError::UnknownConnector),
        Err(err) => return Err(err.into()),
    };
    let audit = |outcome: AuditOutcome, kind: &str, user_id: Option<String>, detail: Option<&str>| AuditEvent {
        time: now,
        kind: kind.to_owned(),
        outcome,
        actor: Some(attempt.username.clone()),
        user_id,
        client_id: None,
        connector_id: Some(attempt.connector_id.clone()),
        ip: attempt.ip.clone(),
        detail: detail.map(str::to_owned),
    };

    if is_throttled(store.as_ref(), policy.login, &attempt, now).await? {
        store.record_audit(&audit(AuditOutcome::Failure, AUDIT_LOGIN_THROTTLED, None, Some("throttled"))).await?;
        return Err(LoginError::Throttled);
    }

    let connector_id = attempt.connector_id.clone();
    let username = attempt.username.clone();
    let password = attempt.password.clone();
    let checked = tokio::task::spawn_blocking(move || local::authenticate(&connector_id, &users, &username, password.expose()))
        .await
        .map_err(|_| LoginError::Interrupted)?;
    let identity = match checked {
        Ok(identity) => identity,
        Err(err) => {
            let failure = match err {
                LocalLoginError::InvalidCredentials => LoginError::InvalidCredentials,
                LocalLoginError::Disabled => LoginError::Disabled,
            };
            store.record_audit(&audit(AuditOutcome::Failure, AUDIT_LOGIN, None, Some(failure.reason()))).await?;
            return Err(failure);
        }
    };

    let user = match mapping::map_identity(store.as_ref(), &identity, now).await {
        Ok(user) => user,
        Err(MappingError::Disabled) => {
            store.record_audit(&audit(AuditOutcome::Failure, AUDIT_LOGIN, None, Some("disabled"))).await?;
            return Err(LoginError::Disabled);
        }
        Err(MappingError::Store(err)) => return Err(err.into()),
    };
    let new_session = NewSession {
        user_id: &user.id,
        connector_id: &attempt.connector_id,
        ip: attempt.ip.clone(),
        user_agent: attempt.user_agent.clone(),
    };
    let sso = session::start(store.as_ref(), new_session, policy.session, now).await?;
    store.record_audit(&audit(AuditOutcome::Success, AUDIT_LOGIN, Some(user.id.clone()), None)).await?;
    Ok((sso, user))
}

/// Failed password checks in the window, per username and per client address.
async fn is_throttled(
    store: &dyn Store,
    settings: &LoginSettings,
    attempt: &PasswordLogin,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let since = now - settings.failure_window_secs;
    let by_user = store.count_audit_since(AUDIT_LOGIN, AuditOutcome::Failure, AuditKey::Actor, &attempt.username, since).await?;
    if by_user >= u64::from(settings.max_failures_per_username) {
        return Ok(true);
    }
    if let Some(ip) = &attempt.ip {
        let by_ip = store.count_audit_since(AUDIT_LOGIN, AuditOutcome::Failure, AuditKey::Ip, ip, since).await?;
        if by_ip >= u64::from(settings.max_failures_per_ip) {
            return Ok(true);
        }
    }
    Ok(false)
}
