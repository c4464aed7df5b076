//! Applications (OAuth clients) created, edited, removed and given new secrets at run time.
//! Clients the configuration file declares are shown but never changed here.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Actor, Admin, AdminError, AdminResult, Page, Touched, decode_cursor, events, invalid, next_cursor, page_size};
use crate::access::GroupsFilter;
use crate::clock::UnixTime;
use crate::config::{ClientConfig, ClientFields, ClientSecret, ConfigError, validate_client_fields};
use crate::secret::Secret;
use crate::store::{ClientRecord, StoreError};
use crate::tokens::{SecretHasher, random_token};

/// The longest a rotated secret keeps working beside its successor.
pub const MAX_SECRET_OVERLAP_SECS: i64 = 7 * 24 * 3600;
/// Fields a caller may not set: Gatehouse generates secrets, and shows them once.
const SECRET_FIELDS: [&str; 3] = ["client_secret", "client_secret_file", "client_secret_hash"];

/// The view's fields a caller may set, named as in the configuration file.
const EDITABLE_FIELDS: [&str; 22] = [
    "client_id",
    "name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "grant_types",
    "scopes",
    "first_party",
    "signing_alg",
    "access_token_lifetime_secs",
    "issue_refresh_token",
    "default_audience",
    "resources",
    "backchannel_logout_uri",
    "introspect_any",
    "allowed_groups",
    "allowed_connectors",
    "groups_claim_filter",
    "description",
    "logo_uri",
    "initiate_login_uri",
    "launch_url",
    "show_in_portal",
];

/// A client as the console and the API show it: never its secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub first_party: bool,
    /// No secret: a browser or mobile app, which must use PKCE.
    pub public: bool,
    pub signing_alg: String,
    pub access_token_lifetime_secs: Option<i64>,
    pub issue_refresh_token: bool,
    pub default_audience: Option<String>,
    pub resources: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub introspect_any: bool,
    /// Empty: everyone may use the application.
    pub allowed_groups: Vec<String>,
    pub allowed_connectors: Vec<String>,
    pub groups_claim_filter: Option<GroupsFilter>,
    pub description: Option<String>,
    pub logo_uri: Option<String>,
    pub initiate_login_uri: Option<String>,
    pub launch_url: Option<String>,
    pub show_in_portal: bool,
    pub managed_by_config: bool,
    pub version: i64,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Until when the secret replaced by the last rotation still works.
    pub previous_secret_valid_until: Option<UnixTime>,
}

impl ClientView {
    pub fn new(record: &ClientRecord, now: UnixTime) -> Self {
        Self {
            client_id: record.client_id.clone(),
            name: record.name.clone(),
            redirect_uris: record.redirect_uris.clone(),
            post_logout_redirect_uris: record.post_logout_redirect_uris.clone(),
            grant_types: record.grant_types.clone(),
            scopes: record.scopes.clone(),
            first_party: record.first_party,
            public: record.secret_hash.is_none(),
            signing_alg: record.signing_alg.clone(),
            access_token_lifetime_secs: record.access_token_lifetime_secs,
            issue_refresh_token: record.issue_refresh_token,
            default_audience: record.default_audience.clone(),
            resources: record.resources.clone(),
            backchannel_logout_uri: record.backchannel_logout_uri.clone(),
            introspect_any: record.introspect_any,
            allowed_groups: record.access.allowed_groups.clone(),
            allowed_connectors: record.access.allowed_connectors.clone(),
            groups_claim_filter: record.access.groups_claim_filter.clone(),
            description: record.portal.description.clone(),
            logo_uri: record.portal.logo_uri.clone(),
            initiate_login_uri: record.portal.initiate_login_uri.clone(),
            launch_url: record.portal.launch_url.clone(),
            show_in_portal: record.portal.show_in_portal,
            managed_by_config: record.managed_by_config,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
            previous_secret_valid_until: record.previous_secret_expires_at.filter(|end| *end > now),
        }
    }

    /// Whether the tile is shown exactly when the default would show it (when the application
    /// can be opened), so it reads as following the default.
    pub fn show_in_portal_by_default(&self) -> bool {
        self.show_in_portal == (self.initiate_login_uri.is_some() || self.launch_url.is_some())
    }

