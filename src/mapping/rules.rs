//! Per-connector mapping rules: where each user field comes from (a claim or attribute name)
//! and the transforms applied to it, plus the groups' filters and additions. Rules are
//! compiled once when the connector is built; a rule that fails at sign-in refuses that
//! sign-in with the field at fault, never a half-mapped user.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::upstream::UpstreamIdentity;

/// How large a compiled pattern may grow: rules come from administrators, values from IdPs.
const MAX_PATTERN_BYTES: usize = 64 * 1024;
const MAX_TRANSFORMS: usize = 10;
const MAX_GROUP_PATTERNS: usize = 100;
/// Groups a sign-in may carry after the rules (as the connectors' own limit).
const MAX_GROUPS: usize = 256;
/// How long a value may grow through transforms (a replacement can repeat itself).
const MAX_VALUE_CHARS: usize = 4096;

/// A transform as written: `"lowercase"`, `"trim"`, `{ regex_extract = "…" }` (the first
/// capture group, or the whole match) or `{ regex_replace = ["…", "…"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    Lowercase,
    Trim,
    RegexExtract(String),
    RegexReplace(String, String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRuleSpec {
    /// The claim or attribute to read instead of the connector's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<TransformSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsRuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Splits each value on this delimiter (`"memberOf": "a;b;c"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<TransformSpec>,
    /// Only groups matching one of these patterns are kept (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Groups matching one of these patterns are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// `<connector id>:` before every group from the IdP, so two IdPs' "admins" differ.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefix_with_connector: bool,
    /// Added to everyone who signs in through this connector (after the filters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_groups: Vec<String>,
}

/// The rules as written in `[connectors.mapping]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<FieldRuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<FieldRuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FieldRuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsRuleSpec>,
    /// `"claim"` (the default: as the IdP says, or `trust_email`), `"always"` or `"never"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<String>,
}

impl MappingSpec {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone)]
enum Transform {
    Lowercase,
    Trim,
    Extract(Regex),
    Replace(Regex, String),
}

#[derive(Debug, Clone, Default)]
struct FieldRule {
    from: Option<String>,
    transforms: Vec<Transform>,
}

#[derive(Debug, Clone, Default)]
struct GroupsRule {
    field: FieldRule,
    split: Option<String>,
    allow: Vec<Regex>,
    deny: Vec<Regex>,
    prefix_with_connector: bool,
    static_groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EmailVerified {
    #[default]
    Claim,
    Always,
    Never,
}

/// Compiled rules; the default changes nothing.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    username: Option<FieldRule>,
    email: Option<FieldRule>,
    name: Option<FieldRule>,
    groups: Option<GroupsRule>,
    email_verified: EmailVerified,
}

/// A rule that is not valid (on save), or that failed on a sign-in's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RuleError {
    /// The field path under `mapping`, e.g. `groups.transforms[0]`.
    pub field: String,
    pub reason: String,
}

fn rule_error(field: impl Into<String>, reason: impl Into<String>) -> RuleError {
    RuleError { field: field.into(), reason: reason.into() }
}

fn pattern(field: &str, text: &str) -> Result<Regex, RuleError> {
    RegexBuilder::new(text).size_limit(MAX_PATTERN_BYTES).build().map_err(|err| {
        let reason = err.to_string();
        rule_error(field, format!("not a valid pattern: {}", reason.lines().last().unwrap_or_default().trim()))
    })
}

/// A pattern that must match a whole group name.
fn whole(field: &str, text: &str) -> Result<Regex, RuleError> {
    pattern(field, &format!("^(?:{text})$"))
}

fn source_name(field: &str, from: Option<&String>) -> Result<Option<String>, RuleError> {
    match from {
        Some(name) if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) => {
            Err(rule_error(format!("{field}.from"), "must be a claim or attribute name"))
        }
        other => Ok(other.cloned()),
    }
}

fn compile_transforms(field: &str, specs: &[TransformSpec]) -> Result<Vec<Transform>, RuleError> {
    if specs.len() > MAX_TRANSFORMS {
        return Err(rule_error(format!("{field}.transforms"), format!("at most {MAX_TRANSFORMS} transforms")));
    }
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let at = format!("{field}.transforms[{i}]");
            Ok(match spec {
                TransformSpec::Lowercase => Transform::Lowercase,
                TransformSpec::Trim => Transform::Trim,
                TransformSpec::RegexExtract(text) => Transform::Extract(pattern(&at, text)?),
                TransformSpec::RegexReplace(text, with) => Transform::Replace(pattern(&at, text)?, with.clone()),
            })
        })
        .collect()
}

