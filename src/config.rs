//! Settings: built-in defaults, then the TOML file, then `GATEHOUSE_*` environment variables.
//!
//! Loading is split in two: `RawConfig` is exactly what the operator wrote (unknown keys are
//! refused), `Config` is the validated form the rest of the program uses. Validation never
//! touches the database, so a bad file fails before anything is written.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use argon2::password_hash::PasswordHash;
use base64::Engine;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::access::{AccessPolicy, GroupsFilter, PortalEntry};
use crate::secret::Secret;
use crate::store::SqliteDurability;

pub const ENV_PREFIX: &str = "GATEHOUSE_";
pub const CONFIG_PATH_VAR: &str = "GATEHOUSE_CONFIG";
pub const DEFAULT_CONFIG_PATH: &str = "config/gatehouse.toml";
const KEY_ENCRYPTION_KEY_LEN: usize = 32;
const MIN_CLIENT_SECRET_LEN: usize = 16;
const MAX_SP_METADATA_VALIDITY_SECS: i64 = 365 * 86_400;
/// Each check asks every IdP; more often than this would be hammering them.
const MIN_CONNECTOR_CHECK_INTERVAL_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("configuration file {path} is not valid TOML: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot print the configuration: {0}")]
    Print(String),
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------
// What the operator writes.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: Option<String>,
    listen: Option<String>,
    database_url: Option<String>,
    database_url_file: Option<PathBuf>,
    sqlite_synchronous: Option<SqliteDurability>,
    key_encryption_key: Option<String>,
    key_encryption_key_file: Option<PathBuf>,
    log_format: Option<String>,
    metrics_listen: Option<String>,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    login: RawLogin,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    client_auth: RawClientAuth,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    saml: RawSaml,
    cleanup_interval_secs: Option<u64>,
    connector_check_interval_secs: Option<u64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    clients: Vec<ClientFields>,
    #[serde(default)]
    connectors: Vec<ConnectorSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    idle_timeout_secs: Option<i64>,
    absolute_timeout_secs: Option<i64>,
    cookie_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    max_failures_per_username: Option<u32>,
    max_failures_per_ip: Option<u32>,
    failure_window_secs: Option<i64>,
    max_starts_per_ip_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    groups: Option<Vec<String>>,
    read_only_groups: Option<Vec<String>>,
    max_auth_age_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaml {
    sp_metadata_validity_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    max_failures_per_client: Option<u32>,
    max_failures_per_ip: Option<u32>,
    failure_window_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    id_token_lifetime_secs: Option<i64>,
    access_token_lifetime_secs: Option<i64>,
    key_cache_secs: Option<i64>,
    refresh_token_idle_lifetime_secs: Option<i64>,
    refresh_token_absolute_lifetime_secs: Option<i64>,
    refresh_token_reuse_grace_secs: Option<i64>,
}

/// A connector as written in the configuration file and sent to the admin API: the same
/// field names in both, checked by one validator (`validate_connector_spec`). The database
/// stores it too, without its secret, which is sealed apart.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<LocalUserSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "ClaimNames::is_empty")]
    pub claims: ClaimNames,
    #[serde(default, skip_serializing_if = "is_false")]
    pub userinfo: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub trust_email: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_file: Option<PathBuf>,
    /// The IdP's metadata document itself, for an IdP that publishes none at a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_idp_initiated: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_sha1: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_requests: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub link_by_email: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_email_taken: Option<String>,
    #[serde(default, skip_serializing_if = "crate::mapping::rules::MappingSpec::is_empty")]
    pub mapping: crate::mapping::rules::MappingSpec,
}

impl std::fmt::Debug for ConnectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSpec").field("id", &self.id).field("type", &self.kind).finish_non_exhaustive()
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !*value
}

/// Where a connector specification comes from: the file may point at files on this machine;
/// the API may not (a path would have the server read any file it can).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOrigin {
    File,
    Api,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
}

impl ClaimNames {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserSpec {
    pub username: String,
    pub password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default = "default_true")]
    pub email_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// What the program uses.

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Public base URL without a trailing slash.
    pub issuer: String,
    pub listen: SocketAddr,
    pub database_url: Secret<String>,
    /// What a power loss may take from a `sqlite:` database (see `SqliteDurability`).
    pub sqlite_synchronous: SqliteDurability,
    pub key_encryption_key: KeyEncryptionKeySource,
    pub log_format: LogFormat,
    /// A separate listener for `/metrics`; when set, the main listener does not serve them.
    pub metrics_listen: Option<SocketAddr>,
    pub session: SessionSettings,
    pub login: LoginSettings,
    pub tokens: TokenSettings,
    pub client_auth: ClientAuthSettings,
    pub admin: AdminSettings,
    pub saml: SamlSettings,
    pub cleanup_interval_secs: u64,
    /// How often each connector is checked against its IdP, from start-up on; 0: never.
    pub connector_check_interval_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed: the load balancers in front of the nodes.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub clients: Vec<ClientConfig>,
    pub connectors: Vec<ConnectorConfig>,
}

