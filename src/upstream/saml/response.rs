//! A `samlp:Response` from the HTTP-POST binding, verified and checked against what this SP
//! asked for. Signatures are verified first; afterwards only the signed element (the assertion,
//! or the response around it) is read, and it is the only assertion in the document.

use roxmltree::{Document, Node};

use super::SamlError;
use super::decrypt::{FAILED, decrypt_assertion};
use super::dsig::{IdpKey, decode_base64, verify_enveloped};
use super::metadata::parse_instant;
use super::xml::{
    MESSAGE_LIMITS, NS_ASSERTION, NS_PROTOCOL, children, element_children, is, parse, refuse_duplicate_ids, required_child,
    single_child, text_content, trim_xml_space,
};
use crate::clock::UnixTime;
use crate::work::Deadline;

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

/// What the response must match: this connector's SP, its IdP, and the request it answers.
pub struct Expectations<'a> {
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    pub idp_entity_id: &'a str,
    pub idp_keys: &'a [IdpKey],
    /// The stored request's ID; `None` for an IdP-initiated (unsolicited) response.
    pub in_response_to: Option<&'a str>,
    pub allow_idp_initiated: bool,
    pub allow_sha1: bool,
    pub clock_skew_secs: i64,
    /// The SP's encryption keys: the current one first, then those kept during a rotation.
    pub decryption_keys: &'a [super::decrypt::DecryptionKey],
    /// Verification that runs past this is abandoned (hostile input costs at most this much).
    pub deadline: Deadline,
}

/// The facts of a verified assertion.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub assertion_id: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    /// Attribute name (and friendly name, when given) with its values, in document order.
    pub attributes: Vec<Attribute>,
    pub authn_instant: Option<UnixTime>,
    /// Until when the assertion id must be remembered to refuse a replay.
    pub replay_until: UnixTime,
}

impl std::fmt::Debug for VerifiedAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedAssertion")
            .field("name_id_format", &self.name_id_format)
            .field("attributes", &self.attributes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub friendly_name: Option<String>,
    pub values: Vec<String>,
}

/// Verifies the base64 `SAMLResponse` form value.
pub fn verify_response(encoded: &str, expect: &Expectations<'_>, now: UnixTime) -> Result<VerifiedAssertion, SamlError> {
    let bytes = decode_base64(encoded)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| SamlError::Malformed("the response is not UTF-8"))?;
    let doc = parse(text, &MESSAGE_LIMITS)?;
    refuse_duplicate_ids(&doc)?;
    let response = doc.root_element();
    if !is(response, NS_PROTOCOL, "Response") {
        return Err(SamlError::Malformed("the document is not a SAML Response"));
    }
    if response.attribute("Version") != Some("2.0") {
        return Err(SamlError::Malformed("only SAML 2.0 responses are accepted"));
    }
    if expect.in_response_to.is_none() && !expect.allow_idp_initiated {
        return Err(SamlError::Unsolicited);
    }
    if let Some(issuer) = single_child(response, NS_ASSERTION, "Issuer")? {
        check_issuer(issuer, expect)?;
    }
    match (response.attribute("InResponseTo"), expect.in_response_to) {
        (None, _) => {}
        (Some(got), Some(wanted)) if got == wanted => {}
        (Some(got), _) => return Err(SamlError::InResponseTo { got: Some(got.to_owned()) }),
    }
    let destination = response.attribute("Destination");
    let wrong_destination =
        || SamlError::Destination { expected: expect.acs_url.to_owned(), got: destination.map(str::to_owned) };
    if destination.is_some_and(|d| d != expect.acs_url) {
        return Err(wrong_destination());
    }

    let response_signed = verify_enveloped(&doc, response, expect.idp_keys, expect.allow_sha1, expect.deadline)
        .map_err(|err| signature_in("Response", err))?;
    if response_signed && destination.is_none() {
        return Err(wrong_destination());
    }
    check_status(response)?;

    // Exactly one assertion in the whole document, as the Response's child: a second one
    // anywhere (extensions, signature objects, another assertion) is how wrapping attacks hide.
    let plain: Vec<_> = doc.descendants().filter(|n| is(*n, NS_ASSERTION, "Assertion")).collect();
    let encrypted: Vec<_> = doc.descendants().filter(|n| is(*n, NS_ASSERTION, "EncryptedAssertion")).collect();
    match (plain.as_slice(), encrypted.as_slice()) {
        ([assertion], []) if assertion.parent() == Some(response) => {
            read_assertion(&doc, *assertion, response_signed, expect, now)
        }
        ([], [sealed]) if sealed.parent() == Some(response) => {
            if expect.decryption_keys.is_empty() {
                return Err(SamlError::Decryption("no SP key to decrypt with"));
            }
            let plaintext = decrypt_assertion(*sealed, expect.decryption_keys, expect.sp_entity_id, response_signed)?;
            read_decrypted(*sealed, &plaintext, response_signed, expect, now)
        }
        ([], []) => Err(SamlError::Malformed("the response holds no assertion")),
        _ => Err(SamlError::Malformed("the response must hold exactly one assertion, as its child")),
    }
}

