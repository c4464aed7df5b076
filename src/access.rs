//! Who may use an application, which of their groups it is told about, and how the portal
//! opens it. Plain values: the provider, the portal and the admin side all decide with these.

use serde::{Deserialize, Serialize};

/// An application's access policy. Empty lists allow everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// The user must be in at least one of these groups.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// The user must have signed in through one of these connectors.
    #[serde(default)]
    pub allowed_connectors: Vec<String>,
    /// Which of the user's groups the application receives; all when `None`.
    #[serde(default)]
    pub groups_claim_filter: Option<GroupsFilter>,
}

/// `groups_claim_filter`: a prefix (`"payroll-"`) or an explicit list of group names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupsFilter {
    Prefix(String),
    List(Vec<String>),
}

/// Why a user may not use an application; `reason()` is what the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotInAllowedGroup,
    ConnectorNotAllowed,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotInAllowedGroup => "not_in_allowed_groups",
            Self::ConnectorNotAllowed => "connector_not_allowed",
        }
    }
}

impl AccessPolicy {
    /// Whether a user in `groups`, signed in through `connector_id`, may use the application.
    pub fn check(&self, groups: &[String], connector_id: &str) -> Result<(), Refusal> {
        if !self.allowed_connectors.is_empty() && !self.allowed_connectors.iter().any(|c| c == connector_id) {
            return Err(Refusal::ConnectorNotAllowed);
        }
        if !self.allowed_groups.is_empty() && !groups.iter().any(|g| self.allowed_groups.contains(g)) {
            return Err(Refusal::NotInAllowedGroup);
        }
        Ok(())
    }

    /// The groups the application's tokens and UserInfo carry.
    pub fn visible_groups(&self, groups: &[String]) -> Vec<String> {
        match &self.groups_claim_filter {
            None => groups.to_vec(),
            Some(GroupsFilter::Prefix(prefix)) => groups.iter().filter(|g| g.starts_with(prefix.as_str())).cloned().collect(),
            Some(GroupsFilter::List(names)) => groups.iter().filter(|g| names.contains(g)).cloned().collect(),
        }
    }
}

/// How an application appears in the portal's launcher.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalEntry {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub logo_uri: Option<String>,
    /// OpenID Connect third-party-initiated login: the portal sends `iss` and `login_hint` here.
    #[serde(default)]
    pub initiate_login_uri: Option<String>,
    /// Opened as is, for applications without `initiate_login_uri`.
    #[serde(default)]
    pub launch_url: Option<String>,
    #[serde(default)]
    pub show_in_portal: bool,
}

impl PortalEntry {
    /// Where a tile sends the person: the third-party-initiated login (OpenID Connect Core
    /// §4) with this issuer and the person's hint, else the plain launch URL.
    pub fn launch_link(&self, issuer: &str, login_hint: Option<&str>) -> Option<String> {
        if let Some(initiate) = &self.initiate_login_uri {
            let mut url = url::Url::parse(initiate).ok()?;
            url.query_pairs_mut().append_pair("iss", issuer);
            if let Some(hint) = login_hint {
                url.query_pairs_mut().append_pair("login_hint", hint);
            }
            return Some(url.to_string());
        }
        self.launch_url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn empty_lists_allow_everyone_and_each_list_must_match() {
        assert_eq!(AccessPolicy::default().check(&[], "any"), Ok(()));
        let payroll = AccessPolicy { allowed_groups: groups(&["payroll"]), ..AccessPolicy::default() };
        assert_eq!(payroll.check(&groups(&["staff", "payroll"]), "local"), Ok(()));
        assert_eq!(payroll.check(&groups(&["staff"]), "local"), Err(Refusal::NotInAllowedGroup));
        let corp = AccessPolicy { allowed_connectors: groups(&["corp"]), ..payroll };
        assert_eq!(corp.check(&groups(&["payroll"]), "corp"), Ok(()));
        assert_eq!(corp.check(&groups(&["payroll"]), "local"), Err(Refusal::ConnectorNotAllowed));
    }

    #[test]
    fn the_groups_filter_keeps_a_prefix_or_a_list() {
        let all = groups(&["payroll-admin", "staff", "payroll-read"]);
        assert_eq!(AccessPolicy::default().visible_groups(&all), all);
        let prefix =
            AccessPolicy { groups_claim_filter: Some(GroupsFilter::Prefix("payroll-".into())), ..AccessPolicy::default() };
        assert_eq!(prefix.visible_groups(&all), groups(&["payroll-admin", "payroll-read"]));
        let list = AccessPolicy { groups_claim_filter: Some(GroupsFilter::List(groups(&["staff"]))), ..AccessPolicy::default() };
        assert_eq!(list.visible_groups(&all), groups(&["staff"]));
        let parsed: GroupsFilter = serde_json::from_str("\"app-\"").unwrap();
        assert_eq!(parsed, GroupsFilter::Prefix("app-".into()));
        let parsed: GroupsFilter = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert_eq!(parsed, GroupsFilter::List(groups(&["a", "b"])));
    }

    #[test]
    fn a_tile_uses_third_party_initiated_login_before_the_launch_url() {
        let entry = PortalEntry {
            initiate_login_uri: Some("https://wiki.example/login?from=portal".into()),
            launch_url: Some("https://wiki.example/".into()),
            ..PortalEntry::default()
        };
        assert_eq!(
            entry.launch_link("https://sso.example", Some("a b@corp.example")).as_deref(),
            Some("https://wiki.example/login?from=portal&iss=https%3A%2F%2Fsso.example&login_hint=a+b%40corp.example")
        );
        let plain = PortalEntry { launch_url: Some("https://files.example/".into()), ..PortalEntry::default() };
        assert_eq!(plain.launch_link("https://sso.example", Some("a")).as_deref(), Some("https://files.example/"));
        assert_eq!(PortalEntry::default().launch_link("https://sso.example", None), None);
    }
}