impl Config {
    pub fn issuer_is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEncryptionKeySource {
    Inline(Secret<[u8; KEY_ENCRYPTION_KEY_LEN]>),
    /// Read from a file; a missing file is generated only when the issuer is plain http.
    File {
        path: PathBuf,
        generate_if_missing: bool,
    },
}

impl std::fmt::Debug for KeyEncryptionKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(********)"),
            Self::File { path, generate_if_missing } => {
                f.debug_struct("File").field("path", path).field("generate_if_missing", generate_if_missing).finish()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionSettings {
    pub idle_timeout_secs: i64,
    pub absolute_timeout_secs: i64,
    pub cookie_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginSettings {
    pub max_failures_per_username: u32,
    pub max_failures_per_ip: u32,
    pub failure_window_secs: i64,
    /// Sign-ins an address may start per minute (each stores state until it completes).
    pub max_starts_per_ip_per_minute: u32,
}

/// Who administers Gatehouse: members of these groups, from any connector.
#[derive(Debug, Clone, Serialize)]
pub struct AdminSettings {
    /// Full admin rights.
    pub groups: Vec<String>,
    /// May view everything in the console, change nothing.
    pub read_only_groups: Vec<String>,
    /// The console needs a sign-in at most this old; an older session signs in again.
    pub max_auth_age_secs: i64,
}

/// Settings shared by every SAML connector.
#[derive(Debug, Clone, Serialize)]
pub struct SamlSettings {
    /// The `validUntil` of the SP metadata, this long after it is served. An IdP that was
    /// given an uploaded copy stops trusting it then; one that reads the metadata URL refetches.
    pub sp_metadata_validity_secs: i64,
}

/// Failed client authentications at the token, introspection and revocation endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct ClientAuthSettings {
    pub max_failures_per_client: u32,
    pub max_failures_per_ip: u32,
    pub failure_window_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenSettings {
    pub id_token_lifetime_secs: i64,
    pub access_token_lifetime_secs: i64,
    /// How long a node signs with its cached key set before re-reading it, so a rotation on
    /// one node reaches every node without a restart.
    pub key_cache_secs: i64,
    /// A refresh token unused this long expires; every use issues a new one.
    pub refresh_token_idle_lifetime_secs: i64,
    /// No refresh token of a grant outlives this, however often it is used.
    pub refresh_token_absolute_lifetime_secs: i64,
    /// For this long after a rotation, the rotated token gets its successor again instead of
    /// being treated as stolen; 0 is strict.
    pub refresh_token_reuse_grace_secs: i64,
    /// The longest access-token lifetime any client is configured with.
    pub longest_client_access_token_secs: i64,
}

impl TokenSettings {
    /// The longest a token signed by a key can stay valid; retired keys stay published this long.
    pub fn max_token_lifetime_secs(&self) -> i64 {
        self.id_token_lifetime_secs.max(self.access_token_lifetime_secs).max(self.longest_client_access_token_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    ES256,
    RS256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientConfig {
    pub client_id: String,
    pub secret: ClientSecret,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub name: String,
    pub first_party: bool,
    pub signing_alg: SigningAlg,
    /// Overrides `tokens.access_token_lifetime_secs` for this client.
    pub access_token_lifetime_secs: Option<i64>,
    /// Issue a refresh token even when `offline_access` was not asked for.
    pub issue_refresh_token: bool,
    /// The access token's `aud` when the request names no `resource`; the client id by default.
    pub default_audience: Option<String>,
    /// Resource indicators (RFC 8707) this client may ask access tokens for.
    pub resources: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// May introspect tokens issued for any audience (a resource-server gateway).
    pub introspect_any: bool,
    pub access: AccessPolicy,
    pub portal: PortalEntry,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSecret {
    /// A public client: no secret, PKCE required.
    None,
    Plain(Secret<String>),
    Hash(Secret<String>),
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectorConfig {
    pub id: String,
    pub name: String,
    pub email_domains: Vec<String>,
    pub kind: ConnectorKind,
    pub link: LinkPolicy,
    /// The mapping rules, compiled.
    #[serde(skip)]
    pub rules: crate::mapping::rules::Rules,
    /// What was written, as the database stores it and the admin API shows it.
    #[serde(skip)]
    pub spec: ConnectorSpec,
}

/// How a first sign-in through a connector finds its local user when no identity is linked
/// yet. Linking by email is how accounts get taken over at brokers that trust an address
/// nobody verified, so it needs the address verified on both sides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPolicy {
    /// Link to the one existing user with this email when both this connector and that user
    /// have it verified.
    pub link_by_email: bool,
    /// When another user already has this email and it is not linked: refuse the sign-in
    /// instead of creating a second user.
    pub refuse_when_email_taken: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorKind {
    Local { users: Vec<LocalUser> },
    Oidc(OidcConnectorSettings),
    Saml(SamlConnectorSettings),
}

impl ConnectorKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Oidc(_) => "oidc",
            Self::Saml(_) => "saml",
        }
    }
}

/// An upstream OpenID Provider this broker signs people in through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcConnectorSettings {
    /// Exactly as the provider's discovery document states it (no trailing-slash rewriting).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client, which relies on PKCE alone.
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub claims: ClaimMapping,
    /// Also fetch the UserInfo endpoint; its `sub` must match the ID token's.
    pub userinfo: bool,
    /// Treat upstream emails as verified even without `email_verified` (providers that omit it).
    pub trust_email: bool,
    pub timeout_secs: u64,
    pub clock_skew_secs: i64,
}

/// An upstream SAML 2.0 identity provider this broker is a service provider of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamlConnectorSettings {
    pub metadata: MetadataSource,
    /// Accept responses the IdP sends without a request (they land on the portal).
    pub allow_idp_initiated: bool,
    /// Accept RSA-SHA1 signatures and SHA-1 digests from this IdP.
    pub allow_sha1: bool,
    /// Sign every `AuthnRequest` (the SP metadata says so); off, requests are signed only when
    /// the IdP's metadata asks for it.
    #[serde(default = "default_true")]
    pub sign_requests: bool,
    pub claims: SamlClaimMapping,
    /// Mark the mapped email as verified (the IdP vouches for its directory's addresses).
    pub trust_email: bool,
    pub timeout_secs: u64,
    pub clock_skew_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataSource {
    Url(String),
    File(PathBuf),
    /// Uploaded in the console or the API.
    Xml(String),
}

/// SAML attribute names (or `NameID`) for each user field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlClaimMapping {
    /// The stable key the local user is linked by.
    pub subject: String,
    /// `None`: the email, else the subject.
    pub username: Option<String>,
    pub email: String,
    pub name: String,
    pub groups: String,
}

/// Upstream claim (or attribute) names for each user field. A name is first looked up as a
/// whole, then as a dotted path into nested objects (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMapping {
    pub username: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct LocalUser {
    pub username: String,
    /// An argon2id PHC string; masked when the configuration is printed.
    pub password_hash: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
}

impl From<LocalUserSpec> for LocalUser {
    fn from(user: LocalUserSpec) -> Self {
        Self {
            username: user.username,
            password_hash: user.password_hash,
            email: user.email,
            email_verified: user.email_verified,
            name: user.name,
            groups: user.groups,
            disabled: user.disabled,
        }
    }
}

impl std::fmt::Debug for LocalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUser")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Where the configuration file is: the `--config` flag, else `GATEHOUSE_CONFIG`, else the default.
pub fn resolve_path(flag: Option<&Path>, env: &[(String, String)]) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    env.iter()
        .find(|(name, _)| name == CONFIG_PATH_VAR)
        .map(|(_, value)| PathBuf::from(value))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Loads the file at `path`, overlays the `GATEHOUSE_*` variables in `env`, and validates.
pub fn load(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    Loaded::read(path, env)?.validate()
}

/// The effective configuration as TOML: what the file and the environment set, with every
/// default written out and every secret masked, in the file's own key names, so it can be
/// pasted back into a file.
pub fn effective_toml(path: &Path, env: &[(String, String)]) -> Result<String, ConfigError> {
    let loaded = Loaded::read(path, env)?;
    let config = loaded.validate()?;
    let toml::Value::Table(mut root) = loaded.root else { return Err(ConfigError::Print(String::from("not a table"))) };
    write_defaults(&mut root, &config).map_err(|err| ConfigError::Print(err.to_string()))?;
    let mut root = toml::Value::Table(root);
    let masked = mask_secrets(&mut root);
    let text = toml::to_string_pretty(&root).map_err(|err| ConfigError::Print(err.to_string()))?;
    Ok(if masked {
        format!(
            "# Secrets are shown as {}: put them back (or use their *_file forms) before loading this.\n{text}",
            crate::secret::MASK
        )
    } else {
        text
    })
}

/// The file with the environment laid over it, and which variable set which key, so an
/// error can name the variable an operator has to fix.
struct Loaded {
    root: toml::Value,
    set_by_env: Vec<(String, String)>,
}

impl Loaded {
    fn read(path: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::Read { path: path.to_path_buf(), reason: err.to_string() })?;
        let table: toml::Table = toml::from_str(&text).map_err(|err| {
            let reason = match err.span() {
                Some(span) => {
                    let (line, column) = line_and_column(&text, span.start);
                    format!("line {line}, column {column}: {}", err.message())
                }
                None => err.message().to_owned(),
            };
            ConfigError::Syntax { path: path.to_path_buf(), reason }
        })?;
        let mut root = toml::Value::Table(table);
        let set_by_env = overlay_env(&mut root, env)?;
        Ok(Self { root, set_by_env })
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_path_to_error::deserialize(self.root.clone()).map_err(|err| {
            let key = err.path().to_string();
            let field = key.rsplit('.').next().unwrap_or_default();
            // serde's message quotes the offending value; for a secret that would print it.
            let reason = if is_secret_key(field) {
                String::from("must be a string (the value is not shown)")
            } else {
                err.into_inner().message().to_owned()
            };
            self.locate(invalid(if key == "." { String::from("(top level)") } else { key }, reason))
        })?;
        validate(raw).map_err(|err| self.locate(err))
    }

    /// Names a list entry by its id as well as its position, and the environment variable
    /// that set the value at fault.
    fn locate(&self, err: ConfigError) -> ConfigError {
        let ConfigError::Invalid { key, mut reason } = err else { return err };
        let dotted = key.replace('[', ".").replace(']', "");
        // The variable that set the value at fault, or a table it lies in; never one that set
        // a field inside an entry the file got wrong (the environment cannot add entries).
        if let Some((_, variable)) =
            self.set_by_env.iter().find(|(path, _)| dotted == *path || dotted.starts_with(&format!("{path}.")))
        {
            reason.push_str(&format!(" (set by the environment variable {variable})"));
        }
        ConfigError::Invalid { key: name_list_entry(&key, &self.root), reason }
    }
}

/// `clients[1].name` → `clients[1] (client_id = "newapp").name`: people know their entries by
/// id, not by position.
fn name_list_entry(key: &str, root: &toml::Value) -> String {
    for (list, id_field) in [("clients", "client_id"), ("connectors", "id")] {
        let Some(rest) = key.strip_prefix(list).and_then(|rest| rest.strip_prefix('[')) else { continue };
        let Some((index, tail)) = rest.split_once(']') else { continue };
        let Ok(index) = index.parse::<usize>() else { continue };
        let id = root.get(list).and_then(|entries| entries.get(index)).and_then(|entry| entry.get(id_field));
        if let Some(id) = id.and_then(toml::Value::as_str).filter(|id| !id.is_empty()) {
            return format!("{list}[{index}] ({id_field} = {id:?}){tail}");
        }
    }
    key.to_owned()
}

/// Writes out the defaults the validated configuration filled in, under the keys that set them.
fn write_defaults(root: &mut toml::Table, config: &Config) -> Result<(), toml::ser::Error> {
    let top = [
        ("listen", toml::Value::String(config.listen.to_string())),
        ("sqlite_synchronous", toml::Value::try_from(config.sqlite_synchronous)?),
        ("log_format", toml::Value::try_from(config.log_format)?),
        ("cleanup_interval_secs", toml::Value::try_from(config.cleanup_interval_secs)?),
        ("connector_check_interval_secs", toml::Value::try_from(config.connector_check_interval_secs)?),
        ("trusted_proxies", toml::Value::Array(config.trusted_proxies.iter().map(|net| net.to_string().into()).collect())),
    ];
    for (key, value) in top {
        root.entry(key).or_insert(value);
    }
    if !root.contains_key("database_url") && !root.contains_key("database_url_file") {
        root.insert("database_url".into(), toml::Value::String(config.database_url.expose().clone()));
    }
    let sections = [
        ("session", toml::Value::try_from(&config.session)?),
        ("login", toml::Value::try_from(&config.login)?),
        ("tokens", toml::Value::try_from(&config.tokens)?),
        ("client_auth", toml::Value::try_from(&config.client_auth)?),
        ("admin", toml::Value::try_from(&config.admin)?),
        ("saml", toml::Value::try_from(&config.saml)?),
    ];
    for (name, defaults) in sections {
        let toml::Value::Table(defaults) = defaults else { continue };
        let section = root.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section) = section {
            for (key, value) in defaults.into_iter().filter(|(key, _)| key != "longest_client_access_token_secs") {
                section.entry(key).or_insert(value);
            }
        }
    }
    if let Some(toml::Value::Array(entries)) = root.get_mut("clients") {
        for (entry, client) in entries.iter_mut().zip(&config.clients) {
            let Some(entry) = entry.as_table_mut() else { continue };
            entry.entry("name").or_insert_with(|| client.name.clone().into());
            entry.entry("scopes").or_insert(toml::Value::try_from(&client.scopes)?);
            entry.entry("grant_types").or_insert(toml::Value::try_from(&client.grant_types)?);
            entry.entry("signing_alg").or_insert_with(|| client.signing_alg.as_str().into());
        }
    }
    if let Some(toml::Value::Array(entries)) = root.get_mut("connectors") {
        for (entry, connector) in entries.iter_mut().zip(&config.connectors) {
            let Some(entry) = entry.as_table_mut() else { continue };
            entry.entry("name").or_insert_with(|| connector.name.clone().into());
            let (claims, timeout_secs, clock_skew_secs) = match &connector.kind {
                ConnectorKind::Local { .. } => continue,
                ConnectorKind::Oidc(oidc) => {
                    entry.entry("scopes").or_insert(toml::Value::try_from(&oidc.scopes)?);
                    (toml::Value::try_from(&oidc.claims)?, oidc.timeout_secs, oidc.clock_skew_secs)
                }
                ConnectorKind::Saml(saml) => {
                    entry.entry("sign_requests").or_insert(saml.sign_requests.into());
                    (toml::Value::try_from(&saml.claims)?, saml.timeout_secs, saml.clock_skew_secs)
                }
            };
            entry.entry("timeout_secs").or_insert(toml::Value::try_from(timeout_secs)?);
            entry.entry("clock_skew_secs").or_insert(clock_skew_secs.into());
            if let (toml::Value::Table(section), toml::Value::Table(defaults)) =
                (entry.entry("claims").or_insert_with(|| toml::Value::Table(toml::Table::new())), claims)
            {
                for (key, value) in defaults {
                    section.entry(key).or_insert(value);
                }
            }
        }
    }
    Ok(())
}

/// Masks secret values wherever they are; a plain SQLite `database_url` is a file name, not a
/// secret. Paths to secret files (`*_file`) are shown.
fn mask_secrets(value: &mut toml::Value) -> bool {
    let mut masked = false;
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table.iter_mut() {
                let shown_as_is = key == "database_url" && inner.as_str().is_some_and(|url| url.starts_with("sqlite:"));
                if is_secret_key(key) && !shown_as_is {
                    *inner = toml::Value::String(crate::secret::MASK.to_owned());
                    masked = true;
                } else {
                    masked |= mask_secrets(inner);
                }
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                masked |= mask_secrets(item);
            }
        }
        _ => {}
    }
    masked
}

