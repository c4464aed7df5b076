//! Identity providers managed live: the admin API and console create, check, change, disable
//! and remove SAML and OpenID Connect connectors; the change reaches sign-in on every node
//! without a restart; upstream secrets are sealed and never shown.

use std::sync::Arc;

use gatehouse::clock::{Clock, ManualClock};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{API, AUDITOR_SECRET, AUTOMATION_SECRET, Api, admin_config, token};
use crate::helpers::{TEST_KEK, TestApp, TestDb, field_value, load_config, location};
use crate::provider::{DEMO_REDIRECT, params_of};
use crate::upstream_oidc::{
    UPSTREAM_SECRET, UpstreamOp, authorize_path, follow_until, node_modules_available, op_config, real_now,
};
use crate::upstream_saml::fixture;

fn fixture_metadata() -> String {
    std::fs::read_to_string(fixture("keys/idp-metadata.xml")).unwrap()
}

/// What the API's `check` reports for the fixture IdP.
fn assert_fixture_check(check: &Value) {
    assert_eq!(check["type"], "saml", "{check}");
    assert_eq!(check["sso_url"], "https://idp.test/saml/sso");
    let thumbprint = check["certificates"][0]["sha256_thumbprint"].as_str().unwrap();
    assert_eq!(thumbprint.len(), 32 * 3 - 1, "{thumbprint}");
    assert!(check["certificates"][0]["not_after"].as_i64().unwrap() > 0);
}