fn compile_field(field: &str, spec: Option<&FieldRuleSpec>) -> Result<Option<FieldRule>, RuleError> {
    spec.map(|spec| {
        Ok(FieldRule { from: source_name(field, spec.from.as_ref())?, transforms: compile_transforms(field, &spec.transforms)? })
    })
    .transpose()
}

impl Rules {
    /// Checks and compiles the rules; errors name the field under `mapping`.
    pub fn compile(spec: &MappingSpec) -> Result<Self, RuleError> {
        let groups = spec
            .groups
            .as_ref()
            .map(|g| {
                if g.split.as_ref().is_some_and(|s| s.is_empty() || s.len() > 16) {
                    return Err(rule_error("groups.split", "must be 1 to 16 characters"));
                }
                for (list, name) in [(&g.allow, "allow"), (&g.deny, "deny"), (&g.static_groups, "static_groups")] {
                    if list.len() > MAX_GROUP_PATTERNS {
                        return Err(rule_error(format!("groups.{name}"), format!("at most {MAX_GROUP_PATTERNS}")));
                    }
                }
                if let Some((i, _)) = g
                    .static_groups
                    .iter()
                    .enumerate()
                    .find(|(_, n)| n.is_empty() || n.len() > 256 || n.chars().any(char::is_control))
                {
                    return Err(rule_error(format!("groups.static_groups[{i}]"), "must be a group name"));
                }
                let compile_list = |list: &[String], name: &str| -> Result<Vec<Regex>, RuleError> {
                    list.iter().enumerate().map(|(i, p)| whole(&format!("groups.{name}[{i}]"), p)).collect()
                };
                Ok(GroupsRule {
                    field: FieldRule {
                        from: source_name("groups", g.from.as_ref())?,
                        transforms: compile_transforms("groups", &g.transforms)?,
                    },
                    split: g.split.clone(),
                    allow: compile_list(&g.allow, "allow")?,
                    deny: compile_list(&g.deny, "deny")?,
                    prefix_with_connector: g.prefix_with_connector,
                    static_groups: g.static_groups.clone(),
                })
            })
            .transpose()?;
        let email_verified = match spec.email_verified.as_deref() {
            None | Some("claim") => EmailVerified::Claim,
            Some("always") => EmailVerified::Always,
            Some("never") => EmailVerified::Never,
            Some(other) => return Err(rule_error("email_verified", format!("`{other}` is not claim, always or never"))),
        };
        Ok(Self {
            username: compile_field("username", spec.username.as_ref())?,
            email: compile_field("email", spec.email.as_ref())?,
            name: compile_field("name", spec.name.as_ref())?,
            groups,
            email_verified,
        })
    }

    /// The identity after the rules. `received` is what the IdP sent, for rules that read
    /// another claim or attribute than the connector's default.
    pub fn apply(&self, identity: UpstreamIdentity, received: &[(String, Vec<String>)]) -> Result<UpstreamIdentity, RuleError> {
        let values = |name: &str| received.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let single = |field: &str, rule: &FieldRule, default: Option<String>| -> Result<Option<String>, RuleError> {
            let value = match &rule.from {
                Some(from) => values(from).and_then(|v| v.into_iter().next()),
                None => default,
            };
            value.map(|v| transform(field, &rule.transforms, v)).transpose()
        };
        let mut identity = identity;
        if let Some(rule) = &self.username {
            identity.username = single("username", rule, Some(identity.username.clone()))?
                .filter(|u| !u.is_empty())
                .ok_or_else(|| rule_error("username", "no value: the claim or attribute is missing or empty"))?;
        }
        if let Some(rule) = &self.email {
            let asserted = identity.email.clone();
            identity.email = single("email", rule, identity.email.clone())?.filter(|e| !e.is_empty());
            // The IdP vouched for the address it sent, not for one a rule made from another
            // claim: an address that differs is unverified (unless the policy below says so).
            let same = match (&asserted, &identity.email) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            };
            if !same {
                identity.email_verified = false;
            }
        }
        if let Some(rule) = &self.name {
            identity.name = single("name", rule, identity.name.clone())?.filter(|n| !n.is_empty());
        }
        match self.email_verified {
            EmailVerified::Claim => {}
            EmailVerified::Always => identity.email_verified = identity.email.is_some(),
            EmailVerified::Never => identity.email_verified = false,
        }
        if let Some(rule) = &self.groups {
            let raw = match &rule.field.from {
                Some(from) => values(from).unwrap_or_default(),
                None => std::mem::take(&mut identity.groups),
            };
            let split: Vec<String> = match &rule.split {
                Some(delimiter) => {
                    raw.iter().flat_map(|v| v.split(delimiter.as_str()).map(str::to_owned).collect::<Vec<_>>()).collect()
                }
                None => raw,
            };
            let mut groups = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for value in split {
                let group = transform("groups", &rule.field.transforms, value)?;
                let kept = !group.is_empty()
                    && (rule.allow.is_empty() || rule.allow.iter().any(|p| p.is_match(&group)))
                    && !rule.deny.iter().any(|p| p.is_match(&group));
                if kept {
                    let group = if rule.prefix_with_connector { format!("{}:{group}", identity.connector_id) } else { group };
                    push_group(&mut groups, &mut seen, group)?;
                }
            }
            for group in &rule.static_groups {
                push_group(&mut groups, &mut seen, group.clone())?;
            }
            identity.groups = groups;
        }
        Ok(identity)
    }
}

