//! Turns an upstream identity into a local user: links by (connector, subject), provisions the
//! user on first sign-in, and refreshes the profile from what the upstream asserts each time.

pub mod rules;

use crate::clock::UnixTime;
use crate::config::LinkPolicy;
use crate::store::{Store, StoreError, User, UserProfile};
use crate::upstream::UpstreamIdentity;

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("user is disabled")]
    Disabled,
    /// Another user has this email and the connector's policy refuses the sign-in.
    #[error("link refused: {0}")]
    LinkRefused(&'static str),
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

/// What a first sign-in through a connector does about users who already have its email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSignIn {
    /// Link to the existing user at this index.
    Link(usize),
    /// Create a new user.
    Create,
    /// Refuse, for this reason.
    Refuse(&'static str),
}

/// Decides, from the users who already have the identity's email, whether a first sign-in
/// links to one of them. Only a verified address on both sides links: an unverified one is
/// anybody's claim, and linking on it hands over the account.
pub fn first_sign_in(identity: &UpstreamIdentity, policy: LinkPolicy, same_email: &[User]) -> FirstSignIn {
    if same_email.is_empty() {
        return FirstSignIn::Create;
    }
    let unsafe_link =
        |reason: &'static str| if policy.refuse_when_email_taken { FirstSignIn::Refuse(reason) } else { FirstSignIn::Create };
    if !policy.link_by_email {
        return unsafe_link("email_taken");
    }
    if !identity.email_verified {
        return unsafe_link("email_unverified_at_connector");
    }
    match same_email {
        [only] if only.email_verified => FirstSignIn::Link(0),
        [_] => unsafe_link("email_unverified_on_account"),
        _ => unsafe_link("email_on_several_accounts"),
    }
}

/// What a sign-in would do with an identity, without doing it: an administrator's test.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappingPreview {
    /// What would happen, in words.
    pub outcome: String,
    /// The existing user it lands on, if any.
    pub user_id: Option<String>,
    /// The user's fields after the sign-in.
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

pub async fn preview(store: &dyn Store, identity: &UpstreamIdentity, policy: LinkPolicy) -> Result<MappingPreview, StoreError> {
    let profile = profile_of(identity);
    let (outcome, user_id) = match store.find_linked_user_id(&identity.connector_id, &identity.subject).await? {
        Some(user_id) => {
            let user = store.get_user(&user_id).await?;
            let outcome = if user.disabled {
                format!("Refused: the linked user {} is disabled.", user.username)
            } else {
                format!("Signs in as the linked user {}, whose profile is updated as below.", user.username)
            };
            (outcome, Some(user_id))
        }
        None => {
            let same_email = match identity.email.as_deref() {
                Some(email) if policy.link_by_email || policy.refuse_when_email_taken => store.find_users_by_email(email).await?,
                _ => Vec::new(),
            };
            match first_sign_in(identity, policy, &same_email) {
                FirstSignIn::Link(index) => match same_email.get(index) {
                    Some(user) => (
                        format!("First sign-in: would be linked to the existing user {} (same verified email).", user.username),
                        Some(user.id.clone()),
                    ),
                    None => (String::from("First sign-in: would create a new user."), None),
                },
                FirstSignIn::Create => (String::from("First sign-in: would create a new user."), None),
                FirstSignIn::Refuse(reason) => {
                    (format!("First sign-in: refused by the connector's linking policy ({reason})."), None)
                }
            }
        }
    };
    Ok(MappingPreview {
        outcome,
        user_id,
        username: profile.username,
        email: profile.email,
        email_verified: profile.email_verified,
        name: profile.display_name,
        groups: profile.groups,
    })
}

/// The local user an upstream identity is, found or made; the sign-in itself is recorded with
/// its session (`session::start`).
pub async fn map_identity(
    store: &dyn Store,
    identity: &UpstreamIdentity,
    policy: LinkPolicy,
    now: UnixTime,
) -> Result<User, MappingError> {
    let profile = profile_of(identity);
    let (mut user, created) = match store.find_linked_user(&identity.connector_id, &identity.subject).await? {
        Some(user) => (user, false),
        None => first_sign_in_user(store, identity, policy, &profile, now).await?,
    };
    if user.disabled {
        return Err(MappingError::Disabled);
    }
    if !created && UserProfile::from(&user) != profile {
        user = store.update_user_profile(&user.id, &profile, now).await?;
    }
    Ok(user)
}

/// The user of an identity seen for the first time: linked to an existing one by email when the
/// connector's policy allows, else created (`created` is true then). Another node may link or
/// create it meanwhile; whichever won is used.
async fn first_sign_in_user(
    store: &dyn Store,
    identity: &UpstreamIdentity,
    policy: LinkPolicy,
    profile: &UserProfile,
    now: UnixTime,
) -> Result<(User, bool), MappingError> {
    if let Some(email) = identity.email.as_deref()
        && (policy.link_by_email || policy.refuse_when_email_taken)
    {
        let same_email = store.find_users_by_email(email).await?;
        match first_sign_in(identity, policy, &same_email) {
            FirstSignIn::Link(index) => {
                let Some(existing) = same_email.get(index) else {
                    return Err(MappingError::LinkRefused("email_on_several_accounts"));
                };
                // A user already linked to another subject here is someone else, whose address
                // the IdP gave to a new account: never joined by email.
                let links = store.list_user_links(&existing.id).await?;
                if links.iter().any(|l| l.connector_id == identity.connector_id) {
                    if policy.refuse_when_email_taken {
                        return Err(MappingError::LinkRefused("account_linked_to_another_subject"));
                    }
                } else {
                    match store.link_identity(&identity.connector_id, &identity.subject, &existing.id, now).await {
                        // Another node linked it first: the lookup below finds whichever won.
                        Ok(()) | Err(StoreError::AlreadyExists) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            FirstSignIn::Refuse(reason) => return Err(MappingError::LinkRefused(reason)),
            FirstSignIn::Create => {}
        }
    }
    Ok(store.get_or_create_linked_user(&identity.connector_id, &identity.subject, profile, now).await?)
}

#[cfg(test)]
mod tests {
    use super::{FirstSignIn, first_sign_in};
    use crate::config::LinkPolicy;
    use crate::store::User;
    use crate::upstream::UpstreamIdentity;

    fn identity(email_verified: bool) -> UpstreamIdentity {
        UpstreamIdentity {
            connector_id: String::from("corp"),
            subject: String::from("s-1"),
            username: String::from("alice"),
            email: Some(String::from("alice@corp.example")),
            email_verified,
            name: None,
            groups: Vec::new(),
        }
    }

    fn user(email_verified: bool) -> User {
        User {
            id: String::from("u-1"),
            username: String::from("alice"),
            email: Some(String::from("Alice@corp.example")),
            email_verified,
            display_name: None,
            groups: Vec::new(),
            disabled: false,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
        }
    }

    const LINK: LinkPolicy = LinkPolicy { link_by_email: true, refuse_when_email_taken: false };
    const LINK_OR_REFUSE: LinkPolicy = LinkPolicy { link_by_email: true, refuse_when_email_taken: true };

    #[test]
    fn links_only_an_address_verified_on_both_sides() {
        assert_eq!(first_sign_in(&identity(true), LINK, &[user(true)]), FirstSignIn::Link(0));
        // Verified at the connector only, or on the account only: never linked.
        assert_eq!(first_sign_in(&identity(true), LINK, &[user(false)]), FirstSignIn::Create);
        assert_eq!(first_sign_in(&identity(false), LINK, &[user(true)]), FirstSignIn::Create);
        assert_eq!(
            first_sign_in(&identity(true), LINK_OR_REFUSE, &[user(false)]),
            FirstSignIn::Refuse("email_unverified_on_account")
        );
        assert_eq!(
            first_sign_in(&identity(false), LINK_OR_REFUSE, &[user(true)]),
            FirstSignIn::Refuse("email_unverified_at_connector")
        );
        // Two accounts with the address: which one is meant is nobody's guess.
        assert_eq!(
            first_sign_in(&identity(true), LINK_OR_REFUSE, &[user(true), user(true)]),
            FirstSignIn::Refuse("email_on_several_accounts")
        );
        // Without link_by_email an address is never a link; refusing is still a choice.
        assert_eq!(first_sign_in(&identity(true), LinkPolicy::default(), &[user(true)]), FirstSignIn::Create);
        let refuse_only = LinkPolicy { link_by_email: false, refuse_when_email_taken: true };
        assert_eq!(first_sign_in(&identity(true), refuse_only, &[user(true)]), FirstSignIn::Refuse("email_taken"));
        // Nobody has the address: a new user, whatever the policy.
        assert_eq!(first_sign_in(&identity(false), LINK_OR_REFUSE, &[]), FirstSignIn::Create);
    }
}
