//! What the portal shows a signed-in person (the applications they may open, their sessions,
//! the applications holding access, their linked accounts) and what they may change about it.

use crate::clock::UnixTime;
use crate::provider::split_scope;
use crate::session::public_sid;
use crate::store::{AuditEvent, AuditOutcome, ConsentWithdrawal, SessionQuery, SsoSession, Store, StoreError, StoreResult, User};

pub const AUDIT_CONSENT_WITHDRAWN: &str = "consent_withdrawn";
pub const AUDIT_SESSION_SIGNED_OUT: &str = "session_signed_out";
pub const AUDIT_SIGNED_OUT_EVERYWHERE: &str = "signed_out_everywhere";

/// More sessions than this for one person is an attack or a bug; the portal shows the newest.
const MAX_LISTED_SESSIONS: u32 = 100;

/// A tile in the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTile {
    pub client_id: String,
    pub name: String,
    pub description: Option<String>,
    pub logo_uri: Option<String>,
    /// The application's third-party-initiated login or launch URL.
    pub href: String,
}

/// One of the person's signed-in browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The session's public id (`sid`); the stored id stays a server-side secret.
    pub handle: String,
    pub device: String,
    pub ip: Option<String>,
    pub connector_name: String,
    pub signed_in_at: UnixTime,
    pub last_active_at: UnixTime,
    pub this_device: bool,
}

/// An application holding the person's approval or live tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedApp {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The latest token issue or refresh; `None` for an approval with no live tokens.
    pub last_used_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAccount {
    pub connector_name: String,
    pub subject: String,
    pub last_login_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The name of the connector this browser signed in through.
    pub connector_name: String,
    pub apps: Vec<AppTile>,
    pub sessions: Vec<SessionEntry>,
    pub connected: Vec<ConnectedApp>,
    pub linked: Vec<LinkedAccount>,
}

/// What the portal needs to know besides the person.
pub struct PortalContext<'a> {
    pub issuer: &'a str,
    pub idle_timeout_secs: i64,
    pub now: UnixTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("no such session of this user")]
    UnknownSession,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn home(store: &dyn Store, context: &PortalContext<'_>, current: &SsoSession, user: &User) -> StoreResult<Home> {
    let connectors = store.list_connectors().await?;
    let connector_name = |id: &str| connectors.iter().find(|c| c.id == id).map_or_else(|| id.to_owned(), |c| c.name.clone());
    let clients = store.list_clients().await?;
    // The hint identifies the person to the app's sign-in; their email where known.
    let hint = user.email.as_deref().unwrap_or(&user.username);
    let mut apps: Vec<AppTile> = clients
        .iter()
        .filter(|c| c.portal.show_in_portal && c.access.check(&user.groups, &current.connector_id).is_ok())
        .filter_map(|c| {
            Some(AppTile {
                client_id: c.client_id.clone(),
                name: c.name.clone(),
                description: c.portal.description.clone(),
                logo_uri: c.portal.logo_uri.clone(),
                href: c.portal.launch_link(context.issuer, Some(hint))?,
            })
        })
        .collect();
    apps.sort_by_key(|a| a.name.to_lowercase());

    let query = SessionQuery { user_id: Some(user.id.clone()), limit: MAX_LISTED_SESSIONS, ..SessionQuery::default() };
    let mut sessions = store
        .search_sso_sessions(&query, context.now, context.idle_timeout_secs)
        .await?
        .into_iter()
        .map(|listing| {
            let session = listing.session;
            SessionEntry {
                handle: public_sid(&session.id),
                device: describe_device(session.user_agent.as_deref()),
                ip: session.ip,
                connector_name: connector_name(&session.connector_id),
                signed_in_at: session.auth_time,
                last_active_at: session.last_seen_at,
                this_device: session.id == current.id,
            }
        })
        .collect::<Vec<SessionEntry>>();
    // This device first, then the others newest first.
    sessions.sort_by_key(|s| !s.this_device);

    let mut connected: Vec<ConnectedApp> = Vec::new();
    let client_name = |id: &str| clients.iter().find(|c| c.client_id == id).map(|c| c.name.clone());
    // Each application's newest grant stands for all of them, so the page costs the same for
    // a person with thousands of grants.
    for summary in store.latest_user_grants(&user.id, context.now).await? {
        let Some(name) = client_name(&summary.client_id) else { continue };
        let entry = match connected.iter_mut().find(|a| a.client_id == summary.client_id) {
            Some(entry) => entry,
            None => {
                connected.push(ConnectedApp {
                    client_id: summary.client_id.clone(),
                    name,
                    scopes: Vec::new(),
                    last_used_at: None,
                });
                let Some(entry) = connected.last_mut() else { continue };
                entry
            }
        };
        entry.last_used_at = entry.last_used_at.max(Some(summary.last_used_at));
        merge_scopes(&mut entry.scopes, split_scope(&summary.scope));
    }
    for (client_id, scopes) in store.list_consents(&user.id).await? {
        // An approval of a client since removed: nothing to show or withdraw.
        let Some(name) = client_name(&client_id) else { continue };
        match connected.iter_mut().find(|a| a.client_id == client_id) {
            Some(entry) => merge_scopes(&mut entry.scopes, scopes),
            None => connected.push(ConnectedApp { client_id, name, scopes, last_used_at: None }),
        }
    }
    connected.sort_by_key(|a| a.name.to_lowercase());

    let linked = store
        .list_user_links(&user.id)
        .await?
        .into_iter()
        .map(|link| LinkedAccount {
            connector_name: connector_name(&link.connector_id),
            subject: link.subject,
            last_login_at: link.last_login_at,
        })
        .collect();
    Ok(Home { connector_name: connector_name(&current.connector_id), apps, sessions, connected, linked })
}

