//! Signing in through an upstream SAML 2.0 identity provider.
//!
//! The end-to-end flows run against `pysaml2` (a SAML implementation nobody here wrote, signing
//! with `xmlsec1`) as an IdP on loopback: `tests/upstream/saml-idp.py`, run by the Python in
//! `target/saml-venv` (made by `.ci/run` from tests/upstream/requirements-saml.txt). Without it
//! these tests skip; `TEST_SAML_IDP=1` (set by `.ci/run`) makes its absence a failure. The
//! hostile-input cases need no IdP: they post to the ACS of a connector configured from the
//! fixture metadata.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;

use base64::Engine as _;
use gatehouse::clock::{Clock, ManualClock};
use gatehouse::store::SingleUseKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, field_value, load_config, location, spawn_ready};
use crate::provider::{DEMO_REDIRECT, params_of};
use crate::upstream_oidc::{authorize_path, follow_until, gatehouse_toml, last_failure, real_now, redeem, verified_id_token};

pub(crate) fn idp_python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/saml-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(std::env::var_os("TEST_SAML_IDP").is_none(), "TEST_SAML_IDP is set but target/saml-venv is missing (see .ci/run)");
    eprintln!("pysaml2 is not installed in target/saml-venv: skipping the SAML IdP test (see README)");
    None
}

/// The real IdP, killed when dropped.
pub(crate) struct SamlIdp {
    pub(crate) base: String,
    pub(crate) metadata_url: String,
    child: Child,
}

impl SamlIdp {
    pub(crate) fn start(python: &std::path::Path, config: &Value) -> Self {
        Self::launch(python.as_os_str(), "tests/upstream/saml-idp.py", config)
    }

