//! The console's first page: counts, and what needs attention.

use serde::Serialize;

use super::{Admin, AdminResult};
use crate::clock::UnixTime;
use crate::store::SignInCount;
use crate::upstream::ConnectorHealth;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub users: u64,
    pub active_sessions: u64,
    pub clients: usize,
    /// Sign-ins in the last 24 hours, per connector.
    pub sign_ins: Vec<SignInCount>,
    /// What needs an administrator's attention.
    pub warnings: Vec<String>,
    pub version: &'static str,
}

/// How early an expiring IdP signing certificate is pointed out.
const CERTIFICATE_WARNING_SECS: i64 = 30 * 86_400;

/// The warnings a connector's state calls for.
pub fn connector_warnings(health: &ConnectorHealth, now: UnixTime) -> Vec<String> {
    let id = &health.connector_id;
    let mut warnings = Vec::new();
    if let Some(at) = health.last_failure_at {
        warnings.push(format!(
            "Connector {id}: fetching its identity provider's metadata failed (last at {}). Sign-ins use the last good copy while it lasts; check the URL and the network.",
            crate::clock::utc(at)
        ));
    }
    match health.certificates_expire_at {
        Some(at) if at <= now => warnings.push(format!(
            "Connector {id}: the IdP's signing certificate in its metadata expired on {}. Ask the IdP for current metadata.",
            crate::clock::utc(at)
        )),
        Some(at) if at - now <= CERTIFICATE_WARNING_SECS => warnings.push(format!(
            "Connector {id}: the IdP's signing certificate expires on {} (in {} days). Make sure the IdP publishes its next certificate in the metadata before then.",
            crate::clock::utc(at),
            (at - now) / 86_400
        )),
        _ => {}
    }
    warnings
}

impl Admin {
    pub async fn overview(&self) -> AdminResult<Overview> {
        let now = self.now();
        Ok(Overview {
            users: self.provider.store.count_users().await?,
            active_sessions: self
                .provider
                .store
                .count_active_sso_sessions(now, self.provider.config.session.idle_timeout_secs)
                .await?,
            clients: self.provider.store.list_clients().await?.len(),
            sign_ins: self.provider.store.count_sign_ins(now - 24 * 3600).await?,
            warnings: self.upstreams.health().await.iter().flat_map(|health| connector_warnings(health, now)).collect(),
            version: env!("CARGO_PKG_VERSION"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::connector_warnings;
    use crate::upstream::ConnectorHealth;

    const NOW: i64 = 1_795_305_600;

    fn health(last_failure_at: Option<i64>, certificates_expire_at: Option<i64>) -> ConnectorHealth {
        ConnectorHealth { connector_id: String::from("corp"), last_failure_at, certificates_expire_at }
    }

    #[test]
    fn warns_of_failing_metadata_and_certificates_expiring_within_30_days() {
        assert!(connector_warnings(&health(None, None), NOW).is_empty());
        assert!(connector_warnings(&health(None, Some(NOW + 31 * 86_400)), NOW).is_empty());
        let soon = connector_warnings(&health(None, Some(NOW + 10 * 86_400 + 5)), NOW);
        assert_eq!(soon.len(), 1);
        assert!(soon[0].contains("expires on 2026-12-02 00:00:05 UTC (in 10 days)"), "{}", soon[0]);
        let expired = connector_warnings(&health(None, Some(NOW - 1)), NOW);
        assert!(expired[0].contains("expired on"), "{}", expired[0]);
        let failing = connector_warnings(&health(Some(NOW - 60), None), NOW);
        assert!(
            failing[0].contains("Connector corp: fetching") && failing[0].contains("2026-11-21 23:59:00 UTC"),
            "{}",
            failing[0]
        );
        assert_eq!(connector_warnings(&health(Some(NOW), Some(NOW)), NOW).len(), 2);
    }
}
