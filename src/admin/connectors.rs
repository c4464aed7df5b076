//! Upstream connectors (SAML and OpenID Connect identity providers) created, edited, disabled
//! and removed at run time. Each save is checked against the IdP first (discovery and keys, or
//! the metadata), so a typo is refused at the field rather than found at the next sign-in.
//! Connectors the configuration file declares are shown but never changed here.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Actor, Admin, AdminError, AdminResult, Touched, events, invalid};
use crate::clock::UnixTime;
use crate::config::{ConfigError, ConnectorConfig, ConnectorKind, ConnectorSpec, SpecOrigin, validate_connector_spec};
use crate::secret::constant_time_eq;
use crate::session::pending::PendingLogin;
use crate::store::{ConnectorRecord, StoreError};
use crate::upstream::oidc::DiscoverySummary;
use crate::upstream::saml::metadata::CertificateSummary;
use crate::upstream::{Probe, UpstreamSetupError};

/// Fields a caller never sets: they would make the server read its own files.
const FILE_FIELDS: [&str; 2] = ["client_secret_file", "idp_metadata_file"];

/// A connector as the console and the API show it: the configuration's fields, never the
/// client secret (only whether there is one) nor local users' password hashes.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorView {
    #[serde(flatten)]
    pub spec: ConnectorSpec,
    pub has_client_secret: bool,
    pub disabled: bool,
    pub managed_by_config: bool,
    pub version: i64,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// What the IdP needs to know about Gatehouse for this connector.
    pub gatehouse: ServiceProviderInfo,
}

/// What an administrator pastes into the IdP's console.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceProviderInfo {
    /// OIDC: the redirect URI to register at the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// SAML: this SP's entity id, assertion consumer service and metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
}

impl ConnectorView {
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or(&self.spec.id)
    }

    pub fn kind(&self) -> &str {
        &self.spec.kind
    }
}

/// What checking a connector against its IdP found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorCheck {
    Oidc(DiscoverySummary),
    Saml(SamlSummary),
}

#[derive(Debug, Clone, Serialize)]
pub struct SamlSummary {
    pub entity_id: String,
    pub sso_url: String,
    pub want_authn_requests_signed: bool,
    pub certificates: Vec<CertificateSummary>,
}

fn config_error(err: ConfigError) -> AdminError {
    match err {
        ConfigError::Invalid { key, reason } => AdminError::Invalid { field: key, reason },
        other => AdminError::Internal(other.to_string()),
    }
}

fn managed_by_file(id: &str) -> AdminError {
    AdminError::Conflict(format!("connector `{id}` is managed by the configuration file; change it there"))
}

/// Reads a specification from JSON, naming the field at fault.
fn parse_spec(input: Map<String, Value>) -> AdminResult<ConnectorSpec> {
    if let Some(field) = FILE_FIELDS.iter().find(|f| input.contains_key(**f)) {
        return Err(invalid(*field, "names a file on the server, which only the configuration file may do"));
    }
    let value = Value::Object(input);
    serde_path_to_error::deserialize::<_, ConnectorSpec>(&value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::from("body") } else { path };
        let reason = err.into_inner().to_string();
        invalid(field, reason.split(" at line ").next().unwrap_or_default())
    })
}

fn take_version(input: &mut Map<String, Value>) -> AdminResult<Option<i64>> {
    match input.remove("version") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| invalid("version", "must be the integer version you read")),
    }
}

/// Where a failed check is reported: the field that names the IdP.
fn check_failed(connector: &ConnectorConfig, reason: String) -> AdminError {
    let field = match &connector.kind {
        ConnectorKind::Oidc(_) => "issuer",
        ConnectorKind::Saml(_) if connector.spec.idp_metadata_xml.is_some() => "idp_metadata_xml",
        _ => "idp_metadata_url",
    };
    invalid(field, reason)
}

