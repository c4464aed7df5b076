//! Admin operations: applications, users, sessions, grants, signing keys and the audit log, as
//! plain values in and out over the store and the injected clock. The HTML console and the
//! JSON API are two thin faces over this; authorization is decided by the face's extractor
//! (who is an admin), and writes are refused here for read-only actors.

pub mod audit;
pub mod clients;
pub mod connectors;
pub mod grants;
pub mod keys;
pub mod overview;
pub mod sessions;
pub mod sync;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::UnixTime;
use crate::config::AdminSettings;
use crate::provider::Provider;
use crate::store::{AuditEvent, AuditOutcome, StoreError};
use crate::upstream::Upstreams;

/// What an admin may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    ReadOnly,
}

/// The role a member of `groups` has, if any; full rights win over read-only.
pub fn role_of(settings: &AdminSettings, groups: &[String]) -> Option<Role> {
    if groups.iter().any(|g| settings.groups.contains(g)) {
        Some(Role::Admin)
    } else if groups.iter().any(|g| settings.read_only_groups.contains(g)) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// The scopes that give a client-credentials token admin API access.
pub const SCOPE_ADMIN: &str = "gatehouse:admin";
pub const SCOPE_ADMIN_READ: &str = "gatehouse:admin.read";

/// The role the scopes of an admin API token give, if any.
pub fn role_of_scopes(scopes: &[String]) -> Option<Role> {
    if scopes.iter().any(|s| s == SCOPE_ADMIN) {
        Some(Role::Admin)
    } else if scopes.iter().any(|s| s == SCOPE_ADMIN_READ) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// Who acts: a signed-in person in the console, or an automation client through the API.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Shown in the audit log: the username, or `client:<client_id>`.
    pub name: String,
    pub role: Role,
    pub ip: Option<IpAddr>,
}

impl Actor {
    fn may_write(&self) -> Result<(), AdminError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::ReadOnly => Err(AdminError::ReadOnly),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("read-only access cannot change anything")]
    ReadOnly,
    #[error("not found")]
    NotFound,
    /// A field's value is not acceptable; `field` is spelled as in the configuration.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict => Self::Conflict(String::from("changed by someone else meanwhile; reload and try again")),
            other => Self::Store(other),
        }
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid { field: field.into(), reason: reason.into() }
}

/// A page of a list and the opaque cursor of the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The most a list page holds, whatever is asked.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

pub fn page_size(asked: Option<u32>) -> u32 {
    asked.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// Cursors are opaque to callers: the position, as JSON, in URL-safe base64.
fn encode_cursor<T: Serialize>(position: &T) -> Option<String> {
    serde_json::to_vec(position).ok().map(|json| URL_SAFE_NO_PAD.encode(json))
}

fn decode_cursor<T: DeserializeOwned>(cursor: Option<&str>) -> AdminResult<Option<T>> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else { return Ok(None) };
    let bad = || invalid("next", "is not a cursor this server gave out");
    if cursor.len() > 1024 {
        return Err(bad());
    }
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    serde_json::from_slice(&json).map(Some).map_err(|_| bad())
}

/// The next page's cursor when this page came back full.
fn next_cursor<T, P: Serialize>(items: &[T], limit: u32, position: impl Fn(&T) -> P) -> Option<String> {
    if items.len() < limit as usize {
        return None;
    }
    items.last().and_then(|last| encode_cursor(&position(last)))
}

/// Event kinds the admin core writes.
pub mod events {
    pub const CLIENT_CREATED: &str = "admin.client_created";
    pub const CLIENT_UPDATED: &str = "admin.client_updated";
    pub const CLIENT_DELETED: &str = "admin.client_deleted";
    pub const CLIENT_SECRET_ROTATED: &str = "admin.client_secret_rotated";
    pub const USER_DISABLED: &str = "admin.user_disabled";
    pub const USER_ENABLED: &str = "admin.user_enabled";
    pub const USER_SIGNED_OUT: &str = "admin.user_signed_out";
    pub const SESSION_ENDED: &str = "admin.session_ended";
    pub const GRANT_REVOKED: &str = "admin.grant_revoked";
    pub const TOKEN_REVOKED: &str = "admin.token_revoked";
    pub const KEYS_ROTATED: &str = "admin.keys_rotated";
    pub const KEY_RETIRED: &str = "admin.key_retired";
    pub const CONNECTOR_CREATED: &str = "admin.connector_created";
    pub const CONNECTOR_UPDATED: &str = "admin.connector_updated";
    pub const CONNECTOR_DISABLED: &str = "admin.connector_disabled";
    pub const CONNECTOR_ENABLED: &str = "admin.connector_enabled";
    pub const CONNECTOR_DELETED: &str = "admin.connector_deleted";
    pub const IDENTITY_LINKED: &str = "admin.identity_linked";
    pub const IDENTITY_UNLINKED: &str = "admin.identity_unlinked";
    pub const USERS_MERGED: &str = "admin.users_merged";
}

/// The admin core: everything the console and the API do goes through here.
pub struct Admin {
    /// The store, the clock, the settings and the caches the provider serves applications from.
    provider: Arc<Provider>,
    /// The live connectors: the overview's warnings, checks before a save, rebuilds after.
    upstreams: Arc<Upstreams>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// What an admin change touched, for its audit event.
#[derive(Default)]
struct Touched<'a> {
    user_id: Option<&'a str>,
    client_id: Option<&'a str>,
    connector_id: Option<&'a str>,
    detail: Option<String>,
}

impl Admin {
    pub fn new(provider: Arc<Provider>, upstreams: Arc<Upstreams>) -> Self {
        Self { provider, upstreams }
    }

    pub fn now(&self) -> UnixTime {
        self.provider.clock.now()
    }

    pub fn settings(&self) -> &AdminSettings {
        &self.provider.config.admin
    }

    /// Records an admin change. `detail` names what changed, never a value that is secret.
    async fn audit(&self, actor: &Actor, kind: &str, touched: Touched<'_>) -> AdminResult<()> {
        self.provider
            .store
            .record_audit(&AuditEvent {
                time: self.provider.clock.now(),
                kind: kind.to_owned(),
                outcome: AuditOutcome::Success,
                actor: Some(actor.name.clone()),
                user_id: touched.user_id.map(str::to_owned),
                client_id: touched.client_id.map(str::to_owned),
                connector_id: touched.connector_id.map(str::to_owned),
                ip: actor.ip.map(|ip| ip.to_string()),
                detail: touched.detail,
            })
            .await?;
        Ok(())
    }

    /// Ends sessions by id, each with its grants and back-channel notices; returns how many
    /// notices were queued.
    async fn end_sessions(&self, ids: &[String]) -> AdminResult<u64> {
        let now = self.provider.clock.now();
        let mut queued = 0;
        for id in ids {
            queued += crate::session::end(self.provider.store.as_ref(), id, now).await?;
        }
        if queued > 0 {
            self.provider.backchannel.notify_one();
        }
        Ok(queued)
    }
}
