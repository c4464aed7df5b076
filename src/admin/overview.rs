//! The console's first page: counts, and what needs attention.

use serde::Serialize;

use super::{Admin, AdminResult};
use crate::store::SignInCount;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub users: u64,
    pub active_sessions: u64,
    pub clients: usize,
    /// Sign-ins in the last 24 hours, per connector.
    pub sign_ins: Vec<SignInCount>,
    pub version: &'static str,
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
            version: env!("CARGO_PKG_VERSION"),
        })
    }
}