impl Admin {
    fn view(&self, record: &ConnectorRecord) -> AdminResult<ConnectorView> {
        // Whether a secret is stored is all a view says of it: no need to open it.
        let mut spec = crate::upstream::spec::document(record).map_err(|err| AdminError::Internal(err.to_string()))?;
        let has_client_secret = record.sealed_secret.is_some();
        spec.name = Some(record.name.clone());
        // Password hashes stay in the file; the view says who the users are, not their hashes.
        for user in &mut spec.users {
            user.password_hash = String::from(crate::secret::MASK);
        }
        let issuer = self.provider.issuer();
        let gatehouse = match record.kind.as_str() {
            "oidc" => ServiceProviderInfo {
                redirect_uri: Some(format!("{issuer}{}", crate::upstream::oidc::callback_path(&record.id))),
                ..ServiceProviderInfo::default()
            },
            "saml" => {
                let base = format!("{}/saml/{}", issuer.trim_end_matches('/'), record.id);
                ServiceProviderInfo {
                    acs_url: Some(format!("{base}/acs")),
                    metadata_url: Some(format!("{base}/metadata")),
                    entity_id: Some(base),
                    ..ServiceProviderInfo::default()
                }
            }
            _ => ServiceProviderInfo::default(),
        };
        Ok(ConnectorView {
            spec,
            has_client_secret,
            disabled: record.disabled,
            managed_by_config: record.managed_by_config,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
            gatehouse,
        })
    }

    /// Every connector, in id order (connectors are few: one per identity provider).
    pub async fn list_connectors(&self) -> AdminResult<Vec<ConnectorView>> {
        self.provider.store.list_connectors().await?.iter().map(|r| self.view(r)).collect()
    }

    pub async fn connector(&self, id: &str) -> AdminResult<ConnectorView> {
        self.view(&self.provider.store.get_connector(id).await?)
    }

    /// Checks a validated connector against its IdP, as a sign-in would reach it.
    pub async fn check_connector(&self, connector: &ConnectorConfig) -> AdminResult<ConnectorCheck> {
        let now = self.now();
        let probe = self.upstreams.probe(connector).await.map_err(|err| match err {
            UpstreamSetupError::Spec(err) => AdminError::Internal(err.to_string()),
            other => check_failed(connector, other.to_string()),
        })?;
        match probe {
            Probe::Oidc(oidc) => oidc
                .check(now, crate::upstream::FetchFor::Check)
                .await
                .map(ConnectorCheck::Oidc)
                .map_err(|err| check_failed(connector, format!("the provider could not be used: {err}"))),
            Probe::Saml(saml) => {
                let metadata = saml
                    .idp_metadata(now)
                    .await
                    .map_err(|err| check_failed(connector, format!("the IdP's metadata could not be used: {err}")))?;
                Ok(ConnectorCheck::Saml(SamlSummary {
                    entity_id: metadata.entity_id.clone(),
                    sso_url: metadata.sso_redirect_url.to_string(),
                    want_authn_requests_signed: metadata.want_authn_requests_signed,
                    certificates: metadata.certificates.clone(),
                }))
            }
            Probe::Local => Err(invalid("type", "local connectors are declared in the configuration file")),
        }
    }

    /// What the IdP says now about a saved connector (fetched, not cached).
    pub async fn recheck_connector(&self, id: &str) -> AdminResult<ConnectorCheck> {
        let record = self.provider.store.get_connector(id).await?;
        let connector = crate::upstream::spec::decode(&record, self.upstreams.kek(), self.provider.config.issuer_is_https())
            .map_err(|err| AdminError::Internal(err.to_string()))?;
        self.check_connector(&connector).await
    }

    fn validate(&self, spec: ConnectorSpec) -> AdminResult<ConnectorConfig> {
        let connector =
            validate_connector_spec(&|f: &str| f.to_owned(), spec, SpecOrigin::Api, self.provider.config.issuer_is_https())
                .map_err(config_error)?;
        if self.provider.config.connectors.iter().any(|c| c.id == connector.id) {
            return Err(managed_by_file(&connector.id));
        }
        Ok(connector)
    }