/// Applies `GATEHOUSE_A__B=value` as `a.b = value`. Values that read as TOML numbers, booleans or
/// arrays take that type; anything else is a string.
fn overlay_env(root: &mut toml::Value, env: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut set_by_env: Vec<Vec<String>> = Vec::new();
    let mut variables = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if name == CONFIG_PATH_VAR {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let segments: Vec<&str> = key.split("__").collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return Err(invalid(key.replace("__", "."), format!("environment variable {name} has an empty key segment")));
        }
        let is_secret = segments.last().is_some_and(|last| is_secret_key(last));
        let value = if is_secret { toml::Value::String(value.clone()) } else { parse_env_value(value) };
        set_path(root, &segments, value)
            .map_err(|reason| invalid(key.replace("__", "."), format!("{reason} (set by the environment variable {name})")))?;
        set_by_env.push(segments.iter().map(|s| (*s).to_owned()).collect());
        variables.push((key.replace("__", "."), name.clone()));
    }
    // A secret set in the environment replaces the file's other forms of it (`X_file`, a
    // hash), so an operator can override the demo file without editing it.
    for path in &set_by_env {
        let Some((last, parent)) = path.split_last() else { continue };
        let Some(group) = SECRET_FORMS.iter().find(|group| group.contains(&last.as_str())) else { continue };
        for other in group.iter().filter(|other| *other != last) {
            let also_from_env = set_by_env.iter().any(|p| p.split_last() == Some((&(*other).to_owned(), parent)));
            if !also_from_env && let Some(table) = table_at(root, parent) {
                table.remove(*other);
            }
        }
    }
    Ok(variables)
}

/// The alternative ways of giving one secret; setting two of them is an error.
const SECRET_FORMS: [&[&str]; 3] = [
    &["key_encryption_key", "key_encryption_key_file"],
    &["database_url", "database_url_file"],
    &["client_secret", "client_secret_file", "client_secret_hash"],
];

