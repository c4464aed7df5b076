//! Exclusive canonicalization on arbitrary documents that pass the strict parser: whatever the
//! input, the canonical form stays within its budget (a small multiple of the input) and the
//! work within its deadline, so a slow or memory-hungry input is a finding.
//! Run: `cargo fuzz run saml_c14n corpus/saml_c14n -- -max_len=307200 -timeout=5 -rss_limit_mb=512`.
#![no_main]

use std::time::Duration;

use gatehouse::upstream::saml::c14n::{Budget, Options, canonicalize_into};
use gatehouse::upstream::saml::xml::{MESSAGE_LIMITS, parse};
use gatehouse::work::Deadline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = parse(text, &MESSAGE_LIMITS) else { return };
    let budget = Budget::for_document(&doc, Deadline::after(Duration::from_secs(2)));
    // The prefixes a PrefixList could name: those the document declares, and the default.
    let mut prefixes: Vec<String> = doc.root_element().namespaces().filter_map(|ns| ns.name()).map(str::to_owned).collect();
    prefixes.truncate(32);
    prefixes.push(String::from("#default"));
    for (with_comments, inclusive) in [(false, &[][..]), (true, &prefixes[..])] {
        let mut written = 0usize;
        let options = Options { with_comments, inclusive_prefixes: inclusive };
        let _ = canonicalize_into(&doc, doc.root_element(), None, &options, &budget, &mut |bytes| written += bytes.len());
        assert!(written <= budget.max_output_bytes, "the canonical form outgrew its budget");
    }
});
