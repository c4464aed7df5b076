//! Grants: what each user gave each application, and revoking them.

use serde::Serialize;

use super::{Actor, Admin, AdminError, AdminResult, Page, Touched, decode_cursor, events, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::store::{GrantListing, GrantQuery};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GrantView {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub username: String,
    pub scope: String,
    pub audience: String,
    pub connector_id: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    /// When its refresh-token family last moved (the newest refresh token's issue time).
    pub last_refreshed_at: Option<UnixTime>,
}

impl From<GrantListing> for GrantView {
    fn from(listing: GrantListing) -> Self {
        let grant = listing.grant;
        Self {
            id: grant.id,
            client_id: grant.client_id,
            user_id: grant.user_id,
            username: listing.username,
            scope: grant.scope,
            audience: grant.audience,
            connector_id: grant.idp,
            issued_at: grant.created_at,
            expires_at: grant.expires_at,
            last_refreshed_at: listing.last_refreshed_at,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
}

impl Admin {
    pub async fn list_grants(
        &self,
        filter: GrantFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> AdminResult<Page<GrantView>> {
        let limit = page_size(limit);
        let query = GrantQuery { user_id: filter.user_id, client_id: filter.client_id, before: decode_cursor(cursor)?, limit };
        let rows = self.store.search_grants(&query, self.now()).await?;
        let next = next_cursor(&rows, limit, |r| (r.grant.created_at, r.grant.id.clone()));
        Ok(Page { items: rows.into_iter().map(GrantView::from).collect(), next })
    }

    /// Revokes one grant: its refresh and access tokens stop working at once.
    pub async fn revoke_grant(&self, actor: &Actor, id: &str) -> AdminResult<()> {
        actor.may_write()?;
        let state = self.store.grant_state(id).await?.ok_or(AdminError::NotFound)?;
        if !state.is_live(self.now()) {
            return Err(AdminError::NotFound);
        }
        self.store.revoke_grant(id, self.now()).await?;
        let touched =
            Touched { user_id: Some(&state.grant.user_id), client_id: Some(&state.grant.client_id), ..Touched::default() };
        self.audit(actor, events::GRANT_REVOKED, touched).await
    }
}