/// Keys whose values are secrets: always strings, never echoed in an error message.
fn is_secret_key(key: &str) -> bool {
    matches!(key, "key_encryption_key" | "database_url" | "client_secret" | "client_secret_hash" | "password_hash")
}

fn table_at<'a>(node: &'a mut toml::Value, segments: &[String]) -> Option<&'a mut toml::Table> {
    let Some((first, rest)) = segments.split_first() else { return node.as_table_mut() };
    let child = match node {
        toml::Value::Table(table) => table.get_mut(first)?,
        toml::Value::Array(items) => items.get_mut(first.parse::<usize>().ok()?)?,
        _ => return None,
    };
    table_at(child, rest)
}

fn parse_env_value(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    match parsed {
        Some(value @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) | toml::Value::Array(_))) => {
            value
        }
        Some(toml::Value::String(s)) if raw.starts_with('"') || raw.starts_with('\'') => toml::Value::String(s),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(node: &mut toml::Value, segments: &[&str], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    match node {
        toml::Value::Table(table) => {
            let child = table.entry((*first).to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if rest.is_empty() {
                *child = value;
                return Ok(());
            }
            set_path(child, rest, value)
        }
        toml::Value::Array(items) => {
            let index: usize = first.parse().map_err(|_| format!("`{first}` is not an index into a list"))?;
            let len = items.len();
            let child = items.get_mut(index).ok_or_else(|| format!("index {index} is past the end of a list of {len}"))?;
            set_path(child, rest, value)
        }
        _ => Err(format!("`{first}` cannot be set inside a plain value")),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| invalid(key, format!("cannot read {}: {err}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// 1-based, as editors count; the column in characters.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// `X` or `X_file`, never both.
fn secret_value(key: &str, inline: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(key, format!("set either `{key}` or `{key}_file`, not both"))),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_secret_file(&format!("{key}_file"), &path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Relative paths (secret files, the SQLite file) are relative to the working directory.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let issuer = validate_issuer(raw.issuer.as_deref().ok_or_else(|| invalid("issuer", "is required"))?)?;
    let issuer_is_https = issuer.starts_with("https://");

    let listen_text = raw.listen.unwrap_or_else(|| String::from("127.0.0.1:8080"));
    let listen = listen_text
        .parse::<SocketAddr>()
        .map_err(|_| invalid("listen", format!("`{listen_text}` is not an address:port such as 127.0.0.1:8080")))?;

    let database_url = secret_value("database_url", raw.database_url, raw.database_url_file)?
        .unwrap_or_else(|| String::from("sqlite://data/gatehouse.db"));
    if !(database_url.starts_with("sqlite:")
        || database_url.starts_with("postgres://")
        || database_url.starts_with("postgresql://"))
    {
        return Err(invalid("database_url", "must start with sqlite:, postgres:// or postgresql://"));
    }

    let key_encryption_key = match (raw.key_encryption_key, raw.key_encryption_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid("key_encryption_key", "set either `key_encryption_key` or `key_encryption_key_file`, not both"));
        }
        (Some(encoded), None) => {
            KeyEncryptionKeySource::Inline(Secret::new(decode_key_encryption_key("key_encryption_key", &encoded)?))
        }
        (None, Some(path)) => {
            if issuer_is_https && !path.exists() {
                return Err(invalid(
                    "key_encryption_key_file",
                    format!("{} does not exist; it must be provided when the issuer is https", path.display()),
                ));
            }
            KeyEncryptionKeySource::File { path, generate_if_missing: !issuer_is_https }
        }
        (None, None) => {
            return Err(invalid(
                "key_encryption_key",
                "is required: set `key_encryption_key` (32 bytes, base64) or `key_encryption_key_file`",
            ));
        }
    };

    let metrics_listen = raw
        .metrics_listen
        .map(|text| {
            text.parse::<SocketAddr>()
                .map_err(|_| invalid("metrics_listen", format!("`{text}` is not an address:port such as 127.0.0.1:9090")))
        })
        .transpose()?;
    if metrics_listen == Some(listen) && listen.port() != 0 {
        return Err(invalid("metrics_listen", "must differ from `listen`"));
    }

    let log_format = match raw.log_format.as_deref().unwrap_or("pretty") {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => return Err(invalid("log_format", format!("`{other}` is not one of pretty, json"))),
    };

    let session = SessionSettings {
        idle_timeout_secs: positive("session.idle_timeout_secs", raw.session.idle_timeout_secs.unwrap_or(30 * 60))?,
        absolute_timeout_secs: positive("session.absolute_timeout_secs", raw.session.absolute_timeout_secs.unwrap_or(10 * 3600))?,
        cookie_name: raw.session.cookie_name.unwrap_or_else(|| String::from("gatehouse_session")),
    };
    if session.idle_timeout_secs > session.absolute_timeout_secs {
        return Err(invalid("session.idle_timeout_secs", "must not exceed session.absolute_timeout_secs"));
    }
    if session.cookie_name.is_empty() || !session.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid("session.cookie_name", "must be letters, digits, `_` or `-`"));
    }

    let login = LoginSettings {
        max_failures_per_username: raw.login.max_failures_per_username.unwrap_or(5),
        max_failures_per_ip: raw.login.max_failures_per_ip.unwrap_or(50),
        failure_window_secs: positive("login.failure_window_secs", raw.login.failure_window_secs.unwrap_or(15 * 60))?,
        max_starts_per_ip_per_minute: raw.login.max_starts_per_ip_per_minute.unwrap_or(300),
    };
    if login.max_starts_per_ip_per_minute == 0 {
        return Err(invalid("login.max_starts_per_ip_per_minute", "must be at least 1"));
    }
    let client_auth = ClientAuthSettings {
        max_failures_per_client: raw.client_auth.max_failures_per_client.unwrap_or(20),
        max_failures_per_ip: raw.client_auth.max_failures_per_ip.unwrap_or(50),
        failure_window_secs: positive("client_auth.failure_window_secs", raw.client_auth.failure_window_secs.unwrap_or(300))?,
    };
    if client_auth.max_failures_per_client == 0 {
        return Err(invalid("client_auth.max_failures_per_client", "must be at least 1"));
    }
    if client_auth.max_failures_per_ip == 0 {
        return Err(invalid("client_auth.max_failures_per_ip", "must be at least 1"));
    }
    if login.max_failures_per_username == 0 {
        return Err(invalid("login.max_failures_per_username", "must be at least 1"));
    }
    if login.max_failures_per_ip == 0 {
        return Err(invalid("login.max_failures_per_ip", "must be at least 1"));
    }

    let mut tokens = TokenSettings {
        id_token_lifetime_secs: positive("tokens.id_token_lifetime_secs", raw.tokens.id_token_lifetime_secs.unwrap_or(3600))?,
        access_token_lifetime_secs: positive(
            "tokens.access_token_lifetime_secs",
            raw.tokens.access_token_lifetime_secs.unwrap_or(600),
        )?,
        key_cache_secs: positive("tokens.key_cache_secs", raw.tokens.key_cache_secs.unwrap_or(10))?,
        refresh_token_idle_lifetime_secs: positive(
            "tokens.refresh_token_idle_lifetime_secs",
            raw.tokens.refresh_token_idle_lifetime_secs.unwrap_or(14 * 86400),
        )?,
        refresh_token_absolute_lifetime_secs: positive(
            "tokens.refresh_token_absolute_lifetime_secs",
            raw.tokens.refresh_token_absolute_lifetime_secs.unwrap_or(30 * 86400),
        )?,
        refresh_token_reuse_grace_secs: raw.tokens.refresh_token_reuse_grace_secs.unwrap_or(0),
        longest_client_access_token_secs: 0,
    };
    if !(0..=MAX_REUSE_GRACE_SECS).contains(&tokens.refresh_token_reuse_grace_secs) {
        return Err(invalid(
            "tokens.refresh_token_reuse_grace_secs",
            format!("must be between 0 and {MAX_REUSE_GRACE_SECS} seconds"),
        ));
    }
    if tokens.refresh_token_idle_lifetime_secs > tokens.refresh_token_absolute_lifetime_secs {
        return Err(invalid(
            "tokens.refresh_token_idle_lifetime_secs",
            "must not exceed tokens.refresh_token_absolute_lifetime_secs",
        ));
    }

    let cleanup_interval_secs = raw.cleanup_interval_secs.unwrap_or(300);
    if cleanup_interval_secs == 0 {
        return Err(invalid("cleanup_interval_secs", "must be at least 1"));
    }

    let connector_check_interval_secs = raw.connector_check_interval_secs.unwrap_or(300);
    if (1..MIN_CONNECTOR_CHECK_INTERVAL_SECS).contains(&connector_check_interval_secs) {
        return Err(invalid(
            "connector_check_interval_secs",
            format!("must be 0 (no checks) or at least {MIN_CONNECTOR_CHECK_INTERVAL_SECS} seconds"),
        ));
    }

    let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
    for (index, text) in raw.trusted_proxies.iter().enumerate() {
        let network = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| invalid(format!("trusted_proxies[{index}]"), format!("`{text}` is not an address or CIDR network")))?;
        trusted_proxies.push(network);
    }

    let mut client_ids = HashSet::new();
    let mut clients = Vec::with_capacity(raw.clients.len());
    for (index, client) in raw.clients.into_iter().enumerate() {
        let client = validate_client(index, client, issuer_is_https)?;
        if !client_ids.insert(client.client_id.clone()) {
            return Err(invalid(format!("clients[{index}].client_id"), format!("duplicate client id `{}`", client.client_id)));
        }
        clients.push(client);
    }
    tokens.longest_client_access_token_secs =
        clients.iter().filter_map(|c| c.access_token_lifetime_secs).max().unwrap_or_default();

    let admin = AdminSettings {
        groups: raw.admin.groups.unwrap_or_else(|| vec![String::from("gatehouse-admins")]),
        read_only_groups: raw.admin.read_only_groups.unwrap_or_default(),
        max_auth_age_secs: positive("admin.max_auth_age_secs", raw.admin.max_auth_age_secs.unwrap_or(3600))?,
    };
    for (key, groups) in [("admin.groups", &admin.groups), ("admin.read_only_groups", &admin.read_only_groups)] {
        if groups.iter().any(|g| g.is_empty()) {
            return Err(invalid(key, "group names must not be empty"));
        }
    }

    let saml = SamlSettings { sp_metadata_validity_secs: raw.saml.sp_metadata_validity_secs.unwrap_or(7 * 86_400) };
    if !(3600..=MAX_SP_METADATA_VALIDITY_SECS).contains(&saml.sp_metadata_validity_secs) {
        return Err(invalid(
            "saml.sp_metadata_validity_secs",
            format!("must be between 3600 (an hour) and {MAX_SP_METADATA_VALIDITY_SECS} (a year)"),
        ));
    }

    let mut connector_ids = HashSet::new();
    let mut connectors = Vec::with_capacity(raw.connectors.len());
    for (index, connector) in raw.connectors.into_iter().enumerate() {
        let connector = validate_connector(index, connector, issuer_is_https)?;
        if !connector_ids.insert(connector.id.clone()) {
            return Err(invalid(format!("connectors[{index}].id"), format!("duplicate connector id `{}`", connector.id)));
        }
        connectors.push(connector);
    }
    for (index, client) in clients.iter().enumerate() {
        if let Some(unknown) = client.access.allowed_connectors.iter().find(|id| !connector_ids.contains(*id)) {
            return Err(invalid(format!("clients[{index}].allowed_connectors"), format!("`{unknown}` names no connector")));
        }
    }

    Ok(Config {
        issuer,
        listen,
        database_url: Secret::new(database_url),
        sqlite_synchronous: raw.sqlite_synchronous.unwrap_or_default(),
        key_encryption_key,
        log_format,
        metrics_listen,
        session,
        login,
        tokens,
        client_auth,
        admin,
        saml,
        cleanup_interval_secs,
        connector_check_interval_secs,
        trusted_proxies,
        clients,
        connectors,
    })
}

