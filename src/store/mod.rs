//! Storage: one interface, implemented for SQLite and PostgreSQL over the same SQL.
//!
//! Times are Unix seconds from the caller's clock; the store never reads the time itself.

mod group_sync;
mod postgres;
mod readers;
mod sql;
mod sqlite;
mod write_batch;

use async_trait::async_trait;

use crate::clock::UnixTime;

pub use group_sync::durable_before_answer;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A compare-and-swap update found the record changed since it was read.
    #[error("changed concurrently")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::AlreadyExists,
            _ => Self::Database(err),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        Self::Corrupt(err.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a power loss or operating-system crash may take from the embedded database. A crash of
/// Gatehouse alone loses nothing either way: committed writes are in the operating system's
/// cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteDurability {
    /// Nothing Gatehouse answered for: every write is on disk before the request that made it
    /// is answered (SQLite's `synchronous=FULL` guarantee, with one sync shared by the writes
    /// committed meanwhile).
    #[default]
    Full,
    /// SQLite's `synchronous=NORMAL`: the writes since the last checkpoint may be rolled back,
    /// codes and refresh tokens already handed out among them. The file stays consistent.
    Normal,
}

/// Holds no credential, so the admin API shows it as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// Stable and never reused; this, not the email, is what tokens name as the subject.
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub last_login_at: Option<UnixTime>,
}

/// The user fields an upstream identity source asserts; applied at every sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserProfile {
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
}

