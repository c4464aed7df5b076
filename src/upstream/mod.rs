//! Upstream identity sources. Every connector, whatever its protocol, yields one `UpstreamIdentity`.

pub mod check;
pub mod http;
pub mod local;
pub mod oidc;
pub mod saml;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::RwLock;

use crate::config::ConnectorKind;
use crate::metrics::ConnectorLabels;

/// What an upstream source asserts about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamIdentity {
    pub connector_id: String,
    /// Stable within the connector; the link to a local user is keyed on it, never on the email.
    pub subject: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// What an IdP sent, claim by claim (or attribute by attribute), for a test sign-in's page.
pub type Received = Vec<(String, Vec<String>)>;

/// How much of what an IdP sent to keep: all of it for the mapping rules (the IdP's response
/// was already size-limited), a bounded copy for a test sign-in's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    Full,
    Shown,
}

/// Bounds what a test sign-in's page shows of what it received.
pub const MAX_RECEIVED: usize = 100;
pub const MAX_RECEIVED_VALUE_CHARS: usize = 1000;

impl Bounds {
    fn items(self) -> usize {
        match self {
            Self::Full => usize::MAX,
            Self::Shown => MAX_RECEIVED,
        }
    }

    fn value(self, value: &str) -> String {
        match self {
            Self::Full => value.to_owned(),
            Self::Shown => value.chars().take(MAX_RECEIVED_VALUE_CHARS).collect(),
        }
    }
}

/// A SAML assertion's subject and attributes, as received.
pub fn received_from_assertion(assertion: &saml::response::VerifiedAssertion, bounds: Bounds) -> Received {
    let mut received = vec![(String::from("NameID"), vec![bounds.value(&assertion.name_id)])];
    for attribute in &assertion.attributes {
        let values: Vec<String> = attribute.values.iter().take(bounds.items()).map(|v| bounds.value(v)).collect();
        // Rules may name an attribute by either name, as the claim mapping may.
        if let Some(friendly) = attribute.friendly_name.as_ref().filter(|f| **f != attribute.name) {
            received.push((friendly.clone(), values.clone()));
        }
        received.push((attribute.name.clone(), values));
    }
    received.truncate(bounds.items());
    received
}

/// An ID token's (and UserInfo's) claims, as received: arrays by element, objects as JSON.
pub fn received_from_claims(claims: &serde_json::Value, bounds: Bounds) -> Received {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => bounds.value(s),
        other => bounds.value(&other.to_string()),
    };
    let Some(object) = claims.as_object() else { return Vec::new() };
    object
        .iter()
        .take(bounds.items())
        .map(|(name, value)| {
            let values = match value {
                serde_json::Value::Array(items) => items.iter().take(bounds.items()).map(text).collect(),
                other => vec![text(other)],
            };
            (name.clone(), values)
        })
        .collect()
}

/// Who needs an IdP's discovery document or metadata. After a failed fetch, sign-ins fail at
/// once for a while rather than each waiting out the timeout; a check neither waits for that
/// pause nor starts one, so checking an IdP that is not up yet never holds up the first
/// sign-in once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFor {
    SignIn,
    Check,
}

/// Names of received claims or attributes a warning lists at most.
const MAX_NAMES_IN_WARNING: usize = 40;

/// Warns once per connector and user field when a sign-in lacks the claim (or attribute)
/// mapped to it, listing the names that did arrive, so "groups are empty" has an answer in the
/// log. Only names are logged, never values.
#[derive(Debug, Default)]
pub struct MissingClaims {
    warned: std::sync::Mutex<std::collections::HashSet<&'static str>>,
}

