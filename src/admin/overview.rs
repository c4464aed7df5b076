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

/// A connector this long without a successful sign-in is pointed out (it may be unused, or
/// broken for everyone).
const IDLE_WARNING_SECS: i64 = 30 * 86_400;
/// In the last hour, at least this many refused sign-ins, and more refused than completed,
/// is a failure rate worth a look.
const FAILURE_WARNING_MIN: u64 = 5;

/// What a connector's recent sign-ins call for: none in 30 days, or mostly refused in the last
/// hour. `connectors` are `(id, created_at)` of the enabled connectors.
pub fn activity_warnings(
    connectors: &[(String, UnixTime)],
    last_month: &[SignInCount],
    last_hour: &[SignInCount],
    now: UnixTime,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (id, created_at) in connectors {
        let count =
            |counts: &[SignInCount]| counts.iter().find(|c| &c.connector_id == id).map_or((0, 0), |c| (c.successes, c.failures));
        let (hour_ok, hour_failed) = count(last_hour);
        if hour_failed >= FAILURE_WARNING_MIN && hour_failed > hour_ok {
            warnings.push(format!(
                "Connector {id}: {hour_failed} of {} sign-ins in the last hour were refused. Its page lists each reason and what to try.",
                hour_ok + hour_failed
            ));
        }
        if now - created_at >= IDLE_WARNING_SECS && count(last_month).0 == 0 {
            warnings
                .push(format!("Connector {id}: no one has signed in through it in 30 days. Disable it if it is no longer used."));
        }
    }
    warnings
}

impl Admin {
    /// What needs attention about every enabled upstream connector, or only about `only`.
    pub async fn connector_attention(&self, only: Option<&str>) -> AdminResult<Vec<String>> {
        let now = self.now();
        let enabled: Vec<(String, UnixTime)> = self
            .provider
            .store
            .list_connectors()
            .await?
            .into_iter()
            .filter(|c| !c.disabled && c.kind != "local" && only.is_none_or(|id| id == c.id))
            .map(|c| (c.id, c.created_at))
            .collect();
        let last_month = self.provider.store.count_sign_ins(now - IDLE_WARNING_SECS).await?;
        let last_hour = self.provider.store.count_sign_ins(now - 3600).await?;
        let mut warnings: Vec<String> = self
            .upstreams
            .health()
            .await
            .iter()
            .filter(|health| only.is_none_or(|id| id == health.connector_id))
            .flat_map(|health| connector_warnings(health, now))
            .collect();
        warnings.extend(activity_warnings(&enabled, &last_month, &last_hour, now));
        Ok(warnings)
    }

    pub async fn overview(&self) -> AdminResult<Overview> {
        let now = self.now();
        let warnings = self.connector_attention(None).await?;
        Ok(Overview {
            users: self.provider.store.count_users().await?,
            active_sessions: self
                .provider
                .store
                .count_active_sso_sessions(now, self.provider.config.session.idle_timeout_secs)
                .await?,
            clients: self.provider.store.list_clients().await?.len(),
            sign_ins: self.provider.store.count_sign_ins(now - 24 * 3600).await?,
            warnings,
            version: env!("CARGO_PKG_VERSION"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{activity_warnings, connector_warnings};
    use crate::store::SignInCount;
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

    fn count(id: &str, successes: u64, failures: u64) -> SignInCount {
        SignInCount { connector_id: id.to_owned(), successes, failures }
    }

    #[test]
    fn warns_of_connectors_unused_for_30_days_and_of_mostly_refused_sign_ins() {
        let old = NOW - 31 * 86_400;
        let connectors = vec![(String::from("corp"), old), (String::from("fresh"), NOW - 86_400)];
        // Used this month, nothing failing: quiet. A connector added yesterday is not "unused".
        assert!(activity_warnings(&connectors, &[count("corp", 1, 0)], &[], NOW).is_empty());
        let idle = activity_warnings(&connectors, &[], &[], NOW);
        assert_eq!(idle.len(), 1, "{idle:?}");
        assert!(idle[0].starts_with("Connector corp: no one has signed in through it in 30 days"), "{}", idle[0]);
        // Four failures are noise; five that outnumber successes are a warning.
        assert!(activity_warnings(&connectors, &[count("corp", 9, 0)], &[count("corp", 0, 4)], NOW).is_empty());
        let failing = activity_warnings(&connectors, &[count("corp", 9, 0)], &[count("fresh", 2, 5)], NOW);
        assert_eq!(
            failing,
            vec![String::from(
                "Connector fresh: 5 of 7 sign-ins in the last hour were refused. Its page lists each reason and what to try."
            )]
        );
        assert!(
            activity_warnings(&connectors, &[count("corp", 9, 0), count("fresh", 1, 0)], &[count("fresh", 5, 5)], NOW).is_empty()
        );
    }
}
