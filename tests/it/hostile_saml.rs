//! SAML responses built to exhaust the verifier, for the tests and the hostile-input benchmark
//! (`benches/saml_hostile.rs` includes this file). Each is a well-formed document of at most
//! 170 KB, so it fits the ACS's 256 KiB form body once base64- and form-encoded.

const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// An enveloped signature over the element `#id` whose digest and value are wrong: the verifier
/// must canonicalize the whole element before it can find that out.
fn signature(id: &str, prefix_list: &str) -> String {
    let inclusive = if prefix_list.is_empty() {
        String::new()
    } else {
        format!(r#"<ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="{prefix_list}"/>"#)
    };
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#">{inclusive}</ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>"##
    )
}

fn response(root_attributes: &str, signature: &str, body: &str) -> String {
    format!(
        r#"<samlp:Response xmlns:samlp="{SAMLP}"{root_attributes} ID="_h" Version="2.0" IssueInstant="2026-01-01T00:00:00Z">{signature}{body}</samlp:Response>"#
    )
}

/// Thousands of prefixes declared at the root and thousands of children declaring a default
/// namespace: the parser copies every in-scope declaration into each such child.
pub fn quadratic_namespaces() -> String {
    let declarations: String = (0..3500).map(|i| format!(" xmlns:p{i}=\"urn:p\"")).collect();
    response(&declarations, "", &"<a xmlns=\"urn:d\"/>".repeat(5500))
}

/// A 100 KB default namespace the signed root does not use, and 9,000 children that do: each
/// child's canonical form repeats the declaration (about 900 MB in all).
pub fn canonical_amplification() -> String {
    let long = format!(" xmlns=\"urn:{}\"", "L".repeat(100_000));
    response(&long, &signature("_h", ""), &"<x/>".repeat(9_000))
}

/// An `InclusiveNamespaces PrefixList` of 18,000 names (the 128 declared prefixes, repeated)
/// over 4,000 elements with those 128 namespaces in scope: every element looks every listed
/// name up among those in scope.
pub fn huge_prefix_list() -> String {
    let listed: Vec<String> = (0..18_000).map(|i| format!("l{}p{}", (i / 32) % 4, i % 32)).collect();
    namespaces_in_scope(&listed, 4_000)
}

/// The costliest shape the limits let through: 128 namespaces in scope, 32 listed prefixes,
/// and 9,000 elements to canonicalize.
pub fn costliest_within_limits() -> String {
    let listed: Vec<String> = (0..32).map(|i| format!("l1p{i}")).collect();
    namespaces_in_scope(&listed, 8_990)
}

/// A signed-looking response whose body declares 32 namespaces on each of four nested levels
/// (the root and three elements) around `leaves` empty elements, signed with `listed` as the
/// `PrefixList`. With `samlp`, `ds` and `ec`, the declarations total exactly the limit of 128.
fn namespaces_in_scope(listed: &[String], leaves: usize) -> String {
    let declare = |level: usize| -> String { (0..32).map(|i| format!(" xmlns:l{level}p{i}=\"urn:{level}:{i}\"")).collect() };
    let body = format!("<n1{}><n2{}><n3{}>{}</n3></n2></n1>", declare(1), declare(2), declare(3), "<x/>".repeat(leaves));
    let root: String = (0..29).map(|i| format!(" xmlns:l0p{i}=\"urn:0:{i}\"")).collect();
    response(&root, &signature("_h", &listed.join(" ")), &body)
}
