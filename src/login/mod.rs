//! Password sign-in through a local connector: throttling, verification, mapping to a local
//! user, the new SSO session, and the audit trail. Takes plain values and the time.

pub mod flow;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::clock::UnixTime;
use crate::config::{LinkPolicy, LoginSettings, SessionSettings};
use crate::mapping::{self, MappingError};
use crate::secret::Secret;
use crate::session::{self, NewSession};
use crate::store::{AuditEvent, AuditOutcome, ConnectorRecord, SsoSession, Store, StoreError, User};
use crate::upstream::local::{self, LocalLoginError};
use crate::upstream::{ConnectorType, UpstreamIdentity};
use crate::work::{BlockingPool, PoolError};

pub const AUDIT_LOGIN: &str = "login";
pub const AUDIT_LOGIN_THROTTLED: &str = "login_throttled";
/// An administrator's test sign-in through a connector completed (nothing was created).
pub const AUDIT_TEST_SIGN_IN: &str = "test_sign_in";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed attempts")]
    Throttled,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("account disabled")]
    Disabled,
    /// The connector's linking policy refuses a first sign-in whose email another user has.
    #[error("the sign-in is refused by the connector's linking policy: {0}")]
    LinkRefused(&'static str),
    #[error("no such password connector")]
    UnknownConnector,
    #[error("password check did not complete")]
    Interrupted,
    #[error("too busy to check a password now")]
    Busy,
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
            Self::LinkRefused(_) => "link_refused",
            Self::UnknownConnector => "unknown_connector",
            Self::Busy => "busy",
            Self::Interrupted | Self::Store(_) => "error",
        }
    }
}

#[derive(Debug)]
pub struct PasswordLogin {
    pub connector_id: String,
    pub username: String,
    pub password: Secret<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The id of the waiting request the sign-in continues.
    pub pending_login: Option<String>,
}

/// A sign-in that succeeded. No `Debug`: the waiting request's resume path names a stored
/// authorization request.
pub struct Started {
    pub session: SsoSession,
    pub user: User,
    /// The waiting request the sign-in continues, spent in the sign-in's write; `None` when it
    /// named none, or one that had expired or was used meanwhile.
    pub resumed: Option<crate::session::pending::PendingLogin>,
}

pub struct LoginPolicy<'a> {
    pub login: &'a LoginSettings,
    pub session: &'a SessionSettings,
    /// Where argon2 runs, a bounded number at once.
    pub hashing: &'a BlockingPool,
}

pub async fn password_login(
    store: &Arc<dyn Store>,
    policy: LoginPolicy<'_>,
    attempt: PasswordLogin,
    now: UnixTime,
) -> Result<Started, LoginError> {
    let users = match store.get_connector(&attempt.connector_id).await {
        Ok(record) if !record.disabled => crate::upstream::spec::local_users(&record).ok_or(LoginError::UnknownConnector)?,
        Ok(_) => return Err(LoginError::UnknownConnector),
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
        ip: attempt.ip.map(|ip| ip.to_string()),
        detail: detail.map(str::to_owned),
    };

    // One account, one counter: signing in by email address counts where the username does.
    let account = local::find_user(&users, &attempt.username).map_or(attempt.username.as_str(), |u| u.username.as_str());
    let counters = AttemptCounters::new(policy.login, &attempt, account, now);
    if counters.hit(store.as_ref()).await? {
        store.record_audit(&audit(AuditOutcome::Failure, AUDIT_LOGIN_THROTTLED, None, Some("throttled"))).await?;
        return Err(LoginError::Throttled);
    }

    let connector_id = attempt.connector_id.clone();
    let username = attempt.username.clone();
    let password = attempt.password.clone();
    let checked = match policy.hashing.run(move || local::authenticate(&connector_id, &users, &username, password.expose())).await
    {
        Ok(checked) => checked,
        // Not a failed attempt: the password was never looked at.
        Err(PoolError::Busy) => {
            counters.release(store.as_ref()).await?;
            return Err(LoginError::Busy);
        }
        Err(PoolError::Interrupted) => return Err(LoginError::Interrupted),
    };
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

    let origin = Origin { ip: attempt.ip, user_agent: attempt.user_agent.clone() };
    let link = LinkPolicy::default();
    let signed_in =
        sign_in(store.as_ref(), policy.session, &identity, link, origin, attempt.pending_login.as_deref(), now).await?;
    counters.release(store.as_ref()).await?;
    Ok(signed_in)
}