    /// Creates a connector from the configuration's fields, after checking it against its
    /// IdP; it signs people in on every node within seconds.
    pub async fn create_connector(
        &self,
        actor: &Actor,
        mut input: Map<String, Value>,
    ) -> AdminResult<(ConnectorView, ConnectorCheck)> {
        actor.may_write()?;
        input.remove("version");
        let connector = self.validate(parse_spec(input)?)?;
        let check = self.check_connector(&connector).await?;
        let record = self.upstreams.encode(&connector, self.now()).map_err(|err| AdminError::Internal(err.to_string()))?;
        match self.provider.store.insert_connector(&record).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                return Err(AdminError::Conflict(format!("a connector with id `{}` exists", record.id)));
            }
            Err(err) => return Err(err.into()),
        }
        self.connectors_changed().await;
        let touched = Touched { connector_id: Some(&record.id), detail: Some(record.kind.clone()), ..Touched::default() };
        self.audit(actor, events::CONNECTOR_CREATED, touched).await?;
        Ok((self.connector(&record.id).await?, check))
    }

    /// Changes the fields `patch` names; the rest stay. `client_secret` is write-only: absent,
    /// the stored one is kept; `null` removes it (a public client). With `version`, the change
    /// applies only to that version (else 409).
    pub async fn update_connector(
        &self,
        actor: &Actor,
        id: &str,
        mut patch: Map<String, Value>,
    ) -> AdminResult<(ConnectorView, ConnectorCheck)> {
        actor.may_write()?;
        let expected_version = take_version(&mut patch)?;
        let current = self.provider.store.get_connector(id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(id));
        }
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(AdminError::Conflict(String::from("changed by someone else meanwhile; reload and try again")));
        }
        if patch.get("id").is_some_and(|v| v.as_str() != Some(id)) {
            return Err(invalid("id", "cannot change; create a new connector instead"));
        }
        if patch.get("type").is_some_and(|v| v.as_str() != Some(current.kind.as_str())) {
            return Err(invalid("type", "cannot change; create a new connector instead"));
        }
        let stored = self.upstreams.spec_of(&current).map_err(|err| AdminError::Internal(err.to_string()))?;
        let stored_secret = stored.client_secret.clone();
        let Ok(Value::Object(mut merged)) = serde_json::to_value(ConnectorSpec { client_secret: None, ..stored }) else {
            return Err(AdminError::Internal(String::from("a connector specification is not a JSON object")));
        };
        let mut changed: Vec<String> =
            patch.keys().filter(|k| *k != "client_secret" && merged.get(*k) != patch.get(*k)).cloned().collect();
        // One metadata source replaces another rather than adding a second.
        if ["idp_metadata_url", "idp_metadata_xml"].iter().any(|k| patch.get(*k).is_some_and(|v| !v.is_null())) {
            merged.remove("idp_metadata_url");
            merged.remove("idp_metadata_xml");
        }
        // The stored secret goes only to the issuer it was given for: a new issuer needs it
        // typed again, so no edit can send it to another server.
        let issuer_changes = patch.get("issuer").is_some_and(|issuer| merged.get("issuer") != Some(issuer));
        if issuer_changes && stored_secret.is_some() && !patch.contains_key("client_secret") {
            return Err(invalid("client_secret", "give the client secret again when the issuer changes (or null for none)"));
        }
        let new_secret = match patch.remove("client_secret") {
            None => stored_secret.clone().map(|s| Value::from(s.expose().clone())),
            Some(Value::Null) => None,
            Some(value) => Some(value),
        };
        let secret_changed = match (&stored_secret, &new_secret) {
            (None, None) => false,
            (Some(old), Some(Value::String(new))) => !constant_time_eq(old.expose().as_bytes(), new.as_bytes()),
            _ => true,
        };
        if secret_changed {
            changed.push(String::from("client_secret"));
        }
        // `null` clears an optional field.
        for (field, value) in patch {
            if value.is_null() {
                merged.remove(&field);
            } else {
                merged.insert(field, value);
            }
        }
        if let Some(secret) = new_secret {
            merged.insert(String::from("client_secret"), secret);
        }
        let connector = self.validate(parse_spec(merged)?)?;
        let check = self.check_connector(&connector).await?;
        let now = self.now();
        let record = ConnectorRecord {
            created_at: current.created_at,
            disabled: current.disabled,
            ..self.upstreams.encode(&connector, now).map_err(|err| AdminError::Internal(err.to_string()))?
        };
        self.provider.store.replace_connector(&record, expected_version.unwrap_or(current.version)).await?;
        self.connectors_changed().await;
        let touched =
            Touched { connector_id: Some(id), detail: Some(format!("changed: {}", changed.join(", "))), ..Touched::default() };
        self.audit(actor, events::CONNECTOR_UPDATED, touched).await?;
        Ok((self.connector(id).await?, check))
    }

    /// The sessions signed in through a connector, which disabling or removing it ends.
    pub async fn connector_sessions(&self, id: &str) -> AdminResult<usize> {
        self.provider.store.get_connector(id).await?;
        Ok(self.provider.store.list_unrevoked_sso_sessions(Some(id), None).await?.len())
    }

    /// Stops (or resumes) sign-ins through a connector; disabling ends its users' sessions.
    /// Returns how many sessions ended.
    pub async fn set_connector_disabled(&self, actor: &Actor, id: &str, disabled: bool) -> AdminResult<usize> {
        actor.may_write()?;
        let current = self.provider.store.get_connector(id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(id));
        }
        if current.disabled != disabled {
            let record = ConnectorRecord { disabled, updated_at: self.now(), ..current.clone() };
            self.provider.store.replace_connector(&record, current.version).await?;
            self.connectors_changed().await;
        }
        let ended = if disabled { self.end_connector_sessions(id).await? } else { 0 };
        let kind = if disabled { events::CONNECTOR_DISABLED } else { events::CONNECTOR_ENABLED };
        let touched = Touched { connector_id: Some(id), detail: Some(format!("sessions ended: {ended}")), ..Touched::default() };
        self.audit(actor, kind, touched).await?;
        Ok(ended)
    }

    /// Removes a connector and ends its users' sessions; the users and their links stay, so
    /// a connector added again under the same id finds them. Returns how many sessions ended.
    pub async fn delete_connector(&self, actor: &Actor, id: &str) -> AdminResult<usize> {
        actor.may_write()?;
        let current = self.provider.store.get_connector(id).await?;
        if current.managed_by_config {
            return Err(managed_by_file(id));
        }
        self.provider.store.delete_connector(id).await?;
        self.connectors_changed().await;
        let ended = self.end_connector_sessions(id).await?;
        let touched = Touched { connector_id: Some(id), detail: Some(format!("sessions ended: {ended}")), ..Touched::default() };
        self.audit(actor, events::CONNECTOR_DELETED, touched).await?;
        Ok(ended)
    }

    async fn end_connector_sessions(&self, id: &str) -> AdminResult<usize> {
        let sessions = self.provider.store.list_unrevoked_sso_sessions(Some(id), None).await?;
        self.end_sessions(&sessions).await?;
        Ok(sessions.len())
    }

    /// Applies a change on this node at once; other nodes notice the new version themselves.
    async fn connectors_changed(&self) {
        if let Err(err) = self.upstreams.refresh().await {
            tracing::warn!(error = %err, "connectors could not be rebuilt after a change; the next check retries");
        }
    }
}