fn merge_scopes(into: &mut Vec<String>, more: Vec<String>) {
    for scope in more {
        if !into.contains(&scope) {
            into.push(scope);
        }
    }
}

fn audit(user: &User, kind: &str, connector_id: Option<String>, detail: String, now: UnixTime) -> AuditEvent {
    AuditEvent {
        time: now,
        kind: kind.to_owned(),
        outcome: AuditOutcome::Success,
        actor: Some(user.username.clone()),
        user_id: Some(user.id.clone()),
        client_id: None,
        connector_id,
        ip: None,
        detail: Some(detail),
    }
}

/// An ended session: whether it was the browser's own, and how many back-channel logouts it queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub session_id: String,
    pub notices_queued: u64,
}

/// Signs the person out of one of their sessions, named by its public id; another person's
/// session, or one already ended, is `UnknownSession`.
pub async fn end_session(store: &dyn Store, user: &User, handle: &str, now: UnixTime) -> Result<EndedSession, PortalError> {
    let ids = store.list_unrevoked_sso_sessions(None, Some(&user.id)).await?;
    let Some(session_id) = ids.into_iter().find(|id| public_sid(id) == handle) else {
        return Err(PortalError::UnknownSession);
    };
    let session = store.get_sso_session(&session_id).await?;
    let notices_queued = crate::session::end(store, &session_id, now).await?;
    let detail = format!("back-channel logouts queued: {notices_queued}");
    store.record_audit(&audit(user, AUDIT_SESSION_SIGNED_OUT, Some(session.connector_id), detail, now)).await?;
    Ok(EndedSession { session_id, notices_queued })
}

/// What signing out everywhere ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EverywhereReport {
    pub sessions: u64,
    /// Grants no session's end covered (their session had already ended).
    pub other_grants_revoked: u64,
    pub notices_queued: u64,
}

/// Ends every session of the person and revokes every grant, offline ones included; the apps
/// of those sessions are told by back-channel logout.
pub async fn sign_out_everywhere(store: &dyn Store, user: &User, now: UnixTime) -> StoreResult<EverywhereReport> {
    let ids = store.list_unrevoked_sso_sessions(None, Some(&user.id)).await?;
    let mut notices_queued = 0;
    for id in &ids {
        notices_queued += crate::session::end(store, id, now).await?;
    }
    // Ending a session revokes its grants; grants of sessions that ended earlier (an app kept
    // an offline refresh token) are revoked here.
    let other_grants_revoked = store.revoke_user_grants(&user.id, now).await?;
    let report = EverywhereReport { sessions: ids.len() as u64, other_grants_revoked, notices_queued };
    let detail = format!(
        "sessions ended: {}, other grants revoked: {other_grants_revoked}, back-channel logouts queued: {notices_queued}",
        report.sessions
    );
    store.record_audit(&audit(user, AUDIT_SIGNED_OUT_EVERYWHERE, None, detail, now)).await?;
    Ok(report)
}

/// Withdraws the person's approval of one application, with everything the app holds from
/// them; the next sign-in to it asks again.
pub async fn withdraw_consent(store: &dyn Store, user: &User, client_id: &str, now: UnixTime) -> StoreResult<ConsentWithdrawal> {
    let withdrawal = store.withdraw_consent(&user.id, client_id, now).await?;
    if withdrawal.consent_removed || withdrawal.grants_revoked > 0 {
        store
            .record_audit(&AuditEvent {
                client_id: Some(client_id.to_owned()),
                detail: None,
                ..audit(user, AUDIT_CONSENT_WITHDRAWN, None, String::new(), now)
            })
            .await?;
    }
    Ok(withdrawal)
}

/// A short name for the browser and system a user agent string describes ("Firefox on
/// Windows"), for telling one's sessions apart; never shown to anyone else.
pub fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.trim().is_empty()) else { return String::from("Unknown device") };
    let browser = if ua.contains("Edg/") || ua.contains("EdgA/") || ua.contains("EdgiOS/") {
        Some("Edge")
    } else if ua.contains("OPR/") {
        Some("Opera")
    } else if ua.contains("Firefox/") || ua.contains("FxiOS/") {
        Some("Firefox")
    } else if ua.contains("Chrome/") || ua.contains("CriOS/") || ua.contains("Chromium/") {
        Some("Chrome")
    } else if ua.contains("Safari/") {
        Some("Safari")
    } else {
        None
    };
    let system = if ua.contains("iPhone") {
        Some("iPhone")
    } else if ua.contains("iPad") {
        Some("iPad")
    } else if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("CrOS") {
        Some("ChromeOS")
    } else if ua.contains("Linux") {
        Some("Linux")
    } else {
        None
    };
    match (browser, system) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser.to_owned(),
        (None, Some(system)) => format!("Browser on {system}"),
        // A program rather than a browser: its own name (`curl/8.5.0` → `curl`).
        (None, None) => {
            ua.split(['/', ' ']).next().filter(|name| !name.is_empty()).unwrap_or("Unknown device").chars().take(40).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::describe_device;

    #[test]
    fn user_agents_become_short_device_names() {
        let chrome_linux =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(describe_device(Some(chrome_linux)), "Chrome on Linux");
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(describe_device(Some(edge)), "Edge on Windows");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(describe_device(Some(iphone)), "Safari on iPhone");
        let firefox_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.0; rv:121.0) Gecko/20100101 Firefox/121.0";
        assert_eq!(describe_device(Some(firefox_mac)), "Firefox on macOS");
        assert_eq!(describe_device(Some("curl/8.5.0")), "curl");
        assert_eq!(describe_device(None), "Unknown device");
        assert_eq!(describe_device(Some("  ")), "Unknown device");
    }
}