/// A way to sign in that the login page offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInOption {
    pub connector_id: String,
    pub name: String,
    /// Signed into on the login page itself (a password form), not by a redirect.
    pub password_form: bool,
}

/// The connectors on record, read once per page and handed to the functions below.
pub async fn connectors(store: &dyn Store) -> Result<Vec<ConnectorRecord>, StoreError> {
    let mut connectors = store.list_connectors().await?;
    connectors.retain(|c| !c.disabled);
    Ok(connectors)
}

/// The connectors a login page offers: all, or only the one a request asked for.
pub fn sign_in_options(connectors: &[ConnectorRecord], only: Option<&str>) -> Vec<SignInOption> {
    connectors
        .iter()
        .filter(|c| only.is_none_or(|only| only == c.id))
        .map(|c| SignInOption { password_form: password_form(c), connector_id: c.id.clone(), name: c.name.clone() })
        .collect()
}

/// Where an identifier typed on the login page leads (home-realm discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Exactly one connector is for this identifier.
    Connector(String),
    /// Let the person choose among these.
    Choose(Vec<String>),
}

fn password_form(connector: &ConnectorRecord) -> bool {
    ConnectorType::of(&connector.kind).is_some_and(ConnectorType::password_form)
}

/// The connectors that list an address's domain in `email_domains`: the one rule of
/// home-realm discovery, for the login page and for an application's `login_hint` alike.
pub fn connectors_for_address<'a>(connectors: &'a [ConnectorRecord], address: &str) -> Option<Vec<&'a ConnectorRecord>> {
    let (_, domain) = address.rsplit_once('@')?;
    Some(connectors.iter().filter(|c| c.email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))).collect())
}

/// Routes by the identifier's email domain alone, never by whether an account exists, so the
/// answer reveals nothing about accounts. A domain listed by exactly one connector goes there;
/// a plain username belongs to the local connector; anything else is offered every connector
/// that does not restrict itself to other domains.
pub fn discover(connectors: &[ConnectorRecord], identifier: &str) -> Discovery {
    let ids = |list: Vec<&ConnectorRecord>| list.into_iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    let Some(matching) = connectors_for_address(connectors, identifier) else {
        let local: Vec<&ConnectorRecord> = connectors.iter().filter(|c| password_form(c)).collect();
        return match local.as_slice() {
            [only] => Discovery::Connector(only.id.clone()),
            [] => Discovery::Choose(ids(connectors.iter().collect())),
            _ => Discovery::Choose(ids(local)),
        };
    };
    match matching.as_slice() {
        [only] => Discovery::Connector(only.id.clone()),
        [] => Discovery::Choose(ids(connectors.iter().filter(|c| c.email_domains.is_empty()).collect())),
        _ => Discovery::Choose(ids(matching)),
    }
}

/// The name people know a connector by; an id with no record stands for itself.
pub fn connector_name(connectors: &[ConnectorRecord], id: &str) -> String {
    connectors.iter().find(|c| c.id == id).map_or_else(|| id.to_owned(), |c| c.name.clone())
}