    /// The editable fields, spelled as in the configuration file.
    fn fields(&self) -> AdminResult<Map<String, Value>> {
        let Ok(Value::Object(mut map)) = serde_json::to_value(self) else {
            return Err(AdminError::Internal(String::from("a client view is not a JSON object")));
        };
        map.retain(|field, _| EDITABLE_FIELDS.contains(&field.as_str()));
        Ok(map)
    }
}

/// A new client, with its secret: the only time the secret is ever shown.
#[derive(Debug)]
pub struct CreatedClient {
    pub client: ClientView,
    pub client_secret: Option<Secret<String>>,
}

/// What removing a client ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemovalImpact {
    /// Live grants (signed-in users' tokens) that will be revoked.
    pub grants: u64,
    pub has_backchannel_logout: bool,
}

/// The database record of a validated client; the file's clients and the console's alike.
pub fn record(client: &ClientConfig, managed_by_config: bool, secrets: &SecretHasher, now: UnixTime) -> ClientRecord {
    let secret_hash = match &client.secret {
        ClientSecret::None => None,
        ClientSecret::Hash(hash) => Some(hash.expose().clone()),
        ClientSecret::Plain(plain) => Some(secrets.hash(plain.expose())),
    };
    ClientRecord {
        client_id: client.client_id.clone(),
        secret_hash,
        redirect_uris: client.redirect_uris.clone(),
        post_logout_redirect_uris: client.post_logout_redirect_uris.clone(),
        scopes: client.scopes.clone(),
        grant_types: client.grant_types.clone(),
        name: client.name.clone(),
        first_party: client.first_party,
        signing_alg: client.signing_alg.as_str().to_owned(),
        access_token_lifetime_secs: client.access_token_lifetime_secs,
        issue_refresh_token: client.issue_refresh_token,
        default_audience: client.default_audience.clone(),
        resources: client.resources.clone(),
        backchannel_logout_uri: client.backchannel_logout_uri.clone(),
        introspect_any: client.introspect_any,
        managed_by_config,
        created_at: now,
        updated_at: now,
        version: 1,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        access: client.access.clone(),
        portal: client.portal.clone(),
    }
}

fn config_error(err: ConfigError) -> AdminError {
    match err {
        ConfigError::Invalid { key, reason } => AdminError::Invalid { field: key, reason },
        other => AdminError::Internal(other.to_string()),
    }
}

/// Reads the configuration's client fields from JSON, naming the field at fault.
fn parse_fields(input: Map<String, Value>) -> AdminResult<ClientFields> {
    if let Some(secret) = SECRET_FIELDS.iter().find(|f| input.contains_key(**f)) {
        return Err(invalid(*secret, "is generated by Gatehouse and shown once; rotate the secret instead"));
    }
    let value = Value::Object(input);
    let fields = serde_path_to_error::deserialize::<_, ClientFields>(&value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::from("body") } else { path };
        let reason = err.into_inner().to_string();
        // serde's message ends with a position in the text, which a JSON value does not have.
        invalid(field, reason.split(" at line ").next().unwrap_or_default())
    })?;
    // Never from a caller: a secret file path would have the server read any file it can.
    Ok(ClientFields { client_secret: None, client_secret_file: None, client_secret_hash: None, ..fields })
}

fn take_bool(input: &mut Map<String, Value>, field: &str) -> AdminResult<Option<bool>> {
    match input.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(value)),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

fn take_version(input: &mut Map<String, Value>) -> AdminResult<Option<i64>> {
    match input.remove("version") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| invalid("version", "must be the integer version you read")),
    }
}

fn managed_by_file(client_id: &str) -> AdminError {
    AdminError::Conflict(format!("`{client_id}` is managed by the configuration file; change it there"))
}

impl Admin {
    /// A client that asks for an algorithm with no active key gets one now, and a longer
    /// token lifetime keeps retired keys published for longer.
    async fn keys_for(&self, client: &ClientRecord) -> AdminResult<()> {
        let algs = crate::startup::signing_algs(std::slice::from_ref(client));
        self.provider.keys.ensure_active(&algs).await.map_err(|err| AdminError::Internal(err.to_string()))?;
        Ok(())
    }

    fn issuer_is_https(&self) -> bool {
        self.provider.config.issuer_is_https()
    }

