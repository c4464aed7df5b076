//! The browser side of the SSO session: a tower-sessions cookie whose server-side record names
//! our `SsoSession`. The cookie store lives in the same database as everything else.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{ExpiredDeletion, Expiry, Session};
use tower_sessions_sqlx_store::{PostgresStore as PgSessions, SqliteStore as SqliteSessions};

use crate::store::{AuditEvent, AuditOutcome, SsoSession, User};
use crate::web::AppState;
use crate::web::error::WebError;

const SSO_KEY: &str = "sso";

#[derive(Debug, Clone)]
pub enum SessionBackend {
    Sqlite(SqliteSessions),
    Postgres(PgSessions),
}

impl SessionBackend {
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(store) => store.migrate().await,
            Self::Postgres(store) => store.migrate().await,
        }
    }

    pub async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            Self::Sqlite(store) => store.delete_expired().await,
            Self::Postgres(store) => store.delete_expired().await,
        }
    }
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Sqlite(store) => store.create(record).await,
            Self::Postgres(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Self::Sqlite(store) => store.save(record).await,
            Self::Postgres(store) => store.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Sqlite(store) => store.load(id).await,
            Self::Postgres(store) => store.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Self::Sqlite(store) => store.delete(id).await,
            Self::Postgres(store) => store.delete(id).await,
        }
    }
}

/// The SSO session id this browser's cookie session names, if any; not checked for validity.
pub async fn bound_sso_id(session: &Session) -> Result<Option<String>, tower_sessions::session::Error> {
    session.get::<String>(SSO_KEY).await
}

/// The signed-in user of this browser, if its SSO session is still good.
pub async fn current(state: &AppState, session: &Session) -> Result<Option<(SsoSession, User)>, WebError> {
    let Some(sso_id) = session.get::<String>(SSO_KEY).await? else { return Ok(None) };
    let settings = &state.config.session;
    let Some(resumed) = crate::session::resume(state.store.as_ref(), &sso_id, settings, state.clock.now()).await? else {
        session.remove::<String>(SSO_KEY).await?;
        return Ok(None);
    };
    // tower-sessions re-saves the cookie record (and its idle expiry) only when the session
    // changes, so activity recorded on the SSO session must extend the cookie explicitly.
    if resumed.touched {
        session.set_expiry(Some(Expiry::OnInactivity(time::Duration::seconds(settings.idle_timeout_secs))));
    }
    Ok(Some((resumed.session, resumed.user)))
}

/// Binds the browser to its SSO session under a fresh cookie id (no session fixation). When the
/// browser already had a session of the same user and connector (a re-authentication for
/// `prompt=login` or `max_age`), that session is kept with a new `auth_time`, so the `sid` apps
/// hold stays valid; a session of anyone else is ended.
pub async fn attach(state: &AppState, session: &Session, sso: &SsoSession) -> Result<(), WebError> {
    let now = state.clock.now();
    let mut bound = sso.id.clone();
    if let Some(previous_id) = session.get::<String>(SSO_KEY).await? {
        let previous = match state.store.get_sso_session(&previous_id).await {
            Ok(previous) => Some(previous),
            Err(crate::store::StoreError::NotFound) => None,
            Err(err) => return Err(err.into()),
        };
        let same_person = previous.is_some_and(|p| {
            p.user_id == sso.user_id && p.connector_id == sso.connector_id && p.revoked_at.is_none() && p.expires_at > now
        });
        if same_person {
            state.store.reauthenticate_sso_session(&previous_id, now).await?;
            state.store.revoke_sso_session(&sso.id, now).await?;
            bound = previous_id;
        } else {
            end(state, &previous_id).await?;
        }
    }
    session.cycle_id().await?;
    session.insert(SSO_KEY, &bound).await?;
    Ok(())
}

/// Ends an SSO session and wakes the back-channel logout sender if notices were queued.
async fn end(state: &AppState, sso_id: &str) -> Result<(), WebError> {
    if crate::session::end(state.store.as_ref(), sso_id, state.clock.now()).await? > 0 {
        state.provider.backchannel.notify_one();
    }
    Ok(())
}

/// Who signed out and how, for the audit log.
pub struct SignOut {
    pub ip: std::net::IpAddr,
    /// The application that asked, for RP-initiated logout.
    pub client_id: Option<String>,
    pub detail: Option<&'static str>,
}

/// Ends the browser's session and audits it; `signed_in` is what the handler already resolved.
pub async fn sign_out(
    state: &AppState,
    session: &Session,
    signed_in: Option<(SsoSession, User)>,
    how: SignOut,
) -> Result<(), WebError> {
    let ended = detach(state, session).await?;
    if let (Some(_), Some((sso, user))) = (ended, signed_in) {
        state
            .store
            .record_audit(&AuditEvent {
                time: state.clock.now(),
                kind: String::from("logout"),
                outcome: AuditOutcome::Success,
                actor: Some(user.username),
                user_id: Some(user.id),
                client_id: how.client_id,
                connector_id: Some(sso.connector_id),
                ip: Some(how.ip.to_string()),
                detail: how.detail.map(str::to_owned),
            })
            .await?;
    }
    Ok(())
}

/// Ends the browser's session: the SSO record is revoked and the cookie record deleted.
pub async fn detach(state: &AppState, session: &Session) -> Result<Option<String>, WebError> {
    let sso_id = session.get::<String>(SSO_KEY).await?;
    if let Some(id) = &sso_id {
        end(state, id).await?;
    }
    session.flush().await?;
    Ok(sso_id)
}
