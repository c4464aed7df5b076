//! Upstream identity sources. Every connector, whatever its protocol, yields one `UpstreamIdentity`.

pub mod local;
pub mod oidc;

/// What an upstream source asserts about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    oidc: std::collections::HashMap<String, std::sync::Arc<oidc::OidcConnector>>,
}

impl Upstreams {
    pub fn from_config(config: &crate::config::Config) -> Result<Self, oidc::OidcError> {
        let mut oidc = std::collections::HashMap::new();
        for connector in &config.connectors {
            if let crate::config::ConnectorKind::Oidc(settings) = &connector.kind {
                let built = oidc::OidcConnector::new(&connector.id, &connector.name, settings.clone(), &config.issuer)?;
                oidc.insert(connector.id.clone(), std::sync::Arc::new(built));
            }
        }
        Ok(Self { oidc })
    }

    pub fn oidc(&self, id: &str) -> Option<&std::sync::Arc<oidc::OidcConnector>> {
        self.oidc.get(id)
    }
}