/// A refused sign-in through a connector, as its page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SignInFailure {
    pub time: UnixTime,
    pub ip: Option<String>,
    /// The machine-readable reason, e.g. `audience_mismatch`.
    pub reason: String,
    /// The values involved, e.g. what was expected and what came.
    pub values: Option<String>,
    /// What to try, for the reasons Gatehouse knows.
    pub fix: &'static str,
}

impl SignInFailure {
    /// A failure from its recorded detail, `reason: values`.
    pub fn from_detail(time: UnixTime, ip: Option<String>, detail: &str) -> Self {
        let (reason, values) = match detail.split_once(": ") {
            Some((reason, values)) => (reason.to_owned(), Some(values.to_owned())),
            None => (detail.to_owned(), None),
        };
        Self { time, ip, fix: fix_for(&reason), reason, values }
    }
}

/// How many failures a connector's page lists, and how far back in the audit log it looks.
const FAILURES_SHOWN: usize = 100;
const FAILURE_SCAN_PAGES: usize = 10;

/// What an administrator can try for a recorded failure reason.
pub fn fix_for(reason: &str) -> &'static str {
    match reason {
        "signature_invalid" => {
            "The signature did not verify with the IdP certificates Gatehouse has. If the IdP rolled its certificate, save the provider again (Edit, then Check and save: every node reads the metadata anew) or upload its new metadata; otherwise the message was altered."
        }
        "algorithm_refused" => {
            "The IdP signs with an algorithm Gatehouse refuses (SHA-1). Switch the IdP to SHA-256; allow SHA-1 for this connector only if it cannot."
        }
        "audience_mismatch" => {
            "The assertion or token is for another audience: set the audience (SP entity ID, or client ID) at the IdP to the value expected."
        }
        "destination_mismatch" | "recipient_mismatch" => {
            "The IdP sent the answer to another address: set its reply (ACS) URL to the one in \u{201c}Register Gatehouse\u{201d} above."
        }
        "issuer_mismatch" => "The answer names another IdP than the metadata does: upload or point at this IdP's own metadata.",
        "iss_mismatch" => {
            "The provider's issuer differs from the one configured: copy the issuer exactly from its discovery document."
        }
        "clock_skew" => {
            "The message's validity window does not include Gatehouse's time: check both servers' clocks (NTP), or raise the allowed clock skew."
        }
        "in_response_to_unknown" | "unsolicited" => {
            "The answer is to no sign-in Gatehouse started (or to one already finished). Start from the application; allow IdP-initiated sign-in if people start at the IdP's portal."
        }
        "replay" => "The same answer was posted twice (a reload, or a replay); nothing to fix unless it repeats.",
        "status" => "The IdP refused the sign-in itself (see the status code): look in its logs for this person.",
        "upstream_error" => {
            "The provider answered with an error instead of signing the person in: see its logs and the application registered there."
        }
        "metadata_unavailable" => {
            "The IdP's metadata could not be fetched or read: check the URL and the network, or upload the metadata."
        }
        "attributes_unusable" | "claims_unusable" | "userinfo_invalid" => {
            "The IdP's answer lacks a value the mapping needs (often the subject or the email): compare the attribute or claim names it sends with the connector's."
        }
        "decryption_failed" => {
            "The encrypted assertion could not be decrypted: give the IdP Gatehouse's current SP metadata (its encryption certificate)."
        }
        "nonce_mismatch" => {
            "The ID token answers another sign-in: the browser or a proxy mixed up two sign-ins; if it repeats, check caching in front of Gatehouse."
        }
        "token_endpoint_error" => {
            "The provider refused the code exchange (see its error): check the client ID and secret, and the redirect URI registered there."
        }
        "unreachable" | "discovery_failed" => {
            "The provider could not be reached or its discovery document was refused: check the issuer URL and the network."
        }
        "link_refused" => {
            "Another user already has this email and the connector's linking policy refused the sign-in. If it is the same person, link the subject on that user's page; if the address is unverified on either side, verify it first."
        }
        "mapping_failed" => {
            "A mapping rule could not be applied to what the IdP sent (see the rule named): try the rules in a dry run with the values of a test sign-in."
        }
        "not_fresh" => {
            "The application asked for a fresh sign-in and the IdP answered with an older one: let the IdP honour ForceAuthn or prompt=login."
        }
        "malformed_response" | "too_costly" => "The answer could not be read as a SAML response: check what the IdP posts.",
        _ => "See the audit log and the server log around this time.",
    }
}

