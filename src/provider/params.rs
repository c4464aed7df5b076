//! Request parameters as RFC 6749 reads them: `application/x-www-form-urlencoded`, an empty
//! value is as if the parameter were absent (§3.1), and no parameter may appear twice.

use url::form_urlencoded;

use crate::provider::{ErrorCode, MAX_PARAM_BYTES, OAuthError, oauth};

#[derive(Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Names only: values include client secrets, codes and tokens.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.pairs.iter().map(|(name, _)| name)).finish()
    }
}

impl Params {
    pub fn parse(encoded: &[u8]) -> Self {
        Self { pairs: form_urlencoded::parse(encoded).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
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
        for (name, _) in &self.pairs {
            self.get(name)?;
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
    }
}
