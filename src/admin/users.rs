//! Users: search, one user's whole picture, disabling, signing out everywhere, and linking
//! upstream identities by hand.

use serde::Serialize;

use super::audit::AuditEntry;
use super::grants::GrantView;
use super::sessions::SessionView;
use super::{Actor, Admin, AdminError, AdminResult, Page, Touched, decode_cursor, events, invalid, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::store::{AuditQuery, GrantQuery, IdentityLink, SessionQuery, StoreError, User, UserQuery};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkView {
    pub connector_id: String,
    pub subject: String,
    pub linked_at: UnixTime,
    pub last_sign_in_at: Option<UnixTime>,
}

impl From<IdentityLink> for LinkView {
    fn from(link: IdentityLink) -> Self {
        Self {
            connector_id: link.connector_id,
            subject: link.subject,
            linked_at: link.created_at,
            last_sign_in_at: link.last_login_at,
        }
    }
}

/// Everything the user page shows.
#[derive(Debug, Clone, Serialize)]
pub struct UserDetail {
    pub user: User,
    pub identities: Vec<LinkView>,
    pub sessions: Vec<SessionView>,
    pub grants: Vec<GrantView>,
    pub recent_events: Vec<AuditEntry>,
}

/// How much the detail page lists of each kind.
const DETAIL_ROWS: u32 = 50;

impl Admin {
    /// Users whose username, email or name contains `text`, in username order, one page at a time.
    pub async fn search_users(&self, text: Option<&str>, cursor: Option<&str>, limit: Option<u32>) -> AdminResult<Page<User>> {
        let limit = page_size(limit);
        let after: Option<(String, String)> = decode_cursor(cursor)?;
        let text = text.map(str::trim).filter(|t| !t.is_empty()).map(|t| t.chars().take(200).collect());
        let users = self.provider.store.search_users(&UserQuery { text, after, limit }).await?;
        let next = next_cursor(&users, limit, |u| (u.username.clone(), u.id.clone()));
        Ok(Page { items: users, next })
    }

    pub async fn user(&self, id: &str) -> AdminResult<UserDetail> {
        let user = self.provider.store.get_user(id).await?;
        let now = self.now();
        let identities = self.provider.store.list_user_links(id).await?.into_iter().map(LinkView::from).collect();
        let sessions = SessionQuery { user_id: Some(id.to_owned()), limit: DETAIL_ROWS, ..SessionQuery::default() };
        let sessions = self
            .provider
            .store
            .search_sso_sessions(&sessions, now, self.provider.config.session.idle_timeout_secs)
            .await?
            .into_iter()
            .map(SessionView::from)
            .collect();
        let grants = GrantQuery { user_id: Some(id.to_owned()), limit: DETAIL_ROWS, ..GrantQuery::default() };
        let grants = self.provider.store.search_grants(&grants, now).await?.into_iter().map(GrantView::from).collect();
        let events = AuditQuery { user_id: Some(id.to_owned()), limit: 20, ..AuditQuery::default() };
        let recent_events = self.provider.store.search_audit(&events).await?.into_iter().map(AuditEntry::from).collect();
        Ok(UserDetail { user, identities, sessions, grants, recent_events })
    }

    /// Every session of the user that has not ended, idle or not.
    async fn open_session_ids(&self, user_id: &str) -> AdminResult<Vec<String>> {
        Ok(self.provider.store.list_unrevoked_sso_sessions(None, Some(user_id)).await?)
    }

    /// Disables the user: their sessions end and every token issued to them stops working now;
    /// they cannot sign in again until enabled.
    pub async fn disable_user(&self, actor: &Actor, id: &str) -> AdminResult<usize> {
        actor.may_write()?;
        self.provider.store.get_user(id).await?;
        self.provider.store.set_user_disabled(id, true, self.now()).await?;
        let sessions = self.open_session_ids(id).await?;
        self.end_sessions(&sessions).await?;
        let touched =
            Touched { user_id: Some(id), detail: Some(format!("sessions ended: {}", sessions.len())), ..Touched::default() };
        self.audit(actor, events::USER_DISABLED, touched).await?;
        Ok(sessions.len())
    }

    pub async fn enable_user(&self, actor: &Actor, id: &str) -> AdminResult<()> {
        actor.may_write()?;
        self.provider.store.get_user(id).await?;
        self.provider.store.set_user_disabled(id, false, self.now()).await?;
        self.audit(actor, events::USER_ENABLED, Touched { user_id: Some(id), ..Touched::default() }).await
    }

    /// Ends every session of the user (with their grants); returns how many.
    pub async fn sign_out_user(&self, actor: &Actor, id: &str) -> AdminResult<usize> {
        actor.may_write()?;
        self.provider.store.get_user(id).await?;
        let sessions = self.open_session_ids(id).await?;
        self.end_sessions(&sessions).await?;
        let touched =
            Touched { user_id: Some(id), detail: Some(format!("sessions ended: {}", sessions.len())), ..Touched::default() };
        self.audit(actor, events::USER_SIGNED_OUT, touched).await?;
        Ok(sessions.len())
    }

    /// Links an upstream identity to this user, so its next sign-in through that connector
    /// lands here (for a person whose first sign-in made a second user, or who changed IdP).
    pub async fn link_identity(&self, actor: &Actor, user_id: &str, connector_id: &str, subject: &str) -> AdminResult<()> {
        actor.may_write()?;
        self.provider.store.get_user(user_id).await?;
        match self.provider.store.get_connector(connector_id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(invalid("connector_id", format!("`{connector_id}` names no connector"))),
            Err(err) => return Err(err.into()),
        }
        if subject.is_empty() || subject.len() > 512 || subject.chars().any(char::is_control) {
            return Err(invalid("subject", "must be 1 to 512 printable characters: the NameID or `sub` the IdP sends"));
        }
        match self.provider.store.link_identity(connector_id, subject, user_id, self.now()).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                return Err(AdminError::Conflict(format!(
                    "`{subject}` at {connector_id} is already linked to a user; unlink it there first"
                )));
            }
            Err(err) => return Err(err.into()),
        }
        let touched = Touched {
            user_id: Some(user_id),
            connector_id: Some(connector_id),
            detail: Some(format!("subject: {subject}")),
            ..Touched::default()
        };
        self.audit(actor, events::IDENTITY_LINKED, touched).await
    }

    /// Unlinks an upstream identity: its next sign-in is a first sign-in again. The user's
    /// sessions through that connector end. Returns how many.
    pub async fn unlink_identity(&self, actor: &Actor, user_id: &str, connector_id: &str, subject: &str) -> AdminResult<usize> {
        actor.may_write()?;
        self.provider.store.unlink_identity(connector_id, subject, user_id).await?;
        let sessions = self.provider.store.list_unrevoked_sso_sessions(Some(connector_id), Some(user_id)).await?;
        self.end_sessions(&sessions).await?;
        let touched = Touched {
            user_id: Some(user_id),
            connector_id: Some(connector_id),
            detail: Some(format!("subject: {subject}; sessions ended: {}", sessions.len())),
            ..Touched::default()
        };
        self.audit(actor, events::IDENTITY_UNLINKED, touched).await?;
        Ok(sessions.len())
    }

    /// What merging `other` into `keep` would do, for the confirmation.
    pub async fn merge_impact(&self, keep: &str, other: &str) -> AdminResult<MergeImpact> {
        if keep == other {
            return Err(invalid("user_id", "a user cannot be merged into itself"));
        }
        self.provider.store.get_user(keep).await?;
        let merged = match self.provider.store.get_user(other).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Err(invalid("user_id", "names no user")),
            Err(err) => return Err(err.into()),
        };
        let links = self.provider.store.list_user_links(other).await?.len();
        let sessions = self.open_session_ids(other).await?.len();
        let grants = GrantQuery { user_id: Some(other.to_owned()), limit: 1000, ..GrantQuery::default() };
        let grants = self.provider.store.search_grants(&grants, self.now()).await?.len();
        Ok(MergeImpact { merged_username: merged.username, links, sessions, grants })
    }

    /// Merges `other` into `keep`: its linked identities move to `keep` (so its next sign-in
    /// through any of them lands on `keep`), and it is disabled, which ends its sessions and
    /// revokes its grants. Applications knew it by its own `sub`; they are not handed `keep`'s.
    pub async fn merge_users(&self, actor: &Actor, keep: &str, other: &str) -> AdminResult<MergeImpact> {
        actor.may_write()?;
        let impact = self.merge_impact(keep, other).await?;
        self.provider.store.move_identity_links(other, keep).await?;
        self.provider.store.set_user_disabled(other, true, self.now()).await?;
        let sessions = self.open_session_ids(other).await?;
        self.end_sessions(&sessions).await?;
        let touched = Touched {
            user_id: Some(keep),
            detail: Some(format!(
                "merged user {other} ({}): {} identities moved, {} sessions ended, {} grants revoked",
                impact.merged_username, impact.links, impact.sessions, impact.grants
            )),
            ..Touched::default()
        };
        self.audit(actor, events::USERS_MERGED, touched).await?;
        let touched = Touched { user_id: Some(other), detail: Some(format!("merged into user {keep}")), ..Touched::default() };
        self.audit(actor, events::USERS_MERGED, touched).await?;
        Ok(impact)
    }
}

/// What merging one user into another moves and ends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MergeImpact {
    pub merged_username: String,
    /// Linked identities moved onto the user kept.
    pub links: usize,
    pub sessions: usize,
    pub grants: usize,
}