/// Adds a group once, refusing more than `MAX_GROUPS` as soon as they are counted.
fn push_group(groups: &mut Vec<String>, seen: &mut std::collections::HashSet<String>, group: String) -> Result<(), RuleError> {
    if seen.insert(group.clone()) {
        if groups.len() == MAX_GROUPS {
            return Err(rule_error("groups", format!("more than {MAX_GROUPS} groups after the rules")));
        }
        groups.push(group);
    }
    Ok(())
}

fn transform(field: &str, transforms: &[Transform], value: String) -> Result<String, RuleError> {
    let mut value = value;
    for (i, step) in transforms.iter().enumerate() {
        value = match step {
            Transform::Lowercase => value.to_lowercase(),
            Transform::Trim => value.trim().to_owned(),
            Transform::Extract(pattern) => {
                let captures = pattern.captures(&value).ok_or_else(|| {
                    rule_error(format!("{field}.transforms[{i}]"), format!("the pattern does not match `{}`", shown(&value)))
                })?;
                captures.get(1).or_else(|| captures.get(0)).map_or_else(String::new, |m| m.as_str().to_owned())
            }
            Transform::Replace(pattern, with) => pattern.replace_all(&value, with.as_str()).into_owned(),
        };
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(rule_error(
                format!("{field}.transforms[{i}]"),
                format!("the value grows past {MAX_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(value)
}

fn shown(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::{FieldRuleSpec, GroupsRuleSpec, MappingSpec, Rules, TransformSpec};
    use crate::upstream::UpstreamIdentity;

    fn identity() -> UpstreamIdentity {
        UpstreamIdentity {
            connector_id: String::from("corp"),
            subject: String::from("s-1"),
            username: String::from("  Alice.Smith@Corp.Example "),
            email: Some(String::from("Alice.Smith@Corp.Example")),
            email_verified: false,
            name: Some(String::from("Alice")),
            groups: vec![String::from("eng"), String::from("ops-admins")],
        }
    }

    fn received() -> Vec<(String, Vec<String>)> {
        vec![
            (String::from("memberOf"), vec![String::from("CN=Payroll,OU=Groups,DC=corp;CN=Staff,OU=Groups,DC=corp")]),
            (String::from("employeeId"), vec![String::from("E-0042")]),
        ]
    }

    fn field(transforms: Vec<TransformSpec>) -> Option<FieldRuleSpec> {
        Some(FieldRuleSpec { from: None, transforms })
    }

    #[test]
    fn each_transform_applies_in_order() {
        let spec = MappingSpec {
            username: field(vec![
                TransformSpec::Trim,
                TransformSpec::Lowercase,
                TransformSpec::RegexExtract(String::from("^([^@]+)@")),
            ]),
            email: field(vec![TransformSpec::Lowercase]),
            name: Some(FieldRuleSpec {
                from: Some(String::from("employeeId")),
                transforms: vec![TransformSpec::RegexReplace(String::from("^E-0*"), String::from("#"))],
            }),
            email_verified: Some(String::from("always")),
            ..MappingSpec::default()
        };
        let mapped = Rules::compile(&spec).unwrap().apply(identity(), &received()).unwrap();
        assert_eq!(mapped.username, "alice.smith");
        assert_eq!(mapped.email.as_deref(), Some("alice.smith@corp.example"));
        assert_eq!(mapped.name.as_deref(), Some("#42"));
        assert!(mapped.email_verified, "email_verified = always");
        let never = MappingSpec { email_verified: Some(String::from("never")), ..MappingSpec::default() };
        let verified = UpstreamIdentity { email_verified: true, ..identity() };
        assert!(!Rules::compile(&never).unwrap().apply(verified, &[]).unwrap().email_verified);
    }

    #[test]
    fn groups_are_split_rewritten_filtered_prefixed_and_added() {
        let spec = MappingSpec {
            groups: Some(GroupsRuleSpec {
                from: Some(String::from("memberOf")),
                split: Some(String::from(";")),
                transforms: vec![
                    TransformSpec::RegexReplace(String::from("^CN=([^,]+),.*$"), String::from("$1")),
                    TransformSpec::Lowercase,
                ],
                allow: vec![String::from("pay.*"), String::from("staff")],
                deny: vec![String::from("staff")],
                prefix_with_connector: true,
                static_groups: vec![String::from("employees")],
            }),
            ..MappingSpec::default()
        };
        let mapped = Rules::compile(&spec).unwrap().apply(identity(), &received()).unwrap();
        assert_eq!(mapped.groups, ["corp:payroll", "employees"]);
        // Without `from`, the connector's groups are the input.
        let deny = MappingSpec {
            groups: Some(GroupsRuleSpec { deny: vec![String::from(".*-admins")], ..GroupsRuleSpec::default() }),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&deny).unwrap().apply(identity(), &[]).unwrap().groups, ["eng"]);
    }

    #[test]
    fn a_rule_that_fails_refuses_with_the_field_at_fault() {
        let spec = MappingSpec {
            username: field(vec![TransformSpec::RegexExtract(String::from("^emp-(\\d+)$"))]),
            ..MappingSpec::default()
        };
        let err = Rules::compile(&spec).unwrap().apply(identity(), &[]).unwrap_err();
        assert_eq!(err.field, "username.transforms[0]");
        assert!(err.reason.contains("does not match"), "{err}");
        let missing = MappingSpec {
            username: Some(FieldRuleSpec { from: Some(String::from("uid")), transforms: Vec::new() }),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&missing).unwrap().apply(identity(), &[]).unwrap_err().field, "username");
    }

    #[test]
    fn an_email_a_rule_makes_from_another_claim_is_not_verified() {
        let verified = UpstreamIdentity { email_verified: true, ..identity() };
        let received = vec![(String::from("upn"), vec![String::from("boss@corp.example")])];
        let from_upn = MappingSpec {
            email: Some(FieldRuleSpec { from: Some(String::from("upn")), transforms: Vec::new() }),
            ..MappingSpec::default()
        };
        let mapped = Rules::compile(&from_upn).unwrap().apply(verified.clone(), &received).unwrap();
        assert_eq!(mapped.email.as_deref(), Some("boss@corp.example"));
        assert!(!mapped.email_verified, "the IdP never vouched for this address");
        // Lower-casing the asserted address keeps it verified.
        let lower = MappingSpec { email: field(vec![TransformSpec::Lowercase]), ..MappingSpec::default() };
        assert!(Rules::compile(&lower).unwrap().apply(verified, &[]).unwrap().email_verified);
    }

    #[test]
    fn growth_and_group_counts_are_bounded() {
        let doubling = MappingSpec {
            username: field(vec![TransformSpec::RegexReplace(String::from(""), String::from("xx")); 10]),
            ..MappingSpec::default()
        };
        let err = Rules::compile(&doubling).unwrap().apply(identity(), &[]).unwrap_err();
        assert!(err.reason.contains("grows past"), "{err}");
        let many = vec![(String::from("memberOf"), vec![(0..5000).map(|i| format!("g{i}")).collect::<Vec<_>>().join(";")])];
        let split = MappingSpec {
            groups: Some(GroupsRuleSpec {
                from: Some(String::from("memberOf")),
                split: Some(String::from(";")),
                ..GroupsRuleSpec::default()
            }),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&split).unwrap().apply(identity(), &many).unwrap_err().field, "groups");
    }

    #[test]
    fn invalid_rules_are_refused_at_the_field() {
        let bad_pattern = MappingSpec {
            groups: Some(GroupsRuleSpec {
                allow: vec![String::from("ok"), String::from("(unclosed")],
                ..GroupsRuleSpec::default()
            }),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&bad_pattern).unwrap_err().field, "groups.allow[1]");
        let huge = MappingSpec {
            username: field(vec![TransformSpec::RegexExtract(String::from("a{1000}{1000}"))]),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&huge).unwrap_err().field, "username.transforms[0]");
        let policy = MappingSpec { email_verified: Some(String::from("sometimes")), ..MappingSpec::default() };
        assert_eq!(Rules::compile(&policy).unwrap_err().field, "email_verified");
        let split = MappingSpec {
            groups: Some(GroupsRuleSpec { split: Some(String::new()), ..GroupsRuleSpec::default() }),
            ..MappingSpec::default()
        };
        assert_eq!(Rules::compile(&split).unwrap_err().field, "groups.split");
        assert!(Rules::compile(&MappingSpec::default()).is_ok());
    }
}