/// Parses a decrypted assertion in the namespace context it was encrypted in.
fn read_decrypted(
    sealed: Node<'_, '_>,
    plaintext: &str,
    response_signed: bool,
    expect: &Expectations<'_>,
    now: UnixTime,
) -> Result<VerifiedAssertion, SamlError> {
    let body = match plaintext.trim_start_matches([' ', '\t', '\r', '\n']).strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, after)| after).unwrap_or_default(),
        None => plaintext,
    };
    let mut wrapper = String::with_capacity(body.len() + 256);
    wrapper.push_str("<wrapper");
    for ns in sealed.namespaces() {
        if let Some(prefix) = ns.name() {
            wrapper.push_str(" xmlns:");
            wrapper.push_str(prefix);
        } else {
            wrapper.push_str(" xmlns");
        }
        wrapper.push_str("=\"");
        for c in ns.uri().chars() {
            match c {
                '&' => wrapper.push_str("&amp;"),
                '"' => wrapper.push_str("&quot;"),
                '<' => wrapper.push_str("&lt;"),
                '\t' => wrapper.push_str("&#9;"),
                '\n' => wrapper.push_str("&#xA;"),
                '\r' => wrapper.push_str("&#xD;"),
                _ => wrapper.push(c),
            }
        }
        wrapper.push('"');
    }
    wrapper.push('>');
    wrapper.push_str(body);
    wrapper.push_str("</wrapper>");
    // Whatever is wrong with the plaintext reads as a failed decryption, so the answers to
    // forged ciphertexts say nothing about what they decrypted to.
    let doc = parse(&wrapper, &MESSAGE_LIMITS).map_err(|_| FAILED)?;
    refuse_duplicate_ids(&doc).map_err(|_| FAILED)?;
    let root = doc.root_element();
    let mut elements = element_children(root);
    let assertion = elements.next().filter(|n| is(*n, NS_ASSERTION, "Assertion")).ok_or(FAILED)?;
    if elements.next().is_some()
        || root.children().any(|n| n.is_text() && !trim_xml_space(n.text().unwrap_or_default()).is_empty())
        || doc.descendants().filter(|n| is(*n, NS_ASSERTION, "Assertion")).count() != 1
    {
        return Err(FAILED);
    }
    read_assertion(&doc, assertion, response_signed, expect, now)
}

