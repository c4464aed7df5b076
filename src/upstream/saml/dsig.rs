//! Enveloped XML signatures (<https://www.w3.org/TR/xmldsig-core1/>) as SAML uses them, and
//! nothing more: one `Reference` to the element holding the signature, the enveloped-signature
//! and exclusive-c14n transforms, and algorithms from a short allow-list. The verifying keys come
//! from the IdP's metadata; `KeyInfo` in the message is never read.

use base64::Engine as _;
use roxmltree::{Document, Node};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::SamlError;
use super::c14n::{self, Budget, Options};
use super::xml::{NS_DSIG, NS_EXC_C14N, element_children, is, single_child};
use crate::work::Deadline;

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const MIN_RSA_BITS: usize = 2048;
/// An `InclusiveNamespaces PrefixList` names the few prefixes used in QName-valued content
/// (`xs`, `xsi`); each entry costs a lookup on every canonicalized element.
const MAX_INCLUSIVE_PREFIXES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            "http://www.w3.org/2000/09/xmldsig#sha1" => Some(Self::Sha1),
            "http://www.w3.org/2001/04/xmlenc#sha256" => Some(Self::Sha256),
            "http://www.w3.org/2001/04/xmldsig-more#sha384" => Some(Self::Sha384),
            "http://www.w3.org/2001/04/xmlenc#sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// A hasher to stream a canonical form into.
    pub fn hasher(self) -> Box<dyn sha2::digest::DynDigest> {
        match self {
            Self::Sha1 => Box::new(sha1::Sha1::default()),
            Self::Sha256 => Box::new(sha2::Sha256::default()),
            Self::Sha384 => Box::new(sha2::Sha384::default()),
            Self::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn rsa_pkcs1(self) -> &'static ring::signature::RsaParameters {
        match self {
            Self::Sha1 => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Sha384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Sha512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ecdsa,
}

fn signature_algorithm(uri: &str) -> Option<(KeyFamily, DigestAlgorithm)> {
    match uri {
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => Some((KeyFamily::Rsa, DigestAlgorithm::Sha1)),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Some((KeyFamily::Rsa, DigestAlgorithm::Sha256)),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => Some((KeyFamily::Rsa, DigestAlgorithm::Sha384)),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Some((KeyFamily::Rsa, DigestAlgorithm::Sha512)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => Some((KeyFamily::Ecdsa, DigestAlgorithm::Sha256)),
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => Some((KeyFamily::Ecdsa, DigestAlgorithm::Sha384)),
        _ => None,
    }
}

/// A public key the IdP signs with, taken from a certificate in its metadata. RSA keys are kept
/// as PKCS#1 DER for `ring`, whose RSA verification is several times faster than the pure-Rust
/// `rsa` crate's (see BENCHMARKS.md).
#[derive(Clone)]
pub enum IdpKey {
    Rsa(Vec<u8>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for IdpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa(_) => "IdpKey::Rsa",
            Self::P256(_) => "IdpKey::P256",
            Self::P384(_) => "IdpKey::P384",
        })
    }
}

/// A DER certificate's `notAfter`, in Unix seconds.
pub fn certificate_not_after(der: &[u8]) -> Option<crate::clock::UnixTime> {
    use x509_cert::der::Decode as _;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    i64::try_from(certificate.tbs_certificate.validity.not_after.to_unix_duration().as_secs()).ok()
}

impl IdpKey {
    /// The subject public key of a DER certificate. Validity dates are not checked: the
    /// metadata pins the key, as SAML deployments expect (IdPs sign with long-expired certs).
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, SamlError> {
        use x509_cert::der::{Decode as _, Encode as _};
        let certificate =
            x509_cert::Certificate::from_der(der).map_err(|_| SamlError::Metadata("a certificate is not valid X.509"))?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| SamlError::Metadata("a certificate is not valid X.509"))?;
        if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&spki) {
            if key.size() * 8 < MIN_RSA_BITS {
                return Err(SamlError::Metadata("an RSA signing key is shorter than 2048 bits"));
            }
            use rsa::pkcs1::EncodeRsaPublicKey as _;
            let der = key.to_pkcs1_der().map_err(|_| SamlError::Metadata("an RSA signing key cannot be encoded"))?;
            return Ok(Self::Rsa(der.as_bytes().to_vec()));
        }
        if let Ok(key) = p256::PublicKey::from_public_key_der(&spki) {
            return Ok(Self::P256(key.into()));
        }
        if let Ok(key) = p384::PublicKey::from_public_key_der(&spki) {
            return Ok(Self::P384(key.into()));
        }
        Err(SamlError::Metadata("a signing certificate holds a key type other than RSA, P-256 or P-384"))
    }

    fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) | Self::P384(_) => KeyFamily::Ecdsa,
        }
    }

    fn verify(&self, digest_algorithm: DigestAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        match self {
            Self::Rsa(der) => {
                ring::signature::UnparsedPublicKey::new(digest_algorithm.rsa_pkcs1(), der).verify(message, signature).is_ok()
            }
            Self::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_prehash(&digest_algorithm.digest(message), &sig).is_ok()),
            Self::P384(key) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_prehash(&digest_algorithm.digest(message), &sig).is_ok()),
        }
    }
}