    /// Any IdP harness that takes a JSON configuration and prints its metadata URL when ready.
    pub(crate) fn launch(interpreter: &std::ffi::OsStr, script: &str, config: &Value) -> Self {
        let (child, ready) = spawn_ready("the SAML IdP", || {
            let mut command = Command::new(interpreter);
            command.arg(script).arg(config.to_string());
            command
        });
        let metadata_url = ready["metadata_url"].as_str().unwrap().to_owned();
        let base = metadata_url.trim_end_matches("/metadata").to_owned();
        Self { base, metadata_url, child }
    }
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn idp_config(sp_metadata_url: &str, extra: Value) -> Value {
    let mut config = json!({
        "sp_metadata_url": sp_metadata_url,
        "users": {"alice": {"password": "alice-pass", "attributes": {
            "mail": ["alice@corp.example"], "displayName": ["Alice Corp"], "groups": ["eng", "ops"], "uid": ["alice"]
        }}},
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

pub(crate) fn saml_connector(metadata: &str, extra: &str) -> String {
    format!(
        r#"
[[connectors]]
id = "corp-saml"
type = "saml"
name = "Corp SSO"
{metadata}
email_domains = ["corp.example"]
{extra}
[connectors.claims]
email = "mail"
name = "displayName"
groups = "groups"
"#
    )
}

pub(crate) async fn start_gatehouse_at(db: &TestDb, listener: tokio::net::TcpListener, connectors: &str, now: i64) -> TestApp {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = load_config(db.dir.path(), &gatehouse_toml(&base, db, connectors));
    TestApp::start_on(listener, config, Arc::new(ManualClock::new(now))).await
}

/// Gatehouse with one SAML connector at a pysaml2 IdP configured with `idp_extra`.
pub(crate) async fn setup(python: &std::path::Path, idp_extra: Value, connector_extra: &str) -> (TestDb, TestApp, SamlIdp) {
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp_metadata = format!("http://{}/saml/corp-saml/metadata", listener.local_addr().unwrap());
    let idp = SamlIdp::start(python, &idp_config(&sp_metadata, idp_extra));
    let connector = saml_connector(&format!("idp_metadata_url = \"{}\"", idp.metadata_url), connector_extra);
    let app = start_gatehouse_at(&db, listener, &connector, real_now()).await;
    (db, app, idp)
}

/// The IdP's auto-post form: where it posts and what.
pub(crate) struct IdpPost {
    pub(crate) acs: String,
    pub(crate) fields: Vec<(String, String)>,
}

pub(crate) fn auto_post(page: &str) -> IdpPost {
    let action = page.split("<form method=\"post\" action=\"").nth(1).unwrap();
    let acs = action[..action.find('"').unwrap()].replace("&amp;", "&");
    let mut fields = vec![("SAMLResponse".to_owned(), field_value(page, "SAMLResponse").unwrap())];
    if let Some(relay) = field_value(page, "RelayState") {
        fields.push(("RelayState".to_owned(), relay));
    }
    IdpPost { acs, fields }
}

/// From the app's authorization request to the IdP's answer, not yet posted.
pub(crate) async fn through_the_idp(app: &TestApp, idp: &SamlIdp, action: &str) -> IdpPost {
    let (url, page) = follow_until(app, app.url(&authorize_path(Some("alice@corp.example"))), DEMO_REDIRECT).await;
    assert!(url.starts_with(&format!("{}/sso/redirect", idp.base)), "{url}");
    let page = page.text().await.unwrap();
    let key = field_value(&page, "key").unwrap_or_else(|| panic!("no login form: {page}"));
    let form = [("key", key.as_str()), ("username", "alice"), ("password", "alice-pass"), ("action", action)];
    let answered = app.http.post(format!("{}/sso/login", idp.base)).form(&form).send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    auto_post(&answered.text().await.unwrap())
}

pub(crate) async fn post(app: &TestApp, post: &IdpPost) -> reqwest::Response {
    app.http.post(&post.acs).form(&post.fields).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_signs_in_through_a_real_saml_idp() {
    let Some(python) = idp_python() else { return };
    let variants = [
        ("response and assertion signed", json!({})),
        ("assertion signed", json!({"sign_response": false})),
        ("response signed", json!({"sign_assertion": false})),
        ("encrypted assertion, AES-256-CBC", json!({"encrypt_assertion": true, "enc_alg": "aes256-cbc"})),
        ("encrypted assertion, AES-128-GCM", json!({"encrypt_assertion": true, "enc_alg": "aes128-gcm", "sign_response": false})),
        (
            "signed AuthnRequests required",
            json!({"want_authn_requests_signed": true, "sign_alg": "rsa-sha512", "digest_alg": "sha512"}),
        ),
    ];
    for (variant, idp_extra) in variants {
        let (_db, app, idp) = setup(&python, idp_extra, "").await;
        let answer = through_the_idp(&app, &idp, "login").await;
        assert_eq!(answer.acs, app.url("/saml/corp-saml/acs"), "{variant}");
        let consumed = post(&app, &answer).await;
        assert_eq!(consumed.status(), StatusCode::SEE_OTHER, "{variant}: {}", consumed.text().await.unwrap());
        let (done, _) = follow_until(&app, app.url(&location(&consumed)), DEMO_REDIRECT).await;
        let params = params_of(&done);
        assert_eq!(params["state"], "app-state", "{variant}");

        let tokens = redeem(&app, &params["code"]).await;
        let claims = verified_id_token(&app, tokens["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["email"], "alice@corp.example", "{variant}");
        assert_eq!(claims["name"], "Alice Corp", "{variant}");
        assert_eq!(claims["groups"], json!(["eng", "ops"]), "{variant}");
        assert_eq!(claims["idp"], "corp-saml", "{variant}");
        assert!(claims.get("amr").is_none(), "{variant}: an upstream sign-in states no amr");

        // Linked by the persistent NameID, which the IdP derives from the user and the SP.
        let links = app.state.store.list_identity_links("corp-saml").await.unwrap();
        assert_eq!(links.len(), 1, "{variant}");
        assert_eq!(links[0].0.len(), 64, "{variant}: persistent NameID {:?}", links[0].0);

        // The hand-off from the ACS to the finishing step works once.
        let handoff = location(&consumed);
        assert_eq!(app.get(&handoff).await.status(), StatusCode::BAD_REQUEST, "{variant}");
        // The same response again is refused: its request is spent and its assertion seen. It
        // is named a replay, not an unsolicited response.
        let replayed = post(&app, &answer).await;
        assert_eq!(replayed.status(), StatusCode::FORBIDDEN, "{variant}");
        assert_eq!(last_failure(&app).await, "replay", "{variant}");
        assert!(!replayed.text().await.unwrap().to_lowercase().contains("unsolicited"), "{variant}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sp_metadata_describes_the_connector() {
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let app = start_gatehouse_at(&db, listener, &saml_connector(&metadata, ""), real_now()).await;
    let response = app.get("/saml/corp-saml/metadata").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/samlmetadata+xml");
    let xml = response.text().await.unwrap();
    assert!(xml.contains(&format!("entityID=\"{}/saml/corp-saml\"", app.base)), "{xml}");
    assert!(xml.contains(&format!("Location=\"{}/saml/corp-saml/acs\"", app.base)), "{xml}");
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"), "{xml}");
    assert!(xml.contains("use=\"signing\"") && xml.contains("use=\"encryption\""), "{xml}");
    assert!(xml.contains("X509Certificate>MII"), "{xml}");
    assert!(xml.contains("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"), "{xml}");
    assert_eq!(app.get("/saml/nope/metadata").await.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_sign_in_at_the_idp_reaches_the_user_and_the_app() {
    let Some(python) = idp_python() else { return };
    let (_db, app, idp) = setup(&python, json!({}), "").await;
    let answer = through_the_idp(&app, &idp, "cancel").await;
    let refused = post(&app, &answer).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.unwrap();
    assert!(page.contains("did not let you sign in"), "{page}");
    let link = page.split("id=\"return\" class=\"button\" href=\"").nth(1).unwrap();
    let params = params_of(&link[..link.find('"').unwrap()].replace("&#38;", "&"));
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "app-state");
    assert_eq!(last_failure(&app).await, "status");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_for_another_request_is_refused() {
    let Some(python) = idp_python() else { return };
    let (_db, app, idp) = setup(&python, json!({}), "").await;
    let first = through_the_idp(&app, &idp, "login").await;
    let second = through_the_idp(&app, &idp, "login").await;
    // The first request's response, posted with the second request's RelayState.
    let swapped = IdpPost { acs: first.acs.clone(), fields: vec![first.fields[0].clone(), second.fields[1].clone()] };
    assert_eq!(post(&app, &swapped).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "in_response_to_unknown");
    // The second request was spent by the attempt; the first still completes.
    assert_eq!(post(&app, &second).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(post(&app, &first).await.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idp_initiated_sign_in_lands_on_the_portal_only_when_allowed() {
    let Some(python) = idp_python() else { return };
    let initiated =
        |idp: &SamlIdp| format!("{}/idp-initiated?user=alice&password=alice-pass&RelayState=https://evil.example/", idp.base);

    let (_db, app, idp) = setup(&python, json!({}), "").await;
    let page = app.http.get(initiated(&idp)).send().await.unwrap().text().await.unwrap();
    assert_eq!(post(&app, &auto_post(&page)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "unsolicited");
    app.stop().await;

    let (_db, app, idp) = setup(&python, json!({}), "allow_idp_initiated = true").await;
    let page = app.http.get(initiated(&idp)).send().await.unwrap().text().await.unwrap();
    let answer = auto_post(&page);
    let landed = post(&app, &answer).await;
    assert_eq!(landed.status(), StatusCode::SEE_OTHER);
    let handoff = location(&landed);
    // Nobody started this sign-in here: the person confirms who they become (no login CSRF by
    // a link to someone else's response).
    let confirm = app.get(&handoff).await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let page = confirm.text().await.unwrap();
    assert!(page.contains("Continue as alice@corp.example?"), "{page}");
    assert!(app.get("/").await.status().is_redirection(), "not signed in before confirming");
    let t = field_value(&page, "t").unwrap();
    let forged = app.post_form("/saml/corp-saml/finish", &[("t", &t), ("csrf", "forged")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a cross-site post cannot confirm");
    let confirmed = app.post_form("/saml/corp-saml/finish", &[("t", &t), ("csrf", &field_value(&page, "csrf").unwrap())]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&confirmed), "/", "the IdP's RelayState is not a place to go");
    let remembered = crate::helpers::set_cookie(&confirmed, "gatehouse_last_connector").expect("the connector is remembered");
    assert!(remembered.starts_with("gatehouse_last_connector=corp-saml;"), "{remembered}");
    let portal = app.get("/").await.text().await.unwrap();
    assert!(portal.contains("Alice Corp"), "{portal}");
    assert_eq!(app.get(&handoff).await.status(), StatusCode::BAD_REQUEST, "the hand-off is spent");
    // Without a request to spend, the assertion id cache is what refuses the replay.
    assert_eq!(post(&app, &answer).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "replay");
    app.stop().await;

    // An assertion the mapping rules refuse is remembered too: posted again, it is a replay,
    // whatever the rules say by then.
    let strict = r#"allow_idp_initiated = true
[connectors.mapping]
username = { transforms = [{ regex_extract = '^emp-(\d+)$' }] }"#;
    let (_db, app, idp) = setup(&python, json!({}), strict).await;
    let page = app.http.get(initiated(&idp)).send().await.unwrap().text().await.unwrap();
    let answer = auto_post(&page);
    assert_eq!(post(&app, &answer).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "mapping_failed");
    assert_eq!(post(&app, &answer).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "replay");
    app.stop().await;
}

pub(crate) fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml").join(path)
}

/// The fixtures' SP is `https://gatehouse.test/saml/corp-saml`; a Gatehouse with that issuer,
/// listening on loopback, at the fixtures' time, with the fixture IdP's metadata.
pub(crate) async fn fixture_app(metadata: &str, extra: &str) -> (TestDb, TestApp) {
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let toml = gatehouse_toml("https://gatehouse.test", &db, &saml_connector(metadata, extra));
    let config = load_config(db.dir.path(), &toml);
    let app = TestApp::start_on(listener, config, Arc::new(ManualClock::new(1_767_225_660))).await;
    let mut app = app;
    app.base = base;
    (db, app)
}

/// Starts a sign-in in the test's browser and makes the stored request the one the fixtures
/// answer (their `InResponseTo`); returns its `RelayState`.
pub(crate) async fn expect_fixture_request(app: &TestApp) -> String {
    expect_fixture_request_with(app, |_| {}).await
}

async fn expect_fixture_request_with(app: &TestApp, change: impl FnOnce(&mut Value)) -> String {
    let started = app.get("/saml/corp-saml/login").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let to_idp = reqwest::Url::parse(&location(&started)).unwrap();
    let relay = to_idp.query_pairs().find(|(k, _)| k == "RelayState").unwrap().1.into_owned();
    let key = gatehouse::tokens::digest(&relay);
    let now = app.clock.now();
    let stored = app.state.store.take_single_use(SingleUseKind::SamlRequestId, &key, now).await.unwrap().unwrap();
    let mut pending: Value = serde_json::from_str(&stored).unwrap();
    pending["request_id"] = json!("_a1b2c3d4e5f60718293a4b5c6d7e8f90");
    change(&mut pending);
    app.state.store.put_single_use(SingleUseKind::SamlRequestId, &key, &pending.to_string(), now + 900).await.unwrap();
    relay
}

/// The ACS verified the response and hands the sign-in to the finishing step. (The fixture app's
/// issuer is https, so its Secure session cookie never comes back over the test's plain http:
/// the finishing step itself is exercised with the pysaml2 IdP.)
fn verified_at_acs(consumed: reqwest::Response) {
    assert_eq!(consumed.status(), StatusCode::SEE_OTHER);
    assert!(location(&consumed).starts_with("/saml/corp-saml/finish?t="), "{}", location(&consumed));
}

pub(crate) fn fixture_response(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(fixture(&format!("responses/{name}.xml"))).unwrap())
}

pub(crate) async fn post_acs(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    app.http.post(app.url("/saml/corp-saml/acs")).form(fields).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_and_malformed_posts_get_a_clear_error_and_an_audit_event() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let relay_1 = expect_fixture_request(&app).await;

    let deep = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">{}{}</samlp:Response>",
        "<a>".repeat(5000),
        "</a>".repeat(5000)
    );
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        ("garbage", "not base64 at all!".to_owned(), StatusCode::BAD_REQUEST, "malformed_response"),
        (
            "truncated base64",
            fixture_response("signed-assertion")[..1001].to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_response",
        ),
        ("not XML", base64::engine::general_purpose::STANDARD.encode("hello"), StatusCode::BAD_REQUEST, "malformed_response"),
        ("deeply nested", base64::engine::general_purpose::STANDARD.encode(&deep), StatusCode::BAD_REQUEST, "malformed_response"),
        ("entity expansion", fixture_response("billion-laughs"), StatusCode::BAD_REQUEST, "malformed_response"),
    ];
    for (what, body, status, reason) in cases {
        let response = post_acs(&app, &[("SAMLResponse", &body), ("RelayState", "relay-unknown")]).await;
        assert_eq!(response.status(), status, "{what}");
        let page = response.text().await.unwrap();
        assert!(page.contains("could not verify"), "{what}: {page}");
        assert!(!page.contains("malformed message"), "{what}: internal detail on the page");
        assert_eq!(last_failure(&app).await, reason, "{what}");
    }

    // Oversized: refused before it is read.
    let huge = "A".repeat(300 * 1024);
    assert_eq!(post_acs(&app, &[("SAMLResponse", &huge)]).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Not a form, or no SAMLResponse.
    let json = app.http.post(app.url("/saml/corp-saml/acs")).json(&json!({"SAMLResponse": "x"})).send().await.unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(post_acs(&app, &[("RelayState", &relay_1)]).await.status().is_client_error());
    // A RelayState longer than the binding allows.
    let long = "r".repeat(81);
    assert_eq!(post_acs(&app, &[("SAMLResponse", "eA=="), ("RelayState", &long)]).await.status(), StatusCode::BAD_REQUEST);
    // An unknown connector.
    let other = app.http.post(app.url("/saml/nope/acs")).form(&[("SAMLResponse", "eA==")]).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // None of that spent the real request: the genuine response still signs in.
    let genuine = fixture_response("signed-assertion");
    verified_at_acs(post_acs(&app, &[("SAMLResponse", &genuine), ("RelayState", &relay_1)]).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_for_another_connector_is_refused_at_this_one() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let relay_1 = expect_fixture_request(&app).await;
    let other = fixture_response("other-connector");
    let refused = post_acs(&app, &[("SAMLResponse", &other), ("RelayState", &relay_1)]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "destination_mismatch");
    app.stop().await;
}

/// IdP metadata naming `certs` (PEM files in the fixture keys), as the IdP would publish it.
fn idp_metadata_xml(certs: &[&str], cache_duration: &str) -> String {
    let descriptors: String = certs
        .iter()
        .map(|c| {
            let pem = std::fs::read_to_string(fixture(&format!("keys/{c}"))).unwrap();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
            )
        })
        .collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.test/saml/metadata" cacheDuration="{cache_duration}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{descriptors}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/saml/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

/// Serves whatever metadata (and status) the test sets.
#[derive(Clone)]
struct MetadataServer {
    url: String,
    served: Arc<std::sync::Mutex<(u16, String)>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl MetadataServer {
    async fn start(body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metadata", listener.local_addr().unwrap());
        let server = Self { url, served: Arc::new(std::sync::Mutex::new((200, body))), hits: Arc::default() };
        let state = server.clone();
        let router = axum::Router::new().route(
            "/metadata",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = state.served.lock().unwrap().clone();
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        server
    }

    fn serve(&self, status: u16, body: String) {
        *self.served.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_is_refreshed_and_a_certificate_rollover_needs_no_restart() {
    let server = MetadataServer::start(idp_metadata_xml(&["idp-rsa.crt"], "PT5M")).await;
    let (_db, app) = fixture_app(&format!("idp_metadata_url = \"{}\"", server.url), "").await;
    // 23:58:35, early in the fixtures' validity window, so the clock can move past the
    // five-minute cache and the assertion is still valid.
    app.clock.set(1_767_225_660 - 145);
    let rolled = fixture_response("rollover");

    // Signed with the IdP's next key, which its metadata does not list yet.
    let relay_1 = expect_fixture_request(&app).await;
    assert_eq!(post_acs(&app, &[("SAMLResponse", &rolled), ("RelayState", &relay_1)]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "signature_invalid");
    assert_eq!(server.hits(), 1);

    // The IdP publishes both keys; within the cache duration nothing is fetched.
    server.serve(200, idp_metadata_xml(&["idp-rsa.crt", "idp-rsa-next.crt"], "PT5M"));
    app.clock.advance(200);
    let relay_2 = expect_fixture_request(&app).await;
    assert_eq!(post_acs(&app, &[("SAMLResponse", &rolled), ("RelayState", &relay_2)]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.hits(), 1);

    // Past it, the new metadata is fetched and the new key verifies.
    app.clock.advance(101);
    let relay_3 = expect_fixture_request(&app).await;
    verified_at_acs(post_acs(&app, &[("SAMLResponse", &rolled), ("RelayState", &relay_3)]).await);
    assert_eq!(server.hits(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_metadata_fetch_keeps_the_last_good_copy_and_is_counted() {
    let server = MetadataServer::start(idp_metadata_xml(&["idp-rsa.crt"], "PT5M")).await;
    let (_db, app) = fixture_app(&format!("idp_metadata_url = \"{}\"", server.url), "").await;
    app.clock.set(1_767_225_660 - 145);
    let started = app.get("/saml/corp-saml/login").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    assert!(location(&started).starts_with("https://idp.test/saml/sso?SAMLRequest="), "{}", location(&started));

    // The IdP's metadata endpoint breaks; sign-ins go on with the copy already held.
    server.serve(500, String::new());
    app.clock.advance(301);
    let relay_1 = expect_fixture_request(&app).await;
    let genuine = fixture_response("signed-assertion");
    verified_at_acs(post_acs(&app, &[("SAMLResponse", &genuine), ("RelayState", &relay_1)]).await);
    assert_eq!(server.hits(), 2);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("gatehouse_saml_metadata_refresh_failures_total{connector=\"corp-saml\"} 1"), "{metrics}");
    // A retry waits a minute rather than hitting the IdP on every request.
    assert_eq!(app.get("/saml/corp-saml/login").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(server.hits(), 2);
    app.stop().await;

    // Without any good copy, the sign-in cannot start: a clear 502, not a redirect.
    let broken = MetadataServer::start(String::from("<not-metadata/>")).await;
    let (_db, app) = fixture_app(&format!("idp_metadata_url = \"{}\"", broken.url), "").await;
    let refused = app.get("/saml/corp-saml/login").await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(last_failure(&app).await, "metadata_unavailable");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_page_offers_the_connector() {
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let login = app.get(&authorize_path(None)).await;
    // The page asks for an email address first, and offers every connector one link away.
    let first = app.get(&location(&login)).await.text().await.unwrap();
    assert!(first.contains("action=\"/login/identify\"") && !first.contains("/saml/corp-saml/login"), "{first}");
    let page = app.get(&format!("{}&choose=1", location(&login))).await.text().await.unwrap();
    assert!(page.contains("Corp SSO"), "{page}");
    let start = page.split("href=\"/saml/corp-saml/login?req=").nth(1).unwrap_or_else(|| panic!("no SAML button: {page}"));
    let req = &start[..start.find('"').unwrap()];
    let started = app.get(&format!("/saml/corp-saml/login?req={req}")).await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    // The fixture IdP wants signed requests: SAMLRequest, RelayState, SigAlg, Signature.
    let to_idp = reqwest::Url::parse(&location(&started)).unwrap();
    let names: Vec<String> = to_idp.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["SAMLRequest", "RelayState", "SigAlg", "Signature"]);
    let relay = to_idp.query_pairs().find(|(k, _)| k == "RelayState").unwrap().1.into_owned();
    assert!(relay.len() <= 80 && !relay.contains(&app.base), "RelayState is an opaque reference: {relay}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_sign_in_needs_a_fresh_authn_instant() {
    let Some(python) = idp_python() else { return };
    let (_db, app, idp) = setup(&python, json!({}), "").await;
    // prompt=login reaches the IdP as ForceAuthn; the IdP's new AuthnInstant satisfies it.
    let path = format!("{}&prompt=login", authorize_path(Some("alice@corp.example")));
    let (url, page) = follow_until(&app, app.url(&path), DEMO_REDIRECT).await;
    assert!(url.starts_with(&idp.base), "{url}");
    let request = app.http.get(format!("{}/last-request", idp.base)).send().await.unwrap().text().await.unwrap();
    assert!(request.contains("ForceAuthn=\"true\""), "{request}");
    let key = field_value(&page.text().await.unwrap(), "key").unwrap();
    let form = [("key", key.as_str()), ("username", "alice"), ("password", "alice-pass"), ("action", "login")];
    let answered = app.http.post(format!("{}/sso/login", idp.base)).form(&form).send().await.unwrap();
    let consumed = post(&app, &auto_post(&answered.text().await.unwrap())).await;
    assert_eq!(consumed.status(), StatusCode::SEE_OTHER);
    app.stop().await;

    // An AuthnInstant older than the request (beyond the skew) is refused.
    let metadata = format!("idp_metadata_file = \"{}\"", fixture("keys/idp-metadata.xml").display());
    let (_db, app) = fixture_app(&metadata, "").await;
    let relay_1 = expect_fixture_request_with(&app, |pending| pending["fresh_since"] = json!(1_767_225_660 + 1)).await;
    let genuine = fixture_response("signed-assertion");
    assert_eq!(post_acs(&app, &[("SAMLResponse", &genuine), ("RelayState", &relay_1)]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "not_fresh");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_started_on_one_node_finishes_on_another_on_postgres() {
    let Some(python) = idp_python() else { return };
    let Some(db) = TestDb::postgres().await else { return };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = SamlIdp::start(&python, &idp_config(&format!("{base}/saml/corp-saml/metadata"), json!({})));
    let toml = gatehouse_toml(&base, &db, &saml_connector(&format!("idp_metadata_url = \"{}\"", idp.metadata_url), ""));
    let clock = Arc::new(ManualClock::new(real_now()));
    let node_a = TestApp::start_on(listener, load_config(db.dir.path(), &toml), clock.clone()).await;
    let node_b = TestApp::start_config(load_config(db.dir.path(), &toml), clock).await;

    // Both nodes use the one SP key stored in the database.
    let metadata_a = node_a.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    let metadata_b = node_b.get("/saml/corp-saml/metadata").await.text().await.unwrap();
    let certificate = |xml: &str| xml.split("X509Certificate>").nth(1).unwrap().to_owned();
    assert_eq!(certificate(&metadata_a), certificate(&metadata_b));

    // The request is stored by node A; the IdP's answer is posted to node B.
    let answer = through_the_idp(&node_a, &idp, "login").await;
    let on_b = IdpPost { acs: answer.acs.replace(&node_a.base, &node_b.base), fields: answer.fields.clone() };
    let consumed = post(&node_a, &on_b).await;
    assert_eq!(consumed.status(), StatusCode::SEE_OTHER);
    // The same browser (cookies are per host, not per port) finishes on node B.
    let finished = node_a.http.get(node_b.url(&location(&consumed))).send().await.unwrap();
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    // Spent for both nodes.
    assert_eq!(post(&node_a, &answer).await.status(), StatusCode::FORBIDDEN);
    node_b.stop().await;
    node_a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_carried_to_another_browser_does_not_sign_it_in() {
    let Some(python) = idp_python() else { return };
    let (_db, app, idp) = setup(&python, json!({}), "").await;
    // The attacker's own sign-in, up to the IdP's answer...
    let answer = through_the_idp(&app, &idp, "login").await;
    // ...posted from the victim's browser (another cookie jar): login CSRF.
    let victim = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let consumed = victim.post(&answer.acs).form(&answer.fields).send().await.unwrap();
    assert_eq!(consumed.status(), StatusCode::SEE_OTHER);
    let finished = victim.get(app.url(&location(&consumed))).send().await.unwrap();
    assert_eq!(finished.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "other_browser");
    let portal = victim.get(app.url("/")).send().await.unwrap();
    assert_ne!(portal.status(), StatusCode::OK, "the victim is not signed in");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_email_at_the_idp_keeps_the_link_and_updates_the_user() {
    let Some(python) = idp_python() else { return };
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp_metadata = format!("http://{}/saml/corp-saml/metadata", listener.local_addr().unwrap());
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    // The same IdP (entity id, key, persistent NameIDs), before and after the directory
    // changes Alice's address.
    let idp_with_mail = |mail: &str| {
        let mut config = idp_config(
            &sp_metadata,
            json!({
                "port": port,
                "key_pem": fixture("keys/idp-rsa.key"),
                "cert_pem": fixture("keys/idp-rsa.crt"),
            }),
        );
        config["users"]["alice"]["attributes"]["mail"] = json!([mail]);
        SamlIdp::start(&python, &config)
    };
    let idp = idp_with_mail("alice@corp.example");
    let mut app = start_gatehouse_at(
        &db,
        listener,
        &saml_connector(&format!("idp_metadata_url = \"{}\"", idp.metadata_url), ""),
        real_now(),
    )
    .await;
    let answer = through_the_idp(&app, &idp, "login").await;
    follow_until(&app, app.url(&location(&post(&app, &answer).await)), DEMO_REDIRECT).await;
    let before = app.state.store.list_identity_links("corp-saml").await.unwrap();
    drop(idp);

    let idp = idp_with_mail("alice.new@corp.example");
    // Another browser, so the sign-in goes to the IdP again.
    app.http = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = through_the_idp(&app, &idp, "login").await;
    follow_until(&app, app.url(&location(&post(&app, &answer).await)), DEMO_REDIRECT).await;
    let after = app.state.store.list_identity_links("corp-saml").await.unwrap();
    assert_eq!(after, before, "one link, keyed by the NameID, not the email");
    let user = app.state.store.get_user(&after[0].1).await.unwrap();
    assert_eq!(user.email.as_deref(), Some("alice.new@corp.example"));
    app.stop().await;
}