impl Admin {
    /// The latest refused sign-ins through a connector, newest first.
    pub async fn connector_failures(&self, id: &str) -> AdminResult<Vec<SignInFailure>> {
        let filter = super::audit::AuditFilter {
            connector_id: Some(id.to_owned()),
            kind: Some(crate::login::AUDIT_LOGIN.to_owned()),
            ..super::audit::AuditFilter::default()
        };
        let mut failures = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..FAILURE_SCAN_PAGES {
            let page = self.audit_log(filter.clone(), cursor.as_deref(), Some(super::MAX_PAGE)).await?;
            failures.extend(
                page.items
                    .into_iter()
                    .filter(|e| e.outcome == "failure")
                    .map(|e| SignInFailure::from_detail(e.time, e.ip, &e.detail.unwrap_or_default())),
            );
            cursor = page.next;
            if failures.len() >= FAILURES_SHOWN || cursor.is_none() {
                break;
            }
        }
        failures.truncate(FAILURES_SHOWN);
        Ok(failures)
    }
}

impl Admin {
    /// Starts a test sign-in through a connector in the admin's browser; returns where the
    /// browser goes next. It ends on the console's result page, never in a session.
    pub async fn start_test_sign_in(&self, actor: &Actor, id: &str) -> AdminResult<String> {
        actor.may_write()?;
        let record = self.provider.store.get_connector(id).await?;
        let protocol = match record.kind.as_str() {
            "oidc" | "saml" => record.kind.as_str(),
            _ => return Err(invalid("type", "only SAML and OpenID Connect providers can be tested")),
        };
        if record.disabled {
            return Err(AdminError::Conflict(String::from("this provider is disabled: enable it to test it")));
        }
        let pending = PendingLogin {
            client_name: Some(String::from("a test sign-in")),
            resume_path: crate::login::test_result_path(id),
            connector_id: Some(id.to_owned()),
            test_of: Some(id.to_owned()),
            ..PendingLogin::default()
        };
        let request = crate::session::pending::create(
            self.provider.store.as_ref(),
            &pending,
            crate::provider::REQUEST_LIFETIME_SECS,
            self.now(),
        )
        .await
        .map_err(|err| AdminError::Internal(err.to_string()))?;
        Ok(format!("/{protocol}/{id}/login?req={request}"))
    }