impl MissingClaims {
    /// `mapped`: each user field, the name it is mapped from, and whether that name arrived.
    pub fn note(&self, connector: &str, mapped: &[(&'static str, &str, bool)], arrived: impl FnOnce() -> Vec<String>) {
        let Ok(mut warned) = self.warned.lock() else { return };
        let missing: Vec<&(&'static str, &str, bool)> =
            mapped.iter().filter(|(field, _, present)| !present && !warned.contains(field)).collect();
        if missing.is_empty() {
            return;
        }
        // Names come from the IdP: no control characters reach the log.
        let mut names: Vec<String> =
            arrived().into_iter().map(|name| name.chars().filter(|c| !c.is_control()).take(100).collect()).collect();
        names.sort();
        names.dedup();
        let more = names.len().saturating_sub(MAX_NAMES_IN_WARNING);
        names.truncate(MAX_NAMES_IN_WARNING);
        let arrived = if more > 0 { format!("{} and {more} more", names.join(", ")) } else { names.join(", ") };
        for (field, name, _) in missing {
            warned.insert(field);
            tracing::warn!(
                connector = %connector,
                field = *field,
                mapped_from = %name,
                arrived = %arrived,
                "a sign-in carried no `{name}`, which `claims.{field}` maps, so its user got no {field}: check what the \
                 identity provider sends (scopes, claim or attribute settings); logged once per connector"
            );
        }
    }
}

/// What a kind of connector does, so callers ask the kind rather than match its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorType {
    Local,
    Oidc,
    Saml,
}

impl ConnectorType {
    pub fn of(kind: &str) -> Option<Self> {
        match kind {
            "local" => Some(Self::Local),
            "oidc" => Some(Self::Oidc),
            "saml" => Some(Self::Saml),
            _ => None,
        }
    }

    /// The RFC 8176 `amr` values a sign-in through this kind proves to Gatehouse itself; an
    /// upstream provider's own methods are its business.
    pub fn amr(self) -> Vec<String> {
        match self {
            Self::Local => vec![String::from("pwd")],
            Self::Oidc | Self::Saml => Vec::new(),
        }
    }

    /// Signed into on the login page (a password form) rather than by a redirect; such a
    /// connector also owns plain usernames, which have no email domain to route by.
    pub fn password_form(self) -> bool {
        self == Self::Local
    }
}

/// A connector that sends the browser elsewhere, built from its stored record.
#[derive(Debug, Clone)]
enum Live {
    Oidc(Arc<oidc::OidcConnector>),
    Saml(Arc<saml::SamlConnector>),
}

#[derive(Debug)]
struct Built {
    /// The stored state it was built from: a connector deleted and created again under the
    /// same id has the same version, so the whole record is compared.
    record: crate::store::ConnectorRecord,
    live: Live,
    link: crate::config::LinkPolicy,
    rules: Arc<crate::mapping::rules::Rules>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("connector {0}: {1}")]
    Oidc(String, oidc::OidcError),
    #[error("connector {0}: {1}")]
    Saml(String, saml::SamlError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("SAML SP keys: {0}")]
    SpKeys(String),
    #[error("connectors cannot be read: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// What SAML connectors share: the SP keys and the slots their verification runs in.
#[derive(Debug, Clone)]
pub struct SamlShared {
    pub sp_keys: Arc<saml::SpKeys>,
    pub verifier: crate::work::BlockingPool,
    /// How long after it is served the SP metadata says it is valid (`saml.sp_metadata_validity_secs`).
    pub sp_metadata_validity_secs: i64,
}

/// How long a node trusts its registry before it compares versions with the database again:
/// a change made on another node applies here within this bound.
pub const REGISTRY_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The live connectors, rebuilt from the database when a record's version changes (Dex's
/// connector registry is the model). Each node holds its own, with its caches; a change made
/// on this node is applied at once (`refresh`), others' within `REGISTRY_RECHECK`.
pub struct Upstreams {
    store: Arc<dyn crate::store::Store>,
    kek: crate::tokens::KeyEncryptionKey,
    issuer: String,
    saml: SamlShared,
    metadata_failures: Family<ConnectorLabels, Counter>,
    connector_up: Family<ConnectorLabels, Gauge>,
    built: RwLock<HashMap<String, Built>>,
    /// What the last check of each connector found, by connector id.
    findings: std::sync::Mutex<std::collections::BTreeMap<String, ConnectorFinding>>,
    /// When versions were last compared. A monotonic instant, not protocol time: it only
    /// paces database reads.
    checked_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// One comparison at a time; others use what is built meanwhile.
    refreshing: tokio::sync::Mutex<()>,
    /// The SP keys exist once a SAML connector has been built.
    sp_keys_ready: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// A connector whose stored record could not be built; it signs no one in until fixed.
#[derive(Debug)]
pub struct BuildFailure {
    pub connector_id: String,
    pub managed_by_config: bool,
    pub error: UpstreamSetupError,
}

impl Upstreams {
    pub fn new(
        store: Arc<dyn crate::store::Store>,
        kek: crate::tokens::KeyEncryptionKey,
        issuer: &str,
        saml: SamlShared,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        Self {
            store,
            kek,
            issuer: issuer.to_owned(),
            saml,
            metadata_failures: metrics.saml_metadata_failures.clone(),
            connector_up: metrics.connector_up.clone(),
            built: RwLock::new(HashMap::new()),
            findings: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            checked_at: std::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            sp_keys_ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Compares every record's version with what is built, and builds what changed; removes
    /// what was deleted or disabled. Returns the records that could not be built.
    pub async fn refresh(&self) -> Result<Vec<BuildFailure>, UpstreamSetupError> {
        let _one = self.refreshing.lock().await;
        if let Ok(mut checked) = self.checked_at.lock() {
            *checked = Some(std::time::Instant::now());
        }
        self.compare_versions().await
    }

    async fn compare_versions(&self) -> Result<Vec<BuildFailure>, UpstreamSetupError> {
        let records = self.store.list_connectors().await?;
        let mut failures = Vec::new();
        let mut fresh: Vec<(String, Built)> = Vec::new();
        {
            let built = self.built.read().await;
            for record in records.iter().filter(|r| !r.disabled) {
                if built.get(&record.id).is_some_and(|b| b.record == *record) {
                    continue;
                }
                match self.build(record).await {
                    Ok(Some((live, link, rules))) => {
                        fresh.push((record.id.clone(), Built { record: record.clone(), live, link, rules: Arc::new(rules) }));
                    }
                    Ok(None) => {}
                    Err(error) => failures.push(BuildFailure {
                        connector_id: record.id.clone(),
                        managed_by_config: record.managed_by_config,
                        error,
                    }),
                }
            }
        }
        let mut built = self.built.write().await;
        built.retain(|id, b| {
            records.iter().any(|r| &r.id == id && !r.disabled && *r == b.record)
                && !failures.iter().any(|f| &f.connector_id == id)
        });
        for (id, entry) in fresh {
            match &entry.live {
                // What an administrator registers at the provider, so it can be pasted from here.
                Live::Oidc(c) => tracing::info!(
                    connector = %id,
                    version = entry.record.version,
                    redirect_uri = %c.redirect_uri(),
                    client_id = %c.settings().client_id,
                    "OpenID Connect connector configured"
                ),
                Live::Saml(c) => tracing::info!(
                    connector = %id,
                    version = entry.record.version,
                    entity_id = %c.entity_id(),
                    acs = %c.acs_url(),
                    metadata_url = %c.metadata_url(),
                    "SAML connector configured"
                ),
            }
            built.insert(id, entry);
        }
        drop(built);
        for failure in &failures {
            tracing::warn!(connector = %failure.connector_id, error = %failure.error, "connector cannot be built; it signs no one in until fixed");
        }
        Ok(failures)
    }

    /// The live connector for a record, or `None` for a kind that needs none (local).
    async fn build(
        &self,
        record: &crate::store::ConnectorRecord,
    ) -> Result<Option<(Live, crate::config::LinkPolicy, crate::mapping::rules::Rules)>, UpstreamSetupError> {
        let connector = spec::decode(record, &self.kek, self.issuer.starts_with("https://"))?;
        let link = connector.link;
        let rules = connector.rules.clone();
        let live = match connector.kind {
            ConnectorKind::Oidc(settings) => Some(Live::Oidc(Arc::new(
                oidc::OidcConnector::new(&connector.id, &connector.name, settings, &self.issuer)
                    .map_err(|err| UpstreamSetupError::Oidc(connector.id.clone(), err))?,
            ))),
            ConnectorKind::Saml(settings) => {
                self.ensure_sp_keys().await?;
                Some(Live::Saml(Arc::new(
                    saml::SamlConnector::new(
                        &connector.id,
                        &connector.name,
                        settings,
                        &self.issuer,
                        &self.saml,
                        self.metadata_failures.clone(),
                    )
                    .map_err(|err| UpstreamSetupError::Saml(connector.id.clone(), err))?,
                )))
            }
            ConnectorKind::Local { .. } => None,
        };
        Ok(live.map(|live| (live, link, rules)))
    }

    /// SAML SP keys are made when the first SAML connector is, whether the file or the
    /// console adds it.
    async fn ensure_sp_keys(&self) -> Result<(), UpstreamSetupError> {
        if self.sp_keys_ready.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        for key in self.saml.sp_keys.ensure_active().await.map_err(|err| UpstreamSetupError::SpKeys(err.to_string()))? {
            tracing::info!(kid = %key.kid, purpose = key.purpose, "generated SAML SP key");
        }
        self.sp_keys_ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Refreshes when the last comparison is older than `REGISTRY_RECHECK`. A database
    /// error keeps what is built: sign-ins go on with the last known connectors.
    async fn recheck(&self) {
        let due = self.checked_at.lock().ok().is_none_or(|checked| checked.is_none_or(|at| at.elapsed() >= REGISTRY_RECHECK));
        if !due {
            return;
        }
        let Ok(_one) = self.refreshing.try_lock() else { return };
        if let Ok(mut checked) = self.checked_at.lock() {
            *checked = Some(std::time::Instant::now());
        }
        if let Err(err) = self.compare_versions().await {
            tracing::warn!(error = %err, "connectors could not be compared with the database; keeping those built");
        }
    }

    async fn live(&self, id: &str) -> Option<Live> {
        self.recheck().await;
        self.built.read().await.get(id).map(|b| b.live.clone())
    }

    /// How a first sign-in through this connector finds its user; local connectors link
    /// nothing by email.
    pub async fn link_policy(&self, id: &str) -> crate::config::LinkPolicy {
        self.built.read().await.get(id).map(|b| b.link).unwrap_or_default()
    }

    /// The connector's mapping rules; none for local connectors.
    pub async fn rules(&self, id: &str) -> Arc<crate::mapping::rules::Rules> {
        self.built.read().await.get(id).map(|b| b.rules.clone()).unwrap_or_default()
    }

    pub async fn oidc(&self, id: &str) -> Option<Arc<oidc::OidcConnector>> {
        match self.live(id).await {
            Some(Live::Oidc(connector)) => Some(connector),
            _ => None,
        }
    }

    pub async fn saml(&self, id: &str) -> Option<Arc<saml::SamlConnector>> {
        match self.live(id).await {
            Some(Live::Saml(connector)) => Some(connector),
            _ => None,
        }
    }

    /// The record that stores a connector created at run time, its secret sealed.
    pub fn encode(
        &self,
        connector: &crate::config::ConnectorConfig,
        now: crate::clock::UnixTime,
    ) -> Result<crate::store::ConnectorRecord, spec::SpecError> {
        spec::encode(connector, false, &self.kek, now)
    }

    /// A stored record's specification, its secret opened.
    pub fn spec_of(&self, record: &crate::store::ConnectorRecord) -> Result<crate::config::ConnectorSpec, spec::SpecError> {
        spec::spec_of(record, &self.kek)
    }

    pub fn kek(&self) -> &crate::tokens::KeyEncryptionKey {
        &self.kek
    }

    /// A connector built from a specification without registering it: the admin core checks
    /// a new or changed connector against its IdP with it before saving.
    pub async fn probe(&self, connector: &crate::config::ConnectorConfig) -> Result<Probe, UpstreamSetupError> {
        let record = spec::encode(connector, false, &self.kek, 0)?;
        Ok(match self.build(&record).await? {
            Some((Live::Oidc(c), _, _)) => Probe::Oidc(c),
            Some((Live::Saml(c), _, _)) => Probe::Saml(c),
            None => Probe::Local,
        })
    }

    /// Checks every connector against its IdP (through the connectors' caches), records what
    /// was found, and logs each change: a failure as a warning naming the connector and the fix.
    pub async fn check_all(&self, now: crate::clock::UnixTime) -> Vec<ConnectorFinding> {
        self.recheck().await;
        let live: Vec<(String, Live)> = self.built.read().await.iter().map(|(id, b)| (id.clone(), b.live.clone())).collect();
        // At once, so one slow IdP does not delay the others' checks.
        let checks = live.into_iter().map(|(connector_id, connector)| async move {
            let (kind, finding) = match connector {
                Live::Oidc(connector) => (ConnectorType::Oidc, check::check_oidc(&connector, now).await),
                Live::Saml(connector) => {
                    let loaded = connector.idp_metadata_for(now, FetchFor::Check).await;
                    (ConnectorType::Saml, check::judge_saml(loaded.as_deref(), now))
                }
            };
            ConnectorFinding { connector_id, kind, finding, checked_at: now }
        });
        let found = futures_util::future::join_all(checks).await;
        let Ok(mut findings) = self.findings.lock() else { return found };
        for gone in findings.keys().filter(|id| !found.iter().any(|f| &f.connector_id == *id)).cloned().collect::<Vec<_>>() {
            findings.remove(&gone);
            self.connector_up.remove(&ConnectorLabels { connector: gone });
        }
        for current in &found {
            let labels = ConnectorLabels { connector: current.connector_id.clone() };
            self.connector_up.get_or_create(&labels).set(i64::from(current.finding.is_usable()));
            let changed = findings.get(&current.connector_id).is_none_or(|last| last.finding.code() != current.finding.code());
            if changed {
                report(current);
            }
            findings.insert(current.connector_id.clone(), current.clone());
        }
        found
    }

    /// What the last checks found, in connector id order.
    pub fn findings(&self) -> Vec<ConnectorFinding> {
        self.findings.lock().map(|findings| findings.values().cloned().collect()).unwrap_or_default()
    }

    /// How each redirect-style connector is doing, from what it already knows (no fetch).
    pub async fn health(&self) -> Vec<ConnectorHealth> {
        self.recheck().await;
        let live: Vec<Live> = self.built.read().await.values().map(|b| b.live.clone()).collect();
        let mut health = Vec::with_capacity(live.len());
        for connector in live {
            health.push(match connector {
                Live::Oidc(connector) => ConnectorHealth {
                    connector_id: connector.id().to_owned(),
                    last_failure_at: connector.last_failure_at(),
                    certificates_expire_at: None,
                },
                Live::Saml(connector) => ConnectorHealth {
                    connector_id: connector.id().to_owned(),
                    last_failure_at: connector.last_failure_at(),
                    certificates_expire_at: connector.certificates_expire_at().await,
                },
            });
        }
        health.sort_by(|a, b| a.connector_id.cmp(&b.connector_id));
        health
    }
}

/// What checking one connector found, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorFinding {
    pub connector_id: String,
    pub kind: ConnectorType,
    pub finding: check::Finding,
    pub checked_at: crate::clock::UnixTime,
}

fn report(found: &ConnectorFinding) {
    let connector = &found.connector_id;
    let (code, detail, fix) = (found.finding.code(), found.finding.detail(), found.finding.fix(found.kind));
    match &found.finding {
        check::Finding::Usable => tracing::info!(connector = %connector, "connector checked: {detail}"),
        check::Finding::CertificateExpiresSoon { .. } | check::Finding::CertificateExpired { .. } => {
            tracing::warn!(connector = %connector, check = code, fix, "connector check: {detail}");
        }
        _ => tracing::warn!(connector = %connector, check = code, fix, "connector check failed: {detail}"),
    }
}

/// A connector built for a check, not registered.
#[derive(Debug)]
pub enum Probe {
    Oidc(Arc<oidc::OidcConnector>),
    Saml(Arc<saml::SamlConnector>),
    Local,
}

/// What the admin overview warns about for a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorHealth {
    pub connector_id: String,
    /// When fetching the provider's discovery document or the IdP's metadata last failed, if
    /// it has failed since it last succeeded.
    pub last_failure_at: Option<crate::clock::UnixTime>,
    /// A SAML IdP's earliest signing certificate expiry, from the metadata last fetched.
    pub certificates_expire_at: Option<crate::clock::UnixTime>,
}

#[cfg(test)]
mod tests {
    use super::{Bounds, MAX_RECEIVED, MAX_RECEIVED_VALUE_CHARS, received_from_claims};

    #[test]
    fn claims_are_listed_by_element_and_bounded() {
        let claims = serde_json::json!({
            "sub": "s-1", "groups": ["eng", "ops"], "email_verified": true,
            "realm_access": {"roles": ["admin"]}, "long": "x".repeat(5000)
        });
        let received = received_from_claims(&claims, Bounds::Shown);
        let find = |name: &str| received.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(find("groups"), ["eng", "ops"]);
        assert_eq!(find("email_verified"), ["true"]);
        assert_eq!(find("realm_access"), [r#"{"roles":["admin"]}"#]);
        assert_eq!(find("long")[0].len(), MAX_RECEIVED_VALUE_CHARS);
        let many: serde_json::Map<String, serde_json::Value> =
            (0..500).map(|i| (format!("c{i}"), serde_json::Value::from(i))).collect();
        let many = serde_json::Value::Object(many);
        assert_eq!(received_from_claims(&many, Bounds::Shown).len(), MAX_RECEIVED);
        assert_eq!(received_from_claims(&many, Bounds::Full).len(), 500, "the rules see every claim");
        assert_eq!(received_from_claims(&claims, Bounds::Full).iter().find(|(n, _)| n == "long").unwrap().1[0].len(), 5000);
        assert!(received_from_claims(&serde_json::json!("not an object"), Bounds::Shown).is_empty());
    }
}
