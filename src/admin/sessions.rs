//! Active SSO sessions across all users.

use serde::Serialize;

use super::{Actor, Admin, AdminError, AdminResult, Page, Touched, decode_cursor, events, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::store::{SessionListing, SessionQuery};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub connector_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub started_at: UnixTime,
    pub last_seen_at: UnixTime,
    pub expires_at: UnixTime,
}

impl From<SessionListing> for SessionView {
    fn from(listing: SessionListing) -> Self {
        let session = listing.session;
        Self {
            id: session.id,
            user_id: session.user_id,
            username: listing.username,
            connector_id: session.connector_id,
            ip: session.ip,
            user_agent: session.user_agent,
            started_at: session.auth_time,
            last_seen_at: session.last_seen_at,
            expires_at: session.expires_at,
        }
    }
}

/// Which sessions a list shows.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user_id: Option<String>,
    pub connector_id: Option<String>,
}

impl Admin {
    pub async fn list_sessions(
        &self,
        filter: SessionFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> AdminResult<Page<SessionView>> {
        let limit = page_size(limit);
        let query =
            SessionQuery { user_id: filter.user_id, connector_id: filter.connector_id, before: decode_cursor(cursor)?, limit };
        let rows =
            self.provider.store.search_sso_sessions(&query, self.now(), self.provider.config.session.idle_timeout_secs).await?;
        let next = next_cursor(&rows, limit, |r| (r.session.auth_time, r.session.id.clone()));
        Ok(Page { items: rows.into_iter().map(SessionView::from).collect(), next })
    }

    /// One active session, with its user's name.
    pub async fn session(&self, id: &str) -> AdminResult<SessionView> {
        let session = self.provider.store.get_sso_session(id).await?;
        if session.revoked_at.is_some() || session.expires_at <= self.now() {
            return Err(AdminError::NotFound);
        }
        let username = self.provider.store.get_user(&session.user_id).await?.username;
        Ok(SessionView::from(SessionListing { session, username }))
    }

    /// Ends one session with everything issued under it; its apps are told by back-channel
    /// logout. Ending a session that already ended is `NotFound`.
    pub async fn end_session(&self, actor: &Actor, id: &str) -> AdminResult<u64> {
        actor.may_write()?;
        let session = self.provider.store.get_sso_session(id).await?;
        if session.revoked_at.is_some() {
            return Err(AdminError::NotFound);
        }
        let queued = self.end_sessions(&[id.to_owned()]).await?;
        let touched = Touched {
            user_id: Some(&session.user_id),
            connector_id: Some(&session.connector_id),
            detail: Some(format!("back-channel logouts queued: {queued}")),
            ..Touched::default()
        };
        self.audit(actor, events::SESSION_ENDED, touched).await?;
        Ok(queued)
    }
}
