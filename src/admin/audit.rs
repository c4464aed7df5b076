//! The audit log, filtered and paged, newest first.

use serde::Serialize;

use super::{Admin, AdminResult, Page, decode_cursor, next_cursor, page_size};
use crate::clock::UnixTime;
use crate::store::{AuditEvent, AuditQuery};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub time: UnixTime,
    pub kind: String,
    pub outcome: &'static str,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub connector_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

impl From<(i64, AuditEvent)> for AuditEntry {
    fn from((id, event): (i64, AuditEvent)) -> Self {
        Self {
            id,
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
        let rows = self.store.search_audit(&query).await?;
        let next = next_cursor(&rows, limit, |(id, _)| *id);
        Ok(Page { items: rows.into_iter().map(AuditEntry::from).collect(), next })
    }
}