fn positive(key: &str, value: i64) -> Result<i64, ConfigError> {
    if value > 0 { Ok(value) } else { Err(invalid(key, "must be a positive number of seconds")) }
}

fn validate_issuer(text: &str) -> Result<String, ConfigError> {
    let url = Url::parse(text).map_err(|err| invalid("issuer", format!("`{text}` is not a URL: {err}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(invalid("issuer", "must be an http or https URL"));
    }
    if url.host_str().is_none() {
        return Err(invalid("issuer", "must have a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("issuer", "must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("issuer", "must not contain credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

pub fn decode_key_encryption_key(key: &str, encoded: &str) -> Result<[u8; KEY_ENCRYPTION_KEY_LEN], ConfigError> {
    let trimmed = encoded.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|_| invalid(key, "must be base64"))?;
    bytes.try_into().map_err(|_| invalid(key, format!("must decode to exactly {KEY_ENCRYPTION_KEY_LEN} bytes")))
}

/// A grace period is for clients racing themselves (two tabs, a retry), which takes seconds.
const MAX_REUSE_GRACE_SECS: i64 = 300;

/// Enough for any real policy; a longer list is a mistake or an attack on the matching.
const MAX_POLICY_NAMES: usize = 100;

const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

fn validate_client(index: usize, raw: ClientFields, issuer_is_https: bool) -> Result<ClientConfig, ConfigError> {
    validate_client_fields(&|field: &str| format!("clients[{index}].{field}"), raw, issuer_is_https)
}

/// A client as the configuration file spells it. The admin console and API read the same
/// fields (never the secret ones: Gatehouse generates those) and validate them with the same code.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFields {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_hash: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub name: Option<String>,
    #[serde(default)]
    pub first_party: bool,
    pub signing_alg: Option<String>,
    pub access_token_lifetime_secs: Option<i64>,
    #[serde(default)]
    pub issue_refresh_token: bool,
    pub default_audience: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    #[serde(default)]
    pub introspect_any: bool,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allowed_connectors: Vec<String>,
    pub groups_claim_filter: Option<GroupsFilter>,
    pub description: Option<String>,
    pub logo_uri: Option<String>,
    pub initiate_login_uri: Option<String>,
    pub launch_url: Option<String>,
    pub show_in_portal: Option<bool>,
}

/// Validates a client; errors name the field as `key` spells it.
pub fn validate_client_fields(
    key: &dyn Fn(&str) -> String,
    mut raw: ClientFields,
    issuer_is_https: bool,
) -> Result<ClientConfig, ConfigError> {
    if raw.client_id.is_empty()
        || raw.client_id.len() > 128
        || !raw.client_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(invalid(key("client_id"), "must be 1 to 128 characters of letters, digits, `-`, `.`, `_` or `~`"));
    }
    let access = validate_access(key, &mut raw)?;
    let portal = validate_portal(key, &mut raw, issuer_is_https)?;
    let plain = secret_value(&key("client_secret"), raw.client_secret, raw.client_secret_file)?;
    let secret = match (plain, raw.client_secret_hash) {
        (Some(_), Some(_)) => {
            return Err(invalid(key("client_secret_hash"), "set either client_secret or client_secret_hash, not both"));
        }
        (Some(plain), None) => {
            if plain.chars().count() < MIN_CLIENT_SECRET_LEN {
                return Err(invalid(key("client_secret"), format!("must be at least {MIN_CLIENT_SECRET_LEN} characters")));
            }
            ClientSecret::Plain(Secret::new(plain))
        }
        (None, Some(hash)) => {
            check_argon2_phc(&key("client_secret_hash"), &hash)?;
            ClientSecret::Hash(Secret::new(hash))
        }
        (None, None) => ClientSecret::None,
    };
    if raw
        .name
        .as_deref()
        .is_some_and(|name| name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control))
    {
        return Err(invalid(key("name"), "must be 1 to 200 characters, without control characters"));
    }
    let grant_types = raw.grant_types.clone().unwrap_or_else(|| vec!["authorization_code".into()]);
    // Machine clients (client_credentials alone) never send a browser anywhere.
    if raw.redirect_uris.is_empty() && grant_types.iter().any(|g| g == "authorization_code") {
        return Err(invalid(key("redirect_uris"), "at least one redirect URI is required for the authorization_code grant"));
    }
    for (i, uri) in raw.redirect_uris.iter().enumerate() {
        validate_redirect_uri(&key(&format!("redirect_uris[{i}]")), uri, issuer_is_https)?;
    }
    for (i, uri) in raw.post_logout_redirect_uris.iter().enumerate() {
        validate_redirect_uri(&key(&format!("post_logout_redirect_uris[{i}]")), uri, issuer_is_https)?;
    }
    let scopes = raw.scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    for scope in &scopes {
        if scope.is_empty() || !scope.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\') {
            return Err(invalid(key("scopes"), format!("`{scope}` is not a valid scope token")));
        }
    }
    for grant in &grant_types {
        if !GRANT_TYPES.contains(&grant.as_str()) {
            return Err(invalid(key("grant_types"), format!("`{grant}` is not one of {}", GRANT_TYPES.join(", "))));
        }
    }
    if grant_types.iter().any(|g| g == "client_credentials") && matches!(secret, ClientSecret::None) {
        return Err(invalid(key("grant_types"), "client_credentials needs a confidential client (set client_secret)"));
    }
    let signing_alg = match raw.signing_alg.as_deref() {
        None => SigningAlg::ES256,
        Some(text) => {
            SigningAlg::parse(text).ok_or_else(|| invalid(key("signing_alg"), format!("`{text}` is not one of ES256, RS256")))?
        }
    };
    let access_token_lifetime_secs =
        raw.access_token_lifetime_secs.map(|secs| positive(&key("access_token_lifetime_secs"), secs)).transpose()?;
    if raw.default_audience.as_deref().is_some_and(|aud| aud.is_empty() || aud.chars().any(char::is_control)) {
        return Err(invalid(key("default_audience"), "must be a non-empty string"));
    }
    for (i, resource) in raw.resources.iter().enumerate() {
        let url = Url::parse(resource)
            .map_err(|err| invalid(key(&format!("resources[{i}]")), format!("`{resource}` is not an absolute URI: {err}")))?;
        if url.fragment().is_some() {
            return Err(invalid(key(&format!("resources[{i}]")), "must not contain a fragment (RFC 8707)"));
        }
    }
    if let Some(uri) = &raw.backchannel_logout_uri {
        validate_redirect_uri(&key("backchannel_logout_uri"), uri, issuer_is_https)?;
        if !uri.starts_with("http://") && !uri.starts_with("https://") {
            return Err(invalid(key("backchannel_logout_uri"), "must be an http or https URL"));
        }
    }
    Ok(ClientConfig {
        name: raw.name.unwrap_or_else(|| raw.client_id.clone()),
        client_id: raw.client_id,
        secret,
        redirect_uris: raw.redirect_uris,
        post_logout_redirect_uris: raw.post_logout_redirect_uris,
        scopes,
        grant_types,
        first_party: raw.first_party,
        signing_alg,
        access_token_lifetime_secs,
        issue_refresh_token: raw.issue_refresh_token,
        default_audience: raw.default_audience,
        resources: raw.resources,
        backchannel_logout_uri: raw.backchannel_logout_uri,
        introspect_any: raw.introspect_any,
        access,
        portal,
    })
}

/// Group and connector names are matched exactly, so they are kept printable and bounded.
fn validate_names(key: &str, names: &[String], what: &str) -> Result<(), ConfigError> {
    if names.len() > MAX_POLICY_NAMES {
        return Err(invalid(key, format!("at most {MAX_POLICY_NAMES} {what}")));
    }
    for name in names {
        if name.trim().is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
            return Err(invalid(key, format!("`{name}` is not a valid {what} name: 1 to 256 printable characters")));
        }
    }
    Ok(())
}

fn validate_access(key: &dyn Fn(&str) -> String, raw: &mut ClientFields) -> Result<AccessPolicy, ConfigError> {
    validate_names(&key("allowed_groups"), &raw.allowed_groups, "group")?;
    validate_names(&key("allowed_connectors"), &raw.allowed_connectors, "connector")?;
    match &raw.groups_claim_filter {
        Some(GroupsFilter::Prefix(prefix)) if prefix.is_empty() || prefix.chars().any(char::is_control) => {
            return Err(invalid(key("groups_claim_filter"), "a prefix must be a non-empty string"));
        }
        Some(GroupsFilter::Prefix(_)) | None => {}
        Some(GroupsFilter::List(names)) => validate_names(&key("groups_claim_filter"), names, "group")?,
    }
    Ok(AccessPolicy {
        allowed_groups: std::mem::take(&mut raw.allowed_groups),
        allowed_connectors: std::mem::take(&mut raw.allowed_connectors),
        groups_claim_filter: raw.groups_claim_filter.take(),
    })
}

/// A URL a person's browser opens from the portal: absolute http(s), and https to anything
/// but a loopback host when the issuer is https.
fn validate_portal_url(key: &str, text: &str, issuer_is_https: bool) -> Result<(), ConfigError> {
    validate_redirect_uri(key, text, issuer_is_https)?;
    if !text.starts_with("https://") && !text.starts_with("http://") {
        return Err(invalid(key, "must be an http or https URL"));
    }
    Ok(())
}

fn validate_portal(
    key: &dyn Fn(&str) -> String,
    raw: &mut ClientFields,
    issuer_is_https: bool,
) -> Result<PortalEntry, ConfigError> {
    if raw
        .description
        .as_deref()
        .is_some_and(|d| d.trim().is_empty() || d.chars().count() > 500 || d.chars().any(char::is_control))
    {
        return Err(invalid(key("description"), "must be 1 to 500 characters on one line"));
    }
    for (field, value) in
        [("logo_uri", &raw.logo_uri), ("initiate_login_uri", &raw.initiate_login_uri), ("launch_url", &raw.launch_url)]
    {
        if let Some(url) = value {
            validate_portal_url(&key(field), url, issuer_is_https)?;
        }
    }
    let launchable = raw.initiate_login_uri.is_some() || raw.launch_url.is_some();
    let show_in_portal = raw.show_in_portal.unwrap_or(launchable);
    if show_in_portal && !launchable {
        return Err(invalid(
            key("show_in_portal"),
            "a portal tile needs initiate_login_uri or launch_url to open the application",
        ));
    }
    Ok(PortalEntry {
        description: raw.description.take(),
        logo_uri: raw.logo_uri.take(),
        initiate_login_uri: raw.initiate_login_uri.take(),
        launch_url: raw.launch_url.take(),
        show_in_portal,
    })
}

/// Redirect URIs are compared exactly later, so they must be absolute, fragment-free, and not
/// plain http to a remote host when the broker itself runs on https.
fn validate_redirect_uri(key: &str, text: &str, issuer_is_https: bool) -> Result<(), ConfigError> {
    let url = Url::parse(text).map_err(|err| invalid(key, format!("`{text}` is not an absolute URL: {err}")))?;
    if url.fragment().is_some() {
        return Err(invalid(key, "must not contain a fragment"));
    }
    if url.scheme() == "http" && issuer_is_https {
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !loopback {
            return Err(invalid(key, "plain http is only allowed for loopback hosts when the issuer is https"));
        }
    }
    if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(invalid(key, format!("the `{}` scheme is not allowed", url.scheme())));
    }
    Ok(())
}

