//! The SAML connector against hostile input and against a second real IdP: responses built to
//! cost the verifier quadratic time or gigabytes of canonical form are refused in moments while
//! the rest of the service keeps answering; AuthnRequests are signed as the SP metadata says,
//! which SimpleSAMLphp (unlike pysaml2) enforces; the SP keys rotate without a restart; and an
//! assertion encrypted for several recipients is opened with the key meant for this SP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::clock::ManualClock;
use gatehouse::upstream::saml::SpKeys;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TEST_KEK, TestApp, TestDb, field_value, load_config, location};
use crate::hostile_saml::{canonical_amplification, costliest_within_limits, huge_prefix_list, quadratic_namespaces};
use crate::provider::{DEMO_REDIRECT, params_of};
use crate::upstream_oidc::gatehouse_toml;
use crate::upstream_oidc::{authorize_path, follow_until, last_failure, real_now, redeem, verified_id_token};
use crate::upstream_saml::{
    IdpPost, SamlIdp, fixture, fixture_app, idp_config, idp_python, post, saml_connector, start_gatehouse_at,
};

// ---------------------------------------------------------------------------------------------
// Hostile responses.

/// Where a sign-in started in a fresh browser expects the IdP's answer: its `RelayState`.
async fn pending_relay_state(app: &TestApp) -> String {
    let browser = TestApp::handle(app);
    let started = browser.get("/saml/corp-saml/login").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let to_idp = reqwest::Url::parse(&location(&started)).unwrap();
    to_idp.query_pairs().find(|(k, _)| k == "RelayState").unwrap().1.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_responses_are_refused_in_moments_while_health_checks_keep_answering() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    // The costliest document the limits allow is refused at its digest, or at the deadline when
    // the machine is slow (unoptimised test builds, a busy CI host): a refusal either way.
    let kinds: [(&str, String, &[&str]); 4] = [
        ("quadratic namespaces", quadratic_namespaces(), &["malformed_response"]),
        ("canonical-form amplification", canonical_amplification(), &["too_costly"]),
        ("huge PrefixList", huge_prefix_list(), &["signature_invalid"]),
        ("costliest within the limits", costliest_within_limits(), &["signature_invalid", "too_costly"]),
    ];
    let probe = reqwest::Client::new();
    for (kind, xml, reasons) in kinds {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
        // Two at a time, each answering a real pending request, so nothing stops them early.
        let mut posts = Vec::new();
        for _ in 0..2 {
            let relay = pending_relay_state(&app).await;
            let request =
                app.http.post(app.url("/saml/corp-saml/acs")).form(&[("SAMLResponse", encoded.as_str()), ("RelayState", &relay)]);
            posts.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = request.send().await.unwrap();
                (response.status(), started.elapsed())
            }));
        }
        let mut slowest_health = Duration::ZERO;
        while posts.iter().any(|p| !p.is_finished()) {
            let started = Instant::now();
            let health = probe.get(app.url("/healthz")).send().await.unwrap();
            assert_eq!(health.status(), StatusCode::OK);
            slowest_health = slowest_health.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for post in posts {
            let (status, took) = post.await.unwrap();
            assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN, "{kind}: {status}");
            assert!(took < Duration::from_secs(5), "{kind}: refused after {took:?}");
            eprintln!("{kind} ({} KB): refused with {status} in {took:?}", xml.len() / 1024);
        }
        assert!(slowest_health < Duration::from_millis(100), "{kind}: /healthz took {slowest_health:?}");
        let refusal = last_failure(&app).await;
        assert!(reasons.contains(&refusal.as_str()), "{kind}: {refusal}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_verification_slot_taken_the_acs_answers_503_and_spends_nothing() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let hostile = base64::engine::general_purpose::STANDARD.encode(costliest_within_limits());
    let relay = crate::upstream_saml::expect_fixture_request(&app).await;
    let genuine = crate::upstream_saml::fixture_response("signed-assertion");
    // More hostile posts at once than there are slots, each held for its full verification;
    // one of them at least finds every slot taken for longer than the ACS waits.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut flood = Vec::new();
    for _ in 0..(cores * 8) {
        let relay = pending_relay_state(&app).await;
        let request =
            app.http.post(app.url("/saml/corp-saml/acs")).form(&[("SAMLResponse", hostile.as_str()), ("RelayState", &relay)]);
        flood.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut busy = None;
    for answer in flood {
        let answer = answer.await.unwrap();
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            busy = Some(answer);
        }
    }
    let busy = busy.expect("with every slot taken, the ACS answers 503");
    assert_eq!(busy.headers()["retry-after"], "1");
    // The genuine response that was waiting meanwhile still signs in: nothing was spent for it.
    let verified = crate::upstream_saml::post_acs(&app, &[("SAMLResponse", &genuine), ("RelayState", &relay)]).await;
    assert_eq!(verified.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Signed AuthnRequests, and the metadata that says so.

/// The query signature of an HTTP-Redirect URL, checked against `certificate_der`.
fn redirect_signature_verifies(url: &str, certificate_der: &[u8]) -> bool {
    let query = url.split_once('?').unwrap().1;
    let (signed, signature) = query.rsplit_once("&Signature=").unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(url::form_urlencoded::parse(format!("s={signature}").as_bytes()).next().unwrap().1.as_bytes())
        .unwrap();
    let certificate = openssl::x509::X509::from_der(certificate_der).unwrap();
    let key = certificate.public_key().unwrap();
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    verifier.verify_oneshot(&signature, signed.as_bytes()).unwrap()
}

/// `metadata` without the `KeyDescriptor` that carries `certificate_der`.
fn without_key(metadata: &str, certificate_der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(certificate_der);
    let at = metadata.find(&encoded).unwrap();
    let open = metadata[..at].rfind("<md:KeyDescriptor").unwrap();
    let close = at + metadata[at..].find("</md:KeyDescriptor>").unwrap() + "</md:KeyDescriptor>".len();
    format!("{}{}", &metadata[..open], &metadata[close..])
}

/// The certificates of one `use` in SP metadata, in document order.
fn certificates(metadata: &str, key_use: &str) -> Vec<Vec<u8>> {
    metadata
        .split("<md:KeyDescriptor")
        .skip(1)
        .filter(|descriptor| descriptor.contains(&format!("use=\"{key_use}\"")))
        .map(|descriptor| {
            let text = descriptor.split("X509Certificate>").nth(1).unwrap();
            base64::engine::general_purpose::STANDARD.decode(&text[..text.find('<').unwrap()]).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_authn_request_is_signed_unless_turned_off_and_the_metadata_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let relaxed = dir.path().join("idp-metadata.xml");
    let fixture_metadata = std::fs::read_to_string(fixture("keys/idp-metadata.xml")).unwrap();
    std::fs::write(&relaxed, fixture_metadata.replace(" WantAuthnRequestsSigned=\"true\"", "")).unwrap();
    let cases = [
        ("the default", &relaxed, "", true, true),
        ("turned off", &relaxed, "sign_requests = false", false, false),
        ("turned off, but the IdP asks for it", &fixture("keys/idp-metadata.xml"), "sign_requests = false", false, true),
    ];
    for (case, idp_metadata, setting, declared, signed) in cases {
        let (_db, app) = fixture_app(&format!("idp_metadata_file = \"{}\"", idp_metadata.display()), setting).await;
        let sp_metadata = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();
        assert!(sp_metadata.contains(&format!("AuthnRequestsSigned=\"{declared}\"")), "{case}: {sp_metadata}");
        let signing = certificates(&sp_metadata, "signing");
        let encryption = certificates(&sp_metadata, "encryption");
        assert_eq!((signing.len(), encryption.len()), (1, 1), "{case}");
        assert_ne!(signing, encryption, "one key signs, another decrypts");

        let url = location(&app.get("/saml/corp-saml/login").await);
        assert_eq!(url.contains("&SigAlg=") && url.contains("&Signature="), signed, "{case}: {url}");
        if signed {
            assert!(url.contains("SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256"), "{url}");
            assert!(redirect_signature_verifies(&url, &signing[0]), "{case}: signed with the published signing key");
            assert!(!redirect_signature_verifies(&url, &encryption[0]), "{case}: not with the encryption key");
        }
        app.stop().await;
    }
}

fn simplesamlphp() -> bool {
    if PathBuf::from("/usr/share/simplesamlphp/www").exists() && PathBuf::from("/usr/bin/php").exists() {
        return true;
    }
    assert!(std::env::var_os("TEST_SAML_IDP").is_none(), "TEST_SAML_IDP is set but SimpleSAMLphp is not installed (see .ci/run)");
    eprintln!("SimpleSAMLphp is not installed: skipping the SimpleSAMLphp test (see README)");
    false
}

/// From the app's authorization request through SimpleSAMLphp's login form to its auto-post
/// page (not yet posted); `None` when SimpleSAMLphp refused the request, with its page.
async fn through_simplesamlphp(app: &TestApp) -> Result<IdpPost, String> {
    let (url, page) = follow_until(app, app.url(&authorize_path(Some("alice@corp.example"))), DEMO_REDIRECT).await;
    let status = page.status();
    let page = page.text().await.unwrap();
    if status != StatusCode::OK || !page.contains("name=\"AuthState\"") {
        return Err(page);
    }
    let auth_state = field_value(&page, "AuthState").unwrap().replace("&amp;", "&");
    let form_url = url.split('?').next().unwrap().to_owned();
    let form = [("username", "alice"), ("password", "alice-pass"), ("AuthState", auth_state.as_str())];
    let answered = app.http.post(form_url).form(&form).send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    let page = answered.text().await.unwrap();
    // SimpleSAMLphp writes `<form method="post"` and `action="..."` on separate lines.
    let form = &page[..page.find("name=\"SAMLResponse\"").unwrap_or_else(|| panic!("no auto-post form: {page}"))];
    let action = form.rsplit("action=\"").next().unwrap();
    let acs = action[..action.find('"').unwrap()].replace("&amp;", "&");
    let mut fields = vec![("SAMLResponse".to_owned(), field_value(&page, "SAMLResponse").unwrap())];
    if let Some(relay) = field_value(&page, "RelayState") {
        fields.push(("RelayState".to_owned(), relay.replace("&amp;", "&")));
    }
    Ok(IdpPost { acs, fields })
}

/// Gatehouse with one SAML connector at SimpleSAMLphp. The IdP reads the SP metadata when it
/// starts, so Gatehouse serves it first; the IdP's metadata is known only after, and the
/// connector reads its file on first use.
async fn simplesamlphp_setup(connector_extra: &str, idp_extra: Value) -> (TestDb, TestApp, SamlIdp) {
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp_metadata = format!("http://{}/saml/corp-saml/metadata", listener.local_addr().unwrap());
    let idp_metadata = format!("{}/idp-metadata.xml", db.dir.path().display());
    std::fs::write(&idp_metadata, "").unwrap();
    let connector = saml_connector(&format!("idp_metadata_file = \"{idp_metadata}\""), connector_extra);
    let app = start_gatehouse_at(&db, listener, &connector, real_now()).await;
    let idp = SamlIdp::launch("python3".as_ref(), "tests/upstream/simplesamlphp-idp.py", &idp_config(&sp_metadata, idp_extra));
    std::fs::write(&idp_metadata, reqwest::get(&idp.metadata_url).await.unwrap().text().await.unwrap()).unwrap();
    (db, app, idp)
}

#[tokio::test(flavor = "multi_thread")]
async fn simplesamlphp_enforces_the_signed_requests_the_sp_metadata_declares() {
    if !simplesamlphp() {
        return;
    }
    for (variant, connector_extra, idp_extra) in [
        ("signed, as the metadata says", "", json!({})),
        ("signed and encrypted (AES-128-CBC in a signed Response)", "", json!({"encrypt_assertion": true})),
        ("unsigned, as the metadata says", "sign_requests = false", json!({})),
    ] {
        let (_db, app, idp) = simplesamlphp_setup(connector_extra, idp_extra).await;
        let answer = through_simplesamlphp(&app).await.unwrap_or_else(|page| panic!("{variant}: SimpleSAMLphp refused: {page}"));
        assert_eq!(answer.acs, app.url("/saml/corp-saml/acs"), "{variant}");
        let consumed = post(&app, &answer).await;
        assert_eq!(consumed.status(), StatusCode::SEE_OTHER, "{variant}: {}", consumed.text().await.unwrap());
        let (done, _) = follow_until(&app, app.url(&location(&consumed)), DEMO_REDIRECT).await;
        let tokens = redeem(&app, &params_of(&done)["code"]).await;
        let claims = verified_id_token(&app, tokens["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["email"], "alice@corp.example", "{variant}");
        assert_eq!(claims["groups"], json!(["eng", "ops"]), "{variant}");
        drop(idp);
        app.stop().await;
    }

    // The control: where SimpleSAMLphp checks request signatures (here forced on its side) an
    // unsigned request is refused, so the signed sign-ins above got through on their signatures,
    // and a connector that declared signed requests without sending them would fail here.
    let (_db, app, idp) = simplesamlphp_setup("sign_requests = false", json!({"want_authn_requests_signed": true})).await;
    let refused = through_simplesamlphp(&app).await.err().expect("an unsigned request is refused");
    assert!(refused.contains("no signature found on message"), "{refused}");
    drop(idp);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SP key rotation.

#[tokio::test(flavor = "multi_thread")]
async fn the_sp_keys_rotate_without_a_restart_and_the_old_key_decrypts_until_removed() {
    let Some(python) = idp_python() else { return };
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp_metadata_url = format!("http://{}/saml/corp-saml/metadata", listener.local_addr().unwrap());
    let clock = Arc::new(ManualClock::new(real_now()));
    let idp_first = SamlIdp::start(&python, &idp_config(&sp_metadata_url, json!({})));
    let connector = saml_connector(&format!("idp_metadata_url = \"{}\"", idp_first.metadata_url), "");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = crate::helpers::load_config(db.dir.path(), &crate::upstream_oidc::gatehouse_toml(&base, &db, &connector));
    let app = TestApp::start_on(listener, config.clone(), clock.clone()).await;
    let before = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();

    // What a CLI (or another node) does, through its own handle on the same database.
    let kek = gatehouse::tokens::KeyEncryptionKey::new(
        base64::engine::general_purpose::STANDARD.decode(TEST_KEK).unwrap().try_into().unwrap(),
    );
    let keys = SpKeys::new(app.state.store.clone(), kek, clock.clone(), 10);
    let published = keys.publish_next().await.unwrap();
    assert_eq!(published.len(), 2);
    clock.advance(11);
    let staged = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    let (old_signing, old_encryption) = (certificates(&before, "signing"), certificates(&before, "encryption"));
    let staged_encryption = certificates(&staged, "encryption");
    assert_eq!(staged_encryption.len(), 2, "the next encryption key is published");
    assert_eq!(staged_encryption[1], old_encryption[0], "the new one first, the current one after");
    assert_eq!(certificates(&staged, "signing")[0], old_signing[0], "requests are still signed with the current key");
    assert_eq!(certificates(&staged, "signing").len(), 2, "the next signing key is published before it is used");

    keys.rotate().await.unwrap();
    clock.advance(11);
    let rotated = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    let new_signing = certificates(&rotated, "signing");
    assert_ne!(new_signing[0], old_signing[0]);
    let url = location(&app.get("/saml/corp-saml/login").await);
    assert!(redirect_signature_verifies(&url, &new_signing[0]), "the node signs with the new key without a restart");
    drop(idp_first);

    // An IdP that read the metadata while the new keys were only published, and took the older
    // encryption key, still encrypts to it after the rotation.
    let kept_old_encryption = without_key(&staged, &staged_encryption[0]);
    let stale = SamlIdp::start(
        &python,
        &json!({
            "sp_metadata_xml": kept_old_encryption,
            "users": {"alice": {"password": "alice-pass", "attributes": {"mail": ["alice@corp.example"], "groups": ["eng"]}}},
            "encrypt_assertion": true, "enc_alg": "aes256-gcm", "sign_response": false,
        }),
    );
    // The connector now points at that IdP.
    let connector = saml_connector(&format!("idp_metadata_url = \"{}\"", stale.metadata_url), "");
    let config = crate::helpers::load_config(db.dir.path(), &crate::upstream_oidc::gatehouse_toml(&base, &db, &connector));
    app.stop().await;
    // Same address, so the SP's entity id and ACS stay what the IdP knows.
    let listener = tokio::net::TcpListener::bind(base.trim_start_matches("http://")).await.unwrap();
    let app = TestApp::start_on(listener, config, clock.clone()).await;
    let answer = crate::upstream_saml::through_the_idp(&app, &stale, "login").await;
    let consumed = post(&app, &answer).await;
    assert_eq!(consumed.status(), StatusCode::SEE_OTHER, "the retired key still decrypts: {}", consumed.text().await.unwrap());

    // Once removed, what was encrypted to it no longer opens.
    let retired: Vec<_> = keys.list().await.unwrap().into_iter().filter(|k| k.state.as_str() == "retired").collect();
    assert_eq!(retired.len(), 2);
    for key in &retired {
        keys.remove(&key.kid).await.unwrap();
    }
    clock.advance(11);
    let again = TestApp::handle(&app);
    let answer = crate::upstream_saml::through_the_idp(&again, &stale, "login").await;
    assert_eq!(post(&again, &answer).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "decryption_failed");
    assert!(keys.remove(&keys.list().await.unwrap()[0].kid).await.is_err(), "an active key cannot be removed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_confirmation_step_refuses_malformed_forged_and_oversized_posts() {
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let app = start_gatehouse_at(&db, listener, &saml_connector(&metadata, "allow_idp_initiated = true"), real_now()).await;
    let csrf = field_value(&app.get("/login").await.text().await.unwrap(), "csrf").unwrap();
    let finish = |fields: Vec<(&'static str, String)>| app.http.post(app.url("/saml/corp-saml/finish")).form(&fields).send();
    let unknown = finish(vec![("csrf", csrf.clone()), ("t", "a".repeat(43))]).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.text().await.unwrap().contains("expired or was already completed"));
    assert_eq!(finish(vec![("csrf", csrf.clone()), ("t", "a".repeat(500))]).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(finish(vec![("csrf", csrf.clone())]).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(finish(vec![("csrf", "forged".into()), ("t", "a".repeat(43))]).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        finish(vec![("csrf", csrf.clone()), ("t", "a".repeat(70 * 1024))]).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let json = app.http.post(app.url("/saml/corp-saml/finish")).json(&json!({"t": "x"})).send().await.unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

/// The `validUntil` of SP metadata, as seconds since the epoch.
fn valid_until(metadata: &str) -> i64 {
    let text = metadata.split("validUntil=\"").nth(1).unwrap();
    let text = &text[..text.find('"').unwrap()];
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connector_page_shows_what_to_give_the_idp_and_the_metadata_validity_is_configurable() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let now = gatehouse::clock::Clock::now(app.clock.as_ref());
    let sp_metadata = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    assert_eq!(valid_until(&sp_metadata), now + 7 * 86_400, "7 days by default");
    let page = app.get("/saml/corp-saml").await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    for value in [
        "<code id=\"entity-id\">https://gatehouse.test/saml/corp-saml</code>",
        "<code id=\"acs-url\">https://gatehouse.test/saml/corp-saml/acs</code>",
        "<code id=\"metadata-url\">https://gatehouse.test/saml/corp-saml/metadata</code>",
        "after 7 days",
    ] {
        assert!(page.contains(value), "{value}: {page}");
    }
    // The fingerprints are those of the certificates the metadata publishes.
    for key_use in ["signing", "encryption"] {
        let der = &certificates(&sp_metadata, key_use)[0];
        let fingerprint = gatehouse::upstream::saml::metadata::thumbprint(der);
        // As a person reads (and copies) it: the line-break hints are not text.
        assert!(page.replace("<wbr>", "").contains(&fingerprint), "{key_use} {fingerprint}: {page}");
    }
    assert_eq!(app.get("/saml/no-such-connector").await.status(), StatusCode::NOT_FOUND);
    app.stop().await;

    // An IdP that only takes uploads gets a copy valid for longer.
    let db = TestDb::sqlite();
    let toml = format!(
        "{}\n[saml]\nsp_metadata_validity_secs = 2592000\n",
        gatehouse_toml("http://127.0.0.1:8080", &db, &saml_connector(&metadata, ""))
    );
    let app = TestApp::start_config(load_config(db.dir.path(), &toml), Arc::new(ManualClock::new(1_767_225_660))).await;
    let now = gatehouse::clock::Clock::now(app.clock.as_ref());
    let sp_metadata = app.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    assert_eq!(valid_until(&sp_metadata), now + 30 * 86_400);
    assert!(app.get("/saml/corp-saml").await.text().await.unwrap().contains("after 30 days"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_before_the_idp_is_set_up_does_not_hold_up_the_first_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let idp_metadata = dir.path().join("idp-metadata.xml");
    // The file the IdP's metadata will be saved in, still empty.
    std::fs::write(&idp_metadata, "").unwrap();
    let (_db, app) = fixture_app(&format!("idp_metadata_file = \"{}\"", idp_metadata.display()), "").await;
    let now = gatehouse::clock::Clock::now(app.clock.as_ref());
    let found = app.state.upstreams.check_all(now).await;
    assert_eq!(found[0].finding.code(), "unusable", "{:?}", found[0].finding);
    assert!(app.get("/readyz?verbose").await.text().await.unwrap().contains("[-]connector corp-saml unusable"));
    // The IdP's metadata arrives a moment later: the first sign-in uses it at once.
    std::fs::copy(fixture("keys/idp-metadata.xml"), &idp_metadata).unwrap();
    let started = app.get("/saml/corp-saml/login").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER, "{}", started.text().await.unwrap());
    let found = app.state.upstreams.check_all(now).await;
    assert_eq!(found[0].finding.code(), "ok");
    assert!(app.get("/readyz?verbose").await.text().await.unwrap().contains("[+]connector corp-saml ok"));
    app.stop().await;
}