/// Decodes base64 as XML carries it: line breaks and spaces anywhere.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, SamlError> {
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| SamlError::Malformed("a base64 value is not valid"))
}

/// Whether `element` carries an enveloped signature, verified. `Ok(false)`: no signature;
/// `Err`: a signature that does not verify, or one shaped other than SAML allows, or one that
/// costs more to check than `deadline` allows.
pub fn verify_enveloped(
    doc: &Document<'_>,
    element: Node<'_, '_>,
    keys: &[IdpKey],
    allow_sha1: bool,
    deadline: Deadline,
) -> Result<bool, SamlError> {
    let Some(signature) = single_child(element, NS_DSIG, "Signature")? else {
        return Ok(false);
    };
    let id = element.attribute("ID").filter(|id| !id.is_empty()).ok_or(SamlError::Signature("the signed element has no ID"))?;

    let mut parts = element_children(signature);
    let signed_info =
        parts.next().filter(|n| is(*n, NS_DSIG, "SignedInfo")).ok_or(SamlError::Signature("SignedInfo must come first"))?;
    let signature_value = parts
        .next()
        .filter(|n| is(*n, NS_DSIG, "SignatureValue"))
        .ok_or(SamlError::Signature("SignatureValue must follow SignedInfo"))?;
    if parts.any(|n| !is(n, NS_DSIG, "KeyInfo")) {
        return Err(SamlError::Signature("a signature may hold only SignedInfo, SignatureValue and KeyInfo"));
    }

    let mut info = element_children(signed_info);
    let c14n_method = info
        .next()
        .filter(|n| is(*n, NS_DSIG, "CanonicalizationMethod"))
        .ok_or(SamlError::Signature("CanonicalizationMethod missing"))?;
    let method =
        info.next().filter(|n| is(*n, NS_DSIG, "SignatureMethod")).ok_or(SamlError::Signature("SignatureMethod missing"))?;
    let reference = info.next().filter(|n| is(*n, NS_DSIG, "Reference")).ok_or(SamlError::Signature("Reference missing"))?;
    if info.next().is_some() {
        return Err(SamlError::Signature("a signature must have exactly one Reference"));
    }

    let (info_comments, info_prefixes) = c14n_algorithm(c14n_method)?;
    let (family, signature_digest) = method
        .attribute("Algorithm")
        .and_then(signature_algorithm)
        .ok_or(SamlError::Signature("the signature algorithm is not accepted"))?;
    if signature_digest == DigestAlgorithm::Sha1 && !allow_sha1 {
        return Err(SamlError::AlgorithmRefused("RSA-SHA1 signatures are not accepted for this connector (allow_sha1)"));
    }
    if element_children(method).next().is_some() {
        return Err(SamlError::Signature("SignatureMethod parameters are not accepted"));
    }

    let expected_uri = format!("#{id}");
    if reference.attribute("URI") != Some(expected_uri.as_str()) {
        return Err(SamlError::Signature("the signature must reference the element that holds it"));
    }
    let mut reference_parts = element_children(reference);
    let transforms =
        reference_parts.next().filter(|n| is(*n, NS_DSIG, "Transforms")).ok_or(SamlError::Signature("Transforms missing"))?;
    let digest_method =
        reference_parts.next().filter(|n| is(*n, NS_DSIG, "DigestMethod")).ok_or(SamlError::Signature("DigestMethod missing"))?;
    let digest_value =
        reference_parts.next().filter(|n| is(*n, NS_DSIG, "DigestValue")).ok_or(SamlError::Signature("DigestValue missing"))?;
    if reference_parts.next().is_some() {
        return Err(SamlError::Signature("unexpected content in Reference"));
    }
    let reference_prefixes = reference_transforms(transforms)?;
    let digest_algorithm = digest_method
        .attribute("Algorithm")
        .and_then(DigestAlgorithm::from_uri)
        .ok_or(SamlError::Signature("the digest algorithm is not accepted"))?;
    if digest_algorithm == DigestAlgorithm::Sha1 && !allow_sha1 {
        return Err(SamlError::AlgorithmRefused("SHA-1 digests are not accepted for this connector (allow_sha1)"));
    }

    // A bare-name `#ID` reference selects the element without comments (XMLDSig 4.4.3.3), so
    // the reference is canonicalized without them even under the #WithComments transform.
    let budget = Budget::for_document(doc, deadline);
    let expected_digest = decode_base64(&super::xml::text_content(digest_value))?;
    let mut hasher = digest_algorithm.hasher();
    c14n::canonicalize_into(
        doc,
        element,
        Some(signature.id()),
        &Options { with_comments: false, inclusive_prefixes: &reference_prefixes },
        &budget,
        &mut |bytes| hasher.update(bytes),
    )?;
    let actual_digest = hasher.finalize();
    if !bool::from(actual_digest.as_ref().ct_eq(expected_digest.as_slice())) {
        return Err(SamlError::Signature("the signed content was altered"));
    }

    let canonical_info = c14n::canonicalize(
        doc,
        signed_info,
        None,
        &Options { with_comments: info_comments, inclusive_prefixes: &info_prefixes },
        &budget,
    )?;
    let value = decode_base64(&super::xml::text_content(signature_value))?;
    let verified =
        keys.iter().filter(|key| key.family() == family).any(|key| key.verify(signature_digest, &canonical_info, &value));
    if verified { Ok(true) } else { Err(SamlError::Signature("the signature was not made by a key in the IdP's metadata")) }
}

