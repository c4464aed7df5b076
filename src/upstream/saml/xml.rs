//! The one XML parser every SAML message and metadata document goes through: no DTD, no
//! processing instructions, a node and depth limit, and helpers that read the tree by
//! namespace-qualified name (never by prefix).

use roxmltree::{Document, Node, ParsingOptions};

use super::SamlError;

pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const NS_XMLENC: &str = "http://www.w3.org/2001/04/xmlenc#";
pub const NS_XMLENC11: &str = "http://www.w3.org/2009/xmlenc11#";
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// Deeper than any SAML message or metadata document needs; bounds every recursive walk.
pub const MAX_DEPTH: usize = 48;

/// What an untrusted document may contain. The parser copies every in-scope namespace into
/// each element that declares one and checks attributes for duplicates pairwise, so many
/// declarations (or attributes) make its cost grow with their square; a linear pre-scan
/// refuses such documents before the tree is built.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_nodes: u32,
    pub max_attributes: usize,
    pub max_attributes_per_element: usize,
    pub max_namespaces_per_element: usize,
    pub max_namespaces: usize,
}

/// A SAML message within the 256 KiB body limit has a few hundred nodes; the vendors' samples
/// declare at most 23 namespaces (Okta, which repeats them on many elements).
pub const MESSAGE_LIMITS: Limits = Limits {
    max_nodes: 10_000,
    max_attributes: 20_000,
    max_attributes_per_element: 64,
    max_namespaces_per_element: 32,
    max_namespaces: 128,
};

/// Metadata aggregates carry a few thousand nodes and declarations; they come from a source
/// the administrator configured, not from anyone on the internet.
pub const METADATA_LIMITS: Limits = Limits {
    max_nodes: 50_000,
    max_attributes: 200_000,
    max_attributes_per_element: 64,
    max_namespaces_per_element: 32,
    max_namespaces: 4096,
};

/// Parses untrusted XML strictly. A document type declaration (and with it every entity
/// declaration) is refused by the parser; processing instructions and excessive nesting here.
pub fn parse<'input>(text: &'input str, limits: &Limits) -> Result<Document<'input>, SamlError> {
    prescan(text, limits)?;
    let options = ParsingOptions { allow_dtd: false, nodes_limit: limits.max_nodes, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(text, options).map_err(|err| match err {
        roxmltree::Error::DtdDetected => SamlError::Malformed("document type declarations are not accepted"),
        roxmltree::Error::NodesLimitReached => SamlError::Malformed("the document has too many nodes"),
        _ => SamlError::Malformed("the document is not well-formed XML"),
    })?;
    let mut stack = vec![(doc.root(), 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(SamlError::Malformed("the document is nested too deeply"));
        }
        if node.is_pi() {
            return Err(SamlError::Malformed("processing instructions are not accepted"));
        }
        // Canonicalization writes names from the input; they must be the names the reader sees.
        if node.is_element() {
            let qname = element_qname(&doc, node);
            if qname.rsplit(':').next() != Some(node.tag_name().name()) || qname.matches(':').count() > 1 {
                return Err(SamlError::Malformed("an element name is not what it appears to be"));
            }
        }
        stack.extend(node.children().map(|child| (child, depth + 1)));
    }
    Ok(doc)
}

/// One pass over the tokens, counting elements, attributes and namespace declarations.
fn prescan(text: &str, limits: &Limits) -> Result<(), SamlError> {
    use xmlparser::Token;
    let mut elements: u32 = 0;
    let mut attributes = 0usize;
    let mut namespaces = 0usize;
    let mut element_attributes = 0usize;
    let mut element_namespaces = 0usize;
    for token in xmlparser::Tokenizer::from(text) {
        match token.map_err(|_| SamlError::Malformed("the document is not well-formed XML"))? {
            Token::ElementStart { .. } => {
                elements += 1;
                if elements > limits.max_nodes {
                    return Err(SamlError::Malformed("the document has too many nodes"));
                }
                element_attributes = 0;
                element_namespaces = 0;
            }
            Token::Attribute { prefix, local, .. } => {
                element_attributes += 1;
                attributes += 1;
                if element_attributes > limits.max_attributes_per_element || attributes > limits.max_attributes {
                    return Err(SamlError::Malformed("an element has too many attributes"));
                }
                if prefix.as_str() == "xmlns" || (prefix.is_empty() && local.as_str() == "xmlns") {
                    element_namespaces += 1;
                    namespaces += 1;
                    if element_namespaces > limits.max_namespaces_per_element || namespaces > limits.max_namespaces {
                        return Err(SamlError::Malformed("the document declares too many namespaces"));
                    }
                }
            }
            Token::DtdStart { .. } | Token::EmptyDtd { .. } | Token::EntityDeclaration { .. } | Token::DtdEnd { .. } => {
                return Err(SamlError::Malformed("document type declarations are not accepted"));
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn is(node: Node<'_, '_>, namespace: &str, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local && node.tag_name().namespace() == Some(namespace)
}

pub fn element_children<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(Node::is_element)
}

/// The children with this name.
pub fn children<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    namespace: &'a str,
    local: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children().filter(move |child| is(*child, namespace, local))
}

/// The one child with this name: absent is `Ok(None)`, two are refused.
pub fn single_child<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    namespace: &'a str,
    local: &'a str,
) -> Result<Option<Node<'a, 'input>>, SamlError> {
    let mut found = children(node, namespace, local);
    let first = found.next();
    if found.next().is_some() {
        return Err(SamlError::Malformed("an element that may appear once appears twice"));
    }
    Ok(first)
}

pub fn required_child<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    namespace: &'a str,
    local: &'a str,
    missing: &'static str,
) -> Result<Node<'a, 'input>, SamlError> {
    single_child(node, namespace, local)?.ok_or(SamlError::Malformed(missing))
}

