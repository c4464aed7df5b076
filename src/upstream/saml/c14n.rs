//! Exclusive XML Canonicalization 1.0 (<https://www.w3.org/TR/xml-exc-c14n/>) of one element's
//! subtree, optionally minus one descendant (the enveloped-signature transform). It is the only
//! canonicalization the verifier accepts, so it is the only one written.

use roxmltree::{Document, Node, NodeId};

use super::xml::{attribute_prefix, element_prefix, element_qname};

pub struct Options<'a> {
    pub with_comments: bool,
    /// The `InclusiveNamespaces PrefixList`: these prefixes are rendered as inclusive c14n
    /// would, whether used or not. `#default` stands for the default namespace.
    pub inclusive_prefixes: &'a [String],
}

/// The canonical form of `apex` without the subtree rooted at `excluded`.
pub fn canonicalize(doc: &Document<'_>, apex: Node<'_, '_>, excluded: Option<NodeId>, options: &Options<'_>) -> String {
    let mut out = String::with_capacity(doc.input_text().len());
    let mut rendered = Vec::new();
    write_element(&mut out, doc, apex, excluded, options, &mut rendered);
    out
}

/// `rendered` holds the namespace declarations the output ancestors put in effect, innermost
/// last: a declaration is written only when it changes what is in effect.
fn write_element<'input>(
    out: &mut String,
    doc: &Document<'input>,
    node: Node<'_, 'input>,
    excluded: Option<NodeId>,
    options: &Options<'_>,
    rendered: &mut Vec<(String, String)>,
) {
    let own_prefix = element_prefix(doc, node);
    let mut prefixes: Vec<&str> = vec![own_prefix];
    for attribute in node.attributes() {
        let prefix = attribute_prefix(doc, &attribute);
        if !prefix.is_empty() {
            prefixes.push(prefix);
        }
    }
    for listed in options.inclusive_prefixes {
        let prefix = if listed == "#default" { "" } else { listed.as_str() };
        if prefix.is_empty() || node.namespaces().any(|ns| ns.name() == Some(prefix)) {
            prefixes.push(prefix);
        }
    }
    prefixes.sort_unstable();
    prefixes.dedup();

    let scope_mark = rendered.len();
    out.push('<');
    out.push_str(element_qname(doc, node));
    for prefix in prefixes {
        if prefix == "xml" {
            continue;
        }
        let uri = node.namespaces().find(|ns| ns.name().unwrap_or_default() == prefix).map(|ns| ns.uri()).unwrap_or_default();
        let needed = match rendered.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, in_effect)) => in_effect != uri,
            None => !(prefix.is_empty() && uri.is_empty()),
        };
        if !needed {
            continue;
        }
        out.push_str(if prefix.is_empty() { " xmlns" } else { " xmlns:" });
        out.push_str(prefix);
        out.push_str("=\"");
        escape_attribute(out, uri);
        out.push('"');
        rendered.push((prefix.to_owned(), uri.to_owned()));
    }

    let mut attributes: Vec<_> = node.attributes().collect();
    attributes.sort_by(|a, b| (a.namespace().unwrap_or_default(), a.name()).cmp(&(b.namespace().unwrap_or_default(), b.name())));
    for attribute in attributes {
        out.push(' ');
        out.push_str(doc.input_text().get(attribute.range_qname()).unwrap_or_else(|| attribute.name()));
        out.push_str("=\"");
        escape_attribute(out, attribute.value());
        out.push('"');
    }
    out.push('>');

    for child in node.children() {
        if excluded == Some(child.id()) {
            continue;
        }
        if child.is_element() {
            write_element(out, doc, child, excluded, options, rendered);
        } else if child.is_text() {
            escape_text(out, child.text().unwrap_or_default());
        } else if child.is_comment() && options.with_comments {
            out.push_str("<!--");
            out.push_str(child.text().unwrap_or_default());
            out.push_str("-->");
        }
    }
    out.push_str("</");
    out.push_str(element_qname(doc, node));
    out.push('>');
    rendered.truncate(scope_mark);
}

fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

fn escape_attribute(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}