fn read_assertion(
    doc: &Document<'_>,
    assertion: Node<'_, '_>,
    response_signed: bool,
    expect: &Expectations<'_>,
    now: UnixTime,
) -> Result<VerifiedAssertion, SamlError> {
    let assertion_signed = verify_enveloped(doc, assertion, expect.idp_keys, expect.allow_sha1, expect.deadline)
        .map_err(|err| signature_in("Assertion", err))?;
    if !response_signed && !assertion_signed {
        return Err(SamlError::Unsigned);
    }
    if assertion.attribute("Version") != Some("2.0") {
        return Err(SamlError::Malformed("only SAML 2.0 assertions are accepted"));
    }
    let assertion_id =
        assertion.attribute("ID").filter(|id| !id.is_empty()).ok_or(SamlError::Malformed("the assertion has no ID"))?;
    let issued = assertion
        .attribute("IssueInstant")
        .and_then(parse_instant)
        .ok_or(SamlError::Malformed("IssueInstant missing or invalid"))?;
    if issued > now + expect.clock_skew_secs {
        return Err(SamlError::NotYetValid(bound("IssueInstant", issued, now, expect)));
    }
    check_issuer(required_child(assertion, NS_ASSERTION, "Issuer", "the assertion has no Issuer")?, expect)?;

    let subject = required_child(assertion, NS_ASSERTION, "Subject", "the assertion has no Subject")?;
    if single_child(subject, NS_ASSERTION, "EncryptedID")?.is_some() || single_child(subject, NS_ASSERTION, "BaseID")?.is_some() {
        return Err(SamlError::Malformed("only a plain NameID subject is accepted"));
    }
    let name_id = required_child(subject, NS_ASSERTION, "NameID", "the subject has no NameID")?;
    let name_id_value = trim_xml_space(&text_content(name_id)).to_owned();
    if name_id_value.is_empty() {
        return Err(SamlError::Malformed("the NameID is empty"));
    }
    let confirmation_until = check_confirmations(subject, expect, now)?;
    let conditions_until = check_conditions(assertion, expect, now)?;

    let mut authn_instant = None;
    let mut authn_statements = children(assertion, NS_ASSERTION, "AuthnStatement");
    let statement = authn_statements.next().ok_or(SamlError::Malformed("the assertion has no AuthnStatement"))?;
    if let Some(instant) = statement.attribute("AuthnInstant") {
        authn_instant = Some(parse_instant(instant).ok_or(SamlError::Malformed("AuthnInstant is not a valid time"))?);
    }
    if let Some(until) = instant_attribute(statement, "SessionNotOnOrAfter")?
        && until <= now - expect.clock_skew_secs
    {
        return Err(SamlError::Expired(bound("SessionNotOnOrAfter", until, now, expect)));
    }

    let mut attributes = Vec::new();
    for statement in children(assertion, NS_ASSERTION, "AttributeStatement") {
        for attribute in children(statement, NS_ASSERTION, "Attribute") {
            let name =
                attribute.attribute("Name").filter(|n| !n.is_empty()).ok_or(SamlError::Malformed("an Attribute has no Name"))?;
            let values = children(attribute, NS_ASSERTION, "AttributeValue")
                .map(|v| trim_xml_space(&text_content(v)).to_owned())
                .collect();
            attributes.push(Attribute {
                name: name.to_owned(),
                friendly_name: attribute.attribute("FriendlyName").map(str::to_owned),
                values,
            });
        }
    }

    Ok(VerifiedAssertion {
        assertion_id: assertion_id.to_owned(),
        name_id: name_id_value,
        name_id_format: name_id.attribute("Format").map(str::to_owned),
        attributes,
        authn_instant,
        replay_until: confirmation_until.max(conditions_until) + expect.clock_skew_secs,
    })
}

/// An optional time attribute; present but not an `xs:dateTime` in UTC is malformed.
fn instant_attribute(node: Node<'_, '_>, name: &str) -> Result<Option<UnixTime>, SamlError> {
    node.attribute(name)
        .map(|value| parse_instant(value).ok_or(SamlError::Malformed("a time is not a valid UTC xs:dateTime")))
        .transpose()
}

fn check_issuer(issuer: Node<'_, '_>, expect: &Expectations<'_>) -> Result<(), SamlError> {
    let got = trim_xml_space(&text_content(issuer)).to_owned();
    if issuer.attribute("Format").is_some_and(|f| f != ENTITY_FORMAT) || got != expect.idp_entity_id {
        return Err(SamlError::Issuer { expected: expect.idp_entity_id.to_owned(), got });
    }
    Ok(())
}

/// Names which element's signature was refused, for the administrator.
fn signature_in(element: &'static str, err: SamlError) -> SamlError {
    match err {
        SamlError::Signature(reason) => SamlError::SignatureIn { element, reason },
        other => other,
    }
}

fn bound(name: &'static str, at: UnixTime, now: UnixTime, expect: &Expectations<'_>) -> super::TimeBound {
    super::TimeBound { bound: name, at, now, skew_secs: expect.clock_skew_secs }
}

fn check_status(response: Node<'_, '_>) -> Result<(), SamlError> {
    let status = required_child(response, NS_PROTOCOL, "Status", "the response has no Status")?;
    let code = required_child(status, NS_PROTOCOL, "StatusCode", "the response has no StatusCode")?;
    let value = code.attribute("Value").unwrap_or_default();
    if value == STATUS_SUCCESS {
        return Ok(());
    }
    let detail = single_child(code, NS_PROTOCOL, "StatusCode")?.and_then(|inner| inner.attribute("Value"));
    Err(SamlError::Status { code: short_status(value), detail: detail.map(short_status) })
}

