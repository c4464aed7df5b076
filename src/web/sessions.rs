//! The browser side of the SSO session: a tower-sessions cookie whose server-side record names
//! our `SsoSession`. The cookie store lives in the same database as everything else.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{ExpiredDeletion, Expiry, Session};
use tower_sessions_sqlx_store::{PostgresStore as PgSessions, SqliteStore as SqliteSessions};

pub use crate::session::SignOut;
use crate::store::{SsoSession, User};
use crate::web::AppState;
use crate::web::error::WebError;

const SSO_KEY: &str = "sso";

#[derive(Debug, Clone)]
pub enum SessionBackend {
    /// Records are read (and the expired ones deleted) by `tower-sessions-sqlx-store`, and
    /// written by the store's batched writer, so that sign-ins do not compete with it for
    /// SQLite's write lock.
    Sqlite(SqliteSessions, crate::store::SqliteStore),
    Postgres(PgSessions),
}

fn backend_error(err: crate::store::StoreError) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encoded(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

impl SessionBackend {
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(store, _) => store.migrate().await,
            Self::Postgres(store) => store.migrate().await,
        }
    }

    pub async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            Self::Sqlite(store, _) => store.delete_expired().await,
            Self::Postgres(store) => store.delete_expired().await,
        }
    }
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Sqlite(_, store) => loop {
                match store.write_browser_session(record.id.to_string(), encoded(record)?, record.expiry_date, true).await {
                    Err(crate::store::StoreError::AlreadyExists) => record.id = Id::default(),
                    written => return written.map_err(backend_error),
                }
            },
            Self::Postgres(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Self::Sqlite(_, store) => store
                .write_browser_session(record.id.to_string(), encoded(record)?, record.expiry_date, false)
                .await
                .map_err(backend_error),
            Self::Postgres(store) => store.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Sqlite(store, _) => store.load(id).await,
            Self::Postgres(store) => store.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Self::Sqlite(_, store) => store.delete_browser_session(id.to_string()).await.map_err(backend_error),
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

/// Binds the browser to its SSO session under a fresh cookie id (no session fixation); a
/// session the browser held before is kept or ended as `session::settle` decides.
pub async fn attach(state: &AppState, session: &Session, sso: &SsoSession) -> Result<(), WebError> {
    let previous = session.get::<String>(SSO_KEY).await?;
    let settled = crate::session::settle(state.store.as_ref(), previous.as_deref(), sso, state.clock.now()).await?;
    if settled.notices_queued > 0 {
        state.provider.backchannel.notify_one();
    }
    session.cycle_id().await?;
    session.insert(SSO_KEY, &settled.session_id).await?;
    Ok(())
}

/// Ends an SSO session and wakes the back-channel logout sender if notices were queued.
async fn end(state: &AppState, sso_id: &str) -> Result<(), WebError> {
    if crate::session::end(state.store.as_ref(), sso_id, state.clock.now()).await? > 0 {
        state.provider.backchannel.notify_one();
    }
    Ok(())
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
        crate::session::record_sign_out(state.store.as_ref(), &sso, &user, how, state.clock.now()).await?;
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