impl From<&User> for UserProfile {
    fn from(user: &User) -> Self {
        Self {
            username: user.username.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            display_name: user.display_name.clone(),
            groups: user.groups.clone(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// An argon2id PHC string; `None` for a public client.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub name: String,
    pub first_party: bool,
    pub signing_alg: String,
    pub access_token_lifetime_secs: Option<i64>,
    pub issue_refresh_token: bool,
    pub default_audience: Option<String>,
    pub resources: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// May introspect tokens issued for any audience (a resource-server gateway).
    pub introspect_any: bool,
    pub managed_by_config: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Raised by every update; an edit names the version it read (compare-and-swap).
    pub version: i64,
    /// The secret replaced by a rotation, still accepted until `previous_secret_expires_at`.
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<UnixTime>,
    pub access: crate::access::AccessPolicy,
    pub portal: crate::access::PortalEntry,
}

impl ClientRecord {
    /// The access token's `aud` when a request names no resource.
    pub fn audience_by_default(&self) -> &str {
        self.default_audience.as_deref().unwrap_or(&self.client_id)
    }
}

/// Leaves the secret hash out, like every record that holds credential material.
impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("confidential", &self.secret_hash.is_some())
            .field("redirect_uris", &self.redirect_uris)
            .field("grant_types", &self.grant_types)
            .field("managed_by_config", &self.managed_by_config)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ConnectorRecord {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub email_domains: Vec<String>,
    /// The connector's specification (`config::ConnectorSpec`) as JSON, without its secret;
    /// may hold password hashes, so `Debug` leaves it out.
    pub settings: String,
    pub managed_by_config: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Raised by every change; each node rebuilds a connector whose version it has not built.
    pub version: i64,
    /// Listed, but signs no one in.
    pub disabled: bool,
    /// The upstream client secret, sealed with the key-encryption key (context: the id).
    pub sealed_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("managed_by_config", &self.managed_by_config)
            .field("version", &self.version)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A SAML SP key pair: its self-signed certificate and the sealed PKCS#1 private key. Each key
/// does one job (`purpose`: `signing` or `encryption`). Not yet activated: published, waiting
/// (an encryption key already decrypts); active: in use; retired: kept until removed.
#[derive(Clone, PartialEq, Eq)]
pub struct SamlSpKeyRecord {
    pub kid: String,
    pub purpose: String,
    pub certificate_der: Vec<u8>,
    pub sealed_private_key: Vec<u8>,
    pub created_at: UnixTime,
    pub activated_at: Option<UnixTime>,
    pub retired_at: Option<UnixTime>,
}

impl std::fmt::Debug for SamlSpKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlSpKeyRecord")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    /// The PKCS#8 private key, sealed with the key-encryption key.
    pub sealed_private_key: Vec<u8>,
    pub created_at: UnixTime,
    /// Set when a newer key of the same algorithm took over signing.
    pub retired_at: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSession {
    pub id: String,
    pub user_id: String,
    pub connector_id: String,
    pub auth_time: UnixTime,
    pub last_seen_at: UnixTime,
    /// The absolute end of the session, whatever the activity.
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// The reason code an audit `detail` starts with (`audience_mismatch: expected …` →
/// `audience_mismatch`), or `unspecified` when it does not start with one.
pub fn reason_code(detail: Option<&str>) -> &str {
    let code = detail.unwrap_or_default().split(':').next().unwrap_or_default();
    let is_code =
        !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if is_code { code } else { "unspecified" }
}

/// A security event. Never carries a secret: `detail` is a fixed reason code, then for some
/// refusals the values involved (what an IdP sent), for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub time: UnixTime,
    pub kind: String,
    pub outcome: AuditOutcome,
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub connector_id: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

/// What one redeemed authorization code gave one client. Every token issued from it names the
/// grant, so revoking the grant (code replay, refresh-token reuse, revocation, logout) revokes
/// them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The SSO session the user signed in with; `None` once that no longer matters.
    pub session_id: Option<String>,
    /// Digest of the authorization code that created the grant, to find it on replay.
    pub code_hash: Option<String>,
    /// Space-separated, as in the protocol.
    pub scope: String,
    pub audience: String,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    /// The upstream connector the user signed in through.
    pub idp: String,
    pub created_at: UnixTime,
    /// No token of the grant is valid after this.
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// A grant with what decides whether its tokens still count, read in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantState {
    pub grant: GrantRecord,
    pub user_disabled: bool,
    pub session_revoked: bool,
}

/// An authorization code's payload, and the session and user it names (`GrantStore::peek_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedCode {
    pub payload: String,
    pub signed_in: Option<(SsoSession, User)>,
}

/// A refresh token with what a refresh decides on: its grant's state and the grant's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenState {
    pub token: RefreshTokenRecord,
    pub grant: GrantState,
    pub user: User,
}

impl GrantState {
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.grant.revoked_at.is_none() && self.grant.expires_at > now && !self.user_disabled && !self.session_revoked
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub grant_id: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    /// Set when the token was exchanged for a new one; presenting it again is reuse.
    pub rotated_at: Option<UnixTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is spent and the new one stored, in one transaction.
    Rotated,
    /// The old token had been exchanged before: someone holds a copy.
    AlreadyRotated,
    /// Unknown or expired.
    NotFound,
}

/// A back-channel logout notification waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackchannelLogout {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub sid: String,
    pub attempts: i64,
    pub created_at: UnixTime,
    /// The client's back-channel logout URI and token signing algorithm when the notice was
    /// queued; `None` for notices queued before they were recorded.
    pub uri: Option<String>,
    pub signing_alg: Option<String>,
}

/// Kinds of single-use records. Each kind is a separate namespace of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleUseKind {
    /// A downstream request waiting for the user to sign in.
    PendingLogin,
    /// A validated authorization request waiting for sign-in or consent.
    AuthorizationRequest,
    AuthorizationCode,
    UpstreamState,
    SamlRequestId,
    /// A spent `SamlRequestId`, kept as long as the request could have lived, so that a response
    /// posted again is told apart from an unsolicited one.
    SamlRequestSpent,
    /// A verified SAML sign-in on its way from the ACS to the same-site finishing step.
    SamlVerifiedLogin,
    /// A seen SAML assertion id, kept until it expires so it cannot be replayed.
    SamlAssertionId,
}

impl SingleUseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingLogin => "pending_login",
            Self::AuthorizationRequest => "authorization_request",
            Self::AuthorizationCode => "authorization_code",
            Self::UpstreamState => "upstream_state",
            Self::SamlRequestId => "saml_request_id",
            Self::SamlRequestSpent => "saml_request_spent",
            Self::SamlVerifiedLogin => "saml_verified_login",
            Self::SamlAssertionId => "saml_assertion_id",
        }
    }
}

/// One page of a user search: by username, email or display name, in username order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// Matched case-insensitively anywhere in the username, email or display name.
    pub text: Option<String>,
    /// The `(username, id)` of the last user of the previous page.
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// A link from an upstream identity to a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    pub connector_id: String,
    pub subject: String,
    pub created_at: UnixTime,
    /// The last sign-in through this identity.
    pub last_login_at: Option<UnixTime>,
}

/// One page of active SSO sessions, newest sign-in first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    pub user_id: Option<String>,
    pub connector_id: Option<String>,
    /// The `(auth_time, id)` of the last session of the previous page.
    pub before: Option<(UnixTime, String)>,
    pub limit: u32,
}

/// An active session with the name of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionListing {
    pub session: SsoSession,
    pub username: String,
}