    async fn check_allowed_connectors(&self, client: &ClientConfig) -> AdminResult<()> {
        let connectors = self.provider.store.list_connectors().await?;
        match client.access.allowed_connectors.iter().find(|id| !connectors.iter().any(|c| &c.id == *id)) {
            Some(unknown) => Err(invalid("allowed_connectors", format!("`{unknown}` names no connector"))),
            None => Ok(()),
        }
    }

    /// Clients in id order, a page at a time; `query` matches the id or the name. Clients are
    /// few (they are registered by hand), so they are filtered here rather than in SQL.
    pub async fn list_clients(
        &self,
        query: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> AdminResult<Page<ClientView>> {
        let now = self.now();
        let limit = page_size(limit);
        let after: Option<String> = decode_cursor(cursor)?;
        let needle = query.map(str::to_lowercase).filter(|q| !q.is_empty());
        let clients: Vec<ClientView> = self
            .provider
            .store
            .list_clients()
            .await?
            .iter()
            .filter(|c| after.as_deref().is_none_or(|after| c.client_id.as_str() > after))
            .filter(|c| {
                needle.as_deref().is_none_or(|q| c.client_id.to_lowercase().contains(q) || c.name.to_lowercase().contains(q))
            })
            .take(limit as usize)
            .map(|c| ClientView::new(c, now))
            .collect();
        let next = next_cursor(&clients, limit, |c| c.client_id.clone());
        Ok(Page { items: clients, next })
    }

    pub async fn client(&self, client_id: &str) -> AdminResult<ClientView> {
        Ok(ClientView::new(&self.provider.store.get_client(client_id).await?, self.now()))
    }

    /// Creates a client from the configuration's fields plus `public` (default false). A
    /// confidential client gets a secret generated here, returned this once.
    pub async fn create_client(&self, actor: &Actor, mut input: Map<String, Value>) -> AdminResult<CreatedClient> {
        actor.may_write()?;
        let public = take_bool(&mut input, "public")?.unwrap_or(false);
        input.remove("version");
        let mut fields = parse_fields(input)?;
        let secret = (!public).then(random_token);
        fields.client_secret.clone_from(&secret);
        let validated = validate_client_fields(&|f: &str| f.to_owned(), fields, self.issuer_is_https()).map_err(config_error)?;
        self.check_allowed_connectors(&validated).await?;
        if self.provider.config.clients.iter().any(|c| c.client_id == validated.client_id) {
            return Err(managed_by_file(&validated.client_id));
        }
        let now = self.now();
        let record = record(&validated, false, &self.provider.secrets, now);
        match self.provider.store.insert_client(&record).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                return Err(AdminError::Conflict(format!("an application with client_id `{}` exists", record.client_id)));
            }
            Err(err) => return Err(err.into()),
        }
        self.keys_for(&record).await?;
        let touched = Touched { client_id: Some(&record.client_id), ..Touched::default() };
        self.audit(actor, events::CLIENT_CREATED, touched).await?;
        Ok(CreatedClient { client: ClientView::new(&record, now), client_secret: secret.map(Secret::new) })
    }

    /// Changes the fields `patch` names (the configuration's names); the rest stay. With
    /// `version` in the patch, the change applies only to that version (else 409).
    pub async fn update_client(&self, actor: &Actor, client_id: &str, mut patch: Map<String, Value>) -> AdminResult<ClientView> {
        actor.may_write()?;
        let expected_version = take_version(&mut patch)?;
        if patch.get("client_id").is_some_and(|id| id.as_str() != Some(client_id)) {
            return Err(invalid("client_id", "cannot change; create a new application instead"));
        }
        if patch.contains_key("public") {
            return Err(invalid("public", "cannot change; create a new application instead"));
        }
        let current = self.client(client_id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(client_id));
        }
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(AdminError::Conflict(String::from("changed by someone else meanwhile; reload and try again")));
        }
        let mut merged = current.fields()?;
        let changed: Vec<String> = patch.keys().filter(|k| merged.get(*k) != patch.get(*k)).cloned().collect();
        // A tile that followed the default (shown when it can be opened) keeps following it
        // when a patch adds or removes the URLs, unless the patch says otherwise.
        if current.show_in_portal_by_default() && !patch.contains_key("show_in_portal") {
            merged.remove("show_in_portal");
        }
        merged.extend(patch);
        let mut fields = parse_fields(merged)?;
        // Validation checks what a confidential client may do; its stored secret is kept.
        if !current.public {
            fields.client_secret = Some(random_token());
        }
        let validated = validate_client_fields(&|f: &str| f.to_owned(), fields, self.issuer_is_https()).map_err(config_error)?;
        self.check_allowed_connectors(&validated).await?;
        let now = self.now();
        let read_version = expected_version.unwrap_or(current.version);
        let secrets = self.provider.secrets.clone();
        let updated = self
            .provider
            .store
            .update_client(client_id, &move |old: ClientRecord| {
                if old.version != read_version || old.managed_by_config {
                    return Err(StoreError::Conflict);
                }
                Ok(ClientRecord {
                    secret_hash: old.secret_hash.clone(),
                    previous_secret_hash: old.previous_secret_hash.clone(),
                    previous_secret_expires_at: old.previous_secret_expires_at,
                    created_at: old.created_at,
                    ..record(&validated, false, &secrets, now)
                })
            })
            .await?;
        self.provider.clients.forget(client_id);
        self.keys_for(&updated).await?;
        let touched = Touched {
            client_id: Some(client_id),
            detail: Some(format!("changed: {}", changed.join(", "))),
            ..Touched::default()
        };
        self.audit(actor, events::CLIENT_UPDATED, touched).await?;
        Ok(ClientView::new(&updated, now))
    }

    /// What removing the client would end, for the confirmation.
    pub async fn client_removal_impact(&self, client_id: &str) -> AdminResult<RemovalImpact> {
        let client = self.provider.store.get_client(client_id).await?;
        let grants = self.provider.store.count_client_grants(client_id, self.now()).await?;
        Ok(RemovalImpact { grants, has_backchannel_logout: client.backchannel_logout_uri.is_some() })
    }

    /// Removes a client; every grant it holds is revoked, and its sessions' apps are told.
    pub async fn delete_client(&self, actor: &Actor, client_id: &str) -> AdminResult<u64> {
        actor.may_write()?;
        let current = self.provider.store.get_client(client_id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(client_id));
        }
        let queued = self.provider.store.delete_client(client_id, self.now(), crate::session::public_sid).await?;
        self.provider.clients.forget(client_id);
        if queued > 0 {
            self.provider.backchannel.notify_one();
        }
        let touched = Touched {
            client_id: Some(client_id),
            detail: Some(format!("back-channel logouts queued: {queued}")),
            ..Touched::default()
        };
        self.audit(actor, events::CLIENT_DELETED, touched).await?;
        Ok(queued)
    }

    /// Gives a confidential client a new secret, returned this once; the old one keeps working
    /// for `overlap_secs` (at most seven days) so the app can be redeployed in between.
    pub async fn rotate_client_secret(&self, actor: &Actor, client_id: &str, overlap_secs: i64) -> AdminResult<Secret<String>> {
        actor.may_write()?;
        if !(0..=MAX_SECRET_OVERLAP_SECS).contains(&overlap_secs) {
            return Err(invalid("overlap_secs", format!("must be between 0 and {MAX_SECRET_OVERLAP_SECS} seconds (seven days)")));
        }
        let current = self.provider.store.get_client(client_id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(client_id));
        }
        if current.secret_hash.is_none() {
            return Err(invalid("client_id", "a public client has no secret"));
        }
        let secret = random_token();
        let new_hash = self.provider.secrets.hash(&secret);
        let now = self.now();
        self.provider
            .store
            .update_client(client_id, &move |old: ClientRecord| {
                let previous = old.secret_hash.clone().filter(|_| overlap_secs > 0);
                Ok(ClientRecord {
                    previous_secret_expires_at: previous.as_ref().map(|_| now + overlap_secs),
                    previous_secret_hash: previous,
                    secret_hash: Some(new_hash.clone()),
                    updated_at: now,
                    ..old
                })
            })
            .await?;
        self.provider.clients.forget(client_id);
        let touched = Touched {
            client_id: Some(client_id),
            detail: Some(format!("old secret valid {overlap_secs} s more")),
            ..Touched::default()
        };
        self.audit(actor, events::CLIENT_SECRET_ROTATED, touched).await?;
        Ok(Secret::new(secret))
    }
}
