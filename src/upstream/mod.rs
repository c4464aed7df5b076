//! Upstream identity sources. Every connector, whatever its protocol, yields one `UpstreamIdentity`.

pub mod local;

/// What an upstream source asserts about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    pub connector_id: String,
    /// Stable within the connector; the link to a local user is keyed on it, never on the email.
    pub subject: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}