/// All character data inside the element, comments skipped: a comment splitting a value (the
/// classic NameID truncation trick) cannot make the reader see less than was signed.
pub fn text_content(node: Node<'_, '_>) -> String {
    node.descendants().filter(Node::is_text).filter_map(|text| text.text()).collect()
}

/// The element's qualified name as written, which the tree does not keep but canonicalization
/// needs.
pub fn element_qname<'input>(doc: &Document<'input>, node: Node<'_, 'input>) -> &'input str {
    doc.input_text()
        .get(node.range().start.saturating_add(1)..)
        .and_then(|rest| rest.split([' ', '\t', '\r', '\n', '/', '>']).next())
        .unwrap_or_default()
}

pub fn element_prefix<'input>(doc: &Document<'input>, node: Node<'_, 'input>) -> &'input str {
    element_qname(doc, node).split_once(':').map(|(prefix, _)| prefix).unwrap_or_default()
}

pub fn attribute_prefix<'input>(doc: &Document<'input>, attribute: &roxmltree::Attribute<'_, 'input>) -> &'input str {
    doc.input_text()
        .get(attribute.range_qname())
        .and_then(|qname| qname.split_once(':'))
        .map(|(prefix, _)| prefix)
        .unwrap_or_default()
}

/// XML's whitespace (not Unicode's: U+00A0 and friends are content).
pub fn trim_xml_space(text: &str) -> &str {
    text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Every `ID` attribute in the document; a duplicate makes "the element with this ID"
/// ambiguous, which is what signature wrapping exploits.
pub fn refuse_duplicate_ids(doc: &Document<'_>) -> Result<(), SamlError> {
    let mut seen = std::collections::HashSet::new();
    for node in doc.descendants().filter(Node::is_element) {
        for attribute in node.attributes() {
            if attribute.namespace().is_none()
                && matches!(attribute.name(), "ID" | "Id" | "id")
                && !seen.insert(attribute.value())
            {
                return Err(SamlError::Malformed("two elements carry the same ID"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        parse(text, &MESSAGE_LIMITS).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn the_prescan_refuses_what_would_cost_the_parser_quadratic_time() {
        let attributes = |n: usize| (0..n).map(|i| format!(" a{i}=\"v\"")).collect::<String>();
        let declarations =
            |n: usize, offset: usize| (0..n).map(|i| format!(" xmlns:p{}=\"urn:p\"", i + offset)).collect::<String>();
        assert!(parse(&format!("<r{}/>", attributes(64)), &MESSAGE_LIMITS).is_ok());
        assert!(refused(&format!("<r{}/>", attributes(65))).contains("too many attributes"));
        let many_elements: String = (0..401).map(|_| format!("<e{}/>", attributes(50))).collect();
        assert!(refused(&format!("<r>{many_elements}</r>")).contains("too many attributes"), "over 20,000 in the document");
        assert!(parse(&format!("<r{}/>", declarations(32, 0)), &MESSAGE_LIMITS).is_ok());
        assert!(refused(&format!("<r{}/>", declarations(33, 0))).contains("too many namespaces"));
        let nested: String = (0..5).map(|level| format!("<e{}>", declarations(26, level * 26))).collect();
        let closed: String = (0..5).map(|_| "</e>").collect();
        assert!(refused(&format!("<r>{nested}{closed}</r>")).contains("too many namespaces"), "130 in the document");
        assert!(refused(&format!("<r>{}</r>", "<e/>".repeat(10_000))).contains("too many nodes"));
        assert!(refused("<!DOCTYPE r><r/>").contains("document type declarations"));
        assert!(refused("<r><unclosed></r>").contains("not well-formed"));
    }
}
