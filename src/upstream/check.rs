//! Checking each connector against its identity provider: at start-up, every
//! `connector_check_interval_secs` after, and on `gatehouse check-config --connect`. A failed check is
//! reported (a warning naming the connector and the fix, `/readyz?verbose`, the
//! `gatehouse_connector_up` metric), never fatal: an IdP may be down while Gatehouse starts,
//! and its connector works as soon as it answers again.

use crate::clock::UnixTime;
use crate::config::{ConnectorConfig, ConnectorKind};

use super::saml::SamlError;
use super::saml::metadata::IdpMetadata;
use super::{ConnectorType, oidc, saml};

/// A SAML IdP's signing certificate this close to its expiry is reported.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// Reasons from the network or the IdP are cut to this many characters.
const MAX_DETAIL_CHARS: usize = 300;

/// What a check of one connector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Discovery and the key set (OIDC), or the metadata (SAML), are usable.
    Usable,
    /// Usable, but the IdP's earliest signing certificate expires soon.
    CertificateExpiresSoon { not_after: UnixTime },
    /// The IdP did not answer, or answered with an HTTP error.
    Unreachable(String),
    /// It answered with something Gatehouse cannot use.
    Unusable(String),
    /// Every signing certificate in the IdP's metadata has expired (sign-ins still work).
    CertificateExpired { not_after: UnixTime },
}

impl Finding {
    /// A fixed name for logs and `/readyz?verbose`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Usable => "ok",
            Self::CertificateExpiresSoon { .. } => "certificate_expires_soon",
            Self::Unreachable(_) => "unreachable",
            Self::Unusable(_) => "unusable",
            Self::CertificateExpired { .. } => "certificate_expired",
        }
    }

    /// Whether sign-ins through the connector can work. Signatures are verified with the keys
    /// the metadata pins, whatever their certificates' dates (IdPs sign with long-expired
    /// certificates), so an expired one is a warning, not a failure.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Self::Unreachable(_) | Self::Unusable(_))
    }

    /// Whether the administrator should look: anything but a clean `ok`.
    pub fn needs_attention(&self) -> bool {
        *self != Self::Usable
    }

    /// What was found, for the administrator: the network's or the IdP's reason, bounded.
    pub fn detail(&self) -> String {
        let detail = match self {
            Self::Usable => String::from("the identity provider answers and its keys are usable"),
            Self::CertificateExpiresSoon { not_after } => {
                format!("the IdP's signing certificate expires at {}", crate::clock::utc(*not_after))
            }
            Self::Unreachable(reason) | Self::Unusable(reason) => reason.clone(),
            Self::CertificateExpired { not_after } => {
                format!(
                    "every signing certificate in the IdP's metadata has expired (the last at {})",
                    crate::clock::utc(*not_after)
                )
            }
        };
        detail.chars().filter(|c| !c.is_control()).take(MAX_DETAIL_CHARS).collect()
    }

    /// What an administrator does about it.
    pub fn fix(&self, kind: ConnectorType) -> &'static str {
        match (self, kind) {
            (Self::Usable, _) => "nothing",
            (Self::Unreachable(_), ConnectorType::Saml) => {
                "check `idp_metadata_url` (or the file) and that this machine can reach the IdP (DNS, firewall, proxy); \
                 sign-ins through this connector fail until it answers"
            }
            (Self::Unreachable(_), _) => {
                "check `issuer` and that this machine can reach the provider (DNS, firewall, proxy); \
                 sign-ins through this connector fail until it answers"
            }
            (Self::Unusable(_), ConnectorType::Saml) => {
                "check that `idp_metadata_url` serves the IdP's SAML metadata (an EntityDescriptor with an \
                 HTTP-Redirect SingleSignOnService and a signing certificate), not a sign-in page"
            }
            (Self::Unusable(_), _) => {
                "check that `issuer` is exactly the issuer the provider's /.well-known/openid-configuration states, \
                 and that its key set (jwks_uri) publishes signing keys"
            }
            (Self::CertificateExpired { .. }, _) => {
                "renew the signing certificate at the IdP, or point Gatehouse at metadata that lists the current one"
            }
            (Self::CertificateExpiresSoon { .. }, _) => {
                "have the IdP publish its next signing certificate in its metadata before then"
            }
        }
    }
}

/// Fetches (or reads from cache) the provider's discovery document and key set.
pub async fn check_oidc(connector: &oidc::OidcConnector, now: UnixTime) -> Finding {
    match connector.check(now, super::FetchFor::Check).await {
        Ok(_) => Finding::Usable,
        Err(oidc::OidcError::Unreachable(reason)) => Finding::Unreachable(reason),
        Err(other) => Finding::Unusable(other.to_string()),
    }
}

