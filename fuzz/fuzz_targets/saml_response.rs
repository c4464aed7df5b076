//! The SAML response parser and verifier on arbitrary bytes: `verify_response` with the
//! fixture IdP's keys and SP key (so well-formed inputs reach signature checks and decryption).
//! Run: `cargo fuzz run saml_response fuzz/corpus/saml_response -- -max_total_time=600`.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use gatehouse::upstream::saml::decrypt::DecryptionKey;
use gatehouse::upstream::saml::dsig::IdpKey;
use gatehouse::upstream::saml::response::{Expectations, verify_response};
use gatehouse::work::Deadline;
use libfuzzer_sys::fuzz_target;

struct Keys {
    idp: Vec<IdpKey>,
    sp: DecryptionKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/saml/keys/");
        let certificate = |name: &str| {
            let pem = std::fs::read_to_string(format!("{dir}{name}")).expect("fixture certificate");
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            IdpKey::from_certificate_der(&base64::engine::general_purpose::STANDARD.decode(body).expect("base64")).expect("key")
        };
        let sp = std::fs::read_to_string(format!("{dir}sp-rsa.key")).expect("fixture SP key");
        Keys {
            idp: vec![certificate("idp-rsa.crt"), certificate("idp-ec256.crt")],
            sp: DecryptionKey::from_pkcs8_pem(&sp).expect("SP key"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let expect = Expectations {
        sp_entity_id: "https://gatehouse.test/saml/corp-saml",
        acs_url: "https://gatehouse.test/saml/corp-saml/acs",
        idp_entity_id: "https://idp.test/saml/metadata",
        idp_keys: &keys.idp,
        in_response_to: Some("_a1b2c3d4e5f60718293a4b5c6d7e8f90"),
        allow_idp_initiated: true,
        allow_sha1: false,
        clock_skew_secs: 60,
        decryption_keys: std::slice::from_ref(&keys.sp),
        deadline: Deadline::after(std::time::Duration::from_secs(2)),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = verify_response(&encoded, &expect, 1_767_225_660);
});
