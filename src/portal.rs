//! What the portal shows a signed-in person, and what they may change about their own access.

use crate::clock::UnixTime;
use crate::store::{AuditEvent, AuditOutcome, ConsentWithdrawal, SsoSession, Store, StoreError, StoreResult, User};

pub const AUDIT_CONSENT_WITHDRAWN: &str = "consent_withdrawn";

/// An application the person approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedApp {
    pub client_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The name of the connector the person signed in through.
    pub connector_name: String,
    pub approved: Vec<ApprovedApp>,
}

pub async fn home(store: &dyn Store, session: &SsoSession, user: &User) -> StoreResult<Home> {
    let connector_name = match store.get_connector(&session.connector_id).await {
        Ok(connector) => connector.name,
        Err(StoreError::NotFound) => session.connector_id.clone(),
        Err(err) => return Err(err),
    };
    let mut approved = Vec::new();
    for (client_id, _) in store.list_consents(&user.id).await? {
        match store.get_client(&client_id).await {
            Ok(client) => approved.push(ApprovedApp { client_id, name: client.name }),
            // Approval of a client since removed: nothing to show or withdraw.
            Err(StoreError::NotFound) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Home { connector_name, approved })
}

/// Withdraws the person's approval of one application, with everything the app holds from
/// them; the next sign-in to it asks again.
pub async fn withdraw_consent(store: &dyn Store, user: &User, client_id: &str, now: UnixTime) -> StoreResult<ConsentWithdrawal> {
    let withdrawal = store.withdraw_consent(&user.id, client_id, now).await?;
    if withdrawal.consent_removed || withdrawal.grants_revoked > 0 {
        store
            .record_audit(&AuditEvent {
                time: now,
                kind: AUDIT_CONSENT_WITHDRAWN.to_owned(),
                outcome: AuditOutcome::Success,
                actor: Some(user.username.clone()),
                user_id: Some(user.id.clone()),
                client_id: Some(client_id.to_owned()),
                connector_id: None,
                ip: None,
                detail: None,
            })
            .await?;
    }
    Ok(withdrawal)
}
