//! The SSO session: server-side records that a browser's cookie points at, so sessions can be
//! listed and revoked, and end on idle or absolute timeouts measured by the injected clock.

pub mod pending;

use crate::clock::UnixTime;
use crate::config::SessionSettings;
use crate::store::{AuditEvent, AuditOutcome, SingleUseKind, SsoSession, Store, StoreError, StoreResult, User};
use crate::tokens::{digest, random_token};

/// How stale `last_seen_at` may get before a request writes it again: a quarter of the idle
/// timeout, at most a minute, so activity is recorded well before the session would go idle.
fn touch_interval(settings: &SessionSettings) -> i64 {
    (settings.idle_timeout_secs / 4).clamp(1, 60)
}

/// A session that is still good. `touched` says this request recorded activity, which the
/// browser side uses to extend its cookie as well.
#[derive(Debug)]
pub struct Resumed {
    pub session: SsoSession,
    pub user: User,
    pub touched: bool,
}

pub struct NewSession<'a> {
    pub user_id: &'a str,
    pub connector_id: &'a str,
    /// Who the connector said signed in: their identity link's key.
    pub subject: &'a str,
    /// The id of the waiting request (`pending::PendingLogin`) the sign-in continues.
    pub pending_login: Option<&'a str>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Starts a session and records the sign-in that started it in the same write: the user's and
/// the identity link's last sign-in, the `signed_in` audit event, and the taking of the waiting
/// request (`pending::PendingLogin`) the sign-in continues, which it returns if it was there.
pub async fn start(
    store: &dyn Store,
    new: NewSession<'_>,
    settings: &SessionSettings,
    now: UnixTime,
    signed_in: &AuditEvent,
) -> StoreResult<(SsoSession, Option<pending::PendingLogin>)> {
    let session = SsoSession {
        id: random_token(),
        user_id: new.user_id.to_owned(),
        connector_id: new.connector_id.to_owned(),
        auth_time: now,
        last_seen_at: now,
        expires_at: now + settings.absolute_timeout_secs,
        revoked_at: None,
        ip: new.ip,
        user_agent: new.user_agent,
    };
    let pending_key = new.pending_login.map(digest);
    let taking = pending_key.as_deref().map(|key| (SingleUseKind::PendingLogin, key));
    let resumed = store.start_sso_session(&session, new.subject, signed_in, taking).await?;
    Ok((session, pending::decode(resumed)?))
}

/// The session and its user when the session is still good; `None` once it is revoked, past
/// its absolute end, idle too long, or its user is disabled.
pub async fn resume(store: &dyn Store, id: &str, settings: &SessionSettings, now: UnixTime) -> StoreResult<Option<Resumed>> {
    let Some((session, user)) = store.session_with_user(id).await? else { return Ok(None) };
    if session.revoked_at.is_some() || session.expires_at <= now || user.disabled {
        return Ok(None);
    }
    // Idleness ends the browser's sign-in, not the grants made under it: an app holding an
    // offline refresh token keeps it. Only an explicit end (sign-out, revocation) revokes those.
    if session.last_seen_at + settings.idle_timeout_secs <= now {
        return Ok(None);
    }
    let touched = now - session.last_seen_at >= touch_interval(settings);
    if touched {
        store.touch_sso_session(&session.id, now).await?;
    }
    Ok(Some(Resumed { session, user, touched }))
}

/// The session id that tokens carry as `sid`: the stored id stays a server-side secret, so a
/// token leaked to an app's logs names the session without being able to resume it.
pub fn public_sid(session_id: &str) -> String {
    digest(session_id)
}

/// Ends a session and what was issued under it: its grants are revoked, so their refresh and
/// access tokens stop working, and every client holding one with a back-channel logout URI gets
/// a notification queued. Returns how many were queued.
pub async fn end(store: &dyn Store, id: &str, now: UnixTime) -> StoreResult<u64> {
    store.end_sso_session(id, &public_sid(id), now).await
}

/// What a browser is bound to after a sign-in, and how many back-channel logouts that queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled {
    pub session_id: String,
    pub notices_queued: u64,
}

/// Settles a fresh sign-in in a browser that may already hold a session. A session of the same
/// user and connector (a re-authentication for `prompt=login` or `max_age`) is kept with a new
/// `auth_time`, so the `sid` apps hold stays valid, and the fresh one is dropped; a session of
/// anyone else is ended.
pub async fn settle(store: &dyn Store, previous_id: Option<&str>, fresh: &SsoSession, now: UnixTime) -> StoreResult<Settled> {
    let Some(previous_id) = previous_id else { return Ok(Settled { session_id: fresh.id.clone(), notices_queued: 0 }) };
    let previous = match store.get_sso_session(previous_id).await {
        Ok(previous) => Some(previous),
        Err(StoreError::NotFound) => None,
        Err(err) => return Err(err),
    };
    let same_person = previous.is_some_and(|p| {
        p.user_id == fresh.user_id && p.connector_id == fresh.connector_id && p.revoked_at.is_none() && p.expires_at > now
    });
    if same_person {
        store.reauthenticate_sso_session(previous_id, now).await?;
        store.revoke_sso_session(&fresh.id, now).await?;
        return Ok(Settled { session_id: previous_id.to_owned(), notices_queued: 0 });
    }
    let notices_queued = end(store, previous_id, now).await?;
    Ok(Settled { session_id: fresh.id.clone(), notices_queued })
}

/// Who signed out and how, for the audit log.
pub struct SignOut {
    pub ip: std::net::IpAddr,
    /// The application that asked, for RP-initiated logout.
    pub client_id: Option<String>,
    pub detail: Option<&'static str>,
}

pub const AUDIT_LOGOUT: &str = "logout";

/// Records a sign-out of `user` from `session` (already ended).
pub async fn record_sign_out(
    store: &dyn Store,
    session: &SsoSession,
    user: &User,
    how: SignOut,
    now: UnixTime,
) -> StoreResult<()> {
    store
        .record_audit(&AuditEvent {
            time: now,
            kind: AUDIT_LOGOUT.to_owned(),
            outcome: AuditOutcome::Success,
            actor: Some(user.username.clone()),
            user_id: Some(user.id.clone()),
            client_id: how.client_id,
            connector_id: Some(session.connector_id.clone()),
            ip: Some(how.ip.to_string()),
            detail: how.detail.map(str::to_owned),
        })
        .await
}
