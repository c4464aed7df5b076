//! Upstream identity sources. Every connector, whatever its protocol, yields one `UpstreamIdentity`.

pub mod http;
pub mod local;
pub mod oidc;
pub mod saml;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ConnectorKind;

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

/// The configured connectors that send the browser elsewhere, built once from the configuration
/// (their caches live here, per node).
#[derive(Debug, Default)]
pub struct Upstreams {
    oidc: HashMap<String, Arc<oidc::OidcConnector>>,
    saml: HashMap<String, Arc<saml::SamlConnector>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("connector {0}: {1}")]
    Oidc(String, oidc::OidcError),
    #[error("connector {0}: {1}")]
    Saml(String, saml::SamlError),
    #[error("connector {0}: SAML connectors need the SP keys")]
    MissingSpKey(String),
}

/// What SAML connectors share: the SP keys and the slots their verification runs in.
#[derive(Debug, Clone)]
pub struct SamlShared {
    pub sp_keys: Arc<saml::SpKeys>,
    pub verifier: crate::work::BlockingPool,
}

impl Upstreams {
    pub fn from_config(
        config: &crate::config::Config,
        saml: Option<SamlShared>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, UpstreamSetupError> {
        let mut upstreams = Self::default();
        for connector in &config.connectors {
            match &connector.kind {
                ConnectorKind::Oidc(settings) => {
                    let built = oidc::OidcConnector::new(&connector.id, &connector.name, settings.clone(), &config.issuer)
                        .map_err(|err| UpstreamSetupError::Oidc(connector.id.clone(), err))?;
                    upstreams.oidc.insert(connector.id.clone(), Arc::new(built));
                }
                ConnectorKind::Saml(settings) => {
                    let shared = saml.clone().ok_or_else(|| UpstreamSetupError::MissingSpKey(connector.id.clone()))?;
                    let built = saml::SamlConnector::new(
                        &connector.id,
                        &connector.name,
                        settings.clone(),
                        &config.issuer,
                        shared.sp_keys,
                        shared.verifier,
                        metrics.saml_metadata_failures.clone(),
                    )
                    .map_err(|err| UpstreamSetupError::Saml(connector.id.clone(), err))?;
                    upstreams.saml.insert(connector.id.clone(), Arc::new(built));
                }
                ConnectorKind::Local { .. } => {}
            }
        }
        Ok(upstreams)
    }

    pub fn oidc(&self, id: &str) -> Option<&Arc<oidc::OidcConnector>> {
        self.oidc.get(id)
    }

    pub fn saml(&self, id: &str) -> Option<&Arc<saml::SamlConnector>> {
        self.saml.get(id)
    }

    /// How each redirect-style connector is doing, from what it already knows (no fetch).
    pub async fn health(&self) -> Vec<ConnectorHealth> {
        let mut health = Vec::with_capacity(self.oidc.len() + self.saml.len());
        for connector in self.oidc.values() {
            health.push(ConnectorHealth {
                connector_id: connector.id().to_owned(),
                last_failure_at: connector.last_failure_at(),
                certificates_expire_at: None,
            });
        }
        for connector in self.saml.values() {
            health.push(ConnectorHealth {
                connector_id: connector.id().to_owned(),
                last_failure_at: connector.last_failure_at(),
                certificates_expire_at: connector.certificates_expire_at().await,
            });
        }
        health.sort_by(|a, b| a.connector_id.cmp(&b.connector_id));
        health
    }
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
