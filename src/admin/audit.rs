//! The audit log, filtered and paged, newest first.

use serde::Serialize;

use super::{Admin, AdminResult, Page, decode_cursor, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::store::{AuditListing, AuditQuery};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub time: UnixTime,
    pub kind: String,
    pub outcome: &'static str,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    /// The current name of the user `user_id` names, if they still exist.
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub connector_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

impl From<AuditListing> for AuditEntry {
    fn from(AuditListing { id, event, username }: AuditListing) -> Self {
        Self {
            id,
            username,
            time: event.time,
            kind: event.kind,
            outcome: event.outcome.as_str(),
            actor: event.actor,
            user_id: event.user_id,
            client_id: event.client_id,
            connector_id: event.connector_id,
            ip: event.ip,
            detail: event.detail,
        }
    }
}

/// Every kind of event Gatehouse records, for the console's filter.
pub const EVENT_KINDS: [&str; 33] = [
    crate::login::AUDIT_LOGIN,
    crate::login::AUDIT_LOGIN_THROTTLED,
    crate::login::AUDIT_TEST_SIGN_IN,
    crate::session::AUDIT_LOGOUT,
    crate::portal::AUDIT_CONSENT_WITHDRAWN,
    crate::provider::AUDIT_TOKEN_GRANTED,
    crate::provider::AUDIT_GRANT_REVOKED,
    crate::provider::AUDIT_ACCESS_TOKEN_REVOKED,
    crate::provider::AUDIT_ACCESS_DENIED,
    crate::portal::AUDIT_SESSION_SIGNED_OUT,
    crate::portal::AUDIT_SIGNED_OUT_EVERYWHERE,
    "backchannel_logout",
    super::sync::AUDIT_CONFIG_CHANGE,
    super::events::CLIENT_CREATED,
    super::events::CLIENT_UPDATED,
    super::events::CLIENT_DELETED,
    super::events::CLIENT_SECRET_ROTATED,
    super::events::USER_DISABLED,
    super::events::USER_ENABLED,
    super::events::USER_SIGNED_OUT,
    super::events::SESSION_ENDED,
    super::events::GRANT_REVOKED,
    super::events::TOKEN_REVOKED,
    super::events::KEYS_ROTATED,
    super::events::KEY_RETIRED,
    super::events::CONNECTOR_CREATED,
    super::events::CONNECTOR_UPDATED,
    super::events::CONNECTOR_DISABLED,
    super::events::CONNECTOR_ENABLED,
    super::events::CONNECTOR_DELETED,
    super::events::IDENTITY_LINKED,
    super::events::IDENTITY_UNLINKED,
    super::events::USERS_MERGED,
];

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub connector_id: Option<String>,
    pub kind: Option<String>,
    pub since: Option<UnixTime>,
    pub until: Option<UnixTime>,
}

impl Admin {
    pub async fn audit_log(
        &self,
        filter: AuditFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> AdminResult<Page<AuditEntry>> {
        let limit = page_size(limit);
        let query = AuditQuery {
            user_id: filter.user_id,
            client_id: filter.client_id,
            connector_id: filter.connector_id,
            kind: filter.kind,
            since: filter.since,
            until: filter.until,
            before_id: decode_cursor(cursor)?,
            limit,
        };
        let rows = self.provider.store.search_audit(&query).await?;
        let next = next_cursor(&rows, limit, |row| row.id);
        Ok(Page { items: rows.into_iter().map(AuditEntry::from).collect(), next })
    }
}
