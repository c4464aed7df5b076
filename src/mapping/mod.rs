//! Turns an upstream identity into a local user: links by (connector, subject), provisions the
//! user on first sign-in, and refreshes the profile from what the upstream asserts each time.

use crate::clock::UnixTime;
use crate::store::{Store, StoreError, User, UserProfile};
use crate::upstream::UpstreamIdentity;

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("user is disabled")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The user fields an identity asserts.
pub fn profile_of(identity: &UpstreamIdentity) -> UserProfile {
    UserProfile {
        username: identity.username.clone(),
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        display_name: identity.name.clone(),
        groups: identity.groups.clone(),
    }
}

pub async fn map_identity(store: &dyn Store, identity: &UpstreamIdentity, now: UnixTime) -> Result<User, MappingError> {
    let profile = profile_of(identity);
    let (mut user, created) = store.get_or_create_linked_user(&identity.connector_id, &identity.subject, &profile, now).await?;
    if user.disabled {
        return Err(MappingError::Disabled);
    }
    if !created && UserProfile::from(&user) != profile {
        user = store.update_user_profile(&user.id, &profile, now).await?;
    }
    store.record_user_login(&user.id, &identity.connector_id, &identity.subject, now).await?;
    user.last_login_at = Some(now);
    Ok(user)
}