/// Where a sign-in came from, for the session and the audit.
#[derive(Debug, Clone)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Signs in the person a connector vouched for: maps them to a local user (created or updated
/// just in time), starts the SSO session, and records the outcome.
pub async fn sign_in(
    store: &dyn Store,
    settings: &SessionSettings,
    identity: &UpstreamIdentity,
    link: LinkPolicy,
    origin: Origin,
    pending_login: Option<&str>,
    now: UnixTime,
) -> Result<Started, LoginError> {
    let audit = |outcome: AuditOutcome, user_id: Option<String>, detail: Option<&str>| AuditEvent {
        time: now,
        kind: AUDIT_LOGIN.to_owned(),
        outcome,
        actor: Some(identity.username.clone()),
        user_id,
        client_id: None,
        connector_id: Some(identity.connector_id.clone()),
        ip: origin.ip.map(|ip| ip.to_string()),
        detail: detail.map(str::to_owned),
    };
    let mut user = match mapping::map_identity(store, identity, link, now).await {
        Ok(user) => user,
        Err(MappingError::Disabled) => {
            store.record_audit(&audit(AuditOutcome::Failure, None, Some("disabled"))).await?;
            return Err(LoginError::Disabled);
        }
        Err(MappingError::LinkRefused(reason)) => {
            // The subject and address let an administrator link the identity by hand.
            let email = identity.email.as_deref().unwrap_or_default();
            let detail = format!("link_refused: {reason} (subject `{}`, email `{email}`)", identity.subject);
            store.record_audit(&audit(AuditOutcome::Failure, None, Some(&detail))).await?;
            return Err(LoginError::LinkRefused(reason));
        }
        Err(MappingError::Store(err)) => return Err(err.into()),
    };
    let new_session = NewSession {
        user_id: &user.id,
        connector_id: &identity.connector_id,
        subject: &identity.subject,
        pending_login,
        ip: origin.ip.map(|ip| ip.to_string()),
        user_agent: origin.user_agent.clone(),
    };
    let signed_in = audit(AuditOutcome::Success, Some(user.id.clone()), None);
    let (session, resumed) = session::start(store, new_session, settings, now, &signed_in).await?;
    user.last_login_at = Some(now);
    Ok(Started { session, user, resumed })
}

/// What an administrator's test sign-in found; nothing was created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestSignIn {
    pub connector_id: String,
    pub at: UnixTime,
    /// What the IdP sent.
    pub received: crate::upstream::Received,
    /// The stable key the user is linked by.
    pub subject: String,
    pub preview: mapping::MappingPreview,
}

/// The console page a test sign-in of `connector_id` ends on.
pub fn test_result_path(connector_id: &str) -> String {
    format!("/admin/connectors/{connector_id}/test")
}

/// Whether a waiting request is an administrator's test of this connector.
pub fn is_test_of(pending: Option<&crate::session::pending::PendingLogin>, connector_id: &str) -> bool {
    pending.is_some_and(|p| p.test_of.as_deref() == Some(connector_id))
}

/// Ends an administrator's test sign-in: spends its console request, reads what the identity
/// would map to, and records that the test succeeded. `None` when the request has expired or
/// was used meanwhile: a test never falls through to a real sign-in.
pub async fn test_sign_in(
    store: &dyn Store,
    pending_login: Option<&str>,
    identity: &UpstreamIdentity,
    link: LinkPolicy,
    received: crate::upstream::Received,
    origin: &Origin,
    now: UnixTime,
) -> Result<Option<TestSignIn>, StoreError> {
    let taken = match pending_login {
        Some(id) => crate::session::pending::take(store, id, now).await?,
        None => None,
    };
    if !is_test_of(taken.as_ref(), &identity.connector_id) {
        return Ok(None);
    }
    let preview = mapping::preview(store, identity, link).await?;
    store
        .record_audit(&AuditEvent {
            time: now,
            kind: AUDIT_TEST_SIGN_IN.to_owned(),
            outcome: AuditOutcome::Success,
            actor: Some(identity.username.clone()),
            user_id: None,
            client_id: None,
            connector_id: Some(identity.connector_id.clone()),
            ip: origin.ip.map(|ip| ip.to_string()),
            detail: Some(format!("subject `{}`", identity.subject)),
        })
        .await?;
    Ok(Some(TestSignIn {
        connector_id: identity.connector_id.clone(),
        at: now,
        received,
        subject: identity.subject.clone(),
        preview,
    }))
}

/// Ends a failed test sign-in: spends its console request and keeps the recorded failure
/// under a fresh single-use id, which only the redirect back to the console carries, so the
/// console shows this test's failure and no one else's. Returns where to send the browser.
pub async fn fail_test(
    store: &dyn Store,
    pending_login: Option<&str>,
    connector_id: &str,
    recorded: &str,
    now: UnixTime,
) -> Result<String, crate::session::pending::PendingError> {
    if let Some(id) = pending_login {
        crate::session::pending::take(store, id, now).await?;
    }
    let path = test_result_path(connector_id);
    let failure = crate::session::pending::PendingLogin {
        resume_path: path.clone(),
        test_of: Some(connector_id.to_owned()),
        test_failure: Some(recorded.to_owned()),
        ..crate::session::pending::PendingLogin::default()
    };
    let id = crate::session::pending::create(store, &failure, crate::provider::REQUEST_LIFETIME_SECS, now).await?;
    Ok(format!("{path}?failed={id}"))
}

