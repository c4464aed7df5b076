//! The `AuthnRequest` (written with `samael`'s schema type) and the HTTP-Redirect binding that
//! carries it: DEFLATE, base64, and an RSA-SHA256 signature over the query string (SAML
//! Bindings 3.4.4.1).

use std::io::Write as _;

use base64::Engine as _;

use super::SamlError;
use super::metadata::BINDING_POST;
use super::sp_key::RequestSigner;
use crate::clock::UnixTime;

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

pub fn authn_request_xml(
    id: &str,
    issuer: &str,
    acs_url: &str,
    destination: &str,
    force: bool,
    now: UnixTime,
) -> Result<String, SamlError> {
    use samael::schema::{AuthnRequest, Issuer, NameIdPolicy};
    use samael::traits::ToXml as _;
    let request = AuthnRequest {
        id: id.to_owned(),
        version: "2.0".to_owned(),
        issue_instant: chrono::DateTime::from_timestamp(now, 0).ok_or(SamlError::Request("the clock is out of range"))?,
        destination: Some(destination.to_owned()),
        issuer: Some(Issuer { value: Some(issuer.to_owned()), ..Issuer::default() }),
        name_id_policy: Some(NameIdPolicy { allow_create: Some(true), ..NameIdPolicy::default() }),
        force_authn: force.then_some(true),
        assertion_consumer_service_url: Some(acs_url.to_owned()),
        protocol_binding: Some(BINDING_POST.to_owned()),
        ..AuthnRequest::default()
    };
    request.to_string().map_err(|_| SamlError::Request("the AuthnRequest could not be written"))
}

/// The IdP's SSO URL with `SAMLRequest`, `RelayState` and, if a key is given, `SigAlg` and
/// `Signature` appended (any query the IdP's URL already has is kept in front).
pub fn redirect_url(
    sso_url: &url::Url,
    xml: &str,
    relay_state: &str,
    signer: Option<&RequestSigner>,
) -> Result<String, SamlError> {
    let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater.write_all(xml.as_bytes()).map_err(|_| SamlError::Request("deflate failed"))?;
    let deflated = deflater.finish().map_err(|_| SamlError::Request("deflate failed"))?;
    let encode = |value: &str| url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let mut signed_part = format!(
        "SAMLRequest={}&RelayState={}",
        encode(&base64::engine::general_purpose::STANDARD.encode(deflated)),
        encode(relay_state)
    );
    if let Some(signer) = signer {
        signed_part.push_str("&SigAlg=");
        signed_part.push_str(&encode(RSA_SHA256));
        let signature =
            signer.sign_rsa_sha256(signed_part.as_bytes()).map_err(|_| SamlError::Request("the request could not be signed"))?;
        signed_part.push_str("&Signature=");
        signed_part.push_str(&encode(&base64::engine::general_purpose::STANDARD.encode(signature)));
    }
    let mut url = sso_url.to_string();
    url.push(if sso_url.query().is_some() { '&' } else { '?' });
    url.push_str(&signed_part);
    Ok(url)
}