/// One page of live grants, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantQuery {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// The `(created_at, id)` of the last grant of the previous page.
    pub before: Option<(UnixTime, String)>,
    pub limit: u32,
}

/// A user's newest live grant to one application, for the portal's "connected apps".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSummary {
    pub client_id: String,
    /// Space-separated, as granted.
    pub scope: String,
    /// The grant's creation or its newest refresh token's issue, whichever is later.
    pub last_used_at: UnixTime,
}

/// A live grant with when its refresh-token family last moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantListing {
    pub grant: GrantRecord,
    pub username: String,
    /// When the newest refresh token of the grant was issued, if it has any.
    pub last_refreshed_at: Option<UnixTime>,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub connector_id: Option<String>,
    pub kind: Option<String>,
    /// From this time on (inclusive).
    pub since: Option<UnixTime>,
    /// Before this time (exclusive).
    pub until: Option<UnixTime>,
    /// Below this event id (the previous page's last).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// An audit event with its id and the current name of the user it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditListing {
    pub id: i64,
    pub event: AuditEvent,
    pub username: Option<String>,
}

/// Sign-ins through one connector since a time, by outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignInCount {
    pub connector_id: String,
    pub successes: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentWithdrawal {
    pub consent_removed: bool,
    pub grants_revoked: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupReport {
    pub single_use: u64,
    pub sessions: u64,
    pub signing_keys: u64,
    pub login_attempts: u64,
    pub grants: u64,
    pub revoked_access_tokens: u64,
}

/// Users and the links from upstream identities to them.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Returns the user linked to `(connector_id, subject)`, creating both the user (from
    /// `profile`) and the link when there is none yet. The boolean says whether it was created.
    async fn get_or_create_linked_user(
        &self,
        connector_id: &str,
        subject: &str,
        profile: &UserProfile,
        now: UnixTime,
    ) -> StoreResult<(User, bool)>;
    async fn get_user(&self, id: &str) -> StoreResult<User>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn update_user_profile(&self, id: &str, profile: &UserProfile, now: UnixTime) -> StoreResult<User>;
    /// Disabling also revokes every grant the user gave, in the same transaction, so enabling
    /// the user again revives no token.
    async fn set_user_disabled(&self, id: &str, disabled: bool, now: UnixTime) -> StoreResult<()>;
    async fn find_linked_user_id(&self, connector_id: &str, subject: &str) -> StoreResult<Option<String>>;
    /// The user linked to the identity `(connector_id, subject)`, in one read.
    async fn find_linked_user(&self, connector_id: &str, subject: &str) -> StoreResult<Option<User>>;
    async fn search_users(&self, query: &UserQuery) -> StoreResult<Vec<User>>;
    async fn count_users(&self) -> StoreResult<u64>;
    async fn list_user_links(&self, user_id: &str) -> StoreResult<Vec<IdentityLink>>;
    /// Every `(subject, user id)` linked through one connector.
    async fn list_identity_links(&self, connector_id: &str) -> StoreResult<Vec<(String, String)>>;
    /// The enabled users whose email is `email`, compared without regard to ASCII case.
    async fn find_users_by_email(&self, email: &str) -> StoreResult<Vec<User>>;
    /// Links `(connector_id, subject)` to an existing user; `AlreadyExists` if it is linked.
    async fn link_identity(&self, connector_id: &str, subject: &str, user_id: &str, now: UnixTime) -> StoreResult<()>;
    /// Removes a link; `NotFound` if there is none for that user.
    async fn unlink_identity(&self, connector_id: &str, subject: &str, user_id: &str) -> StoreResult<()>;
    /// Moves every identity linked to `from` onto `to`; returns how many.
    async fn move_identity_links(&self, from: &str, to: &str) -> StoreResult<u64>;
}

/// Downstream applications.
#[async_trait]
pub trait ClientStore: Send + Sync {
    async fn upsert_client(&self, client: &ClientRecord) -> StoreResult<()>;
    /// Fails with `AlreadyExists` when the id is taken.
    async fn insert_client(&self, client: &ClientRecord) -> StoreResult<()>;
    async fn get_client(&self, client_id: &str) -> StoreResult<ClientRecord>;
    /// Reads the client, applies `change`, and writes the result with the version raised, in one
    /// transaction; `Conflict` when another writer changed it in between. `change` may refuse
    /// (with any error) to leave the client as it was.
    async fn update_client(
        &self,
        client_id: &str,
        change: &(dyn Fn(ClientRecord) -> StoreResult<ClientRecord> + Send + Sync),
    ) -> StoreResult<ClientRecord>;
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    /// Removes a client and, in the same transaction, revokes every grant it holds and queues a
    /// back-channel logout (to the client, with its URI captured now) for each session those
    /// grants came from. Returns how many were queued.
    /// `sid_of` turns a session id into the `sid` the client knows it by.
    async fn delete_client(&self, client_id: &str, now: UnixTime, sid_of: for<'s> fn(&'s str) -> String) -> StoreResult<u64>;
}