fn check_argon2_phc(key: &str, hash: &str) -> Result<(), ConfigError> {
    let parsed = PasswordHash::new(hash).map_err(|_| invalid(key, "is not a PHC string (use `gatehouse hash-password`)"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(invalid(key, "must be an argon2id hash (use `gatehouse hash-password`)"));
    }
    Ok(())
}

fn validate_connector(index: usize, spec: ConnectorSpec, issuer_is_https: bool) -> Result<ConnectorConfig, ConfigError> {
    validate_connector_spec(&|field: &str| format!("connectors[{index}].{field}"), spec, SpecOrigin::File, issuer_is_https)
}

/// The largest IdP metadata document accepted inline.
pub const MAX_METADATA_XML_BYTES: usize = 1024 * 1024;

/// Checks a connector specification from the file or the API; errors name the field as `key`
/// spells it. Upstream URLs must be https, except to a loopback host or, when Gatehouse itself
/// runs on plain http (a development setup such as docker-compose), to any host.
pub fn validate_connector_spec(
    key: &dyn Fn(&str) -> String,
    spec: ConnectorSpec,
    origin: SpecOrigin,
    issuer_is_https: bool,
) -> Result<ConnectorConfig, ConfigError> {
    let raw = spec;
    if raw.id.is_empty()
        || raw.id.len() > 64
        || !raw.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(key("id"), format!("`{}` must be 1 to 64 characters of a-z, 0-9 and `-`", raw.id)));
    }
    if raw.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control)) {
        return Err(invalid(key("name"), "must be 1 to 100 printable characters"));
    }
    if raw.email_domains.len() > 100 {
        return Err(invalid(key("email_domains"), "at most 100 domains"));
    }
    for domain in &raw.email_domains {
        if domain.is_empty()
            || domain.len() > 253
            || domain.contains('@')
            || domain.contains(char::is_whitespace)
            || domain.chars().any(char::is_control)
        {
            return Err(invalid(key("email_domains"), format!("`{domain}` is not a domain name")));
        }
    }
    if origin == SpecOrigin::Api {
        let files =
            [("client_secret_file", raw.client_secret_file.is_some()), ("idp_metadata_file", raw.idp_metadata_file.is_some())];
        if let Some((field, _)) = files.iter().find(|(_, set)| *set) {
            return Err(invalid(key(field), "names a file on the server, which only the configuration file may do"));
        }
        if raw.kind == "local" {
            return Err(invalid(key("type"), "local connectors are declared in the configuration file"));
        }
    }
    let kind = match raw.kind.as_str() {
        "local" => {
            refuse_saml_keys(key, &raw)?;
            let oidc_only =
                [("issuer", raw.issuer.is_some()), ("client_id", raw.client_id.is_some()), ("scopes", raw.scopes.is_some())];
            if let Some((field, _)) = oidc_only.iter().find(|(_, set)| *set) {
                return Err(invalid(key(field), "only oidc connectors have this setting"));
            }
            let mut usernames = HashSet::new();
            let mut users = Vec::with_capacity(raw.users.len());
            for (i, user) in raw.users.iter().enumerate() {
                let user_key = |field: &str| key(&format!("users[{i}].{field}"));
                if user.username.is_empty() || user.username.len() > 128 || user.username.chars().any(char::is_control) {
                    return Err(invalid(user_key("username"), "must be 1 to 128 printable characters"));
                }
                if !usernames.insert(user.username.clone()) {
                    return Err(invalid(user_key("username"), format!("duplicate username `{}`", user.username)));
                }
                check_argon2_phc(&user_key("password_hash"), &user.password_hash)?;
                users.push(LocalUser::from(user.clone()));
            }
            ConnectorKind::Local { users }
        }
        "oidc" => {
            if !raw.users.is_empty() {
                return Err(invalid(key("users"), "only local connectors have users"));
            }
            refuse_saml_keys(key, &raw)?;
            ConnectorKind::Oidc(validate_oidc_connector(key, &raw, issuer_is_https)?)
        }
        "saml" => {
            if !raw.users.is_empty() {
                return Err(invalid(key("users"), "only local connectors have users"));
            }
            ConnectorKind::Saml(validate_saml_connector(key, &raw, issuer_is_https)?)
        }
        other => return Err(invalid(key("type"), format!("`{other}` is not a known connector type (local, oidc, saml)"))),
    };
    let link = validate_link_policy(key, &raw)?;
    if raw.kind == "local" && !raw.mapping.is_empty() {
        return Err(invalid(key("mapping"), "local users are mapped as the file declares them"));
    }
    let rules = crate::mapping::rules::Rules::compile(&raw.mapping)
        .map_err(|err| invalid(key(&format!("mapping.{}", err.field)), err.reason))?;
    Ok(ConnectorConfig {
        rules,
        name: raw.name.clone().map(|n| n.trim().to_owned()).unwrap_or_else(|| raw.id.clone()),
        id: raw.id.clone(),
        email_domains: raw.email_domains.clone(),
        kind,
        link,
        spec: raw,
    })
}

