//! The IdP's metadata, read with the strict parser (the schema's `cacheDuration` is an
//! `xs:duration` and real documents carry DTD-free but varied layouts), and the SP's own
//! metadata, written with `samael`'s schema types.

use roxmltree::Node;

use super::SamlError;
use super::dsig::{IdpKey, certificate_not_after, decode_base64};
use super::xml::{METADATA_LIMITS, NS_DSIG, NS_METADATA, NS_PROTOCOL, children, element_children, is, parse, text_content};
use crate::clock::UnixTime;

pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// What the SP needs from the IdP's metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    pub entity_id: String,
    pub sso_redirect_url: url::Url,
    pub want_authn_requests_signed: bool,
    pub signing_keys: Vec<IdpKey>,
    /// The earliest `validUntil` in the document, if any.
    pub valid_until: Option<UnixTime>,
    /// The shortest `cacheDuration`, in seconds, if any.
    pub cache_duration_secs: Option<i64>,
    /// When the first signing certificate expires. Verification does not check it (the
    /// metadata pins the key), but an IdP about to roll its certificate is worth a warning.
    pub certificates_expire_at: Option<UnixTime>,
    /// Each signing certificate, as the console shows it.
    pub certificates: Vec<CertificateSummary>,
}

/// A signing certificate from the IdP's metadata: how admins recognise it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateSummary {
    /// SHA-256 of the DER certificate, as colon-separated hex (what IdP consoles show).
    pub sha256_thumbprint: String,
    pub not_after: Option<UnixTime>,
}

pub fn thumbprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

pub fn parse_idp_metadata(text: &str, now: UnixTime) -> Result<IdpMetadata, SamlError> {
    let doc = parse(text, &METADATA_LIMITS).map_err(|_| SamlError::Metadata("the metadata is not acceptable XML"))?;
    let root = doc.root_element();
    let entity = if is(root, NS_METADATA, "EntityDescriptor") {
        root
    } else if is(root, NS_METADATA, "EntitiesDescriptor") {
        let mut idps = root.descendants().filter(|n| {
            is(*n, NS_METADATA, "EntityDescriptor") && children(*n, NS_METADATA, "IDPSSODescriptor").next().is_some()
        });
        let first = idps.next().ok_or(SamlError::Metadata("the metadata describes no identity provider"))?;
        if idps.next().is_some() {
            return Err(SamlError::Metadata("the metadata describes several identity providers; point at one"));
        }
        first
    } else {
        return Err(SamlError::Metadata("the document is not SAML metadata"));
    };
    let entity_id = entity.attribute("entityID").filter(|id| !id.is_empty()).ok_or(SamlError::Metadata("entityID missing"))?;

    let mut descriptors = children(entity, NS_METADATA, "IDPSSODescriptor").filter(|d| {
        d.attribute("protocolSupportEnumeration").unwrap_or_default().split_ascii_whitespace().any(|p| p == NS_PROTOCOL)
    });
    let descriptor = descriptors.next().ok_or(SamlError::Metadata("no SAML 2.0 IDPSSODescriptor"))?;
    if descriptors.next().is_some() {
        return Err(SamlError::Metadata("several SAML 2.0 IDPSSODescriptors"));
    }

    let mut valid_until = None;
    let mut cache_duration_secs = None;
    for node in [root, entity, descriptor] {
        if let Some(value) = node.attribute("validUntil") {
            let at = parse_instant(value).ok_or(SamlError::Metadata("validUntil is not a valid time"))?;
            valid_until = Some(valid_until.map_or(at, |current: UnixTime| current.min(at)));
        }
        if let Some(value) = node.attribute("cacheDuration") {
            let secs = parse_duration_secs(value).ok_or(SamlError::Metadata("cacheDuration is not a valid duration"))?;
            cache_duration_secs = Some(cache_duration_secs.map_or(secs, |current: i64| current.min(secs)));
        }
    }
    if valid_until.is_some_and(|until| until <= now) {
        return Err(SamlError::Metadata("the metadata has expired (validUntil)"));
    }

    let sso_redirect_url = children(descriptor, NS_METADATA, "SingleSignOnService")
        .find(|s| s.attribute("Binding") == Some(BINDING_REDIRECT))
        .and_then(|s| s.attribute("Location"))
        .ok_or(SamlError::Metadata("no HTTP-Redirect SingleSignOnService"))?;
    let sso_redirect_url =
        url::Url::parse(sso_redirect_url).map_err(|_| SamlError::Metadata("the SingleSignOnService location is not a URL"))?;
    if !(sso_redirect_url.scheme() == "https"
        || sso_redirect_url.scheme() == "http" && crate::config::is_loopback_host(&sso_redirect_url))
    {
        return Err(SamlError::Metadata("the SingleSignOnService location must be https"));
    }

    let mut signing_keys = Vec::new();
    let mut certificates_expire_at = None;
    let mut summaries = Vec::new();
    for key_descriptor in children(descriptor, NS_METADATA, "KeyDescriptor") {
        if !matches!(key_descriptor.attribute("use"), None | Some("signing")) {
            continue;
        }
        for certificate in certificates(key_descriptor) {
            let der = decode_base64(&certificate)?;
            if let Some(not_after) = certificate_not_after(&der) {
                certificates_expire_at =
                    Some(certificates_expire_at.map_or(not_after, |earliest: UnixTime| earliest.min(not_after)));
            }
            signing_keys.push(IdpKey::from_certificate_der(&der)?);
            summaries.push(CertificateSummary { sha256_thumbprint: thumbprint(&der), not_after: certificate_not_after(&der) });
        }
    }
    if signing_keys.is_empty() {
        return Err(SamlError::Metadata("the metadata lists no signing certificate"));
    }

    Ok(IdpMetadata {
        entity_id: entity_id.to_owned(),
        sso_redirect_url,
        want_authn_requests_signed: descriptor.attribute("WantAuthnRequestsSigned") == Some("true")
            || descriptor.attribute("WantAuthnRequestsSigned") == Some("1"),
        signing_keys,
        valid_until,
        certificates_expire_at,
        certificates: summaries,
        cache_duration_secs,
    })
}