/// Upstream connectors.
#[async_trait]
pub trait ConnectorStore: Send + Sync {
    /// Creates or overwrites (raising the version): the configuration file's writer.
    async fn upsert_connector(&self, connector: &ConnectorRecord) -> StoreResult<()>;
    /// Creates a connector; `AlreadyExists` if the id is taken.
    async fn insert_connector(&self, connector: &ConnectorRecord) -> StoreResult<()>;
    /// Overwrites a connector created at run time if it is still at `read_version`, raising
    /// the version; `Conflict` if it changed meanwhile or the file manages it.
    async fn replace_connector(&self, connector: &ConnectorRecord, read_version: i64) -> StoreResult<()>;
    async fn get_connector(&self, id: &str) -> StoreResult<ConnectorRecord>;
    async fn list_connectors(&self) -> StoreResult<Vec<ConnectorRecord>>;
    async fn delete_connector(&self, id: &str) -> StoreResult<()>;
}

/// Token signing keys and SAML SP keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores `key` as the active key of its algorithm and retires the previous one, atomically.
    async fn activate_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Deletes a retired key before its time, so nothing it signed verifies any more; false
    /// when `kid` names no retired key (an active key is never deleted).
    async fn delete_retired_signing_key(&self, kid: &str) -> StoreResult<bool>;
    /// Every SAML SP key, newest first.
    async fn list_saml_sp_keys(&self) -> StoreResult<Vec<SamlSpKeyRecord>>;
    /// Fails with `AlreadyExists` when the key is stored active and its purpose has an active key.
    async fn insert_saml_sp_key(&self, key: &SamlSpKeyRecord) -> StoreResult<()>;
    /// Activates the waiting keys `kids` and retires the active keys of their purposes, in one
    /// transaction. `NotFound` when one of them is not a waiting key.
    async fn activate_saml_sp_keys(&self, kids: &[String], now: UnixTime) -> StoreResult<()>;
    async fn delete_saml_sp_key(&self, kid: &str) -> StoreResult<()>;
}

/// SSO sessions.
#[async_trait]
pub trait SsoSessionStore: Send + Sync {
    async fn create_sso_session(&self, session: &SsoSession) -> StoreResult<()>;
    /// Records a sign-in in one write: the user's and their identity link's (`subject` at the
    /// session's connector) last sign-in at the session's `auth_time`, the new session, the
    /// sign-in's audit event, and the taking of the single-use record `taking` names (the request
    /// the sign-in continues), whose payload it returns if it was there unexpired at `auth_time`.
    /// Fails with `NotFound`, writing and taking nothing, when the user is gone.
    async fn start_sso_session(
        &self,
        session: &SsoSession,
        subject: &str,
        signed_in: &AuditEvent,
        taking: Option<(SingleUseKind, &str)>,
    ) -> StoreResult<Option<String>>;
    async fn get_sso_session(&self, id: &str) -> StoreResult<SsoSession>;
    /// The session and its user in one read: `None` when either is gone.
    async fn session_with_user(&self, id: &str) -> StoreResult<Option<(SsoSession, User)>>;
    async fn touch_sso_session(&self, id: &str, now: UnixTime) -> StoreResult<()>;
    /// Revokes the session; revoking an already revoked session keeps the first time. True when
    /// this call did the revoking, so exactly one caller acts on a session's end.
    async fn revoke_sso_session(&self, id: &str, now: UnixTime) -> StoreResult<bool>;
    /// Records a fresh sign-in of the session's own user (`prompt=login`, `max_age`).
    async fn reauthenticate_sso_session(&self, id: &str, now: UnixTime) -> StoreResult<()>;
    /// Sessions that are not revoked, not past their absolute end, and seen within the last
    /// `idle_timeout_secs`, newest sign-in first, a page at a time.
    async fn search_sso_sessions(
        &self,
        query: &SessionQuery,
        now: UnixTime,
        idle_timeout_secs: i64,
    ) -> StoreResult<Vec<SessionListing>>;
    async fn count_active_sso_sessions(&self, now: UnixTime, idle_timeout_secs: i64) -> StoreResult<u64>;
    /// The unrevoked sessions (through one connector or any, of one user or all), by id;
    /// idle and expired ones included, since ending them still revokes their grants.
    async fn list_unrevoked_sso_sessions(&self, connector_id: Option<&str>, user_id: Option<&str>) -> StoreResult<Vec<String>>;
    /// Ends a session in one transaction: revokes it and its grants and, if this call did the
    /// revoking, queues a back-channel logout (as `sid`) for every client that holds a grant of
    /// it and has a back-channel logout URI. Returns how many were queued.
    async fn end_sso_session(&self, id: &str, sid: &str, now: UnixTime) -> StoreResult<u64>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// Events with their ids, newest first.
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditListing>>;
    /// Sign-ins (`login` events) since `since`, per connector.
    async fn count_sign_ins(&self, since: UnixTime) -> StoreResult<Vec<SignInCount>>;
}