/// Judges what loading an IdP's metadata gave.
pub fn judge_saml(loaded: Result<&IdpMetadata, &SamlError>, now: UnixTime) -> Finding {
    let metadata = match loaded {
        Ok(metadata) => metadata,
        Err(SamlError::MetadataUnavailable(reason)) => return Finding::Unreachable(reason.clone()),
        Err(other) => return Finding::Unusable(other.to_string()),
    };
    let expiries: Vec<UnixTime> = metadata.certificates.iter().filter_map(|c| c.not_after).collect();
    let every_one_dated = !expiries.is_empty() && expiries.len() == metadata.certificates.len();
    // The latest expiry counts: a certificate about to expire beside its successor is a
    // rotation under way, not a problem.
    match expiries.iter().max().filter(|_| every_one_dated) {
        Some(&latest) if latest <= now => Finding::CertificateExpired { not_after: latest },
        Some(&latest) if latest - now < EXPIRY_WARNING_SECS => Finding::CertificateExpiresSoon { not_after: latest },
        _ => Finding::Usable,
    }
}

/// Checks a connector as the file declares it, without a database: `check-config --connect`.
/// `None` for a local connector, which has no IdP.
pub async fn check_declared(connector: &ConnectorConfig, issuer: &str, now: UnixTime) -> Option<(ConnectorType, Finding)> {
    match &connector.kind {
        ConnectorKind::Local { .. } => None,
        ConnectorKind::Oidc(settings) => {
            let finding = match oidc::OidcConnector::new(&connector.id, &connector.name, settings.clone(), issuer) {
                Ok(built) => check_oidc(&built, now).await,
                Err(err) => Finding::Unusable(err.to_string()),
            };
            Some((ConnectorType::Oidc, finding))
        }
        ConnectorKind::Saml(settings) => {
            let loaded = match saml::metadata_client(settings) {
                Ok(http) => saml::load_idp_metadata(&settings.metadata, &http, now).await,
                Err(err) => Err(err),
            };
            Some((ConnectorType::Saml, judge_saml(loaded.as_ref(), now)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EXPIRY_WARNING_SECS, Finding, judge_saml};
    use crate::upstream::saml::SamlError;
    use crate::upstream::saml::metadata::{CertificateSummary, IdpMetadata};

    fn metadata(expiries: &[Option<i64>]) -> IdpMetadata {
        IdpMetadata {
            entity_id: String::from("https://idp.example.com"),
            sso_redirect_url: url::Url::parse("https://idp.example.com/sso").unwrap(),
            want_authn_requests_signed: false,
            signing_keys: Vec::new(),
            valid_until: None,
            certificates_expire_at: None,
            certificates: expiries
                .iter()
                .map(|not_after| CertificateSummary { sha256_thumbprint: String::new(), not_after: *not_after })
                .collect(),
            cache_duration_secs: None,
        }
    }

    #[test]
    fn certificates_are_judged_by_their_latest_expiry() {
        let now = 1_800_000_000;
        let year = 365 * 86_400;
        assert_eq!(judge_saml(Ok(&metadata(&[Some(now + year)])), now), Finding::Usable);
        assert_eq!(judge_saml(Ok(&metadata(&[None])), now), Finding::Usable, "no expiry stated");
        let soon = now + EXPIRY_WARNING_SECS - 1;
        let found = judge_saml(Ok(&metadata(&[Some(soon)])), now);
        assert_eq!(found, Finding::CertificateExpiresSoon { not_after: soon });
        assert!(found.is_usable() && found.needs_attention());
        // A certificate about to expire (or expired) beside its successor is a rotation under way.
        assert_eq!(judge_saml(Ok(&metadata(&[Some(soon), Some(now + year)])), now), Finding::Usable);
        assert_eq!(judge_saml(Ok(&metadata(&[Some(now - 10), Some(now + year)])), now), Finding::Usable);
        let expired = judge_saml(Ok(&metadata(&[Some(now - 10), Some(now - 5)])), now);
        assert_eq!(expired, Finding::CertificateExpired { not_after: now - 5 });
        assert!(expired.is_usable(), "signatures still verify with the pinned keys");
        assert!(expired.needs_attention());
        assert!(expired.detail().contains("has expired"), "{}", expired.detail());
    }

    #[test]
    fn failures_to_load_are_unreachable_or_unusable() {
        let down = judge_saml(Err(&SamlError::MetadataUnavailable(String::from("connection refused"))), 0);
        assert_eq!(down, Finding::Unreachable(String::from("connection refused")));
        let bad = judge_saml(Err(&SamlError::Metadata("no HTTP-Redirect SingleSignOnService")), 0);
        assert_eq!(bad.code(), "unusable");
        assert!(bad.detail().contains("SingleSignOnService"));
    }
}
