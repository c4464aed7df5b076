//! Brings the clients and connectors declared in the configuration into the database: the
//! admin writer that runs at start-up, before the provider exists, so it works on the store
//! directly and builds client records with the console's own `clients::record`. Entries
//! the file manages are created, updated, or removed when the file drops them; entries created
//! at run time are left alone.

use std::collections::HashSet;

use crate::clock::UnixTime;
use crate::config::{ClientConfig, Config, ConnectorConfig, ConnectorKind};
use crate::store::{AuditEvent, AuditOutcome, ClientRecord, ConnectorRecord, Store, StoreError, UserProfile};
use crate::tokens::{KeyEncryptionKey, SecretHasher};

pub const AUDIT_CONFIG_CHANGE: &str = "config_change";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] crate::upstream::spec::SpecError),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries written, new or changed; `created` names the new ones among them.
    pub changed: Vec<String>,
    pub created: Vec<String>,
    pub removed: Vec<String>,
}

pub async fn sync(
    store: &dyn Store,
    config: &Config,
    secrets: &SecretHasher,
    kek: &KeyEncryptionKey,
    now: UnixTime,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let existing_clients = store.list_clients().await?;
    for client in &config.clients {
        let previous = existing_clients.iter().find(|c| c.client_id == client.client_id);
        let record = client_record(client, previous, secrets, now);
        if previous.is_none_or(|p| !same_client(p, &record)) {
            store.upsert_client(&record).await?;
            report.changed.push(format!("client:{}", client.client_id));
            if previous.is_none() {
                report.created.push(format!("client:{}", client.client_id));
            }
        }
    }
    let declared: HashSet<&str> = config.clients.iter().map(|c| c.client_id.as_str()).collect();
    for stale in existing_clients.iter().filter(|c| c.managed_by_config && !declared.contains(c.client_id.as_str())) {
        // Its grants are revoked with it, so re-registering the id later revives nothing.
        store.delete_client(&stale.client_id, now, crate::session::public_sid).await?;
        report.removed.push(format!("client:{}", stale.client_id));
    }

    let existing_connectors = store.list_connectors().await?;
    for connector in &config.connectors {
        let previous = existing_connectors.iter().find(|c| c.id == connector.id);
        let record = ConnectorRecord {
            created_at: previous.map_or(now, |p| p.created_at),
            ..crate::upstream::spec::encode(connector, true, kek, now)?
        };
        if previous.is_none_or(|p| !crate::upstream::spec::same(p, &record, kek)) {
            store.upsert_connector(&record).await?;
            report.changed.push(format!("connector:{}", connector.id));
            if previous.is_none() {
                report.created.push(format!("connector:{}", connector.id));
            }
        }
    }
    let declared: HashSet<&str> = config.connectors.iter().map(|c| c.id.as_str()).collect();
    for stale in existing_connectors.iter().filter(|c| c.managed_by_config && !declared.contains(c.id.as_str())) {
        store.delete_connector(&stale.id).await?;
        end_sessions(store, &stale.id, None, now).await?;
        report.removed.push(format!("connector:{}", stale.id));
    }
    for connector in &config.connectors {
        end_sessions_of_withdrawn_users(store, connector, now, &mut report).await?;
    }

    let written = report.changed.iter().map(|e| (e, if report.created.contains(e) { "created" } else { "updated" }));
    for entry in written.chain(report.removed.iter().map(|e| (e, "removed"))) {
        store
            .record_audit(&AuditEvent {
                time: now,
                kind: AUDIT_CONFIG_CHANGE.to_owned(),
                outcome: AuditOutcome::Success,
                actor: Some(String::from("configuration file")),
                user_id: None,
                client_id: entry.0.strip_prefix("client:").map(str::to_owned),
                connector_id: entry.0.strip_prefix("connector:").map(str::to_owned),
                ip: None,
                detail: Some(entry.1.to_owned()),
            })
            .await?;
    }
    Ok(report)
}

/// A local user the file now disables or no longer lists cannot sign in again; their running
/// sessions end too, rather than living on until they time out.
async fn end_sessions_of_withdrawn_users(
    store: &dyn Store,
    connector: &ConnectorConfig,
    now: UnixTime,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    // Other connectors' users are managed upstream; only the file's own list is authoritative.
    let ConnectorKind::Local { users } = &connector.kind else { return Ok(()) };
    let enabled: HashSet<&str> = users.iter().filter(|u| !u.disabled).map(|u| u.username.as_str()).collect();
    let known = store.list_users().await?;
    let disabled_now: HashSet<&str> = known.iter().filter(|u| u.disabled).map(|u| u.id.as_str()).collect();
    for (subject, user_id) in store.list_identity_links(&connector.id).await? {
        let entry = format!("connector:{}", connector.id);
        // The file's groups and profile apply now, not at the next sign-in: an access policy
        // checked at the next refresh sees who is still in which group.
        let declared = users.iter().find(|u| u.username == subject);
        let stored = known.iter().find(|u| u.id == user_id);
        if let (Some(declared), Some(stored)) = (declared, stored) {
            let profile = crate::mapping::profile_of(&crate::upstream::local::identity_of(&connector.id, declared));
            if UserProfile::from(stored) != profile {
                store.update_user_profile(&user_id, &profile, now).await?;
                if !report.changed.contains(&entry) {
                    report.changed.push(entry.clone());
                }
            }
        }
        // For local users the file is the source of truth: a withdrawn user is disabled, so
        // tokens already issued to apps stop working too, and enabled again if the file says so.
        let withdrawn = !enabled.contains(subject.as_str());
        if disabled_now.contains(user_id.as_str()) != withdrawn {
            store.set_user_disabled(&user_id, withdrawn, now).await?;
        }
        if withdrawn && end_sessions(store, &connector.id, Some(&user_id), now).await? > 0 && !report.changed.contains(&entry) {
            report.changed.push(entry);
        }
    }
    Ok(())
}

/// Ends the sessions signed in through a connector (of one user, or all) with everything
/// issued under them; returns how many.
async fn end_sessions(store: &dyn Store, connector_id: &str, user_id: Option<&str>, now: UnixTime) -> Result<usize, SyncError> {
    let sessions = store.list_unrevoked_sso_sessions(Some(connector_id), user_id).await?;
    for id in &sessions {
        crate::session::end(store, id, now).await?;
    }
    Ok(sessions.len())
}

fn client_record(client: &ClientConfig, previous: Option<&ClientRecord>, secrets: &SecretHasher, now: UnixTime) -> ClientRecord {
    ClientRecord {
        created_at: previous.map_or(now, |p| p.created_at),
        version: previous.map_or(1, |p| p.version),
        ..super::clients::record(client, true, secrets, now)
    }
}

fn same_client(a: &ClientRecord, b: &ClientRecord) -> bool {
    ClientRecord { updated_at: 0, ..a.clone() } == ClientRecord { updated_at: 0, ..b.clone() }
}