fn validate_link_policy(key: &dyn Fn(&str) -> String, raw: &ConnectorSpec) -> Result<LinkPolicy, ConfigError> {
    if raw.kind == "local" && (raw.link_by_email || raw.when_email_taken.is_some()) {
        let field = if raw.link_by_email { "link_by_email" } else { "when_email_taken" };
        return Err(invalid(key(field), "local users are their own accounts; only upstream connectors link"));
    }
    let refuse_when_email_taken = match raw.when_email_taken.as_deref() {
        None | Some("create_user") => false,
        Some("refuse") => true,
        Some(other) => return Err(invalid(key("when_email_taken"), format!("`{other}` is not create_user or refuse"))),
    };
    Ok(LinkPolicy { link_by_email: raw.link_by_email, refuse_when_email_taken })
}

const DEFAULT_UPSTREAM_SCOPES: [&str; 3] = ["openid", "email", "profile"];

fn validate_oidc_connector(
    key: &dyn Fn(&str) -> String,
    raw: &ConnectorSpec,
    issuer_is_https: bool,
) -> Result<OidcConnectorSettings, ConfigError> {
    let issuer = raw.issuer.clone().ok_or_else(|| invalid(key("issuer"), "is required for an oidc connector"))?;
    if issuer.len() > 2048 {
        return Err(invalid(key("issuer"), "must be at most 2048 characters"));
    }
    let url = Url::parse(&issuer).map_err(|err| invalid(key("issuer"), format!("`{issuer}` is not a URL: {err}")))?;
    if !upstream_scheme_allowed(&url, issuer_is_https) {
        return Err(invalid(key("issuer"), PLAIN_HTTP_UPSTREAM));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(key("issuer"), "must not have a query, fragment or credentials"));
    }
    let client_id = raw.client_id.clone().ok_or_else(|| invalid(key("client_id"), "is required for an oidc connector"))?;
    if client_id.is_empty() || client_id.len() > 255 || client_id.chars().any(char::is_control) {
        return Err(invalid(key("client_id"), "must be 1 to 255 printable characters"));
    }
    let client_secret = secret_value(
        &key("client_secret"),
        raw.client_secret.as_ref().map(|s| s.expose().clone()),
        raw.client_secret_file.clone(),
    )?;
    if client_secret.as_deref().is_some_and(str::is_empty) {
        return Err(invalid(key("client_secret"), "must not be empty (omit it for a public client)"));
    }
    let scopes = raw.scopes.clone().unwrap_or_else(|| DEFAULT_UPSTREAM_SCOPES.map(String::from).to_vec());
    if scopes.len() > 50 || scopes.iter().any(|s| s.len() > 128) {
        return Err(invalid(key("scopes"), "at most 50 scopes of at most 128 characters"));
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(key("scopes"), "must include `openid`"));
    }
    if let Some(bad) =
        scopes.iter().find(|s| s.is_empty() || !s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'))
    {
        return Err(invalid(key("scopes"), format!("`{bad}` is not a valid scope token")));
    }
    let claim = |value: &Option<String>, default: &str, field: &str| -> Result<String, ConfigError> {
        let name = value.clone().unwrap_or_else(|| default.to_owned());
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(invalid(key(&format!("claims.{field}")), "must be a claim name of at most 128 characters"));
        }
        Ok(name)
    };
    let claims = ClaimMapping {
        username: claim(&raw.claims.username, "preferred_username", "username")?,
        email: claim(&raw.claims.email, "email", "email")?,
        name: claim(&raw.claims.name, "name", "name")?,
        groups: claim(&raw.claims.groups, "groups", "groups")?,
    };
    let (timeout_secs, clock_skew_secs) = upstream_limits(key, raw)?;
    Ok(OidcConnectorSettings {
        issuer,
        client_id,
        client_secret: client_secret.map(Secret::new),
        scopes,
        claims,
        userinfo: raw.userinfo,
        trust_email: raw.trust_email,
        timeout_secs,
        clock_skew_secs,
    })
}