/// The canonicalization named by `CanonicalizationMethod` or a c14n `Transform`: only exclusive
/// c14n, with its optional `InclusiveNamespaces`.
fn c14n_algorithm(node: Node<'_, '_>) -> Result<(bool, Vec<String>), SamlError> {
    let with_comments = match node.attribute("Algorithm") {
        Some(EXC_C14N) => false,
        Some(EXC_C14N_WITH_COMMENTS) => true,
        _ => return Err(SamlError::Signature("only exclusive canonicalization is accepted")),
    };
    let mut prefixes: Vec<String> = Vec::new();
    for child in element_children(node) {
        if !is(child, NS_EXC_C14N, "InclusiveNamespaces") {
            return Err(SamlError::Signature("unexpected canonicalization parameter"));
        }
        for listed in child.attribute("PrefixList").unwrap_or_default().split_ascii_whitespace() {
            if !(listed == "#default" || is_prefix_name(listed)) {
                return Err(SamlError::Signature("InclusiveNamespaces names something that is not a prefix"));
            }
            if !prefixes.iter().any(|p| p == listed) {
                prefixes.push(listed.to_owned());
            }
            if prefixes.len() > MAX_INCLUSIVE_PREFIXES {
                return Err(SamlError::Signature("InclusiveNamespaces lists too many prefixes"));
            }
        }
    }
    Ok((with_comments, prefixes))
}

/// An XML namespace prefix (an NCName), at most 64 characters; `xmlns` is never one.
fn is_prefix_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    starts_well
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && name.chars().count() <= 64
        && name != "xmlns"
}

/// Exactly the enveloped-signature transform followed by exclusive c14n.
fn reference_transforms(transforms: Node<'_, '_>) -> Result<Vec<String>, SamlError> {
    let mut steps = element_children(transforms);
    let first = steps.next().ok_or(SamlError::Signature("the enveloped-signature transform is required"))?;
    if !is(first, NS_DSIG, "Transform")
        || first.attribute("Algorithm") != Some(ENVELOPED_SIGNATURE)
        || element_children(first).next().is_some()
    {
        return Err(SamlError::Signature("the enveloped-signature transform is required"));
    }
    let second = steps.next().ok_or(SamlError::Signature("the exclusive canonicalization transform is required"))?;
    if !is(second, NS_DSIG, "Transform") {
        return Err(SamlError::Signature("unexpected content in Transforms"));
    }
    let (_, prefixes) = c14n_algorithm(second)?;
    if steps.next().is_some() {
        return Err(SamlError::Signature("only the enveloped-signature and exclusive c14n transforms are accepted"));
    }
    Ok(prefixes)
}
