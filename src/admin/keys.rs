//! Token signing keys.

use serde::Serialize;

use super::{Actor, Admin, AdminError, AdminResult, Touched, events};
use crate::clock::UnixTime;
use crate::tokens::KeySummary;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    /// `active` (signing), `retired` (published until its tokens have expired) or `expired`.
    pub state: &'static str,
    pub created_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    pub published_until: Option<UnixTime>,
}

impl From<KeySummary> for KeyView {
    fn from(key: KeySummary) -> Self {
        let state = match (key.retired_at, key.published) {
            (None, _) => "active",
            (Some(_), true) => "retired",
            (Some(_), false) => "expired",
        };
        Self {
            kid: key.kid,
            alg: key.alg,
            state,
            created_at: key.created_at,
            retired_at: key.retired_at,
            published_until: key.published_until,
        }
    }
}

impl Admin {
    pub async fn list_keys(&self) -> AdminResult<Vec<KeyView>> {
        let keys = self.provider.keys.list().await.map_err(|err| AdminError::Internal(err.to_string()))?;
        Ok(keys.into_iter().map(KeyView::from).collect())
    }

    /// A new active key per algorithm; the old ones stay published until their tokens expire.
    pub async fn rotate_keys(&self, actor: &Actor) -> AdminResult<Vec<KeyView>> {
        actor.may_write()?;
        let rotated = self.provider.keys.rotate().await.map_err(|err| AdminError::Internal(err.to_string()))?;
        let kids: Vec<&str> = rotated.iter().map(|k| k.kid.as_str()).collect();
        let touched = Touched { detail: Some(format!("new keys: {}", kids.join(", "))), ..Touched::default() };
        self.audit(actor, events::KEYS_ROTATED, touched).await?;
        Ok(rotated.into_iter().map(KeyView::from).collect())
    }

    /// The key with this id.
    pub async fn key(&self, kid: &str) -> AdminResult<KeyView> {
        self.list_keys().await?.into_iter().find(|k| k.kid == kid).ok_or(AdminError::NotFound)
    }

    /// Withdraws a retired key before its time (a key thought compromised): every token it
    /// signed stops verifying. The active key signs new tokens, so it is rotated out first.
    pub async fn retire_key(&self, actor: &Actor, kid: &str) -> AdminResult<()> {
        actor.may_write()?;
        if self.key(kid).await?.state == "active" {
            return Err(AdminError::Conflict(String::from("this key signs new tokens; rotate the keys first, then retire it")));
        }
        if !self.provider.keys.withdraw(kid).await.map_err(|err| AdminError::Internal(err.to_string()))? {
            return Err(AdminError::NotFound);
        }
        let touched = Touched { detail: Some(format!("withdrawn: {kid}")), ..Touched::default() };
        self.audit(actor, events::KEY_RETIRED, touched).await
    }
}
