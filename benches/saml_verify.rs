//! Verified SAML responses per second on one core: the fixture `ten-attributes` response (one
//! assertion signed with RSA-2048/SHA-256, ten attributes) through `verify_response` and the
//! attribute mapping, repeated for a fixed time. Run: `cargo bench --bench saml_verify`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::config::{MetadataSource, SamlClaimMapping, SamlConnectorSettings};
use gatehouse::upstream::saml::dsig::IdpKey;
use gatehouse::upstream::saml::identity_from_assertion;
use gatehouse::upstream::saml::response::{Expectations, verify_response};
use gatehouse::work::Deadline;

const NOW: i64 = 1_767_225_660;

fn main() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml");
    let xml = std::fs::read(fixtures.join("responses/ten-attributes.xml")).expect("fixture");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
    let pem = std::fs::read_to_string(fixtures.join("keys/idp-rsa.crt")).expect("certificate");
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
        .expect("PEM");
    let keys = vec![IdpKey::from_certificate_der(&der).expect("key")];
    let settings = SamlConnectorSettings {
        metadata: MetadataSource::File(fixtures.join("keys/idp-metadata.xml")),
        allow_idp_initiated: false,
        allow_sha1: false,
        sign_requests: true,
        claims: SamlClaimMapping {
            subject: "NameID".into(),
            username: None,
            email: "mail".into(),
            name: "displayName".into(),
            groups: "groups".into(),
        },
        trust_email: false,
        timeout_secs: 10,
        clock_skew_secs: 60,
    };
    let expect = Expectations {
        sp_entity_id: "https://gatehouse.test/saml/corp-saml",
        acs_url: "https://gatehouse.test/saml/corp-saml/acs",
        idp_entity_id: "https://idp.test/saml/metadata",
        idp_keys: &keys,
        in_response_to: Some("_a1b2c3d4e5f60718293a4b5c6d7e8f90"),
        allow_idp_initiated: false,
        allow_sha1: false,
        clock_skew_secs: 60,
        decryption_keys: &[],
        deadline: Deadline::none(),
    };
    let verify_once = || {
        let verified = verify_response(&encoded, &expect, NOW).expect("the fixture verifies");
        identity_from_assertion("corp-saml", &settings, &verified).expect("maps")
    };
    assert_eq!(verify_once().groups.len(), 2);
    for _ in 0..200 {
        verify_once();
    }
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            std::hint::black_box(verify_once());
            count += 1;
        }
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "saml_verify: {} bytes, median {:.0} verified responses/s (min {:.0}, max {:.0}) over 5 runs of 2 s, one thread",
        xml.len(),
        rates[2],
        rates[0],
        rates[4]
    );
}