/// Records an upstream sign-in that did not succeed; `reason` is a fixed label, never input.
pub async fn record_upstream_failure(
    store: &dyn Store,
    connector_id: &str,
    reason: &str,
    ip: Option<IpAddr>,
    now: UnixTime,
) -> Result<(), StoreError> {
    store
        .record_audit(&AuditEvent {
            time: now,
            kind: AUDIT_LOGIN.to_owned(),
            outcome: AuditOutcome::Failure,
            actor: None,
            user_id: None,
            client_id: None,
            connector_id: Some(connector_id.to_owned()),
            ip: ip.map(|ip| ip.to_string()),
            detail: Some(reason.to_owned()),
        })
        .await
}

/// The attempt counters one sign-in touches: its username at its connector, and its client
/// network. Each is counted before the password is checked and released only on success, so
/// what remains in a window are failures and attempts still in flight.
struct AttemptCounters {
    window_start: UnixTime,
    expires_at: UnixTime,
    keys: Vec<(String, u32)>,
}

impl AttemptCounters {
    fn new(settings: &LoginSettings, attempt: &PasswordLogin, account: &str, now: UnixTime) -> Self {
        let window_start = now - now.rem_euclid(settings.failure_window_secs);
        let mut keys = vec![(format!("user:{}:{account}", attempt.connector_id), settings.max_failures_per_username)];
        if let Some(ip) = attempt.ip {
            keys.push((format!("net:{}", client_network(ip)), settings.max_failures_per_ip));
        }
        Self { window_start, expires_at: window_start + settings.failure_window_secs, keys }
    }

    /// Counts this attempt; `true` when any counter is past its limit.
    async fn hit(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let mut over = false;
        for (key, limit) in &self.keys {
            over |= store.hit_login_counter(key, self.window_start, self.expires_at).await? > u64::from(*limit);
        }
        Ok(over)
    }

    async fn release(&self, store: &dyn Store) -> Result<(), StoreError> {
        for (key, _) in &self.keys {
            store.release_login_counter(key, self.window_start).await?;
        }
        Ok(())
    }
}

/// The unit a client is counted in: its IPv4 address, or its IPv6 /64, since one IPv6 host
/// can use any address of its network.
pub fn client_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{}/64", Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Discovery, client_network, discover};
    use crate::store::ConnectorRecord;

    fn connector(id: &str, kind: &str, domains: &[&str]) -> ConnectorRecord {
        ConnectorRecord {
            id: id.into(),
            kind: kind.into(),
            name: id.into(),
            email_domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            settings: String::new(),
            managed_by_config: true,
            version: 1,
            disabled: false,
            sealed_secret: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn identifiers_are_routed_by_domain_alone() {
        let connectors = [
            connector("local", "local", &[]),
            connector("corp", "oidc", &["corp.example", "corp-eu.example"]),
            connector("acme-a", "saml", &["acme.example"]),
            connector("acme-b", "oidc", &["acme.example"]),
            connector("partners", "saml", &["partner.example"]),
        ];
        let to = |id: &str| Discovery::Connector(id.to_owned());
        let choose = |ids: &[&str]| Discovery::Choose(ids.iter().map(|i| (*i).to_owned()).collect());
        assert_eq!(discover(&connectors, "someone@corp.example"), to("corp"));
        assert_eq!(discover(&connectors, "Someone@CORP-EU.example"), to("corp"));
        assert_eq!(discover(&connectors, "alice"), to("local"));
        assert_eq!(discover(&connectors, "x@acme.example"), choose(&["acme-a", "acme-b"]));
        // Unknown domains are offered the connectors open to everyone, never a domain's own IdP.
        assert_eq!(discover(&connectors, "x@unknown.example"), choose(&["local"]));
        let no_local = [connector("corp", "oidc", &["corp.example"]), connector("google", "oidc", &[])];
        assert_eq!(discover(&no_local, "bob"), choose(&["corp", "google"]));
        assert_eq!(discover(&no_local, "bob@gmail.com"), choose(&["google"]));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_network() {
        assert_eq!(client_network("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(client_network("2001:db8:1:2:aaaa::1".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(client_network("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap()), "2001:db8:1:2::/64");
        assert_ne!(client_network("2001:db8:1:3::1".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(client_network("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
