//! Request parameters as RFC 6749 reads them: `application/x-www-form-urlencoded`, an empty
//! value is as if the parameter were absent (§3.1), and no parameter may appear twice.

use url::form_urlencoded;

use crate::provider::{ErrorCode, MAX_PARAM_BYTES, OAuthError, oauth};

/// More parameters than any protocol request here needs; past this, a request is refused
/// before any is looked at.
const MAX_PARAMS: usize = 100;

#[derive(Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Set at parse time, in one pass: checking each name against all others would let a
    /// request with thousands of names cost quadratic time.
    repeated: bool,
    too_many: bool,
}

/// Names only: values include client secrets, codes and tokens.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.pairs.iter().map(|(name, _)| name)).finish()
    }
}

impl Params {
    pub fn parse(encoded: &[u8]) -> Self {
        let mut pairs = Vec::new();
        let mut names = std::collections::HashSet::new();
        let mut repeated = false;
        for (name, value) in form_urlencoded::parse(encoded) {
            if pairs.len() == MAX_PARAMS {
                return Self { pairs, repeated, too_many: true };
            }
            repeated |= !names.insert(name.clone());
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Self { pairs, repeated, too_many: false }
    }

    /// The one value of `name`: `None` when absent or empty; an error when repeated or too long.
    pub fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(oauth(ErrorCode::InvalidRequest, "a parameter was given more than once"));
        }
        match first {
            Some(value) if value.len() > MAX_PARAM_BYTES => Err(oauth(ErrorCode::InvalidRequest, "a parameter is too long")),
            Some("") | None => Ok(None),
            Some(value) => Ok(Some(value)),
        }
    }

    pub fn require(&self, name: &str, missing: &'static str) -> Result<&str, OAuthError> {
        self.get(name)?.ok_or(oauth(ErrorCode::InvalidRequest, missing))
    }

    /// Refuses any parameter that is repeated or oversized, named or not.
    pub fn check_all(&self) -> Result<(), OAuthError> {
        if self.too_many {
            return Err(oauth(ErrorCode::InvalidRequest, "the request has too many parameters"));
        }
        if self.repeated {
            return Err(oauth(ErrorCode::InvalidRequest, "a parameter was given more than once"));
        }
        if self.pairs.iter().any(|(_, value)| value.len() > MAX_PARAM_BYTES) {
            return Err(oauth(ErrorCode::InvalidRequest, "a parameter is too long"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_absent_and_repeats_are_refused() {
        let params = Params::parse(b"a=1&b=&c=x&c=y");
        assert_eq!(params.get("a").unwrap(), Some("1"));
        assert_eq!(params.get("b").unwrap(), None);
        assert_eq!(params.get("z").unwrap(), None);
        assert_eq!(params.get("c").unwrap_err().code, ErrorCode::InvalidRequest);
        assert!(params.check_all().is_err());
        assert_eq!(format!("{:?}", Params::parse(b"client_secret=hunter2")), "[\"client_secret\"]");
        let long = format!("a={}", "x".repeat(MAX_PARAM_BYTES + 1));
        assert!(Params::parse(long.as_bytes()).get("a").is_err());
        assert!(Params::parse(long.as_bytes()).check_all().is_err());
        let many: Vec<String> = (0..5000).map(|i| format!("p{i}=1")).collect();
        let many = Params::parse(many.join("&").as_bytes());
        assert_eq!(many.check_all().unwrap_err().description, "the request has too many parameters");
    }
}
