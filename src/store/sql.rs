//! The SQL both databases share. Every statement here is written in the common subset of
//! SQLite and PostgreSQL (`$n` parameters, `RETURNING`, `ON CONFLICT`, partial indexes), so the
//! two implementations are one body instantiated per pool type.

use crate::store::{
    AuditEvent, AuditListing, AuditOutcome, BackchannelLogout, ClientRecord, ConnectorRecord, GrantListing, GrantRecord,
    GrantState, IdentityLink, RefreshTokenRecord, RefreshTokenState, SessionListing, SigningKeyRecord, SsoSession, StoreError,
    StoreResult, User,
};

pub(super) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| String::from("[]"))
}

/// A record stored as one JSON document. Serialising plain strings and lists cannot fail; if it
/// did, `null` would make the row unreadable (an error) rather than silently permissive.
pub(super) fn to_json_document<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("null"))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(StoreError::from)
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    email_verified: bool,
    display_name: Option<String>,
    groups_json: String,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
    last_login_at: Option<i64>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(row: UserRow) -> StoreResult<Self> {
        Ok(User {
            groups: from_json(&row.groups_json)?,
            id: row.id,
            username: row.username,
            email: row.email,
            email_verified: row.email_verified,
            display_name: row.display_name,
            disabled: row.disabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_login_at: row.last_login_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
    client_id: String,
    secret_hash: Option<String>,
    redirect_uris_json: String,
    post_logout_redirect_uris_json: String,
    scopes_json: String,
    grant_types_json: String,
    name: String,
    first_party: bool,
    signing_alg: String,
    access_token_lifetime_secs: Option<i64>,
    issue_refresh_token: bool,
    default_audience: Option<String>,
    resources_json: String,
    backchannel_logout_uri: Option<String>,
    introspect_any: bool,
    managed_by_config: bool,
    created_at: i64,
    updated_at: i64,
    version: i64,
    previous_secret_hash: Option<String>,
    previous_secret_expires_at: Option<i64>,
    access_policy_json: String,
    portal_json: String,
}

impl TryFrom<ClientRow> for ClientRecord {
    type Error = StoreError;
    fn try_from(row: ClientRow) -> StoreResult<Self> {
        Ok(ClientRecord {
            redirect_uris: from_json(&row.redirect_uris_json)?,
            post_logout_redirect_uris: from_json(&row.post_logout_redirect_uris_json)?,
            scopes: from_json(&row.scopes_json)?,
            grant_types: from_json(&row.grant_types_json)?,
            resources: from_json(&row.resources_json)?,
            access_token_lifetime_secs: row.access_token_lifetime_secs,
            issue_refresh_token: row.issue_refresh_token,
            default_audience: row.default_audience,
            backchannel_logout_uri: row.backchannel_logout_uri,
            introspect_any: row.introspect_any,
            client_id: row.client_id,
            secret_hash: row.secret_hash,
            name: row.name,
            first_party: row.first_party,
            signing_alg: row.signing_alg,
            managed_by_config: row.managed_by_config,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            previous_secret_hash: row.previous_secret_hash,
            previous_secret_expires_at: row.previous_secret_expires_at,
            access: from_json(&row.access_policy_json)?,
            portal: from_json(&row.portal_json)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConnectorRow {
    id: String,
    kind: String,
    name: String,
    email_domains_json: String,
    settings: String,
    managed_by_config: bool,
    created_at: i64,
    updated_at: i64,
    version: i64,
    disabled: bool,
    sealed_secret: Option<Vec<u8>>,
}

impl TryFrom<ConnectorRow> for ConnectorRecord {
    type Error = StoreError;
    fn try_from(row: ConnectorRow) -> StoreResult<Self> {
        Ok(ConnectorRecord {
            email_domains: from_json(&row.email_domains_json)?,
            id: row.id,
            kind: row.kind,
            name: row.name,
            settings: row.settings,
            managed_by_config: row.managed_by_config,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            disabled: row.disabled,
            sealed_secret: row.sealed_secret,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SigningKeyRow {
    kid: String,
    alg: String,
    public_jwk: String,
    sealed_private_key: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
}

impl From<SigningKeyRow> for SigningKeyRecord {
    fn from(row: SigningKeyRow) -> Self {
        SigningKeyRecord {
            kid: row.kid,
            alg: row.alg,
            public_jwk: row.public_jwk,
            sealed_private_key: row.sealed_private_key,
            created_at: row.created_at,
            retired_at: row.retired_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SsoSessionRow {
    id: String,
    user_id: String,
    connector_id: String,
    auth_time: i64,
    last_seen_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl From<SsoSessionRow> for SsoSession {
    fn from(row: SsoSessionRow) -> Self {
        SsoSession {
            id: row.id,
            user_id: row.user_id,
            connector_id: row.connector_id,
            auth_time: row.auth_time,
            last_seen_at: row.last_seen_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            ip: row.ip,
            user_agent: row.user_agent,
        }
    }
}

/// A user's columns beside another table's, each named `user_<column>` (`JOINED_USER_COLUMNS`).
#[derive(sqlx::FromRow)]
pub(super) struct JoinedUserRow {
    user_row_id: String,
    user_username: String,
    user_email: Option<String>,
    user_email_verified: bool,
    user_display_name: Option<String>,
    user_groups_json: String,
    user_disabled: bool,
    user_created_at: i64,
    user_updated_at: i64,
    user_last_login_at: Option<i64>,
}

impl TryFrom<JoinedUserRow> for User {
    type Error = StoreError;
    fn try_from(row: JoinedUserRow) -> StoreResult<Self> {
        UserRow {
            id: row.user_row_id,
            username: row.user_username,
            email: row.user_email,
            email_verified: row.user_email_verified,
            display_name: row.user_display_name,
            groups_json: row.user_groups_json,
            disabled: row.user_disabled,
            created_at: row.user_created_at,
            updated_at: row.user_updated_at,
            last_login_at: row.user_last_login_at,
        }
        .try_into()
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionWithUserRow {
    #[sqlx(flatten)]
    session: SsoSessionRow,
    #[sqlx(flatten)]
    user: JoinedUserRow,
}

impl TryFrom<SessionWithUserRow> for (SsoSession, User) {
    type Error = StoreError;
    fn try_from(row: SessionWithUserRow) -> StoreResult<Self> {
        Ok((row.session.into(), row.user.try_into()?))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshTokenStateRow {
    token_issued_at: i64,
    token_expires_at: i64,
    token_rotated_at: Option<i64>,
    #[sqlx(flatten)]
    grant: GrantStateRow,
    #[sqlx(flatten)]
    user: JoinedUserRow,
}

impl TryFrom<RefreshTokenStateRow> for RefreshTokenState {
    type Error = StoreError;
    fn try_from(row: RefreshTokenStateRow) -> StoreResult<Self> {
        let grant: GrantState = row.grant.try_into()?;
        Ok(RefreshTokenState {
            token: RefreshTokenRecord {
                grant_id: grant.grant.id.clone(),
                issued_at: row.token_issued_at,
                expires_at: row.token_expires_at,
                rotated_at: row.token_rotated_at,
            },
            grant,
            user: row.user.try_into()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct GrantStateRow {
    id: String,
    client_id: String,
    user_id: String,
    session_id: Option<String>,
    code_hash: Option<String>,
    scope: String,
    audience: String,
    auth_time: i64,
    amr_json: String,
    idp: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    user_disabled: bool,
    session_revoked: bool,
}

impl TryFrom<GrantStateRow> for GrantState {
    type Error = StoreError;
    fn try_from(row: GrantStateRow) -> StoreResult<Self> {
        Ok(GrantState {
            grant: GrantRecord {
                amr: from_json(&row.amr_json)?,
                id: row.id,
                client_id: row.client_id,
                user_id: row.user_id,
                session_id: row.session_id,
                code_hash: row.code_hash,
                scope: row.scope,
                audience: row.audience,
                auth_time: row.auth_time,
                idp: row.idp,
                created_at: row.created_at,
                expires_at: row.expires_at,
                revoked_at: row.revoked_at,
            },
            user_disabled: row.user_disabled,
            session_revoked: row.session_revoked,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct GrantListingRow {
    #[sqlx(flatten)]
    state: GrantStateRow,
    username: String,
    last_refreshed_at: Option<i64>,
}

impl TryFrom<GrantListingRow> for GrantListing {
    type Error = StoreError;
    fn try_from(row: GrantListingRow) -> StoreResult<Self> {
        Ok(GrantListing {
            grant: GrantState::try_from(row.state)?.grant,
            username: row.username,
            last_refreshed_at: row.last_refreshed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionListingRow {
    #[sqlx(flatten)]
    session: SsoSessionRow,
    username: String,
}

impl From<SessionListingRow> for SessionListing {
    fn from(row: SessionListingRow) -> Self {
        SessionListing { session: row.session.into(), username: row.username }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditListingRow {
    id: i64,
    #[sqlx(flatten)]
    event: AuditRow,
    username: Option<String>,
}

impl TryFrom<AuditListingRow> for AuditListing {
    type Error = StoreError;
    fn try_from(row: AuditListingRow) -> StoreResult<Self> {
        Ok(AuditListing { id: row.id, event: row.event.try_into()?, username: row.username })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct IdentityLinkRow {
    connector_id: String,
    subject: String,
    created_at: i64,
    last_login_at: Option<i64>,
}

impl From<IdentityLinkRow> for IdentityLink {
    fn from(row: IdentityLinkRow) -> Self {
        IdentityLink {
            connector_id: row.connector_id,
            subject: row.subject,
            created_at: row.created_at,
            last_login_at: row.last_login_at,
        }
    }
}

/// A `LIKE` pattern matching `text` anywhere, case-insensitively (the column is lowered too),
/// with the pattern characters of `text` escaped by `\`.
pub(super) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshTokenRow {
    grant_id: String,
    issued_at: i64,
    expires_at: i64,
    rotated_at: Option<i64>,
}

impl From<RefreshTokenRow> for RefreshTokenRecord {
    fn from(row: RefreshTokenRow) -> Self {
        RefreshTokenRecord {
            grant_id: row.grant_id,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            rotated_at: row.rotated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct BackchannelRow {
    id: String,
    client_id: String,
    subject: String,
    sid: String,
    attempts: i64,
    created_at: i64,
    uri: Option<String>,
    signing_alg: Option<String>,
}

impl From<BackchannelRow> for BackchannelLogout {
    fn from(row: BackchannelRow) -> Self {
        BackchannelLogout {
            id: row.id,
            client_id: row.client_id,
            subject: row.subject,
            sid: row.sid,
            attempts: row.attempts,
            created_at: row.created_at,
            uri: row.uri,
            signing_alg: row.signing_alg,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    time: i64,
    kind: String,
    outcome: String,
    actor: Option<String>,
    user_id: Option<String>,
    client_id: Option<String>,
    connector_id: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(row: AuditRow) -> StoreResult<Self> {
        let outcome = match row.outcome.as_str() {
            "success" => AuditOutcome::Success,
            "failure" => AuditOutcome::Failure,
            other => return Err(StoreError::Corrupt(format!("unknown audit outcome `{other}`"))),
        };
        Ok(AuditEvent {
            time: row.time,
            kind: row.kind,
            outcome,
            actor: row.actor,
            user_id: row.user_id,
            client_id: row.client_id,
            connector_id: row.connector_id,
            ip: row.ip,
            detail: row.detail,
        })
    }
}

pub(super) const USER_COLUMNS: &str =
    "id, username, email, email_verified, display_name, groups_json, disabled, created_at, updated_at, last_login_at";
pub(super) const CLIENT_COLUMNS: &str = "client_id, secret_hash, redirect_uris_json, post_logout_redirect_uris_json, scopes_json, \
     grant_types_json, name, first_party, signing_alg, access_token_lifetime_secs, issue_refresh_token, default_audience, \
     resources_json, backchannel_logout_uri, introspect_any, managed_by_config, created_at, updated_at, version, \
     previous_secret_hash, previous_secret_expires_at, access_policy_json, portal_json";
/// One parameter per `CLIENT_COLUMNS` entry.
pub(super) const CLIENT_PARAMS: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23";
pub(super) const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.session_id, g.code_hash, g.scope, g.audience, \
     g.auth_time, g.amr_json, g.idp, g.created_at, g.expires_at, g.revoked_at";
pub(super) const CONNECTOR_INSERT: &str = "INSERT INTO connectors (id, kind, name, email_domains_json, settings, \
     managed_by_config, created_at, updated_at, version, disabled, sealed_secret) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(super) const CONNECTOR_COLUMNS: &str =
    "id, kind, name, email_domains_json, settings, managed_by_config, created_at, updated_at, version, disabled, sealed_secret";
pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, connector_id, auth_time, last_seen_at, expires_at, revoked_at, ip, user_agent";
/// `USER_COLUMNS` of `users u`, for `JoinedUserRow`.
pub(super) const JOINED_USER_COLUMNS: &str = "u.id AS user_row_id, u.username AS user_username, u.email AS user_email, \
     u.email_verified AS user_email_verified, u.display_name AS user_display_name, u.groups_json AS user_groups_json, \
     u.disabled AS user_disabled, u.created_at AS user_created_at, u.updated_at AS user_updated_at, \
     u.last_login_at AS user_last_login_at";
/// The user an identity is linked to (`UserStore::find_linked_user`).
pub(super) static LINKED_USER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {JOINED_USER_COLUMNS} FROM identity_links l JOIN users u ON u.id = l.user_id \
         WHERE l.connector_id = $1 AND l.subject = $2"
    )
});
/// A session and its user, in one read (`SsoSessionStore::session_with_user`).
pub(super) static SESSION_WITH_USER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT s.id, s.user_id, s.connector_id, s.auth_time, s.last_seen_at, s.expires_at, s.revoked_at, s.ip, \
         s.user_agent, {JOINED_USER_COLUMNS} FROM sso_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
    )
});
/// A refresh token with its grant's state and the grant's user (`GrantStore::refresh_token_state`).
/// As in `grant_state`, a session row cleaned up after its natural end does not revoke the grant.
pub(super) static REFRESH_TOKEN_STATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT r.issued_at AS token_issued_at, r.expires_at AS token_expires_at, r.rotated_at AS token_rotated_at, \
         {GRANT_COLUMNS}, (s.revoked_at IS NOT NULL) AS session_revoked, {JOINED_USER_COLUMNS} \
         FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id JOIN users u ON u.id = g.user_id \
         LEFT JOIN sso_sessions s ON s.id = g.session_id WHERE r.token_hash = $1"
    )
});

/// Implements `Store` for a struct with a `pool` field of the given sqlx database.
macro_rules! impl_sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Writes done alone and inside a larger transaction alike.
            async fn insert_grant<'c, E: sqlx::Executor<'c, Database = $db>>(
                executor: E,
                grant: &$crate::store::GrantRecord,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO grants (id, client_id, user_id, session_id, code_hash, scope, audience, auth_time, amr_json, idp, \
                     created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&grant.id)
                .bind(&grant.client_id)
                .bind(&grant.user_id)
                .bind(&grant.session_id)
                .bind(&grant.code_hash)
                .bind(&grant.scope)
                .bind(&grant.audience)
                .bind(grant.auth_time)
                .bind($crate::store::sql::to_json(&grant.amr))
                .bind(&grant.idp)
                .bind(grant.created_at)
                .bind(grant.expires_at)
                .bind(grant.revoked_at)
                .execute(executor)
                .await?;
                Ok(())
            }

            async fn insert_refresh<'c, E: sqlx::Executor<'c, Database = $db>>(
                executor: E,
                token_hash: &str,
                record: &$crate::store::RefreshTokenRecord,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token_hash)
                .bind(&record.grant_id)
                .bind(record.issued_at)
                .bind(record.expires_at)
                .bind(record.rotated_at)
                .execute(executor)
                .await?;
                Ok(())
            }

            /// `sql` with a client's columns bound as `$1`…`$23`, in `CLIENT_COLUMNS` order.
            fn bind_client<'q>(
                sql: &'q str,
                client: &'q $crate::store::ClientRecord,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                use $crate::store::sql::{to_json, to_json_document};
                sqlx::query(sql)
                    .bind(&client.client_id)
                    .bind(&client.secret_hash)
                    .bind(to_json(&client.redirect_uris))
                    .bind(to_json(&client.post_logout_redirect_uris))
                    .bind(to_json(&client.scopes))
                    .bind(to_json(&client.grant_types))
                    .bind(&client.name)
                    .bind(client.first_party)
                    .bind(&client.signing_alg)
                    .bind(client.access_token_lifetime_secs)
                    .bind(client.issue_refresh_token)
                    .bind(&client.default_audience)
                    .bind(to_json(&client.resources))
                    .bind(&client.backchannel_logout_uri)
                    .bind(client.introspect_any)
                    .bind(client.managed_by_config)
                    .bind(client.created_at)
                    .bind(client.updated_at)
                    .bind(client.version)
                    .bind(&client.previous_secret_hash)
                    .bind(client.previous_secret_expires_at)
                    .bind(to_json_document(&client.access))
                    .bind(to_json_document(&client.portal))
            }

            /// The connector's columns bound as `$1`…`$11`: id, kind, name, email domains,
            /// settings, managed_by_config, created_at, updated_at, version, disabled, secret.
            fn bind_connector<'q>(
                sql: &'q str,
                connector: &'q $crate::store::ConnectorRecord,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                sqlx::query(sql)
                    .bind(&connector.id)
                    .bind(&connector.kind)
                    .bind(&connector.name)
                    .bind($crate::store::sql::to_json(&connector.email_domains))
                    .bind(&connector.settings)
                    .bind(connector.managed_by_config)
                    .bind(connector.created_at)
                    .bind(connector.updated_at)
                    .bind(connector.version)
                    .bind(connector.disabled)
                    .bind(&connector.sealed_secret)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::UserStore for $store {
            async fn get_or_create_linked_user(
                &self,
                connector_id: &str,
                subject: &str,
                profile: &$crate::store::UserProfile,
                now: i64,
            ) -> $crate::store::StoreResult<($crate::store::User, bool)> {
                if let Some(user) = self.find_linked_user(connector_id, subject).await? {
                    return Ok((user, false));
                }
                let id = uuid::Uuid::new_v4().to_string();
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO users (id, username, email, email_verified, display_name, groups_json, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&id)
                .bind(&profile.username)
                .bind(&profile.email)
                .bind(profile.email_verified)
                .bind(&profile.display_name)
                .bind($crate::store::sql::to_json(&profile.groups))
                .bind(false)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let linked = sqlx::query(
                    "INSERT INTO identity_links (connector_id, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(connector_id)
                .bind(subject)
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await;
                match linked.map_err($crate::store::StoreError::from) {
                    Ok(_) => {
                        tx.commit().await?;
                        drop(writer);
                        self.durable().await?;
                        Ok((self.get_user(&id).await?, true))
                    }
                    // Another node linked this identity first: use its user, drop ours.
                    Err($crate::store::StoreError::AlreadyExists) => {
                        tx.rollback().await?;
                        drop(writer);
                        // The other request's link may not be on disk yet.
                        self.durable().await?;
                        let user =
                            self.find_linked_user(connector_id, subject).await?.ok_or($crate::store::StoreError::NotFound)?;
                        Ok((user, false))
                    }
                    Err(err) => Err(err),
                }
            }

            async fn get_user(&self, id: &str) -> $crate::store::StoreResult<$crate::store::User> {
                let sql = format!("SELECT {} FROM users WHERE id = $1", $crate::store::sql::USER_COLUMNS);
                let row: $crate::store::sql::UserRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *self.reader().await?).await?;
                row.try_into()
            }

            async fn list_users(&self) -> $crate::store::StoreResult<Vec<$crate::store::User>> {
                let sql = format!("SELECT {} FROM users ORDER BY username, id", $crate::store::sql::USER_COLUMNS);
                let rows: Vec<$crate::store::sql::UserRow> = sqlx::query_as(&sql).fetch_all(&mut *self.reader().await?).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn update_user_profile(
                &self,
                id: &str,
                profile: &$crate::store::UserProfile,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let result = sqlx::query(
                    "UPDATE users SET username = $2, email = $3, email_verified = $4, display_name = $5, groups_json = $6, \
                     updated_at = $7 WHERE id = $1",
                )
                .bind(id)
                .bind(&profile.username)
                .bind(&profile.email)
                .bind(profile.email_verified)
                .bind(&profile.display_name)
                .bind($crate::store::sql::to_json(&profile.groups))
                .bind(now)
                .execute(&self.pool)
                .await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                self.get_user(id).await
            }

            async fn set_user_disabled(&self, id: &str, disabled: bool, now: i64) -> $crate::store::StoreResult<()> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                let result = sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(disabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                if disabled {
                    sqlx::query("UPDATE grants SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(())
            }

            async fn find_linked_user_id(&self, connector_id: &str, subject: &str) -> $crate::store::StoreResult<Option<String>> {
                let user_id: Option<String> =
                    sqlx::query_scalar("SELECT user_id FROM identity_links WHERE connector_id = $1 AND subject = $2")
                        .bind(connector_id)
                        .bind(subject)
                        .fetch_optional(&mut *self.reader().await?)
                        .await?;
                Ok(user_id)
            }

            async fn find_linked_user(
                &self,
                connector_id: &str,
                subject: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                let sql = $crate::store::sql::LINKED_USER.as_str();
                let row: Option<$crate::store::sql::JoinedUserRow> =
                    sqlx::query_as(sql).bind(connector_id).bind(subject).fetch_optional(&mut *self.reader().await?).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn search_users(&self, query: &$crate::store::UserQuery) -> $crate::store::StoreResult<Vec<$crate::store::User>> {
                let pattern = query.text.as_deref().filter(|t| !t.is_empty()).map($crate::store::sql::contains_pattern);
                let (after_name, after_id) = query.after.clone().unzip();
                let sql = format!(
                    "SELECT {} FROM users WHERE ($1 IS NULL OR lower(username) LIKE $1 ESCAPE '\\' \
                     OR lower(COALESCE(email, '')) LIKE $1 ESCAPE '\\' OR lower(COALESCE(display_name, '')) LIKE $1 ESCAPE '\\') \
                     AND ($2 IS NULL OR username > $2 OR (username = $2 AND id > $3)) \
                     ORDER BY username, id LIMIT $4",
                    $crate::store::sql::USER_COLUMNS
                );
                let rows: Vec<$crate::store::sql::UserRow> = sqlx::query_as(&sql)
                    .bind(pattern)
                    .bind(after_name)
                    .bind(after_id)
                    .bind(i64::from(query.limit))
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn count_users(&self) -> $crate::store::StoreResult<u64> {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&mut *self.reader().await?).await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn list_user_links(&self, user_id: &str) -> $crate::store::StoreResult<Vec<$crate::store::IdentityLink>> {
                let rows: Vec<$crate::store::sql::IdentityLinkRow> = sqlx::query_as(
                    "SELECT connector_id, subject, created_at, last_login_at FROM identity_links WHERE user_id = $1 \
                     ORDER BY connector_id, subject",
                )
                .bind(user_id)
                .fetch_all(&mut *self.reader().await?)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn move_identity_links(&self, from: &str, to: &str) -> $crate::store::StoreResult<u64> {
                let result = sqlx::query("UPDATE identity_links SET user_id = $2 WHERE user_id = $1")
                    .bind(from)
                    .bind(to)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(result.rows_affected())
            }

            async fn find_users_by_email(&self, email: &str) -> $crate::store::StoreResult<Vec<$crate::store::User>> {
                let sql = format!(
                    "SELECT {} FROM users WHERE LOWER(email) = LOWER($1) AND disabled = FALSE ORDER BY created_at, id LIMIT 10",
                    $crate::store::sql::USER_COLUMNS
                );
                let rows: Vec<$crate::store::sql::UserRow> = sqlx::query_as(&sql).bind(email).fetch_all(&mut *self.reader().await?).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn link_identity(&self, connector_id: &str, subject: &str, user_id: &str, now: i64) -> $crate::store::StoreResult<()> {
                sqlx::query("INSERT INTO identity_links (connector_id, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(connector_id)
                    .bind(subject)
                    .bind(user_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(())
            }

            async fn unlink_identity(&self, connector_id: &str, subject: &str, user_id: &str) -> $crate::store::StoreResult<()> {
                let result = sqlx::query("DELETE FROM identity_links WHERE connector_id = $1 AND subject = $2 AND user_id = $3")
                    .bind(connector_id)
                    .bind(subject)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                Ok(())
            }

            async fn list_identity_links(&self, connector_id: &str) -> $crate::store::StoreResult<Vec<(String, String)>> {
                let links: Vec<(String, String)> =
                    sqlx::query_as("SELECT subject, user_id FROM identity_links WHERE connector_id = $1 ORDER BY subject")
                        .bind(connector_id)
                        .fetch_all(&mut *self.reader().await?)
                        .await?;
                Ok(links)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ClientStore for $store {
            async fn upsert_client(&self, client: &$crate::store::ClientRecord) -> $crate::store::StoreResult<()> {
                let sql = format!(
                    "INSERT INTO clients ({}) VALUES ({}) \
                     ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, \
                     redirect_uris_json = excluded.redirect_uris_json, \
                     post_logout_redirect_uris_json = excluded.post_logout_redirect_uris_json, \
                     scopes_json = excluded.scopes_json, grant_types_json = excluded.grant_types_json, name = excluded.name, \
                     first_party = excluded.first_party, signing_alg = excluded.signing_alg, \
                     access_token_lifetime_secs = excluded.access_token_lifetime_secs, \
                     issue_refresh_token = excluded.issue_refresh_token, default_audience = excluded.default_audience, \
                     resources_json = excluded.resources_json, backchannel_logout_uri = excluded.backchannel_logout_uri, \
                     managed_by_config = excluded.managed_by_config, updated_at = excluded.updated_at, \
                     introspect_any = excluded.introspect_any, version = clients.version + 1, \
                     previous_secret_hash = excluded.previous_secret_hash, \
                     previous_secret_expires_at = excluded.previous_secret_expires_at",
                    $crate::store::sql::CLIENT_COLUMNS,
                    $crate::store::sql::CLIENT_PARAMS
                );
                Self::bind_client(&sql, client).execute(&self.pool).await?;
                self.durable().await?;
                Ok(())
            }

            async fn insert_client(&self, client: &$crate::store::ClientRecord) -> $crate::store::StoreResult<()> {
                let sql = format!(
                    "INSERT INTO clients ({}) VALUES ({})",
                    $crate::store::sql::CLIENT_COLUMNS,
                    $crate::store::sql::CLIENT_PARAMS
                );
                Self::bind_client(&sql, client).execute(&self.pool).await?;
                self.durable().await?;
                Ok(())
            }

            async fn get_client(&self, client_id: &str) -> $crate::store::StoreResult<$crate::store::ClientRecord> {
                let sql = format!("SELECT {} FROM clients WHERE client_id = $1", $crate::store::sql::CLIENT_COLUMNS);
                let row: $crate::store::sql::ClientRow = sqlx::query_as(&sql).bind(client_id).fetch_one(&mut *self.reader().await?).await?;
                row.try_into()
            }

            async fn update_client(
                &self,
                client_id: &str,
                change: &(dyn Fn($crate::store::ClientRecord) -> $crate::store::StoreResult<$crate::store::ClientRecord> + Send + Sync),
            ) -> $crate::store::StoreResult<$crate::store::ClientRecord> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                let sql = format!("SELECT {} FROM clients WHERE client_id = $1", $crate::store::sql::CLIENT_COLUMNS);
                let row: $crate::store::sql::ClientRow = sqlx::query_as(&sql).bind(client_id).fetch_one(&mut *tx).await?;
                let old: $crate::store::ClientRecord = row.try_into()?;
                let read_version = old.version;
                let mut new = change(old)?;
                new.client_id = client_id.to_owned();
                new.version = read_version + 1;
                // The version condition makes the write a compare-and-swap on PostgreSQL too,
                // where another transaction may have changed the row since it was read.
                let sql = format!(
                    "UPDATE clients SET ({}) = ({}) WHERE client_id = $1 AND version = $24",
                    $crate::store::sql::CLIENT_COLUMNS,
                    $crate::store::sql::CLIENT_PARAMS
                );
                let written = Self::bind_client(&sql, &new).bind(read_version).execute(&mut *tx).await?;
                if written.rows_affected() == 0 {
                    return Err($crate::store::StoreError::Conflict);
                }
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(new)
            }

            async fn list_clients(&self) -> $crate::store::StoreResult<Vec<$crate::store::ClientRecord>> {
                let sql = format!("SELECT {} FROM clients ORDER BY client_id", $crate::store::sql::CLIENT_COLUMNS);
                let rows: Vec<$crate::store::sql::ClientRow> = sqlx::query_as(&sql).fetch_all(&mut *self.reader().await?).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_client(
                &self,
                client_id: &str,
                now: i64,
                sid_of: for<'s> fn(&'s str) -> String,
            ) -> $crate::store::StoreResult<u64> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                // Revoking first takes the write lock and leaves exactly the grants this call ended.
                let ended: Vec<(String, String)> = sqlx::query_as(
                    "UPDATE grants SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     RETURNING COALESCE(session_id, ''), user_id",
                )
                .bind(client_id)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let target: Option<(Option<String>, String)> =
                    sqlx::query_as("SELECT backchannel_logout_uri, signing_alg FROM clients WHERE client_id = $1")
                        .bind(client_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((uri, signing_alg)) = target else {
                    tx.rollback().await?;
                    return Err($crate::store::StoreError::NotFound);
                };
                let mut queued = 0;
                if let Some(uri) = uri {
                    let mut sessions: Vec<&(String, String)> = ended.iter().filter(|(session, _)| !session.is_empty()).collect();
                    sessions.sort();
                    sessions.dedup();
                    for (session_id, user_id) in sessions {
                        let sid = sid_of(session_id);
                        // The id is the one a session's end would queue, so the app hears once.
                        queued += sqlx::query(
                            "INSERT INTO backchannel_logouts (id, client_id, subject, sid, attempts, next_attempt_at, lease_until, \
                             created_at, uri, signing_alg) VALUES ($1 || '.' || $2, $2, $3, $1, 0, $4, 0, $4, $5, $6) \
                             ON CONFLICT (id) DO NOTHING",
                        )
                        .bind(&sid)
                        .bind(client_id)
                        .bind(user_id)
                        .bind(now)
                        .bind(&uri)
                        .bind(&signing_alg)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                }
                sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?;
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(queued)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ConnectorStore for $store {
            async fn upsert_connector(&self, connector: &$crate::store::ConnectorRecord) -> $crate::store::StoreResult<()> {
                let sql = format!(
                    "{CONNECTOR_INSERT} ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, \
                     email_domains_json = excluded.email_domains_json, settings = excluded.settings, \
                     managed_by_config = excluded.managed_by_config, updated_at = excluded.updated_at, \
                     version = connectors.version + 1, disabled = excluded.disabled, sealed_secret = excluded.sealed_secret",
                    CONNECTOR_INSERT = $crate::store::sql::CONNECTOR_INSERT
                );
                Self::bind_connector(&sql, connector).execute(&self.pool).await?;
                self.durable().await?;
                Ok(())
            }

            async fn insert_connector(&self, connector: &$crate::store::ConnectorRecord) -> $crate::store::StoreResult<()> {
                Self::bind_connector($crate::store::sql::CONNECTOR_INSERT, connector).execute(&self.pool).await?;
                self.durable().await?;
                Ok(())
            }

            async fn replace_connector(
                &self,
                connector: &$crate::store::ConnectorRecord,
                read_version: i64,
            ) -> $crate::store::StoreResult<()> {
                // The version condition makes this a compare-and-swap: of two admins editing
                // the version they read, the second gets a conflict, not a silent overwrite.
                let result = sqlx::query(
                    "UPDATE connectors SET kind = $2, name = $3, email_domains_json = $4, settings = $5, updated_at = $6, \
                     version = version + 1, disabled = $7, sealed_secret = $8 \
                     WHERE id = $1 AND version = $9 AND managed_by_config = FALSE",
                )
                .bind(&connector.id)
                .bind(&connector.kind)
                .bind(&connector.name)
                .bind($crate::store::sql::to_json(&connector.email_domains))
                .bind(&connector.settings)
                .bind(connector.updated_at)
                .bind(connector.disabled)
                .bind(&connector.sealed_secret)
                .bind(read_version)
                .execute(&self.pool)
                .await?;
                self.durable().await?;
                if result.rows_affected() == 1 {
                    return Ok(());
                }
                let exists: Option<String> = sqlx::query_scalar("SELECT id FROM connectors WHERE id = $1")
                    .bind(&connector.id)
                    .fetch_optional(&mut *self.reader().await?)
                    .await?;
                Err(if exists.is_some() { $crate::store::StoreError::Conflict } else { $crate::store::StoreError::NotFound })
            }

            async fn get_connector(&self, id: &str) -> $crate::store::StoreResult<$crate::store::ConnectorRecord> {
                let sql = format!("SELECT {} FROM connectors WHERE id = $1", $crate::store::sql::CONNECTOR_COLUMNS);
                let row: $crate::store::sql::ConnectorRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *self.reader().await?).await?;
                row.try_into()
            }

            async fn list_connectors(&self) -> $crate::store::StoreResult<Vec<$crate::store::ConnectorRecord>> {
                let sql = format!("SELECT {} FROM connectors ORDER BY id", $crate::store::sql::CONNECTOR_COLUMNS);
                let rows: Vec<$crate::store::sql::ConnectorRow> = sqlx::query_as(&sql).fetch_all(&mut *self.reader().await?).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_connector(&self, id: &str) -> $crate::store::StoreResult<()> {
                let result = sqlx::query("DELETE FROM connectors WHERE id = $1").bind(id).execute(&self.pool).await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn activate_signing_key(&self, key: &$crate::store::SigningKeyRecord) -> $crate::store::StoreResult<()> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                sqlx::query("UPDATE signing_keys SET retired_at = $2 WHERE alg = $1 AND retired_at IS NULL")
                    .bind(&key.alg)
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, retired_at) \
                     VALUES ($1, $2, $3, $4, $5, NULL)",
                )
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.public_jwk)
                .bind(&key.sealed_private_key)
                .bind(key.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> $crate::store::StoreResult<Vec<$crate::store::SigningKeyRecord>> {
                let rows: Vec<$crate::store::sql::SigningKeyRow> = sqlx::query_as(
                    "SELECT kid, alg, public_jwk, sealed_private_key, created_at, retired_at FROM signing_keys \
                     ORDER BY created_at DESC, kid",
                )
                .fetch_all(&mut *self.reader().await?)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn delete_retired_signing_key(&self, kid: &str) -> $crate::store::StoreResult<bool> {
                let deleted = sqlx::query("DELETE FROM signing_keys WHERE kid = $1 AND retired_at IS NOT NULL")
                    .bind(kid)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn list_saml_sp_keys(&self) -> $crate::store::StoreResult<Vec<$crate::store::SamlSpKeyRecord>> {
                type Row = (String, String, Vec<u8>, Vec<u8>, i64, Option<i64>, Option<i64>);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT kid, purpose, certificate_der, sealed_private_key, created_at, activated_at, retired_at \
                     FROM saml_sp_keys ORDER BY created_at DESC, kid",
                )
                .fetch_all(&mut *self.reader().await?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(kid, purpose, certificate_der, sealed_private_key, created_at, activated_at, retired_at)| {
                        $crate::store::SamlSpKeyRecord {
                            kid,
                            purpose,
                            certificate_der,
                            sealed_private_key,
                            created_at,
                            activated_at,
                            retired_at,
                        }
                    })
                    .collect())
            }

            async fn insert_saml_sp_key(&self, key: &$crate::store::SamlSpKeyRecord) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO saml_sp_keys (kid, purpose, certificate_der, sealed_private_key, created_at, activated_at, retired_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&key.kid)
                .bind(&key.purpose)
                .bind(&key.certificate_der)
                .bind(&key.sealed_private_key)
                .bind(key.created_at)
                .bind(key.activated_at)
                .bind(key.retired_at)
                .execute(&self.pool)
                .await?;
                self.durable().await?;
                Ok(())
            }

            async fn activate_saml_sp_keys(&self, kids: &[String], now: i64) -> $crate::store::StoreResult<()> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                for kid in kids {
                    sqlx::query(
                        "UPDATE saml_sp_keys SET retired_at = $2 WHERE activated_at IS NOT NULL AND retired_at IS NULL \
                         AND purpose = (SELECT purpose FROM saml_sp_keys WHERE kid = $1 AND activated_at IS NULL)",
                    )
                    .bind(kid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let activated = sqlx::query(
                        "UPDATE saml_sp_keys SET activated_at = $2 WHERE kid = $1 AND activated_at IS NULL AND retired_at IS NULL",
                    )
                    .bind(kid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if activated.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Err($crate::store::StoreError::NotFound);
                    }
                }
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(())
            }

            async fn delete_saml_sp_key(&self, kid: &str) -> $crate::store::StoreResult<()> {
                let result = sqlx::query("DELETE FROM saml_sp_keys WHERE kid = $1").bind(kid).execute(&self.pool).await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::SsoSessionStore for $store {
            async fn create_sso_session(&self, session: &$crate::store::SsoSession) -> $crate::store::StoreResult<()> {
                self.insert_sso_session(session).await
            }

            async fn start_sso_session(
                &self,
                session: &$crate::store::SsoSession,
                subject: &str,
                signed_in: &$crate::store::AuditEvent,
                taking: Option<($crate::store::SingleUseKind, &str)>,
            ) -> $crate::store::StoreResult<Option<String>> {
                self.insert_signed_in_session(session, subject, signed_in, taking).await
            }

            async fn get_sso_session(&self, id: &str) -> $crate::store::StoreResult<$crate::store::SsoSession> {
                let sql = format!("SELECT {} FROM sso_sessions WHERE id = $1", $crate::store::sql::SESSION_COLUMNS);
                let row: $crate::store::sql::SsoSessionRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *self.reader().await?).await?;
                Ok(row.into())
            }

            async fn session_with_user(
                &self,
                id: &str,
            ) -> $crate::store::StoreResult<Option<($crate::store::SsoSession, $crate::store::User)>> {
                let sql = $crate::store::sql::SESSION_WITH_USER.as_str();
                let row: Option<$crate::store::sql::SessionWithUserRow> =
                    sqlx::query_as(sql).bind(id).fetch_optional(&mut *self.reader().await?).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn touch_sso_session(&self, id: &str, now: i64) -> $crate::store::StoreResult<()> {
                let result = sqlx::query("UPDATE sso_sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    self.get_sso_session(id).await?;
                }
                Ok(())
            }

            async fn revoke_sso_session(&self, id: &str, now: i64) -> $crate::store::StoreResult<bool> {
                let result = sqlx::query("UPDATE sso_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    self.get_sso_session(id).await?;
                    return Ok(false);
                }
                Ok(true)
            }

            async fn reauthenticate_sso_session(&self, id: &str, now: i64) -> $crate::store::StoreResult<()> {
                let result = sqlx::query(
                    "UPDATE sso_sessions SET auth_time = $2, last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                self.durable().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                Ok(())
            }

            async fn search_sso_sessions(
                &self,
                query: &$crate::store::SessionQuery,
                now: i64,
                idle_timeout_secs: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::SessionListing>> {
                let columns = $crate::store::sql::SESSION_COLUMNS.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
                // Only the filters given, each plainly: behind `$n IS NULL OR …` the planner
                // cannot use a person's index, and every page would read every session.
                let mut conditions = String::new();
                let mut placeholder = 2;
                let mut next = || {
                    placeholder += 1;
                    placeholder
                };
                if query.user_id.is_some() {
                    conditions.push_str(&format!(" AND s.user_id = ${}", next()));
                }
                if query.connector_id.is_some() {
                    conditions.push_str(&format!(" AND s.connector_id = ${}", next()));
                }
                if query.before.is_some() {
                    conditions.push_str(&format!(" AND (s.auth_time, s.id) < (${}, ${})", next(), next()));
                }
                let sql = format!(
                    "SELECT {columns}, u.username FROM sso_sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.revoked_at IS NULL AND s.expires_at > $1 AND s.last_seen_at > $2{conditions} \
                     ORDER BY s.auth_time DESC, s.id DESC LIMIT ${}",
                    next()
                );
                let mut select = sqlx::query_as::<_, $crate::store::sql::SessionListingRow>(&sql).bind(now).bind(now - idle_timeout_secs);
                if let Some(user_id) = &query.user_id {
                    select = select.bind(user_id);
                }
                if let Some(connector_id) = &query.connector_id {
                    select = select.bind(connector_id);
                }
                if let Some((before_time, before_id)) = &query.before {
                    select = select.bind(before_time).bind(before_id);
                }
                let rows = select.bind(i64::from(query.limit)).fetch_all(&mut *self.reader().await?).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn count_active_sso_sessions(&self, now: i64, idle_timeout_secs: i64) -> $crate::store::StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sso_sessions WHERE revoked_at IS NULL AND expires_at > $1 AND last_seen_at > $2",
                )
                .bind(now)
                .bind(now - idle_timeout_secs)
                .fetch_one(&mut *self.reader().await?)
                .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn list_unrevoked_sso_sessions(
                &self,
                connector_id: Option<&str>,
                user_id: Option<&str>,
            ) -> $crate::store::StoreResult<Vec<String>> {
                // As in `search_sso_sessions`: a person's sessions through their index.
                let select = match (connector_id, user_id) {
                    (Some(connector_id), Some(user_id)) => sqlx::query_scalar(
                        "SELECT id FROM sso_sessions WHERE user_id = $1 AND connector_id = $2 AND revoked_at IS NULL ORDER BY id",
                    )
                    .bind(user_id)
                    .bind(connector_id),
                    (None, Some(user_id)) => {
                        sqlx::query_scalar("SELECT id FROM sso_sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id")
                            .bind(user_id)
                    }
                    (Some(connector_id), None) => {
                        sqlx::query_scalar("SELECT id FROM sso_sessions WHERE connector_id = $1 AND revoked_at IS NULL ORDER BY id")
                            .bind(connector_id)
                    }
                    (None, None) => sqlx::query_scalar("SELECT id FROM sso_sessions WHERE revoked_at IS NULL ORDER BY id"),
                };
                Ok(select.fetch_all(&mut *self.reader().await?).await?)
            }

            async fn end_sso_session(&self, id: &str, sid: &str, now: i64) -> $crate::store::StoreResult<u64> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                let first_end: Option<String> =
                    sqlx::query_scalar("UPDATE sso_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING user_id")
                        .bind(id)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                sqlx::query("UPDATE grants SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let queued = match first_end {
                    // One notification per client and session: the id says which, so it is
                    // queued at most once.
                    Some(user_id) => sqlx::query(
                        "INSERT INTO backchannel_logouts (id, client_id, subject, sid, attempts, next_attempt_at, lease_until, created_at, \
                         uri, signing_alg) \
                         SELECT DISTINCT $3 || '.' || g.client_id, g.client_id, $4, $3, 0, $2, 0, $2, c.backchannel_logout_uri, c.signing_alg \
                         FROM grants g JOIN clients c ON c.client_id = g.client_id \
                         WHERE g.session_id = $1 AND c.backchannel_logout_uri IS NOT NULL",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(sid)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    None => 0,
                };
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok(queued)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $store {
            async fn record_audit(&self, event: &$crate::store::AuditEvent) -> $crate::store::StoreResult<()> {
                // A refusal is in the log as well as the table, under the request's id (the
                // span's): its reason code only, since the rest of `detail` may quote what an
                // IdP or a browser sent.
                if event.outcome == $crate::store::AuditOutcome::Failure {
                    tracing::info!(
                        event = %event.kind,
                        reason = $crate::store::reason_code(event.detail.as_deref()),
                        client_id = event.client_id.as_deref().unwrap_or_default(),
                        connector = event.connector_id.as_deref().unwrap_or_default(),
                        "refused"
                    );
                }
                self.append_audit(event).await
            }

            async fn list_audit(&self, limit: u32) -> $crate::store::StoreResult<Vec<$crate::store::AuditEvent>> {
                let rows: Vec<$crate::store::sql::AuditRow> = sqlx::query_as(
                    "SELECT time, kind, outcome, actor, user_id, client_id, connector_id, ip, detail FROM audit_log \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *self.reader().await?)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn search_audit(
                &self,
                query: &$crate::store::AuditQuery,
            ) -> $crate::store::StoreResult<Vec<$crate::store::AuditListing>> {
                let rows: Vec<$crate::store::sql::AuditListingRow> = sqlx::query_as(
                    "SELECT a.id, a.time, a.kind, a.outcome, a.actor, a.user_id, a.client_id, a.connector_id, a.ip, a.detail, \
                     u.username FROM audit_log a LEFT JOIN users u ON u.id = a.user_id \
                     WHERE ($1 IS NULL OR a.user_id = $1) AND ($2 IS NULL OR a.client_id = $2) \
                     AND ($3 IS NULL OR a.connector_id = $3) AND ($4 IS NULL OR a.kind = $4) AND ($5 IS NULL OR a.time >= $5) \
                     AND ($6 IS NULL OR a.time < $6) AND ($7 IS NULL OR a.id < $7) ORDER BY a.id DESC LIMIT $8",
                )
                .bind(&query.user_id)
                .bind(&query.client_id)
                .bind(&query.connector_id)
                .bind(&query.kind)
                .bind(query.since)
                .bind(query.until)
                .bind(query.before_id)
                .bind(i64::from(query.limit))
                .fetch_all(&mut *self.reader().await?)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn count_sign_ins(&self, since: i64) -> $crate::store::StoreResult<Vec<$crate::store::SignInCount>> {
                let rows: Vec<(Option<String>, String, i64)> = sqlx::query_as(
                    "SELECT connector_id, outcome, COUNT(*) FROM audit_log WHERE kind = 'login' AND time >= $1 \
                     GROUP BY connector_id, outcome ORDER BY connector_id",
                )
                .bind(since)
                .fetch_all(&mut *self.reader().await?)
                .await?;
                let mut counts: Vec<$crate::store::SignInCount> = Vec::new();
                for (connector_id, outcome, count) in rows {
                    let connector_id = connector_id.unwrap_or_default();
                    let count = u64::try_from(count).unwrap_or(0);
                    if !counts.iter().any(|c| c.connector_id == connector_id) {
                        counts.push($crate::store::SignInCount { connector_id: connector_id.clone(), successes: 0, failures: 0 });
                    }
                    if let Some(entry) = counts.iter_mut().find(|c| c.connector_id == connector_id) {
                        if outcome == "success" {
                            entry.successes += count;
                        } else {
                            entry.failures += count;
                        }
                    }
                }
                Ok(counts)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ThrottleStore for $store {
            async fn hit_login_counter(&self, key: &str, window_start: i64, expires_at: i64) -> $crate::store::StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "INSERT INTO login_attempts (key, window_start, count, expires_at) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (key) DO UPDATE SET \
                     count = CASE WHEN login_attempts.window_start = excluded.window_start THEN login_attempts.count + 1 ELSE 1 END, \
                     window_start = excluded.window_start, expires_at = excluded.expires_at \
                     RETURNING count",
                )
                .bind(key)
                .bind(window_start)
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?;
                self.durable().await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn release_login_counter(&self, key: &str, window_start: i64) -> $crate::store::StoreResult<()> {
                sqlx::query("UPDATE login_attempts SET count = count - 1 WHERE key = $1 AND window_start = $2 AND count > 0")
                    .bind(key)
                    .bind(window_start)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::SingleUseStore for $store {
            async fn put_single_use(
                &self,
                kind: $crate::store::SingleUseKind,
                key: &str,
                payload: &str,
                expires_at: i64,
            ) -> $crate::store::StoreResult<()> {
                self.store_single_use(kind, key, payload, expires_at).await
            }

            async fn peek_single_use(
                &self,
                kind: $crate::store::SingleUseKind,
                key: &str,
                now: i64,
            ) -> $crate::store::StoreResult<Option<String>> {
                let payload: Option<String> =
                    sqlx::query_scalar("SELECT payload FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $3")
                        .bind(kind.as_str())
                        .bind(key)
                        .bind(now)
                        .fetch_optional(&mut *self.reader().await?)
                        .await?;
                Ok(payload)
            }

            async fn take_single_use(
                &self,
                kind: $crate::store::SingleUseKind,
                key: &str,
                now: i64,
            ) -> $crate::store::StoreResult<Option<String>> {
                let taken = self.spend_single_use(kind, key).await?;
                Ok(taken.filter(|(_, expires_at)| *expires_at > now).map(|(payload, _)| payload))
            }

            async fn take_single_use_leaving_mark(
                &self,
                kind: $crate::store::SingleUseKind,
                key: &str,
                now: i64,
                mark: $crate::store::SingleUseKind,
                mark_until: i64,
            ) -> $crate::store::StoreResult<bool> {
                self.spend_single_use_leaving_mark(kind, key, now, mark, mark_until).await
            }

            async fn put_single_use_pair(
                &self,
                first: &$crate::store::NewSingleUse<'_>,
                second: &$crate::store::NewSingleUse<'_>,
            ) -> $crate::store::StoreResult<()> {
                self.store_single_use_pair(first, second).await
            }

            async fn put_single_use_discarding(
                &self,
                record: &$crate::store::NewSingleUse<'_>,
                discarded: ($crate::store::SingleUseKind, &str),
            ) -> $crate::store::StoreResult<()> {
                self.store_single_use_discarding(record, discarded).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::GrantStore for $store {
            async fn create_grant(&self, grant: &$crate::store::GrantRecord) -> $crate::store::StoreResult<()> {
                Self::insert_grant(&self.pool, grant).await?;
                self.durable().await
            }

            async fn redeem_code(
                &self,
                code_hash: &str,
                grant: &$crate::store::GrantRecord,
                refresh_token: Option<(&str, &$crate::store::RefreshTokenRecord)>,
                granted: &$crate::store::AuditEvent,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                self.spend_code(code_hash, grant, refresh_token, granted, now).await
            }

            async fn peek_code(
                &self,
                code_hash: &str,
                now: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::PeekedCode>> {
                use sqlx::Row as _;
                // One per database: only the JSON accessor differs.
                static PEEK_CODE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    format!(
                        "SELECT c.payload, s.id, s.user_id, s.connector_id, s.auth_time, s.last_seen_at, s.expires_at, \
                         s.revoked_at, s.ip, s.user_agent, {} FROM single_use c \
                         LEFT JOIN sso_sessions s ON s.id = {} LEFT JOIN users u ON u.id = s.user_id \
                         WHERE c.kind = $1 AND c.key = $2 AND c.expires_at > $3",
                        $crate::store::sql::JOINED_USER_COLUMNS,
                        <$store>::CODE_SESSION_ID,
                    )
                });
                let row = sqlx::query(PEEK_CODE.as_str())
                    .bind($crate::store::SingleUseKind::AuthorizationCode.as_str())
                    .bind(code_hash)
                    .bind(now)
                    .fetch_optional(&mut *self.reader().await?)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let found = row.try_get::<Option<String>, _>("id")?.is_some()
                    && row.try_get::<Option<String>, _>("user_row_id")?.is_some();
                let signed_in = if found {
                    let joined: $crate::store::sql::SessionWithUserRow = sqlx::FromRow::from_row(&row)?;
                    Some(joined.try_into()?)
                } else {
                    None
                };
                Ok(Some($crate::store::PeekedCode { payload: row.try_get("payload")?, signed_in }))
            }

            async fn grant_state(&self, id: &str) -> $crate::store::StoreResult<Option<$crate::store::GrantState>> {
                // A session row that was cleaned up after its natural end does not revoke the
                // grant; only an explicit revocation does.
                let sql = format!(
                    "SELECT {}, u.disabled AS user_disabled, \
                     (s.revoked_at IS NOT NULL) AS session_revoked \
                     FROM grants g JOIN users u ON u.id = g.user_id LEFT JOIN sso_sessions s ON s.id = g.session_id \
                     WHERE g.id = $1",
                    $crate::store::sql::GRANT_COLUMNS
                );
                let row: Option<$crate::store::sql::GrantStateRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&mut *self.reader().await?).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn search_grants(
                &self,
                query: &$crate::store::GrantQuery,
                now: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::GrantListing>> {
                let (before_time, before_id) = query.before.clone().unzip();
                let sql = format!(
                    "SELECT {}, u.disabled AS user_disabled, (s.revoked_at IS NOT NULL) AS session_revoked, u.username, \
                     (SELECT MAX(r.issued_at) FROM refresh_tokens r WHERE r.grant_id = g.id) AS last_refreshed_at \
                     FROM grants g JOIN users u ON u.id = g.user_id LEFT JOIN sso_sessions s ON s.id = g.session_id \
                     WHERE g.revoked_at IS NULL AND g.expires_at > $1 AND ($2 IS NULL OR g.user_id = $2) \
                     AND ($3 IS NULL OR g.client_id = $3) \
                     AND ($4 IS NULL OR g.created_at < $4 OR (g.created_at = $4 AND g.id < $5)) \
                     ORDER BY g.created_at DESC, g.id DESC LIMIT $6",
                    $crate::store::sql::GRANT_COLUMNS
                );
                let rows: Vec<$crate::store::sql::GrantListingRow> = sqlx::query_as(&sql)
                    .bind(now)
                    .bind(&query.user_id)
                    .bind(&query.client_id)
                    .bind(before_time)
                    .bind(before_id)
                    .bind(i64::from(query.limit))
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn latest_user_grants(
                &self,
                user_id: &str,
                now: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::GrantSummary>> {
                // Per application, the newest unrevoked grant from the partial index, walked
                // from its newest end: a person with thousands of grants costs what one with a
                // few does.
                let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(<$store>::LATEST_USER_GRANTS)
                .bind(user_id)
                .bind(now)
                .fetch_all(&mut *self.reader().await?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(client_id, scope, granted, refreshed)| $crate::store::GrantSummary {
                        client_id,
                        scope,
                        last_used_at: refreshed.map_or(granted, |refreshed| refreshed.max(granted)),
                    })
                    .collect())
            }

            async fn count_client_grants(&self, client_id: &str, now: i64) -> $crate::store::StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM grants WHERE client_id = $1 AND revoked_at IS NULL AND expires_at > $2",
                )
                .bind(client_id)
                .bind(now)
                .fetch_one(&mut *self.reader().await?)
                .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn revoke_grant(&self, id: &str, now: i64) -> $crate::store::StoreResult<bool> {
                let result = sqlx::query("UPDATE grants SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(result.rows_affected() > 0)
            }

            async fn revoke_user_grants(&self, user_id: &str, now: i64) -> $crate::store::StoreResult<u64> {
                let result = sqlx::query("UPDATE grants SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                    .bind(user_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(result.rows_affected())
            }

            async fn revoke_grant_by_code(&self, code_hash: &str, now: i64) -> $crate::store::StoreResult<Option<String>> {
                let id: Option<String> =
                    sqlx::query_scalar("UPDATE grants SET revoked_at = COALESCE(revoked_at, $2) WHERE code_hash = $1 RETURNING id")
                        .bind(code_hash)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await?;
                self.durable().await?;
                Ok(id)
            }

            async fn insert_refresh_token(
                &self,
                token_hash: &str,
                record: &$crate::store::RefreshTokenRecord,
            ) -> $crate::store::StoreResult<()> {
                Self::insert_refresh(&self.pool, token_hash, record).await?;
                self.durable().await
            }

            async fn find_refresh_token(&self, token_hash: &str) -> $crate::store::StoreResult<Option<$crate::store::RefreshTokenRecord>> {
                let row: Option<$crate::store::sql::RefreshTokenRow> = sqlx::query_as(
                    "SELECT grant_id, issued_at, expires_at, rotated_at FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&mut *self.reader().await?)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn refresh_token_state(
                &self,
                token_hash: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::RefreshTokenState>> {
                let sql = $crate::store::sql::REFRESH_TOKEN_STATE.as_str();
                let row: Option<$crate::store::sql::RefreshTokenStateRow> =
                    sqlx::query_as(sql).bind(token_hash).fetch_optional(&mut *self.reader().await?).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &str,
                new_hash: &str,
                new: &$crate::store::RefreshTokenRecord,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::Rotation> {
                self.spend_refresh_token(old_hash, new_hash, new, now).await
            }

            async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> $crate::store::StoreResult<()> {
                sqlx::query("INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(())
            }

            async fn list_revoked_access_tokens(&self, now: i64, limit: usize) -> $crate::store::StoreResult<Vec<String>> {
                let jtis: Vec<String> = sqlx::query_scalar("SELECT jti FROM revoked_access_tokens WHERE expires_at > $1 LIMIT $2")
                    .bind(now)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                Ok(jtis)
            }

            async fn is_access_token_revoked(&self, jti: &str) -> $crate::store::StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT expires_at FROM revoked_access_tokens WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(&mut *self.reader().await?)
                    .await?;
                Ok(found.is_some())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ConsentStore for $store {
            async fn get_consent(&self, user_id: &str, client_id: &str) -> $crate::store::StoreResult<Option<Vec<String>>> {
                let scopes: Option<String> =
                    sqlx::query_scalar("SELECT scopes_json FROM consents WHERE user_id = $1 AND client_id = $2")
                        .bind(user_id)
                        .bind(client_id)
                        .fetch_optional(&mut *self.reader().await?)
                        .await?;
                scopes.map(|text| serde_json::from_str(&text).map_err($crate::store::StoreError::from)).transpose()
            }

            async fn put_consent(&self, user_id: &str, client_id: &str, scopes: &[String], now: i64) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO consents (user_id, client_id, scopes_json, granted_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, client_id) DO UPDATE SET scopes_json = excluded.scopes_json, granted_at = excluded.granted_at",
                )
                .bind(user_id)
                .bind(client_id)
                .bind($crate::store::sql::to_json(scopes))
                .bind(now)
                .execute(&self.pool)
                .await?;
                self.durable().await?;
                Ok(())
            }

            async fn withdraw_consent(
                &self,
                user_id: &str,
                client_id: &str,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::ConsentWithdrawal> {
                let writer = self.one_writer().await?;
                let mut tx = self.pool.begin().await?;
                let removed = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user_id)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
                let revoked =
                    sqlx::query("UPDATE grants SET revoked_at = $3 WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL")
                        .bind(user_id)
                        .bind(client_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                tx.commit().await?;
                drop(writer);
                self.durable().await?;
                Ok($crate::store::ConsentWithdrawal {
                    consent_removed: removed.rows_affected() > 0,
                    grants_revoked: revoked.rows_affected(),
                })
            }

            async fn list_consents(&self, user_id: &str) -> $crate::store::StoreResult<Vec<(String, Vec<String>)>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT client_id, scopes_json FROM consents WHERE user_id = $1 ORDER BY client_id")
                        .bind(user_id)
                        .fetch_all(&mut *self.reader().await?)
                        .await?;
                rows.into_iter()
                    .map(|(client_id, scopes)| Ok((client_id, serde_json::from_str(&scopes)?)))
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::BackchannelStore for $store {
            async fn lease_backchannel_logouts(
                &self,
                now: i64,
                lease_until: i64,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::BackchannelLogout>> {
                // The outer condition is checked again on the row being updated, so two nodes
                // selecting the same rows cannot both lease them.
                let rows: Vec<$crate::store::sql::BackchannelRow> = sqlx::query_as(
                    "UPDATE backchannel_logouts SET lease_until = $2 WHERE id IN (SELECT id FROM backchannel_logouts \
                     WHERE next_attempt_at <= $1 AND lease_until <= $1 ORDER BY next_attempt_at LIMIT $3) \
                     AND next_attempt_at <= $1 AND lease_until <= $1 \
                     RETURNING id, client_id, subject, sid, attempts, created_at, uri, signing_alg",
                )
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                self.durable().await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn delete_backchannel_logout(&self, id: &str) -> $crate::store::StoreResult<()> {
                sqlx::query("DELETE FROM backchannel_logouts WHERE id = $1").bind(id).execute(&self.pool).await?;
                self.durable().await?;
                Ok(())
            }

            async fn retry_backchannel_logout(&self, id: &str, attempts: i64, next_attempt_at: i64) -> $crate::store::StoreResult<()> {
                sqlx::query("UPDATE backchannel_logouts SET attempts = $2, next_attempt_at = $3, lease_until = 0 WHERE id = $1")
                    .bind(id)
                    .bind(attempts)
                    .bind(next_attempt_at)
                    .execute(&self.pool)
                    .await?;
                self.durable().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn sync_writes(&self) -> $crate::store::StoreResult<()> {
                self.durable().await
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                self.writes_allowed()?;
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn delete_expired(&self, now: i64, retired_key_cutoff: i64) -> $crate::store::StoreResult<$crate::store::CleanupReport> {
                let single_use = sqlx::query("DELETE FROM single_use WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                let sessions = sqlx::query("DELETE FROM sso_sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                let signing_keys = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                    .bind(retired_key_cutoff)
                    .execute(&self.pool)
                    .await?;
                let login_attempts =
                    sqlx::query("DELETE FROM login_attempts WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                let grants = sqlx::query("DELETE FROM grants WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                let revoked_access_tokens =
                    sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                self.durable().await?;
                Ok($crate::store::CleanupReport {
                    single_use: single_use.rows_affected(),
                    sessions: sessions.rows_affected(),
                    signing_keys: signing_keys.rows_affected(),
                    login_attempts: login_attempts.rows_affected(),
                    grants: grants.rows_affected(),
                    revoked_access_tokens: revoked_access_tokens.rows_affected(),
                })
            }
        }
    };
}

pub(crate) use impl_sql_store;
