//! The IdP metadata parser on arbitrary bytes (metadata comes from a URL, often over the
//! network): the strict parser with the metadata limits, then the metadata checks.
//! Run: `cargo fuzz run saml_metadata corpus/saml_metadata -- -max_len=1048576 -timeout=5 -rss_limit_mb=512`.
#![no_main]

use gatehouse::upstream::saml::metadata::parse_idp_metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_idp_metadata(text, 1_767_225_660);
    }
});