/// The last segment of a status URN, which is all that is shown or logged.
fn short_status(urn: &str) -> String {
    urn.rsplit(':').next().unwrap_or_default().chars().filter(char::is_ascii_alphanumeric).take(40).collect()
}

/// At least one bearer confirmation for this ACS, unexpired, answering the stored request.
/// Returns its `NotOnOrAfter`.
fn check_confirmations(subject: Node<'_, '_>, expect: &Expectations<'_>, now: UnixTime) -> Result<UnixTime, SamlError> {
    let mut first_error = SamlError::Confirmation;
    for confirmation in children(subject, NS_ASSERTION, "SubjectConfirmation") {
        if confirmation.attribute("Method") != Some(BEARER) {
            continue;
        }
        let outcome = (|| {
            let data =
                required_child(confirmation, NS_ASSERTION, "SubjectConfirmationData", "a bearer confirmation has no data")?;
            if data.attribute("Recipient") != Some(expect.acs_url) {
                return Err(SamlError::Recipient {
                    expected: expect.acs_url.to_owned(),
                    got: data.attribute("Recipient").map(str::to_owned),
                });
            }
            let until = data
                .attribute("NotOnOrAfter")
                .and_then(parse_instant)
                .ok_or(SamlError::Malformed("a bearer confirmation has no valid NotOnOrAfter"))?;
            if now >= until + expect.clock_skew_secs {
                return Err(SamlError::Expired(bound("SubjectConfirmationData NotOnOrAfter", until, now, expect)));
            }
            if let Some(not_before) = instant_attribute(data, "NotBefore")?
                && not_before > now + expect.clock_skew_secs
            {
                return Err(SamlError::NotYetValid(bound("SubjectConfirmationData NotBefore", not_before, now, expect)));
            }
            if data.attribute("InResponseTo") != expect.in_response_to {
                return Err(SamlError::InResponseTo { got: data.attribute("InResponseTo").map(str::to_owned) });
            }
            Ok(until)
        })();
        match outcome {
            Ok(until) => return Ok(until),
            Err(err) if matches!(first_error, SamlError::Confirmation) => first_error = err,
            Err(_) => {}
        }
    }
    Err(first_error)
}

/// Time window and audience. Returns the conditions' `NotOnOrAfter`.
fn check_conditions(assertion: Node<'_, '_>, expect: &Expectations<'_>, now: UnixTime) -> Result<UnixTime, SamlError> {
    let conditions = required_child(assertion, NS_ASSERTION, "Conditions", "the assertion has no Conditions")?;
    if let Some(not_before) = instant_attribute(conditions, "NotBefore")?
        && not_before > now + expect.clock_skew_secs
    {
        return Err(SamlError::NotYetValid(bound("NotBefore", not_before, now, expect)));
    }
    let until = conditions
        .attribute("NotOnOrAfter")
        .and_then(parse_instant)
        .ok_or(SamlError::Malformed("Conditions without a valid NotOnOrAfter"))?;
    if now >= until + expect.clock_skew_secs {
        return Err(SamlError::Expired(bound("NotOnOrAfter", until, now, expect)));
    }
    let wrong_audience = |restriction: Option<Node<'_, '_>>| SamlError::Audience {
        expected: expect.sp_entity_id.to_owned(),
        got: restriction
            .map(|r| children(r, NS_ASSERTION, "Audience").map(|a| trim_xml_space(&text_content(a)).to_owned()).collect())
            .unwrap_or_default(),
    };
    let mut restricted = false;
    for condition in element_children(conditions) {
        if is(condition, NS_ASSERTION, "AudienceRestriction") {
            restricted = true;
            if !children(condition, NS_ASSERTION, "Audience").any(|a| trim_xml_space(&text_content(a)) == expect.sp_entity_id) {
                return Err(wrong_audience(Some(condition)));
            }
        } else if !(is(condition, NS_ASSERTION, "OneTimeUse") || is(condition, NS_ASSERTION, "ProxyRestriction")) {
            return Err(SamlError::Malformed("the assertion carries a condition this SP does not understand"));
        }
    }
    if !restricted {
        return Err(wrong_audience(None));
    }
    Ok(until)
}
