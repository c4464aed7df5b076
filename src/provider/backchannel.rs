//! OpenID Connect Back-Channel Logout 1.0: a signed logout token POSTed to each client of an
//! ended session. Notifications wait in the database; a node leases a batch, sends it, and
//! deletes what was delivered or schedules a retry with exponential backoff, so a restart or
//! a second node neither loses nor duplicates one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::SigningAlg;
use crate::provider::{Provider, ProviderResult, client_alg};
use crate::store::{AuditEvent, AuditOutcome, BackchannelLogout, StoreError};
use crate::tokens::random_token;

pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// After this many failed deliveries a notification is dropped (and audited).
pub const MAX_ATTEMPTS: i64 = 10;
/// A node that leased a batch and died gives it up after this long; longer than a whole batch
/// of deliveries that all time out, so a live node never loses its lease.
const LEASE_SECS: i64 = 60;
const BATCH: u32 = 8;
const _: () = assert!((BATCH as u64) * DELIVERY_TIMEOUT.as_secs() < LEASE_SECS as u64);
const LOGOUT_TOKEN_LIFETIME_SECS: i64 = 120;
/// How long one delivery may take; clients are expected to answer at once.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a node looks for due notifications when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);

/// 10 s after the first failure, doubling, at most an hour apart.
pub fn backoff_secs(failed_attempts: i64) -> i64 {
    let exponent = u32::try_from(failed_attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    10i64.saturating_mul(2i64.saturating_pow(exponent)).min(3600)
}

/// One notification ready to send: the client's URI and a freshly signed logout token.
pub struct Delivery {
    pub notification: BackchannelLogout,
    pub uri: String,
    pub logout_token: String,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("client_id", &self.notification.client_id)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Leases the due notifications and signs a logout token for each. Notifications for
    /// clients that no longer have a back-channel logout URI are dropped; one that cannot be
    /// prepared is retried later like a failed delivery, so it cannot hold up the others.
    pub async fn due_backchannel_logouts(&self) -> ProviderResult<Vec<Delivery>> {
        let now = self.clock.now();
        let leased = self.store.lease_backchannel_logouts(now, now + LEASE_SECS, BATCH).await?;
        let mut deliveries = Vec::with_capacity(leased.len());
        for notification in leased {
            match self.prepare(&notification).await {
                Ok(Some((uri, logout_token))) => deliveries.push(Delivery { notification, uri, logout_token }),
                Ok(None) => self.store.delete_backchannel_logout(&notification.id).await?,
                Err(err) => {
                    tracing::warn!(client_id = %notification.client_id, error = %err, "preparing a back-channel logout failed");
                    self.failed(&notification).await?;
                }
            }
        }
        Ok(deliveries)
    }

    async fn prepare(&self, notification: &BackchannelLogout) -> ProviderResult<Option<(String, String)>> {
        // Where and how were captured when the notice was queued; older notices read the client.
        let (uri, alg) = match (&notification.uri, notification.signing_alg.as_deref().and_then(SigningAlg::parse)) {
            (Some(uri), Some(alg)) => (uri.clone(), alg),
            _ => match self.store.get_client(&notification.client_id).await {
                Ok(client) => match client.backchannel_logout_uri.clone() {
                    Some(uri) => (uri, client_alg(&client)),
                    None => return Ok(None),
                },
                Err(StoreError::NotFound) => return Ok(None),
                Err(err) => return Err(err.into()),
            },
        };
        let now = self.clock.now();
        let claims = json!({
            "iss": self.issuer(),
            "aud": notification.client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_LIFETIME_SECS,
            "jti": random_token(),
            "sub": notification.subject,
            "sid": notification.sid,
            "events": { EVENT: {} },
        });
        let logout_token = self.keys.sign(&claims, alg, "logout+jwt").await?;
        Ok(Some((uri, logout_token)))
    }

    /// Records the outcome of one delivery.
    pub async fn backchannel_delivered(&self, delivery: &Delivery, delivered: bool) -> ProviderResult<()> {
        if delivered {
            self.store.delete_backchannel_logout(&delivery.notification.id).await?;
            return Ok(());
        }
        self.failed(&delivery.notification).await
    }

    /// Schedules the next attempt, or gives up (and audits) after `MAX_ATTEMPTS`.
    async fn failed(&self, notification: &BackchannelLogout) -> ProviderResult<()> {
        let attempts = notification.attempts + 1;
        let now = self.clock.now();
        if attempts >= MAX_ATTEMPTS {
            self.store.delete_backchannel_logout(&notification.id).await?;
            self.store
                .record_audit(&AuditEvent {
                    time: now,
                    kind: String::from("backchannel_logout"),
                    outcome: AuditOutcome::Failure,
                    actor: None,
                    user_id: Some(notification.subject.clone()),
                    client_id: Some(notification.client_id.clone()),
                    connector_id: None,
                    ip: None,
                    detail: Some(String::from("gave_up")),
                })
                .await?;
            return Ok(());
        }
        self.store.retry_backchannel_logout(&notification.id, attempts, now + backoff_secs(attempts)).await?;
        Ok(())
    }
}

/// Sends one logout token. Redirects are not followed: the registered URI is the endpoint.
async fn send(http: &reqwest::Client, delivery: &Delivery) -> bool {
    let sent = http.post(&delivery.uri).form(&[("logout_token", delivery.logout_token.as_str())]).send().await;
    match sent {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(client_id = %delivery.notification.client_id, status = response.status().as_u16(), "back-channel logout refused");
            false
        }
        Err(err) => {
            tracing::warn!(client_id = %delivery.notification.client_id, error = %err.without_url(), "back-channel logout failed");
            false
        }
    }
}

pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .user_agent(concat!("Gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Delivers due notifications until the task is stopped; woken early when some are queued.
pub async fn run(provider: Arc<Provider>, http: reqwest::Client) {
    loop {
        match provider.due_backchannel_logouts().await {
            Ok(deliveries) => {
                for delivery in &deliveries {
                    let delivered = send(&http, delivery).await;
                    if let Err(err) = provider.backchannel_delivered(delivery, delivered).await {
                        tracing::warn!(error = %err, "recording a back-channel logout result failed");
                    }
                }
                if deliveries.len() == BATCH as usize {
                    continue;
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading back-channel logouts failed"),
        }
        let _ = tokio::time::timeout(POLL, provider.backchannel.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_secs;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_secs(1), 10);
        assert_eq!(backoff_secs(2), 20);
        assert_eq!(backoff_secs(3), 40);
        assert_eq!(backoff_secs(9), 2560);
        assert_eq!(backoff_secs(10), 3600);
        assert_eq!(backoff_secs(1000), 3600);
    }
}
