//! Grants: what each user gave each application, and revoking them.

use serde::Serialize;

use super::{Actor, Admin, AdminError, AdminResult, Page, Touched, decode_cursor, events, invalid, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::provider::introspect::IdentifiedToken;
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
        let rows = self.provider.store.search_grants(&query, self.now()).await?;
        let next = next_cursor(&rows, limit, |r| (r.grant.created_at, r.grant.id.clone()));
        Ok(Page { items: rows.into_iter().map(GrantView::from).collect(), next })
    }

    /// Whose a live grant is and for which application, for its revocation's confirmation.
    pub async fn grant_owner(&self, id: &str) -> AdminResult<(String, String)> {
        let state = self.provider.store.grant_state(id).await?.ok_or(AdminError::NotFound)?;
        if !state.is_live(self.now()) {
            return Err(AdminError::NotFound);
        }
        let username = self.provider.store.get_user(&state.grant.user_id).await?.username;
        Ok((username, state.grant.client_id))
    }

    /// Revokes one grant: its refresh and access tokens stop working at once.
    pub async fn revoke_grant(&self, actor: &Actor, id: &str) -> AdminResult<()> {
        actor.may_write()?;
        let state = self.provider.store.grant_state(id).await?.ok_or(AdminError::NotFound)?;
        if !state.is_live(self.now()) {
            return Err(AdminError::NotFound);
        }
        self.provider.store.revoke_grant(id, self.now()).await?;
        let touched =
            Touched { user_id: Some(&state.grant.user_id), client_id: Some(&state.grant.client_id), ..Touched::default() };
        self.audit(actor, events::GRANT_REVOKED, touched).await
    }

    /// Revokes a pasted token (access or refresh) and its grant; says what it was.
    pub async fn revoke_token(&self, actor: &Actor, token: &str) -> AdminResult<IdentifiedToken> {
        actor.may_write()?;
        let token = token.trim();
        if token.is_empty() || token.len() > 8192 {
            return Err(invalid("token", "paste an access token or a refresh token this server issued"));
        }
        let identified = self
            .provider
            .revoke_any(token)
            .await
            .map_err(|err| AdminError::Internal(err.to_string()))?
            .ok_or_else(|| invalid("token", "this server did not issue that token, or it was removed"))?;
        let touched = Touched {
            user_id: identified.user_id.as_deref(),
            client_id: Some(&identified.client_id),
            detail: Some(identified.kind.to_owned()),
            ..Touched::default()
        };
        self.audit(actor, events::TOKEN_REVOKED, touched).await?;
        Ok(identified)
    }
}