/// The request timeout and clock skew every upstream connector has.
fn upstream_limits(key: &dyn Fn(&str) -> String, raw: &ConnectorSpec) -> Result<(u64, i64), ConfigError> {
    let timeout_secs = raw.timeout_secs.unwrap_or(10);
    if !(1..=120).contains(&timeout_secs) {
        return Err(invalid(key("timeout_secs"), "must be between 1 and 120"));
    }
    let clock_skew_secs = raw.clock_skew_secs.unwrap_or(60);
    if !(0..=600).contains(&clock_skew_secs) {
        return Err(invalid(key("clock_skew_secs"), "must be between 0 and 600"));
    }
    Ok((timeout_secs, clock_skew_secs))
}

fn refuse_saml_keys(key: &dyn Fn(&str) -> String, raw: &ConnectorSpec) -> Result<(), ConfigError> {
    let saml_only = [
        ("idp_metadata_url", raw.idp_metadata_url.is_some()),
        ("idp_metadata_file", raw.idp_metadata_file.is_some()),
        ("idp_metadata_xml", raw.idp_metadata_xml.is_some()),
        ("allow_idp_initiated", raw.allow_idp_initiated),
        ("allow_sha1", raw.allow_sha1),
        ("sign_requests", raw.sign_requests.is_some()),
        ("claims.subject", raw.claims.subject.is_some()),
    ];
    match saml_only.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(invalid(key(field), "only saml connectors have this setting")),
        None => Ok(()),
    }
}

fn validate_saml_connector(
    key: &dyn Fn(&str) -> String,
    raw: &ConnectorSpec,
    issuer_is_https: bool,
) -> Result<SamlConnectorSettings, ConfigError> {
    let oidc_only = [
        ("issuer", raw.issuer.is_some()),
        ("client_id", raw.client_id.is_some()),
        ("client_secret", raw.client_secret.is_some() || raw.client_secret_file.is_some()),
        ("scopes", raw.scopes.is_some()),
        ("userinfo", raw.userinfo),
    ];
    if let Some((field, _)) = oidc_only.iter().find(|(_, set)| *set) {
        return Err(invalid(key(field), "only oidc connectors have this setting"));
    }
    let sources = [raw.idp_metadata_url.is_some(), raw.idp_metadata_file.is_some(), raw.idp_metadata_xml.is_some()];
    let metadata = match sources.iter().filter(|set| **set).count() {
        0 => {
            return Err(invalid(
                key("idp_metadata_url"),
                "a saml connector needs its IdP's metadata: idp_metadata_url, idp_metadata_xml or idp_metadata_file",
            ));
        }
        1 => {
            if let Some(url) = &raw.idp_metadata_url {
                let parsed =
                    Url::parse(url).map_err(|err| invalid(key("idp_metadata_url"), format!("`{url}` is not a URL: {err}")))?;
                if !upstream_scheme_allowed(&parsed, issuer_is_https) {
                    return Err(invalid(key("idp_metadata_url"), PLAIN_HTTP_UPSTREAM));
                }
                if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(invalid(key("idp_metadata_url"), "must not have a fragment or credentials"));
                }
                MetadataSource::Url(url.clone())
            } else if let Some(path) = &raw.idp_metadata_file {
                if !path.is_file() {
                    return Err(invalid(key("idp_metadata_file"), format!("{} is not a readable file", path.display())));
                }
                MetadataSource::File(path.clone())
            } else {
                let xml = raw.idp_metadata_xml.clone().unwrap_or_default();
                if xml.trim().is_empty() || xml.len() > MAX_METADATA_XML_BYTES {
                    return Err(invalid(key("idp_metadata_xml"), "must be the IdP's metadata document, at most 1 MiB"));
                }
                MetadataSource::Xml(xml)
            }
        }
        _ => {
            return Err(invalid(
                key("idp_metadata_url"),
                "set one of idp_metadata_url, idp_metadata_xml and idp_metadata_file, not several",
            ));
        }
    };
    let name = |value: &Option<String>, default: &str, field: &str| -> Result<String, ConfigError> {
        let name = value.clone().unwrap_or_else(|| default.to_owned());
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(invalid(key(&format!("claims.{field}")), "must be an attribute name or NameID (at most 256 characters)"));
        }
        Ok(name)
    };
    let claims = SamlClaimMapping {
        subject: name(&raw.claims.subject, "NameID", "subject")?,
        username: raw.claims.username.as_ref().map(|u| name(&Some(u.clone()), "", "username")).transpose()?,
        email: name(&raw.claims.email, "mail", "email")?,
        name: name(&raw.claims.name, "displayName", "name")?,
        groups: name(&raw.claims.groups, "groups", "groups")?,
    };
    let (timeout_secs, clock_skew_secs) = upstream_limits(key, raw)?;
    Ok(SamlConnectorSettings {
        metadata,
        allow_idp_initiated: raw.allow_idp_initiated,
        allow_sha1: raw.allow_sha1,
        sign_requests: raw.sign_requests.unwrap_or(true),
        claims,
        trust_email: raw.trust_email,
        timeout_secs,
        clock_skew_secs,
    })
}

const PLAIN_HTTP_UPSTREAM: &str =
    "must be an https URL (plain http only for loopback hosts, or to any host while the issuer is plain http)";

/// A plain-http issuer is a development setup, where IdPs on other containers may be plain http
/// too; an https issuer never talks plain http beyond its own machine.
fn upstream_scheme_allowed(url: &Url, issuer_is_https: bool) -> bool {
    url.scheme() == "https" || url.scheme() == "http" && (!issuer_is_https || is_loopback_host(url))
}

pub(crate) fn is_loopback_host(url: &Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}