async fn api_suite(db: &TestDb) {
    let app = TestApp::start_with(db, &admin_config()).await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let reader = Api { app: &app, token: token(&app, "auditor", AUDITOR_SECRET).await };
    assert_eq!(app.get("/saml/partner/metadata").await.status(), StatusCode::NOT_FOUND);

    // Created from uploaded metadata: 201, checked, and live on this node at once.
    let partner = json!({
        "id": "partner", "type": "saml", "name": "Partner SSO", "email_domains": ["partner.example"],
        "idp_metadata_xml": fixture_metadata(), "claims": {"email": "mail"}
    });
    let (status, created) = admin.post("/connectors", partner.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_fixture_check(&created["check"]);
    assert_eq!(created["version"], 1);
    assert_eq!(created["managed_by_config"], false);
    assert_eq!(created["gatehouse"]["acs_url"], "http://127.0.0.1:8080/saml/partner/acs");
    assert_eq!(created["gatehouse"]["entity_id"], "http://127.0.0.1:8080/saml/partner");
    let sp_metadata = app.get("/saml/partner/metadata").await;
    assert_eq!(sp_metadata.status(), StatusCode::OK);
    assert!(sp_metadata.text().await.unwrap().contains("http://127.0.0.1:8080/saml/partner/acs"));
    let login = app.get("/login?choose=1").await.text().await.unwrap();
    assert!(login.contains("Partner SSO"), "{login}");
    let (status, again) = admin.post("/connectors", partner.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // The list has the file's connector (read-only) and this one; local users' hashes never.
    let (status, list) = reader.get("/connectors").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "partner"]);
    assert_eq!(list["items"][0]["managed_by_config"], true);
    assert!(!list.to_string().contains("$argon2id"), "{list}");

    // Changes: at the version read, or 409; the type and the id never.
    let (status, body) = admin.patch("/connectors/partner", json!({"name": "Partner", "version": 7})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, changed) = admin.patch("/connectors/partner", json!({"name": "Partner", "version": 1})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!((changed["name"].as_str(), changed["version"].as_i64()), (Some("Partner"), Some(2)));
    assert_eq!(changed["email_domains"], json!(["partner.example"]), "fields not named stay");
    for (patch, field) in [
        (json!({"type": "oidc"}), "type"),
        (json!({"id": "other"}), "id"),
        (json!({"clock_skew_secs": 9000}), "clock_skew_secs"),
        (json!({"idp_metadata_xml": "<nope/>"}), "idp_metadata_xml"),
    ] {
        let (status, problem) = admin.patch("/connectors/partner", patch.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {problem}");
        assert_eq!(problem["field"], field, "{patch}: {problem}");
    }
    let (status, _) = admin.patch("/connectors/local", json!({"name": "Mine"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "the file's connectors are read-only");
    let (status, _) = admin.delete("/connectors/local").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) =
        reader.post("/connectors", json!({"id": "x", "type": "saml", "idp_metadata_xml": fixture_metadata()})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Disabling stops sign-in and its metadata on this node at once; enabling brings it back.
    let (status, body) = admin.post("/connectors/partner/disable", json!({})).await;
    assert_eq!((status, body["sessions_ended"].as_i64()), (StatusCode::OK, Some(0)), "{body}");
    assert_eq!(app.get("/saml/partner/metadata").await.status(), StatusCode::NOT_FOUND);
    assert!(!app.get("/login?choose=1").await.text().await.unwrap().contains("Partner"));
    let (status, _) = admin.post("/connectors/partner/enable", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/saml/partner/metadata").await.status(), StatusCode::OK);

    // Removed: gone everywhere, and the audit log says who did what.
    let (status, body) = admin.delete("/connectors/partner").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.get("/saml/partner/metadata").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(admin.get("/connectors/partner").await.0, StatusCode::NOT_FOUND);
    let (_, audit) = reader.get("/audit?connector=partner").await;
    let kinds: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "admin.connector_created",
        "admin.connector_updated",
        "admin.connector_disabled",
        "admin.connector_enabled",
        "admin.connector_deleted",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(audit["items"].as_array().unwrap().iter().all(|e| e["actor"] == "client:automation"));
    app.stop().await;
}

#[tokio::test]
async fn connectors_api_on_sqlite() {
    api_suite(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn connectors_api_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        api_suite(&db).await;
    }
}

/// Malformed, hostile and oversized specifications are refused at the field, and nothing is
/// stored.
#[tokio::test]
async fn bad_connector_specifications_are_refused_at_the_field() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let saml = |extra: Value| {
        let mut spec = json!({"id": "idp", "type": "saml", "idp_metadata_xml": fixture_metadata()});
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        spec
    };
    let huge_name = "x".repeat(101);
    let cases = [
        (json!({"id": "idp", "type": "saml", "idp_metadata_file": "/etc/passwd"}), "idp_metadata_file"),
        (
            json!({"id": "idp", "type": "oidc", "issuer": "https://x.example", "client_id": "c", "client_secret_file": "/etc/shadow"}),
            "client_secret_file",
        ),
        (json!({"id": "idp", "type": "local"}), "type"),
        (json!({"id": "idp", "type": "ldap"}), "type"),
        (json!({"id": "Bad ID", "type": "saml", "idp_metadata_xml": fixture_metadata()}), "id"),
        (json!({"id": "local", "type": "saml", "idp_metadata_xml": fixture_metadata()}), "body"),
        (saml(json!({"name": huge_name})), "name"),
        (saml(json!({"name": "Tab\tName"})), "name"),
        (saml(json!({"surprise": true})), "surprise"),
        (saml(json!({"email_domains": ["a@b"]})), "email_domains"),
        (saml(json!({"idp_metadata_url": "https://idp.example/md"})), "idp_metadata_url"),
        (saml(json!({"idp_metadata_xml": "<md:EntityDescriptor"})), "idp_metadata_xml"),
        (
            saml(json!({"idp_metadata_xml": "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>"})),
            "idp_metadata_xml",
        ),
        (saml(json!({"idp_metadata_xml": "a".repeat(1024 * 1024 + 1)})), "idp_metadata_xml"),
        (saml(json!({"claims": {"subject": ""}})), "claims.subject"),
        (saml(json!({"issuer": "https://x.example"})), "issuer"),
        (json!({"id": "idp", "type": "saml", "idp_metadata_url": "http://idp.example/md"}), "idp_metadata_url"),
        (json!({"id": "idp", "type": "saml", "idp_metadata_url": "file:///etc/passwd"}), "idp_metadata_url"),
        // Nothing listens there: the check on save refuses it, naming the field.
        (json!({"id": "idp", "type": "saml", "idp_metadata_url": "http://127.0.0.1:9/metadata"}), "idp_metadata_url"),
        (json!({"id": "idp", "type": "oidc", "issuer": "http://127.0.0.1:9", "client_id": "c"}), "issuer"),
        (json!({"id": "idp", "type": "oidc", "issuer": "https://x.example", "client_id": "c", "scopes": ["email"]}), "scopes"),
        (
            json!({"id": "idp", "type": "oidc", "issuer": "https://x.example", "client_id": "c", "client_secret": ""}),
            "client_secret",
        ),
        (json!({"id": "idp", "type": "oidc", "issuer": "https://x.example"}), "client_id"),
        (json!({"id": "idp", "type": "oidc", "issuer": "https://x.example", "client_id": "c\u{0}"}), "client_id"),
    ];
    for (spec, field) in cases {
        let (status, problem) = admin.post("/connectors", spec.clone()).await;
        let shown: String = spec.to_string().chars().take(120).collect();
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CONFLICT, "{shown}: {status} {problem}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(problem["field"], field, "{shown}: {problem}");
        }
        assert!(!problem.to_string().contains("root:"), "no file content leaks: {problem}");
    }
    // Bodies that are not a JSON object, or too large to read.
    let raw = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(app.url(&format!("{API}/connectors")))
            .bearer_auth(&admin.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(raw(b"[1,2]".to_vec(), "application/json").await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(raw(b"{\"id\":".to_vec(), "application/json").await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        raw(b"id=x".to_vec(), "application/x-www-form-urlencoded").await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let oversized = format!("{{\"id\":\"idp\",\"type\":\"saml\",\"idp_metadata_xml\":\"{}\"}}", "a".repeat(3 * 1024 * 1024));
    assert_eq!(raw(oversized.into_bytes(), "application/json").await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, list) = admin.get("/connectors").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "only the file's connector: {list}");
    app.stop().await;
}

/// The gatehouse configuration with an automation client whose tokens are for this issuer.
fn live_config(base: &str, db: &TestDb) -> String {
    format!(
        r#"
issuer = "{base}"
database_url = "{db}"
key_encryption_key = "{TEST_KEK}"

[admin]
groups = ["engineering"]

[[clients]]
client_id = "demo-app"
client_secret = "demo-app-secret-change-me"
redirect_uris = ["{DEMO_REDIRECT}"]
scopes = ["openid", "profile", "email", "groups"]
name = "Demo App"
first_party = true

[[clients]]
client_id = "automation"
client_secret = "{AUTOMATION_SECRET}"
grant_types = ["client_credentials"]
scopes = ["gatehouse:admin"]
default_audience = "{base}/admin/api"

[[connectors]]
id = "local"
type = "local"
"#,
        db = db.url
    )
}

/// A node on its own port; nodes behind one load balancer share the issuer (the first's).
async fn node(db: &TestDb, issuer: Option<&str>) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = format!("http://{}", listener.local_addr().unwrap());
    let config = load_config(db.dir.path(), &live_config(issuer.unwrap_or(&own), db));
    TestApp::start_on(listener, config, Arc::new(ManualClock::new(real_now()))).await
}

/// Signs in through the real provider from the app's authorization request; returns where the
/// browser ended: the app's redirect URI with a code, or a Gatehouse page.
async fn sign_in_through_provider(app: &TestApp, op: &UpstreamOp) -> (String, reqwest::Response) {
    let (url, page) = follow_until(app, app.url(&authorize_path(Some("alice@corp.example"))), DEMO_REDIRECT).await;
    assert!(url.starts_with(&format!("{}/interaction/", op.issuer)), "{url}");
    let page = page.text().await.unwrap();
    let action = |page: &str, suffix: &str| -> String {
        let found = page
            .split("action=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .find(|a| a.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} form: {page}"))
            .to_owned();
        reqwest::Url::parse(&url).unwrap().join(&found).unwrap().to_string()
    };
    let login = app.http.post(action(&page, "/login")).form(&[("login", "alice-7f3a")]).send().await.unwrap();
    let next = reqwest::Url::parse(&url).unwrap().join(&location(&login)).unwrap().to_string();
    let (url, consent) = follow_until(app, next, DEMO_REDIRECT).await;
    let consent = consent.text().await.unwrap();
    let confirm = app.http.post(action(&consent, "/confirm")).send().await.unwrap();
    let next = reqwest::Url::parse(&url).unwrap().join(&location(&confirm)).unwrap().to_string();
    follow_until(app, next, DEMO_REDIRECT).await
}

/// An OIDC connector added through one node's API starts sign-ins on another node within the
/// registry's bound; its secret is sealed in the database and never returned; a wrong secret
/// saved later makes sign-ins fail with the reason on the connector's page.
#[tokio::test(flavor = "multi_thread")]
async fn an_oidc_connector_added_on_one_node_signs_in_on_another() {
    if !node_modules_available() {
        return;
    }
    let db = match TestDb::postgres().await {
        Some(db) => db,
        None => TestDb::sqlite(),
    };
    let first = node(&db, None).await;
    let second = node(&db, Some(&first.base)).await;
    // The provider sends browsers back to the shared issuer (here the first node), which
    // finishes what the second started: sign-in state is in the database, not on a node.
    let op = UpstreamOp::start(&op_config(&format!("{}/oidc/corp/callback", first.base), "RS256", Some(UPSTREAM_SECRET)));
    assert_eq!(second.get("/oidc/corp").await.status(), StatusCode::NOT_FOUND);

    let admin = Api { app: &first, token: token(&first, "automation", AUTOMATION_SECRET).await };
    let spec = json!({
        "id": "corp", "type": "oidc", "name": "Corp Login", "issuer": op.issuer, "client_id": "gatehouse",
        "client_secret": UPSTREAM_SECRET, "scopes": ["openid", "email", "profile", "groups"],
        "email_domains": ["corp.example"]
    });
    let (status, created) = admin.post("/connectors", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["check"]["type"], "oidc");
    assert!(created["check"]["signing_algs"].as_array().unwrap().contains(&json!("RS256")), "{created}");
    assert!(created["check"]["keys"].as_u64().unwrap() >= 1);
    assert_eq!(created["has_client_secret"], true);
    assert!(!created.to_string().contains(UPSTREAM_SECRET), "the secret is write-only: {created}");

    // Sealed at rest: neither the settings document nor the sealed bytes hold it in clear.
    let record = first.state.store.get_connector("corp").await.unwrap();
    assert!(!record.settings.contains(UPSTREAM_SECRET) && !record.settings.contains("********"), "{}", record.settings);
    let sealed = record.sealed_secret.clone().unwrap();
    assert!(!sealed.windows(UPSTREAM_SECRET.len()).any(|w| w == UPSTREAM_SECRET.as_bytes()));

    // The other node builds it on its own within the bound.
    let mut waited = 0;
    while second.get("/oidc/corp").await.status() != StatusCode::OK {
        assert!(waited < 30, "the second node did not pick up the connector within 3 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    let (done, _) = sign_in_through_provider(&second, &op).await;
    let params = params_of(&done);
    assert_eq!(params["state"], "app-state", "{done}");
    assert!(params.contains_key("code"));

    // The stored secret goes only to the issuer it was given for.
    let (status, problem) = admin.patch("/connectors/corp", json!({"issuer": "https://attacker.example"})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("client_secret")), "{problem}");

    // A wrong secret (changed alone) is a change: versioned, audited, rebuilt on both nodes.
    let (status, changed) = admin.patch("/connectors/corp", json!({"client_secret": "not-the-secret"})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["version"], 2);
    let (_, audit) = admin.get("/audit?connector=corp&kind=admin.connector_updated").await;
    assert_eq!(audit["items"][0]["detail"], "changed: client_secret", "{audit}");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let another_browser = TestApp::handle(&second);
    let (ended, page) = sign_in_through_provider(&another_browser, &op).await;
    assert!(ended.starts_with(&first.base), "the sign-in stops at Gatehouse: {ended}");
    assert_eq!(page.status(), StatusCode::BAD_GATEWAY);
    let (_, failures) = admin.get("/audit?connector=corp&kind=login").await;
    assert_eq!(
        failures["items"][0]["detail"], "token_endpoint_error: error=invalid_client (client authentication failed)",
        "the reason and the provider's own error: {failures}"
    );
    // The connector's page lists it with what to try; the person is told it is Gatehouse's
    // credentials that were refused (their own password is fine), without the protocol detail.
    let listed = first.state.admin.connector_failures("corp").await.unwrap();
    assert_eq!(listed[0].reason, "token_endpoint_error");
    assert!(listed[0].fix.contains("client ID and secret"), "{:?}", listed[0]);
    let shown = page.text().await.unwrap();
    assert!(!shown.contains("invalid_client"), "{shown}");
    assert!(shown.contains("refused Gatehouse&#39;s credentials"), "{shown}");
    assert!(shown.contains("Contact your administrator") && !shown.contains("could not verify"), "{shown}");

    // Disabling it on the first node ends the session signed in through it.
    let sessions = first.state.store.list_unrevoked_sso_sessions(Some("corp"), None).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let (status, body) = admin.post("/connectors/corp/disable", json!({})).await;
    assert_eq!((status, body["sessions_ended"].as_i64()), (StatusCode::OK, Some(1)), "{body}");
    assert!(first.state.store.list_unrevoked_sso_sessions(Some("corp"), None).await.unwrap().is_empty());
    first.stop().await;
    second.stop().await;
}

/// The console: add a SAML provider from uploaded metadata, see what to register at the IdP,
/// get errors at the field, and disable and delete it behind confirmations.
#[tokio::test]
async fn the_console_adds_checks_and_removes_a_saml_provider() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    let list = alice.get("/admin/connectors").await.text().await.unwrap();
    assert!(list.contains("href=\"/admin/connectors/local\"") && list.contains("Configuration file"), "{list}");
    let form = alice.get("/admin/connectors/new?type=saml").await.text().await.unwrap();
    let csrf = field_value(&form, "csrf").unwrap();
    let metadata = fixture_metadata();
    let fields = |id: &'static str, source: &'static str, url: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("type", String::from("saml")),
            ("id", id.to_owned()),
            ("name", String::from("Partner SSO")),
            ("metadata_source", source.to_owned()),
            ("idp_metadata_url", url.to_owned()),
            ("idp_metadata_xml", metadata.clone()),
            ("claim_subject", String::from("NameID")),
            ("claim_email", String::from("mail")),
            ("sign_requests", String::from("on")),
        ]
    };
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let alice = &alice;
        async move { alice.http.post(alice.url(path)).form(&form).send().await.unwrap() }
    };

    // A URL nothing answers at: refused at that field, with what was typed kept.
    let refused = post("/admin/connectors", fields("partner", "url", "http://127.0.0.1:9/md")).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.unwrap();
    assert!(html.contains("class=\"field-error\"") && html.contains("metadata could not be used"), "{html}");
    assert!(html.contains("value=\"http://127.0.0.1:9/md\""));
    // Without the CSRF token nothing is created.
    let mut forged = fields("partner", "xml", "");
    forged[0].1 = String::from("forged");
    assert_ne!(post("/admin/connectors", forged).await.status(), StatusCode::CREATED);

    let created = post("/admin/connectors", fields("partner", "xml", "")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let page = created.text().await.unwrap();
    assert!(page.contains("https://idp.test/saml/sso") && page.contains("class=\"thumbprint\""), "{page}");
    assert!(page.contains("http://127.0.0.1:8080/saml/partner/acs") && page.contains("Download Gatehouse"), "{page}");

    // A metadata file uploaded on the provider's page replaces what is in use once read.
    let upload = |bytes: Vec<u8>, csrf: &str| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf.to_owned())
            .part("metadata", reqwest::multipart::Part::bytes(bytes).file_name("idp.xml"));
        alice.http.post(alice.url("/admin/connectors/partner/metadata")).multipart(form).send()
    };
    let uploaded = upload(metadata.clone().into_bytes(), &csrf).await.unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    assert!(uploaded.text().await.unwrap().contains("The IdP's metadata was read."));
    assert_eq!(app.state.store.get_connector("partner").await.unwrap().version, 2);
    let garbage = upload(b"<not-metadata/>".to_vec(), &csrf).await.unwrap();
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(garbage.text().await.unwrap().contains("metadata could not be used"));
    let binary = upload(vec![0xff, 0xfe, 0x00], &csrf).await.unwrap();
    assert_eq!(binary.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let huge = upload(vec![b'a'; 2 * 1024 * 1024], &csrf).await.unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_ne!(upload(metadata.clone().into_bytes(), "forged").await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.state.store.get_connector("partner").await.unwrap().version, 2, "refused uploads change nothing");

    // Edit keeps what the form does not change; a bad value comes back at its field.
    let edit = alice.get("/admin/connectors/partner/edit").await.text().await.unwrap();
    assert!(edit.contains("value=\"Partner SSO\""), "{edit}");
    let mut bad = fields("partner", "xml", "");
    bad.push(("clock_skew_secs", String::from("9999")));
    bad.push(("version", String::from("2")));
    let refused = post("/admin/connectors/partner", bad).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("between 0 and 600"));

    // A person signed in through it: disabling says so, then ends the session.
    let someone = app.state.store.list_users().await.unwrap().into_iter().next().unwrap();
    let session = gatehouse::session::NewSession {
        user_id: &someone.id,
        connector_id: "partner",
        subject: "s",
        pending_login: None,
        ip: None,
        user_agent: None,
    };
    let settings = app.state.config.session.clone();
    let signed_in = gatehouse::store::AuditEvent {
        time: app.clock.now(),
        kind: gatehouse::login::AUDIT_LOGIN.to_owned(),
        outcome: gatehouse::store::AuditOutcome::Success,
        actor: Some(someone.username.clone()),
        user_id: Some(someone.id.clone()),
        client_id: None,
        connector_id: Some(String::from("partner")),
        ip: None,
        detail: None,
    };
    gatehouse::session::start(app.state.store.as_ref(), session, &settings, app.clock.now(), &signed_in).await.unwrap();
    let confirm = alice.get("/admin/connectors/partner/disable").await.text().await.unwrap();
    assert!(confirm.contains("1 active session signed in through Partner SSO ends at once"), "{confirm}");
    let disabled = alice.post_form("/admin/connectors/partner/disable", &[("csrf", &csrf)]).await;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    assert!(app.state.store.list_unrevoked_sso_sessions(Some("partner"), None).await.unwrap().is_empty());
    assert!(alice.get("/admin/connectors").await.text().await.unwrap().contains("Disabled"));
    let confirm = alice.get("/admin/connectors/partner/delete").await.text().await.unwrap();
    assert!(confirm.contains("0 active sessions"), "{confirm}");
    assert_eq!(alice.post_form("/admin/connectors/partner/delete", &[("csrf", &csrf)]).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(alice.get("/admin/connectors/partner").await.status(), StatusCode::NOT_FOUND);
    // Unknown actions and the file's connector are not actionable.
    assert_eq!(alice.get("/admin/connectors/local/explode").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(alice.get("/admin/connectors/local/delete").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(alice.get("/admin/connectors/local/edit").await.status(), StatusCode::FORBIDDEN);
    // bob (sales) is no admin.
    let bob = TestApp::handle(&app);
    bob.login("bob", "bob-password").await;
    assert_eq!(bob.get("/admin/connectors").await.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

/// An administrator acting in the console, for tests that call the admin core directly.
pub(crate) fn console_actor() -> gatehouse::admin::Actor {
    gatehouse::admin::Actor { name: String::from("alice"), role: gatehouse::admin::Role::Admin, ip: None }
}

/// Linking by hand, in the API and the console: bad input at the field, conflicts as 409.
#[tokio::test]
async fn identities_are_linked_and_unlinked_by_hand() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let user = app.state.store.list_users().await.unwrap().into_iter().find(|u| u.username == "alice").unwrap();
    let links = format!("/users/{}/links", user.id);
    for (body, field) in [
        (json!({"connector_id": "nowhere", "subject": "x"}), "connector_id"),
        (json!({"connector_id": "local", "subject": ""}), "subject"),
        (json!({"connector_id": "local", "subject": "a\u{7}b"}), "subject"),
        (json!({"connector_id": "local", "subject": "s".repeat(513)}), "subject"),
        (json!({"connector_id": "local"}), "subject"),
        (json!({"connector_id": 7, "subject": "x"}), "connector_id"),
    ] {
        let (status, problem) = admin.post(&links, body.clone()).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{body}: {problem}");
    }
    let (status, _) = admin.post("/users/nobody/links", json!({"connector_id": "local", "subject": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, created) = admin.post(&links, json!({"connector_id": "local", "subject": "alice.old/ü"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = admin.post(&links, json!({"connector_id": "local", "subject": "alice.old/ü"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let page = alice.get(&format!("/admin/users/{}", user.id)).await.text().await.unwrap();
    assert!(page.contains("alice.old/ü") && page.contains("subject=alice.old%2F%C3%BC"), "{page}");

    // The console unlinks it behind a confirmation; a link that does not exist is 404.
    let confirm =
        alice.get(&format!("/admin/users/{}/links/remove?connector_id=local&subject=alice.old%2F%C3%BC", user.id)).await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let confirm = confirm.text().await.unwrap();
    assert!(confirm.contains("is a first sign-in again"), "{confirm}");
    let csrf = field_value(&confirm, "csrf").unwrap();
    let missing = alice.get(&format!("/admin/users/{}/links/remove?connector_id=local&subject=nobody", user.id)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let removed = alice
        .post_form(
            &format!("/admin/users/{}/links/remove", user.id),
            &[("csrf", &csrf), ("connector_id", "local"), ("subject", "alice.old/ü")],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    // Unlinking ends the user's sessions through that connector: here, alice's own.
    assert_eq!(alice.get("/admin").await.status(), StatusCode::SEE_OTHER);
    alice.login("alice", "alice-password").await;
    let csrf = field_value(&alice.get(&format!("/admin/users/{}", user.id)).await.text().await.unwrap(), "csrf").unwrap();
    let (status, _) = admin.delete(&format!("/users/{}/links/local/alice.old%2F%C3%BC", user.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already unlinked");

    // Linked in the console, unlinked through the API (the subject percent-encoded in the path).
    let linked = alice
        .post_form(
            &format!("/admin/users/{}/links", user.id),
            &[("csrf", &csrf), ("connector_id", "local"), ("subject", "a/b c")],
        )
        .await;
    assert_eq!(linked.status(), StatusCode::SEE_OTHER);
    let refused = alice
        .post_form(
            &format!("/admin/users/{}/links", user.id),
            &[("csrf", &csrf), ("connector_id", "local"), ("subject", "a/b c")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("already linked"));
    let (status, body) = admin.delete(&format!("/users/{}/links/local/a%2Fb%20c", user.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, audit) = admin.get(&format!("/audit?user={}", user.id)).await;
    let kinds: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "admin.identity_linked").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "admin.identity_unlinked").count(), 2, "{kinds:?}");
    app.stop().await;
}

/// Gatehouse for the console's own tests of a real IdP: alice (engineering) administers.
async fn console_node(db: &TestDb, listener: tokio::net::TcpListener, now: i64) -> TestApp {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let text = format!(
        "issuer = \"{base}\"\ndatabase_url = \"{}\"\nkey_encryption_key = \"{TEST_KEK}\"\n\n[admin]\ngroups = [\"engineering\"]\n{}",
        db.url,
        crate::helpers::local_users_toml()
    );
    TestApp::start_on(listener, load_config(db.dir.path(), &text), Arc::new(ManualClock::new(now))).await
}

/// Runs a test sign-in from the connector's page through the IdP's form; returns the page it
/// ends on in the console.
async fn test_sign_in(alice: &TestApp, idp_base: &str, id: &str, csrf: &str) -> (String, String) {
    let started = alice.post_form(&format!("/admin/connectors/{id}/test"), &[("csrf", csrf)]).await;
    assert_eq!(started.status(), StatusCode::OK);
    let page = started.text().await.unwrap();
    let target = page.split("id=\"continue\" href=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap();
    let (url, page) = follow_until(alice, alice.url(&target.replace("&amp;", "&")), "never").await;
    assert!(url.starts_with(&format!("{idp_base}/sso/redirect")), "{url}");
    let page = page.text().await.unwrap();
    let key = field_value(&page, "key").unwrap_or_else(|| panic!("no IdP login form: {page}"));
    let form = [("key", key.as_str()), ("username", "alice"), ("password", "alice-pass"), ("action", "login")];
    let answered = alice.http.post(format!("{idp_base}/sso/login")).form(&form).send().await.unwrap();
    let post = crate::upstream_saml::auto_post(&answered.text().await.unwrap());
    let acs = alice.http.post(&post.acs).form(&post.fields).send().await.unwrap();
    assert_eq!(acs.status(), StatusCode::SEE_OTHER, "{}", acs.text().await.unwrap());
    let (url, page) = follow_until(alice, alice.url(&location(&acs)), "never").await;
    (url, page.text().await.unwrap())
}

/// The sign-in debugger against a real SAML IdP (pysaml2): add it from its metadata URL, run a
/// test sign-in and see the attributes and the user they map to (nothing created); then break
/// it on purpose, a clock offset and a new IdP certificate, and see each reason named.
#[tokio::test(flavor = "multi_thread")]
async fn a_test_sign_in_shows_what_the_idp_sent_and_names_each_failure() {
    let Some(python) = crate::upstream_saml::idp_python() else { return };
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp_metadata = format!("http://{}/saml/corp-saml/metadata", listener.local_addr().unwrap());
    let idp_settings = crate::upstream_saml::idp_config(&sp_metadata, json!({}));
    let idp = crate::upstream_saml::SamlIdp::start(&python, &idp_settings);
    let app = console_node(&db, listener, real_now()).await;
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    let csrf = field_value(&alice.get("/admin/connectors/new?type=saml").await.text().await.unwrap(), "csrf").unwrap();
    let created = alice
        .post_form(
            "/admin/connectors",
            &[
                ("csrf", &csrf),
                ("type", "saml"),
                ("id", "corp-saml"),
                ("name", "Corp SSO"),
                ("metadata_source", "url"),
                ("idp_metadata_url", &idp.metadata_url),
                ("claim_subject", "NameID"),
                ("claim_email", "mail"),
                ("claim_name", "displayName"),
                ("claim_groups", "groups"),
                ("sign_requests", "on"),
            ],
        )
        .await;
    let page = created.text().await.unwrap();
    assert!(page.contains(&format!("{}/sso/redirect", idp.base)), "the metadata's sign-in URL is shown: {page}");
    let users_before = app.state.store.count_users().await.unwrap();

    let (url, page) = test_sign_in(&alice, &idp.base, "corp-saml", &csrf).await;
    assert!(url.ends_with("/admin/connectors/corp-saml/test"), "{url}");
    assert!(page.contains("Corp SSO signed the person in.") && page.contains("would create a new user"), "{page}");
    for shown in ["alice@corp.example", "Alice Corp", "<code>eng</code>", "<code>ops</code>", "eng, ops"] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    assert_eq!(app.state.store.count_users().await.unwrap(), users_before, "a test creates no user");
    assert!(app.state.store.list_identity_links("corp-saml").await.unwrap().is_empty(), "nor a link");
    assert!(app.state.store.list_unrevoked_sso_sessions(Some("corp-saml"), None).await.unwrap().is_empty(), "nor a session");
    assert_eq!(alice.get("/admin").await.status(), StatusCode::OK, "the admin's own session is untouched");

    // Gatehouse's clock ten minutes ahead: the assertion is out of its window.
    app.clock.advance(600);
    let (url, page) = test_sign_in(&alice, &idp.base, "corp-saml", &csrf).await;
    assert!(url.contains("/admin/connectors/corp-saml/test?failed="), "{url}");
    assert!(page.contains("<code>clock_skew</code>") && page.contains("allowed skew 60 s"), "{page}");
    // The failure is this test's own, shown once; a made-up id shows nothing.
    let again = alice.get(url.trim_start_matches(&alice.base)).await.text().await.unwrap();
    assert!(again.contains("already shown or has expired") && !again.contains("<code>clock_skew</code>"), "{again}");
    let forged = alice.get("/admin/connectors/corp-saml/test?failed=made-up").await.text().await.unwrap();
    assert!(forged.contains("already shown or has expired"), "{forged}");
    app.clock.advance(-600);

    // The IdP restarts with a new key, while Gatehouse holds its old metadata.
    let port = reqwest::Url::parse(&idp.base).unwrap().port().unwrap();
    let uploaded = reqwest::get(&idp.metadata_url).await.unwrap().text().await.unwrap();
    let admin_api = app.state.admin.clone();
    let mut patch = serde_json::Map::new();
    patch.insert("idp_metadata_xml".into(), json!(uploaded));
    admin_api.update_connector(&console_actor(), "corp-saml", patch).await.unwrap();
    drop(idp);
    let mut restarted_settings = idp_settings.clone();
    restarted_settings["port"] = json!(port);
    let restarted = crate::upstream_saml::SamlIdp::start(&python, &restarted_settings);
    let (_, page) = test_sign_in(&alice, &restarted.base, "corp-saml", &csrf).await;
    assert!(page.contains("<code>signature_invalid</code>") && page.contains("IdP certificates tried (SHA-256)"), "{page}");
    let failures = alice.get("/admin/connectors/corp-saml").await.text().await.unwrap();
    assert!(failures.contains("clock_skew") && failures.contains("signature_invalid"), "{failures}");

    // Mapping rules, tried in a dry run on the last test's attributes, then saved: the next
    // test shows the groups they make; a rule that cannot apply refuses and names the rule.
    let uploaded = reqwest::get(&restarted.metadata_url).await.unwrap().text().await.unwrap();
    let mut patch = serde_json::Map::new();
    patch.insert("idp_metadata_xml".into(), json!(uploaded));
    admin_api.update_connector(&console_actor(), "corp-saml", patch).await.unwrap();
    test_sign_in(&alice, &restarted.base, "corp-saml", &csrf).await;
    let form = alice.get("/admin/connectors/corp-saml/mapping").await.text().await.unwrap();
    assert!(form.contains("alice@corp.example"), "the last test's attributes prefill the dry run: {form}");
    let claims = r#"{"NameID": "alice", "mail": "Alice@Corp.Example", "groups": ["eng", "ops", "eng-test"]}"#;
    let rules = r#"{"email": {"transforms": ["lowercase"]}, "groups": {"deny": [".*-test"], "prefix_with_connector": true, "static_groups": ["employees"]}}"#;
    let tried = alice
        .post_form(
            "/admin/connectors/corp-saml/mapping",
            &[("csrf", &csrf), ("claims", claims), ("mapping", rules), ("action", "dry_run")],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(tried.contains("corp-saml:eng, corp-saml:ops, employees") && tried.contains("alice@corp.example"), "{tried}");
    assert!(
        !app.state.store.get_connector("corp-saml").await.unwrap().settings.contains("\"mapping\""),
        "a dry run saves nothing"
    );
    let broken = r#"{"groups": {"allow": ["(unclosed"]}}"#;
    let refused = alice
        .post_form(
            "/admin/connectors/corp-saml/mapping",
            &[("csrf", &csrf), ("claims", claims), ("mapping", broken), ("action", "save")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("mapping.groups.allow[0]"));
    let saved = alice
        .post_form(
            "/admin/connectors/corp-saml/mapping",
            &[("csrf", &csrf), ("claims", claims), ("mapping", rules), ("action", "save")],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(saved.contains("id=\"saved\""), "{saved}");
    let (_, page) = test_sign_in(&alice, &restarted.base, "corp-saml", &csrf).await;
    assert!(page.contains("corp-saml:eng, corp-saml:ops, employees"), "{page}");
    let strict = r#"{"username": {"from": "uid", "transforms": [{"regex_extract": "^emp-(\\d+)$"}]}}"#;
    let saved = alice
        .post_form(
            "/admin/connectors/corp-saml/mapping",
            &[("csrf", &csrf), ("claims", "{\"NameID\": \"x\", \"uid\": \"emp-7\"}"), ("mapping", strict), ("action", "save")],
        )
        .await;
    assert_eq!(saved.status(), StatusCode::OK);
    let (url, page) = test_sign_in(&alice, &restarted.base, "corp-saml", &csrf).await;
    assert!(url.contains("?failed="), "{url}");
    assert!(page.contains("<code>mapping_failed</code>") && page.contains("mapping.username.transforms[0]"), "{page}");
    app.stop().await;
}

/// A dry run through the API: the saved rules or the rules given, errors at the field.
#[tokio::test]
async fn a_dry_run_maps_claims_through_the_rules_without_saving() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let spec = json!({
        "id": "partner", "type": "saml", "idp_metadata_xml": fixture_metadata(),
        "claims": {"email": "mail", "groups": "memberOf"},
        "mapping": {"groups": {"split": ";", "transforms": [{"regex_replace": ["^CN=([^,]+),.*$", "$1"]}, "lowercase"]}}
    });
    let (status, created) = admin.post("/connectors", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["mapping"]["groups"]["split"], ";");
    let claims = json!({"NameID": "a-1", "mail": "Alice@Partner.Example", "memberOf": "CN=Payroll,OU=G,DC=p;CN=Staff,OU=G,DC=p"});
    let (status, user) = admin.post("/connectors/partner/dry-run", json!({"claims": claims})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["subject"], "a-1");
    assert_eq!(user["groups"], json!(["payroll", "staff"]));
    let rules = json!({"email": {"transforms": ["lowercase"]}, "groups": {"from": "memberOf", "split": ";", "allow": ["CN=Pay.*"], "static_groups": ["partners"]}, "email_verified": "always"});
    let (status, user) = admin.post("/connectors/partner/dry-run", json!({"claims": claims, "mapping": rules})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!((user["email"].as_str(), user["email_verified"].as_bool()), (Some("alice@partner.example"), Some(true)));
    assert_eq!(user["groups"], json!(["CN=Payroll,OU=G,DC=p", "partners"]));
    let (_, stored) = admin.get("/connectors/partner").await;
    assert!(stored["mapping"].get("email").is_none(), "a dry run saves nothing: {stored}");
    for (body, field) in [
        (json!({"claims": claims, "mapping": {"groups": {"deny": ["("]}}}), "mapping.groups.deny[0]"),
        (json!({"claims": claims, "mapping": {"username": {"transforms": ["shout"]}}}), "mapping.username.transforms[0]"),
        (json!({"claims": claims, "mapping": {"nickname": {}}}), "mapping"),
        (
            json!({"claims": claims, "mapping": {"username": {"transforms": [{"regex_extract": "^x-(.*)$"}]}}}),
            "mapping.username.transforms[0]",
        ),
        (json!({"claims": "NameID=a"}), "claims"),
        (json!({"claims": {"mail": "no subject"}}), "claims"),
        (json!({"claims": claims, "extra": 1}), "extra"),
    ] {
        let (status, problem) = admin.post("/connectors/partner/dry-run", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert!(problem["field"].as_str().unwrap().starts_with(field), "{body}: {problem}");
    }
    // Saved rules are validated at the field too.
    let (status, problem) = admin.patch("/connectors/partner", json!({"mapping": {"email_verified": "maybe"}})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("mapping.email_verified")),
        "{problem}"
    );
    app.stop().await;
}

/// Merging two users of one person: the other's identities move over, and it is disabled.
#[tokio::test]
async fn merging_moves_identities_and_disables_the_other_user() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    let bob = TestApp::handle(&app);
    bob.login("bob", "bob-password").await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let users = app.state.store.list_users().await.unwrap();
    let id_of = |name: &str| users.iter().find(|u| u.username == name).unwrap().id.clone();
    let (alice_id, bob_id) = (id_of("alice"), id_of("bob"));
    let merge = format!("/users/{alice_id}/merge");
    for (body, field) in
        [(json!({}), "user_id"), (json!({"user_id": alice_id}), "user_id"), (json!({"user_id": "nobody"}), "user_id")]
    {
        let (status, problem) = admin.post(&merge, body.clone()).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{body}: {problem}");
    }
    // The console says what will happen first.
    let page = alice.get(&format!("/admin/users/{alice_id}/merge?user_id={bob_id}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("Merge bob into alice?") && page.contains("1 active sessions end"), "{page}");

    let (status, report) = admin.post(&merge, json!({"user_id": bob_id})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((report["links"].as_u64(), report["sessions"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(app.state.store.find_linked_user_id("local", "bob").await.unwrap(), Some(alice_id.clone()));
    assert!(app.state.store.get_user(&bob_id).await.unwrap().disabled);
    assert!(app.state.store.list_unrevoked_sso_sessions(None, Some(&bob_id)).await.unwrap().is_empty(), "bob's session ended");
    assert_eq!(bob.get("/").await.status(), StatusCode::SEE_OTHER, "bob's browser is signed out");
    let (_, audit) = admin.get(&format!("/audit?user={alice_id}&kind=admin.users_merged")).await;
    assert!(audit["items"][0]["detail"].as_str().unwrap().contains("1 identities moved"), "{audit}");
    app.stop().await;
}
