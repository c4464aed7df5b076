//! Exclusive XML Canonicalization 1.0 (<https://www.w3.org/TR/xml-exc-c14n/>) of one element's
//! subtree, optionally minus one descendant (the enveloped-signature transform). It is the only
//! canonicalization the verifier accepts, so it is the only one written.

use roxmltree::{Document, Node, NodeId};

use super::SamlError;
use super::xml::{attribute_prefix, element_prefix, element_qname};
use crate::work::Deadline;

pub struct Options<'a> {
    pub with_comments: bool,
    /// The `InclusiveNamespaces PrefixList`: these prefixes are rendered as inclusive c14n
    /// would, whether used or not. `#default` stands for the default namespace.
    pub inclusive_prefixes: &'a [String],
}

/// How much a canonicalization may produce and until when. Exclusive c14n re-declares an
/// inherited namespace on every element that uses it, so a small document can have a huge
/// canonical form; the output is capped at a small multiple of the input instead.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_output_bytes: usize,
    pub deadline: Deadline,
}

impl Budget {
    /// Four times the document plus 64 KiB: real messages stay well under twice their size.
    pub fn for_document(doc: &Document<'_>, deadline: Deadline) -> Self {
        Self { max_output_bytes: doc.input_text().len().saturating_mul(4).saturating_add(64 * 1024), deadline }
    }
}

/// The deadline is looked at once per this many elements.
const DEADLINE_CHECK_EVERY: usize = 64;

/// Streams the canonical form of `apex` without the subtree rooted at `excluded` into `sink`,
/// so it is never held whole in memory; refused once it outgrows the budget.
pub fn canonicalize_into(
    doc: &Document<'_>,
    apex: Node<'_, '_>,
    excluded: Option<NodeId>,
    options: &Options<'_>,
    budget: &Budget,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), SamlError> {
    let mut out = Writer {
        sink,
        pending: Vec::with_capacity(FLUSH_BYTES),
        remaining: budget.max_output_bytes,
        deadline: budget.deadline,
        elements: 0,
    };
    let mut rendered = Vec::new();
    write_element(&mut out, doc, apex, excluded, options, &mut rendered)?;
    out.flush();
    Ok(())
}

/// The canonical form collected in memory, for the small `SignedInfo`.
pub fn canonicalize(
    doc: &Document<'_>,
    apex: Node<'_, '_>,
    excluded: Option<NodeId>,
    options: &Options<'_>,
    budget: &Budget,
) -> Result<Vec<u8>, SamlError> {
    let mut collected = Vec::new();
    canonicalize_into(doc, apex, excluded, options, budget, &mut |bytes| collected.extend_from_slice(bytes))?;
    Ok(collected)
}

/// The canonical form is handed to the sink in pieces of about this size, not a call per token.
const FLUSH_BYTES: usize = 16 * 1024;

struct Writer<'s> {
    sink: &'s mut dyn FnMut(&[u8]),
    pending: Vec<u8>,
    remaining: usize,
    deadline: Deadline,
    elements: usize,
}

impl Writer<'_> {
    fn push(&mut self, text: &str) -> Result<(), SamlError> {
        self.remaining = self.remaining.checked_sub(text.len()).ok_or(SamlError::TooCostly("its canonical form is too large"))?;
        self.pending.extend_from_slice(text.as_bytes());
        if self.pending.len() >= FLUSH_BYTES {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        (self.sink)(&self.pending);
        self.pending.clear();
    }

    fn enter_element(&mut self) -> Result<(), SamlError> {
        self.elements += 1;
        if self.elements.is_multiple_of(DEADLINE_CHECK_EVERY) && self.deadline.passed() {
            return Err(SamlError::TooCostly("it took too long to canonicalize"));
        }
        Ok(())
    }

    /// Writes `text` with the characters `escape` names replaced by their escapes.
    fn push_escaped(&mut self, text: &str, escape: fn(char) -> Option<&'static str>) -> Result<(), SamlError> {
        let mut plain_from = 0;
        for (at, c) in text.char_indices() {
            if let Some(escaped) = escape(c) {
                self.push(text.get(plain_from..at).unwrap_or_default())?;
                self.push(escaped)?;
                plain_from = at + c.len_utf8();
            }
        }
        self.push(text.get(plain_from..).unwrap_or_default())
    }
}

/// `rendered` holds the namespace declarations the output ancestors put in effect, innermost
/// last: a declaration is written only when it changes what is in effect.
fn write_element<'input>(
    out: &mut Writer<'_>,
    doc: &Document<'input>,
    node: Node<'_, 'input>,
    excluded: Option<NodeId>,
    options: &Options<'_>,
    rendered: &mut Vec<(String, String)>,
) -> Result<(), SamlError> {
    out.enter_element()?;
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
    out.push("<")?;
    out.push(element_qname(doc, node))?;
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
        out.push(if prefix.is_empty() { " xmlns" } else { " xmlns:" })?;
        out.push(prefix)?;
        out.push("=\"")?;
        out.push_escaped(uri, escape_attribute)?;
        out.push("\"")?;
        rendered.push((prefix.to_owned(), uri.to_owned()));
    }

    let mut attributes: Vec<_> = node.attributes().collect();
    attributes.sort_by(|a, b| (a.namespace().unwrap_or_default(), a.name()).cmp(&(b.namespace().unwrap_or_default(), b.name())));
    for attribute in attributes {
        out.push(" ")?;
        out.push(doc.input_text().get(attribute.range_qname()).unwrap_or_else(|| attribute.name()))?;
        out.push("=\"")?;
        out.push_escaped(attribute.value(), escape_attribute)?;
        out.push("\"")?;
    }
    out.push(">")?;

    for child in node.children() {
        if excluded == Some(child.id()) {
            continue;
        }
        if child.is_element() {
            write_element(out, doc, child, excluded, options, rendered)?;
        } else if child.is_text() {
            out.push_escaped(child.text().unwrap_or_default(), escape_text)?;
        } else if child.is_comment() && options.with_comments {
            out.push("<!--")?;
            out.push(child.text().unwrap_or_default())?;
            out.push("-->")?;
        }
    }
    out.push("</")?;
    out.push(element_qname(doc, node))?;
    out.push(">")?;
    rendered.truncate(scope_mark);
    Ok(())
}

fn escape_text(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\r' => Some("&#xD;"),
        _ => None,
    }
}

fn escape_attribute(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '"' => Some("&quot;"),
        '\t' => Some("&#x9;"),
        '\n' => Some("&#xA;"),
        '\r' => Some("&#xD;"),
        _ => None,
    }
}