/// Sign-in throttling.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Counts one attempt for `key` in the window starting at `window_start` (a new window
    /// starts the count again) and returns the count, atomically.
    async fn hit_login_counter(&self, key: &str, window_start: UnixTime, expires_at: UnixTime) -> StoreResult<u64>;
    /// Takes back one attempt counted in that window (a sign-in that succeeded).
    async fn release_login_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()>;
}

/// Single-use records: stored once, consumed at most once even by concurrent nodes.
#[async_trait]
pub trait SingleUseStore: Send + Sync {
    /// Fails with `AlreadyExists` when the key is already stored and unexpired.
    async fn put_single_use(&self, kind: SingleUseKind, key: &str, payload: &str, expires_at: UnixTime) -> StoreResult<()>;
    async fn peek_single_use(&self, kind: SingleUseKind, key: &str, now: UnixTime) -> StoreResult<Option<String>>;
    /// Deletes and returns the record atomically (one statement, or one transaction); `None`
    /// when absent, expired or already taken.
    async fn take_single_use(&self, kind: SingleUseKind, key: &str, now: UnixTime) -> StoreResult<Option<String>>;
    /// Takes the unexpired record as `take_single_use` does and, in the same write and only if
    /// this call took it, leaves a `mark` record under the same key until `mark_until` (one
    /// already there is kept). True when this call took it.
    async fn take_single_use_leaving_mark(
        &self,
        kind: SingleUseKind,
        key: &str,
        now: UnixTime,
        mark: SingleUseKind,
        mark_until: UnixTime,
    ) -> StoreResult<bool>;
    /// Stores both records or neither: `AlreadyExists` when either key is taken.
    async fn put_single_use_pair(&self, first: &NewSingleUse<'_>, second: &NewSingleUse<'_>) -> StoreResult<()>;
    /// Stores `record` and, in the same write, deletes `discarded` (kind and key) if it is there.
    async fn put_single_use_discarding(&self, record: &NewSingleUse<'_>, discarded: (SingleUseKind, &str)) -> StoreResult<()>;
}

/// A single-use record to store.
#[derive(Clone, Copy)]
pub struct NewSingleUse<'a> {
    pub kind: SingleUseKind,
    pub key: &'a str,
    pub payload: &'a str,
    pub expires_at: UnixTime,
}