fn certificates(key_descriptor: Node<'_, '_>) -> Vec<String> {
    children(key_descriptor, NS_DSIG, "KeyInfo")
        .flat_map(|info| children(info, NS_DSIG, "X509Data"))
        .flat_map(element_children)
        .filter(|n| is(*n, NS_DSIG, "X509Certificate"))
        .map(text_content)
        .collect()
}

/// An `xs:dateTime` in UTC, as SAML requires, to Unix seconds.
pub fn parse_instant(value: &str) -> Option<UnixTime> {
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .ok()
        .filter(|at| at.offset().local_minus_utc() == 0)
        .map(|at| at.timestamp())
}

/// An `xs:duration` such as `PT1H` or `P1DT12H`; years and months count as 365 and 30 days.
pub fn parse_duration_secs(value: &str) -> Option<i64> {
    let rest = value.trim().strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    if date.is_empty() && time.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    for (part, units) in [
        (date, &[('Y', 365.0 * 86400.0), ('M', 30.0 * 86400.0), ('D', 86400.0)][..]),
        (time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut remaining = part;
        for (unit, seconds) in units {
            if let Some((number, after)) = remaining.split_once(*unit) {
                let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
                total += number * seconds;
                remaining = after;
            }
        }
        if !remaining.is_empty() {
            return None;
        }
    }
    (total < 1e12).then_some(total as i64)
}

/// The SP's own metadata: entity id, the HTTP-POST ACS, its signing and encryption
/// certificates (each in the order given), whether every request is signed, and the NameID
/// formats it accepts.
pub fn sp_metadata_xml(
    entity_id: &str,
    acs_url: &str,
    signing_certificates: &[Vec<u8>],
    encryption_certificates: &[Vec<u8>],
    authn_requests_signed: bool,
    valid_until: UnixTime,
) -> Result<String, SamlError> {
    use base64::Engine as _;
    use samael::key_info::{KeyInfo, X509Data};
    use samael::metadata::{EncryptionMethod, EntityDescriptor, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor};
    use samael::traits::ToXml as _;

    let key = |key_use: &str, der: &[u8], methods: Option<Vec<EncryptionMethod>>| KeyDescriptor {
        key_use: Some(key_use.to_owned()),
        key_info: KeyInfo {
            id: None,
            x509_data: Some(X509Data { certificates: vec![base64::engine::general_purpose::STANDARD.encode(der)] }),
        },
        encryption_methods: methods,
    };
    // AES-GCM first: the ACS takes AES-CBC only inside a signed Response.
    let methods = [
        "http://www.w3.org/2009/xmlenc11#aes256-gcm",
        "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    ]
    .map(|algorithm| EncryptionMethod { algorithm: algorithm.to_owned() })
    .to_vec();
    let key_descriptors = signing_certificates
        .iter()
        .map(|der| key("signing", der, None))
        .chain(encryption_certificates.iter().map(|der| key("encryption", der, Some(methods.clone()))))
        .collect();
    let descriptor = EntityDescriptor {
        entity_id: Some(entity_id.to_owned()),
        valid_until: chrono::DateTime::from_timestamp(valid_until, 0),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some(NS_PROTOCOL.to_owned()),
            authn_requests_signed: Some(authn_requests_signed),
            want_assertions_signed: Some(true),
            key_descriptors: Some(key_descriptors),
            name_id_formats: Some(vec![
                "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".to_owned(),
                "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".to_owned(),
                "urn:oasis:names:tc:SAML:2.0:nameid-format:transient".to_owned(),
            ]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: BINDING_POST.to_owned(),
                location: acs_url.to_owned(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    descriptor.to_string().map_err(|_| SamlError::Metadata("the SP metadata could not be written"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "MIIDBTCCAe2gAwIBAgIUL5Yq8VwQ5VbMHyaQvN0X0ZsZUHIwDQYJKoZIhvcNAQELBQAwEjEQMA4GA1UEAwwHaWRwLnRlc3Qw";

    fn document(attributes: &str, keys: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.test" {attributes}><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}<md:SingleSignOnService Binding="{BINDING_REDIRECT}" Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    }

    #[test]
    fn metadata_without_a_signing_certificate_is_refused() {
        let encryption_only = format!(
            r#"<md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERT}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        );
        let err = parse_idp_metadata(&document("", &encryption_only), 0).unwrap_err();
        assert!(err.to_string().contains("no signing certificate"), "{err}");
        let err = parse_idp_metadata(&document("", ""), 0).unwrap_err();
        assert!(err.to_string().contains("no signing certificate"), "{err}");
    }

    #[test]
    fn expired_metadata_and_a_doctype_are_refused() {
        let expired = document(r#"validUntil="2020-01-01T00:00:00Z""#, "");
        let err = parse_idp_metadata(&expired, 1_767_225_600).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let doctype = format!("<!DOCTYPE x [<!ENTITY e \"x\">]>{}", document("", ""));
        assert!(parse_idp_metadata(&doctype, 0).unwrap_err().to_string().contains("not acceptable XML"));
    }

    #[test]
    fn the_earliest_signing_certificate_expiry_is_kept() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/saml/keys/idp-metadata.xml")).unwrap();
        let metadata = parse_idp_metadata(&text, 0).unwrap();
        // The fixture IdP's certificate is valid until 2125-01-01T00:00:00Z.
        assert_eq!(metadata.certificates_expire_at, Some(4_891_363_200));
    }

    #[test]
    fn durations_follow_xs_duration() {
        assert_eq!(parse_duration_secs("PT1H"), Some(3600));
        assert_eq!(parse_duration_secs("P1DT12H"), Some(129_600));
        assert_eq!(parse_duration_secs("PT5M30S"), Some(330));
        assert_eq!(parse_duration_secs("PT0.5S"), Some(0));
        for bad in ["", "P", "1H", "PT", "PTH", "P-1D", "PT1X", "P1H"] {
            assert_eq!(parse_duration_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn instants_must_be_utc() {
        assert_eq!(parse_instant("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(parse_instant("2026-01-01T00:00:00.123Z"), Some(1_767_225_600));
        assert_eq!(parse_instant("2026-01-01T01:00:00+01:00"), None);
        assert_eq!(parse_instant("yesterday"), None);
    }
}
