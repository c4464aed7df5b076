//! The built-in connector: users and argon2id password hashes declared in the configuration.

use crate::config::LocalUser;
use crate::password;
use crate::upstream::UpstreamIdentity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LocalLoginError {
    /// Unknown user or wrong password; deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("account disabled")]
    Disabled,
}

/// Checks a username and password against `users`. CPU-bound (argon2): call it off the async
/// runtime. Unknown users cost the same work as known ones.
pub fn authenticate(
    connector_id: &str,
    users: &[LocalUser],
    username: &str,
    password_attempt: &str,
) -> Result<UpstreamIdentity, LocalLoginError> {
    let Some(user) = find_user(users, username) else {
        password::verify_dummy(password_attempt);
        return Err(LocalLoginError::InvalidCredentials);
    };
    if !password::verify(&user.password_hash, password_attempt) {
        return Err(LocalLoginError::InvalidCredentials);
    }
    // Said only after the password matched, so it reveals nothing to a guesser.
    if user.disabled {
        return Err(LocalLoginError::Disabled);
    }
    Ok(identity_of(connector_id, user))
}

/// The user an identifier names: by username, or by an email address that is theirs alone
/// (email-first sign-in).
pub fn find_user<'a>(users: &'a [LocalUser], identifier: &str) -> Option<&'a LocalUser> {
    let by_email = || {
        let mut owners = users.iter().filter(|u| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(identifier)));
        match (owners.next(), owners.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    };
    users.iter().find(|u| u.username == identifier).or_else(by_email)
}

/// What the file says about a local user, in the shape every connector returns.
pub fn identity_of(connector_id: &str, user: &LocalUser) -> UpstreamIdentity {
    UpstreamIdentity {
        connector_id: connector_id.to_owned(),
        subject: user.username.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        email_verified: user.email.is_some() && user.email_verified,
        name: user.name.clone(),
        groups: user.groups.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str, disabled: bool) -> LocalUser {
        LocalUser {
            username: name.into(),
            password_hash: password::hash(password).unwrap(),
            email: Some(format!("{name}@example.com")),
            email_verified: true,
            name: Some(name.to_uppercase()),
            groups: vec!["staff".into()],
            disabled,
        }
    }

    #[test]
    fn right_password_yields_the_identity() {
        let users = vec![user("alice", "pw-alice", false)];
        let identity = authenticate("local", &users, "alice", "pw-alice").unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
        assert_eq!(identity.groups, vec!["staff".to_owned()]);
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let users = vec![user("alice", "pw-alice", false)];
        assert_eq!(authenticate("local", &users, "alice", "nope"), Err(LocalLoginError::InvalidCredentials));
        assert_eq!(authenticate("local", &users, "mallory", "pw-alice"), Err(LocalLoginError::InvalidCredentials));
    }

    #[test]
    fn an_email_address_signs_in_its_only_owner() {
        let users = vec![user("alice", "pw-alice", false), user("bob", "pw-bob", false)];
        let identity = authenticate("local", &users, "Alice@Example.com", "pw-alice").unwrap();
        assert_eq!(identity.subject, "alice", "the subject stays the username");
        let shared =
            vec![user("alice", "pw-alice", false), LocalUser { username: "alice2".into(), ..user("alice", "pw-alice", false) }];
        assert_eq!(authenticate("local", &shared, "alice@example.com", "pw-alice"), Err(LocalLoginError::InvalidCredentials));
    }

    #[test]
    fn disabled_user_is_refused_only_after_the_password_matches() {
        let users = vec![user("bob", "pw-bob", true)];
        assert_eq!(authenticate("local", &users, "bob", "pw-bob"), Err(LocalLoginError::Disabled));
        assert_eq!(authenticate("local", &users, "bob", "wrong"), Err(LocalLoginError::InvalidCredentials));
    }
}