    /// The failure a test of this connector was sent back with, once.
    pub async fn take_test_failure(&self, id: &str, kept: &str) -> AdminResult<Option<SignInFailure>> {
        let now = self.now();
        let found = crate::session::pending::take(self.provider.store.as_ref(), kept, now).await?;
        Ok(found
            .filter(|kept| kept.test_of.as_deref() == Some(id))
            .and_then(|kept| kept.test_failure)
            .map(|detail| SignInFailure::from_detail(now, None, &detail)))
    }
}

/// The user a set of claims (or attributes) maps to through a connector's rules.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub subject: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// The most claims or attributes a dry run reads.
const MAX_DRY_RUN_CLAIMS: usize = 200;

impl Admin {
    /// Maps `claims` (claim or attribute names to a value or a list of values; for SAML,
    /// `NameID` is the subject) through the connector's claim names and `mapping` (the saved
    /// rules when `None`), without saving anything.
    pub async fn dry_run(&self, id: &str, claims: &Value, mapping: Option<Value>) -> AdminResult<DryRun> {
        let record = self.provider.store.get_connector(id).await?;
        let connector = crate::upstream::spec::decode(&record, self.upstreams.kek(), self.provider.config.issuer_is_https())
            .map_err(|err| AdminError::Internal(err.to_string()))?;
        let rules = match mapping {
            None => connector.rules.clone(),
            Some(mapping) => {
                let spec: crate::mapping::rules::MappingSpec = serde_path_to_error::deserialize(&mapping).map_err(|err| {
                    let path = err.path().to_string();
                    let field = if path == "." { String::from("mapping") } else { format!("mapping.{path}") };
                    invalid(field, err.into_inner().to_string().split(" at line ").next().unwrap_or_default())
                })?;
                crate::mapping::rules::Rules::compile(&spec)
                    .map_err(|err| invalid(format!("mapping.{}", err.field), err.reason))?
            }
        };
        let Some(object) = claims.as_object().filter(|o| o.len() <= MAX_DRY_RUN_CLAIMS) else {
            return Err(invalid("claims", format!("must be an object of at most {MAX_DRY_RUN_CLAIMS} claims")));
        };
        let received = crate::upstream::received_from_claims(claims, crate::upstream::Bounds::Full);
        let identity = match &connector.kind {
            ConnectorKind::Oidc(settings) => crate::upstream::oidc::identity_from_claims(&connector.id, settings, claims)
                .map_err(|err| invalid("claims", err.to_string()))?,
            ConnectorKind::Saml(settings) => {
                let name_id = object
                    .get("NameID")
                    .and_then(Value::as_str)
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| invalid("claims", "needs `NameID`: the subject a SAML IdP always sends"))?
                    .to_owned();
                let attributes = received
                    .iter()
                    .filter(|(name, _)| name != "NameID")
                    .map(|(name, values)| crate::upstream::saml::response::Attribute {
                        name: name.clone(),
                        friendly_name: None,
                        values: values.clone(),
                    })
                    .collect();
                let assertion = crate::upstream::saml::response::VerifiedAssertion {
                    assertion_id: String::from("dry-run"),
                    name_id,
                    name_id_format: None,
                    attributes,
                    authn_instant: None,
                    replay_until: 0,
                };
                crate::upstream::saml::identity_from_assertion(&connector.id, settings, &assertion)
                    .map_err(|err| invalid("claims", err.to_string()))?
            }
            ConnectorKind::Local { .. } => return Err(invalid("id", "local users are mapped as the file declares them")),
        };
        let mapped = rules.apply(identity, &received).map_err(|err| invalid(format!("mapping.{}", err.field), err.reason))?;
        Ok(DryRun {
            subject: mapped.subject,
            username: mapped.username,
            email: mapped.email,
            email_verified: mapped.email_verified,
            name: mapped.name,
            groups: mapped.groups,
        })
    }
}
