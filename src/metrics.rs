//! Prometheus metrics, one registry per running app (so tests can run several apps at once).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub connector: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub client_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant_type: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub logins: Family<LoginLabels, Counter>,
    /// Incremented by the token endpoint's grant handlers.
    pub tokens_issued: Family<GrantLabels, Counter>,
    /// Authorization codes issued, by (registered, so bounded) client.
    pub authorizations: Family<ClientLabels, Counter>,
    /// Failed fetches of SAML IdP metadata, by connector.
    pub saml_metadata_failures: Family<ConnectorLabels, Counter>,
    /// 1 while the last check found the connector's IdP usable, else 0.
    pub connector_up: Family<ConnectorLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let logins = Family::<LoginLabels, Counter>::default();
        let tokens_issued = Family::<GrantLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by matched route, method and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", request_duration.clone());
        registry.register("logins", "Sign-in attempts by connector and outcome", logins.clone());
        registry.register("tokens_issued", "Tokens issued by grant type", tokens_issued.clone());
        let authorizations = Family::<ClientLabels, Counter>::default();
        registry.register("authorizations", "Authorization codes issued by client", authorizations.clone());
        let saml_metadata_failures = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "saml_metadata_refresh_failures",
            "Failed fetches of SAML IdP metadata by connector",
            saml_metadata_failures.clone(),
        );
        let connector_up = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_up",
            "1 while the last check of the connector found its identity provider usable, else 0",
            connector_up.clone(),
        );
        Self { registry, requests, request_duration, logins, tokens_issued, authorizations, saml_metadata_failures, connector_up }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn record_grant(&self, grant_type: &str) {
        // Only the three grants the endpoint serves reach here; anything else is not a label.
        let grant_type = match grant_type {
            "authorization_code" | "refresh_token" | "client_credentials" => grant_type,
            _ => "other",
        };
        self.tokens_issued.get_or_create(&GrantLabels { grant_type: grant_type.to_owned() }).inc();
    }

    pub fn record_authorization(&self, client_id: &str) {
        self.authorizations.get_or_create(&ClientLabels { client_id: client_id.to_owned() }).inc();
    }

    pub fn record_login(&self, connector: &str, outcome: &str) {
        self.logins.get_or_create(&LoginLabels { connector: connector.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