/// The payload may be a code's grant or a verified sign-in, so `Debug` leaves it out.
impl std::fmt::Debug for NewSingleUse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSingleUse").field("kind", &self.kind).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Grants and their tokens.
#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn create_grant(&self, grant: &GrantRecord) -> StoreResult<()>;
    /// Spends the authorization code `code_hash` and creates the grant it was redeemed for (with
    /// its first refresh token and the `granted` audit event), in one transaction: `false`, and
    /// nothing written, when the code was already spent, never issued or has expired (an expired
    /// code is deleted all the same). A concurrent replay of the code waits for this to commit,
    /// so it finds the grant and revokes it.
    async fn redeem_code(
        &self,
        code_hash: &str,
        grant: &GrantRecord,
        refresh_token: Option<(&str, &RefreshTokenRecord)>,
        granted: &AuditEvent,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// The unexpired authorization code `code_hash` (`SingleUseKind::AuthorizationCode`): its
    /// payload as stored, with the SSO session the payload's `session_id` names and that
    /// session's user, in one read (a redemption needs all three). `None` when the code is
    /// unknown, spent or expired; no session when the session or its user is gone.
    async fn peek_code(&self, code_hash: &str, now: UnixTime) -> StoreResult<Option<PeekedCode>>;
    async fn grant_state(&self, id: &str) -> StoreResult<Option<GrantState>>;
    /// Grants that are neither revoked nor expired.
    async fn search_grants(&self, query: &GrantQuery, now: UnixTime) -> StoreResult<Vec<GrantListing>>;
    /// A user's newest live grant per application, in client id order. Its cost follows the
    /// number of applications, not of the user's grants (index `grants_user_client_live`).
    async fn latest_user_grants(&self, user_id: &str, now: UnixTime) -> StoreResult<Vec<GrantSummary>>;
    /// How many of one client's grants are neither revoked nor expired.
    async fn count_client_grants(&self, client_id: &str, now: UnixTime) -> StoreResult<u64>;
    /// Revokes a grant, keeping the first revocation time; false when there is no such grant.
    async fn revoke_grant(&self, id: &str, now: UnixTime) -> StoreResult<bool>;
    /// Revokes every live grant of a user (signing out everywhere); returns how many.
    async fn revoke_user_grants(&self, user_id: &str, now: UnixTime) -> StoreResult<u64>;
    /// Revokes the grant created by the code with this digest; returns its id.
    async fn revoke_grant_by_code(&self, code_hash: &str, now: UnixTime) -> StoreResult<Option<String>>;
    async fn insert_refresh_token(&self, token_hash: &str, record: &RefreshTokenRecord) -> StoreResult<()>;
    async fn find_refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>>;
    /// `find_refresh_token`, `grant_state` and the grant's user in one read: `None` when the
    /// token, its grant or the user is gone.
    async fn refresh_token_state(&self, token_hash: &str) -> StoreResult<Option<RefreshTokenState>>;
    /// Spends the unexpired, unrotated token `old_hash` and stores `new` in its place, atomically:
    /// of two concurrent rotations of one token, exactly one gets `Rotated`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshTokenRecord,
        now: UnixTime,
    ) -> StoreResult<Rotation>;
    async fn revoke_access_token(&self, jti: &str, expires_at: UnixTime) -> StoreResult<()>;
    async fn is_access_token_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// The `jti` of revoked access tokens not yet expired at `now`, at most `limit` of them.
    async fn list_revoked_access_tokens(&self, now: UnixTime, limit: usize) -> StoreResult<Vec<String>>;
}

/// Consent.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    async fn get_consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Vec<String>>>;
    async fn put_consent(&self, user_id: &str, client_id: &str, scopes: &[String], now: UnixTime) -> StoreResult<()>;
    /// Removes a user's approval of a client and revokes every grant the user gave it, in one
    /// transaction: what the app already holds goes with the approval.
    async fn withdraw_consent(&self, user_id: &str, client_id: &str, now: UnixTime) -> StoreResult<ConsentWithdrawal>;
    /// The clients a user approved, with the scopes approved for each.
    async fn list_consents(&self, user_id: &str) -> StoreResult<Vec<(String, Vec<String>)>>;
}

/// The back-channel logout queue (filled by ending sessions and removing clients).
#[async_trait]
pub trait BackchannelStore: Send + Sync {
    /// Leases up to `limit` due notifications to this caller until `lease_until`.
    async fn lease_backchannel_logouts(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: u32,
    ) -> StoreResult<Vec<BackchannelLogout>>;
    async fn delete_backchannel_logout(&self, id: &str) -> StoreResult<()>;
    async fn retry_backchannel_logout(&self, id: &str, attempts: i64, next_attempt_at: UnixTime) -> StoreResult<()>;
}

/// Everything Gatehouse stores, one area per trait; each database implements them all.
#[async_trait]
pub trait Store:
    UserStore
    + ClientStore
    + ConnectorStore
    + KeyStore
    + SsoSessionStore
    + AuditStore
    + ThrottleStore
    + SingleUseStore
    + GrantStore
    + ConsentStore
    + BackchannelStore
    + 'static
{
    async fn ping(&self) -> StoreResult<()>;
    /// Returns once every write committed so far is durable: for an answer that rests on a
    /// write another request made and may not have synced yet.
    async fn sync_writes(&self) -> StoreResult<()>;
    /// Deletes expired single-use records, sessions past their end, attempt counters of past
    /// windows, and retired signing keys retired before `retired_key_cutoff`.
    async fn delete_expired(&self, now: UnixTime, retired_key_cutoff: UnixTime) -> StoreResult<CleanupReport>;
}
