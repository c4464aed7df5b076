//! The admin API and console over HTTP, on SQLite and PostgreSQL: who may use them, every API
//! route, bad input, and changes that take effect without a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, field_value, location};

pub(crate) const API: &str = "/admin/api/v1";
pub(crate) const AUTOMATION_SECRET: &str = "automation-secret-0123456789";
pub(crate) const AUDITOR_SECRET: &str = "auditor-secret-0123456789ab";

/// alice (engineering) administers; bob (sales) may only look; two automation clients, one of
/// each kind, get admin API tokens; one more client gets tokens for another audience.
pub(crate) fn admin_config() -> String {
    r#"
[admin]
groups = ["engineering"]
read_only_groups = ["auditors"]

[[clients]]
client_id = "automation"
client_secret = "automation-secret-0123456789"
grant_types = ["client_credentials"]
scopes = ["gatehouse:admin"]
default_audience = "http://127.0.0.1:8080/admin/api"

[[clients]]
client_id = "auditor"
client_secret = "auditor-secret-0123456789ab"
grant_types = ["client_credentials"]
scopes = ["gatehouse:admin.read"]
default_audience = "http://127.0.0.1:8080/admin/api"

[[clients]]
client_id = "elsewhere"
client_secret = "elsewhere-secret-0123456789"
grant_types = ["client_credentials"]
scopes = ["gatehouse:admin"]
"#
    .to_owned()
}

pub(crate) async fn token(app: &TestApp, client_id: &str, secret: &str) -> String {
    let response = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "token for {client_id}: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

pub(crate) struct Api<'a> {
    pub(crate) app: &'a TestApp,
    pub(crate) token: String,
}

impl Api<'_> {
    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.app.http.request(method, self.app.url(&format!("{API}{path}"))).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

async fn api_suite(db: &TestDb) {
    let app = TestApp::start_with(db, &admin_config()).await;
    let mut admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let mut reader = Api { app: &app, token: token(&app, "auditor", AUDITOR_SECRET).await };

    // Create: 201 with the record and a secret shown once; GET never shows it.
    let new_app = json!({
        "client_id": "payroll", "name": "Payroll", "redirect_uris": ["https://payroll.example/cb"],
        "grant_types": ["authorization_code", "client_credentials"], "scopes": ["openid", "payroll:read"]
    });
    let (status, created) = admin.post("/clients", new_app.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    assert_eq!(created["version"], 1);
    assert_eq!(created["public"], false);
    let (status, fetched) = admin.get("/clients/payroll").await;
    assert_eq!(status, StatusCode::OK);
    assert!(fetched.get("client_secret").is_none() && !fetched.to_string().contains(&secret), "a GET never returns the secret");
    // The OpenAPI document describes every field the API returns for a client.
    let doc: Value = app.get("/admin/api/openapi.json").await.json().await.unwrap();
    let described = doc["components"]["schemas"]["Client"]["properties"].as_object().unwrap();
    for field in fetched.as_object().unwrap().keys() {
        assert!(described.contains_key(field), "the OpenAPI Client schema lacks `{field}`");
    }
    // The new client works at once, without a restart.
    token(&app, "payroll", &secret).await;

    // Conflicts and bad input, each naming the field.
    assert_eq!(admin.post("/clients", new_app.clone()).await.0, StatusCode::CONFLICT);
    let (status, problem) =
        admin.post("/clients", json!({"client_id": "demo-app", "redirect_uris": ["https://x.example/cb"]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a configured id is refused: {problem}");
    assert!(problem["detail"].as_str().unwrap().contains("configuration file"));
    let (status, problem) = admin.post("/clients", json!({"client_id": "bad", "redirect_uris": ["javascript:alert(1)"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "redirect_uris[0]");
    let (status, problem) = admin.post("/clients", json!({"client_id": "bad", "first_party": "yes"})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("first_party")));
    let (status, problem) = admin.post("/clients", json!({"client_id": "bad", "client_secret": "mine-mine-mine-mine"})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("client_secret")));
    let (status, problem) = admin.post("/clients", json!({"client_id": "bad", "colour": "red"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("colour"));
    let (status, problem) = admin.post("/clients", json!({"client_id": "bad id!", "grant_types": ["client_credentials"]})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("client_id")));
    let raw = app
        .http
        .post(app.url(&format!("{API}/clients")))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(raw.headers()["content-type"], "application/problem+json");
    let huge = json!({"client_id": "huge", "name": "x".repeat(200_000)});
    assert_eq!(admin.post("/clients", huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(admin.get("/clients/nobody").await.0, StatusCode::NOT_FOUND);
    assert!(admin.get("/clients").await.1["items"].as_array().unwrap().iter().any(|c| c["client_id"] == "payroll"));
    let (_, first) = admin.get("/clients?limit=2").await;
    let next = first["next"].as_str().expect("a second page of clients").to_owned();
    let (_, rest) = admin.get(&format!("/clients?limit=200&next={next}")).await;
    let total = admin.get("/clients?limit=200").await.1["items"].as_array().unwrap().len();
    assert_eq!(2 + rest["items"].as_array().unwrap().len(), total, "the pages together list every client once");
    assert!(rest["next"].is_null());
    assert!(!admin.get("/clients").await.1.to_string().contains("secret_hash"));

    // Edits: a stale version is refused, a current one applies; the file's clients are read-only.
    let (status, edited) = admin.patch("/clients/payroll", json!({"name": "Payroll 2", "version": 1})).await;
    assert_eq!((status, edited["version"].as_i64()), (StatusCode::OK, Some(2)));
    let (status, _) = admin.patch("/clients/payroll", json!({"name": "Lost update", "version": 1})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(admin.get("/clients/payroll").await.1["name"], "Payroll 2", "nothing half-applied");
    let (status, problem) = admin.patch("/clients/payroll", json!({"redirect_uris": ["not a url"]})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("redirect_uris[0]")));
    assert_eq!(admin.patch("/clients/demo-app", json!({"name": "Mine"})).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.delete("/clients/demo-app").await.0, StatusCode::CONFLICT);

    // The access policy and the portal tile, by the configuration's names, in effect at once.
    let policy = json!({
        "allowed_groups": ["engineering"], "groups_claim_filter": "eng", "description": "Payslips",
        "initiate_login_uri": "https://payroll.example/start", "logo_uri": "https://cdn.example/payroll.png"
    });
    let (status, edited) = admin.patch("/clients/payroll", policy).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!((edited["allowed_groups"].clone(), edited["groups_claim_filter"].clone()), (json!(["engineering"]), json!("eng")));
    assert_eq!(edited["show_in_portal"], true, "a sign-in start URL puts the app in the portal");
    assert_eq!(edited["allowed_connectors"], json!([]));
    for (body, field) in [
        (json!({"allowed_connectors": ["nowhere"]}), "allowed_connectors"),
        (json!({"allowed_groups": "engineering"}), "allowed_groups"),
        (json!({"allowed_groups": vec!["g"; 101]}), "allowed_groups"),
        (json!({"allowed_groups": ["a\nb"]}), "allowed_groups"),
        (json!({"groups_claim_filter": 5}), "groups_claim_filter"),
        (json!({"groups_claim_filter": [""]}), "groups_claim_filter"),
        (json!({"launch_url": "javascript:alert(1)"}), "launch_url"),
        (json!({"logo_uri": "data:image/png;base64,AAAA"}), "logo_uri"),
        (json!({"initiate_login_uri": null, "show_in_portal": true}), "show_in_portal"),
        (json!({"description": "x".repeat(501)}), "description"),
        (json!({"show_in_portal": "yes"}), "show_in_portal"),
    ] {
        let (status, problem) = admin.patch("/clients/payroll", body.clone()).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{body}: {problem}");
    }
    let policy_bob = TestApp::handle(&app);
    assert_eq!(policy_bob.login("bob", crate::helpers::BOB_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let pairs = crate::provider::demo_authorize(&[
        ("client_id", "payroll"),
        ("redirect_uri", "https://payroll.example/cb"),
        ("scope", "openid"),
    ]);
    let refused = crate::provider::authorize(&policy_bob, &pairs).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "bob (sales) may no longer use Payroll");
    let (status, edited) = admin.patch("/clients/payroll", json!({"allowed_groups": [], "show_in_portal": false})).await;
    assert_eq!((status, edited["show_in_portal"].as_bool()), (StatusCode::OK, Some(false)));
    let allowed = crate::provider::authorize(&policy_bob, &pairs).await;
    assert!(location(&allowed).starts_with("/oauth2/consent"), "open to everyone again: {}", location(&allowed));
    let csrf = policy_bob.csrf("/").await;
    assert_eq!(policy_bob.post_form("/logout", &[("csrf", &csrf)]).await.status(), StatusCode::OK);

    // Secret rotation with an overlap: both work during it, only the new one after.
    let (status, rotated) = admin.post("/clients/payroll/secret", json!({"overlap_secs": 3600})).await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    // At once on this node; other nodes re-read the client within their 2-second cache.
    token(&app, "payroll", &new_secret).await;
    token(&app, "payroll", &secret).await;
    app.clock.advance(3601);
    let refused = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth("payroll", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "the old secret stops after the overlap");
    // The hour also ended the automation's tokens.
    assert_eq!(admin.get("/clients").await.0, StatusCode::UNAUTHORIZED);
    admin.token = token(&app, "automation", AUTOMATION_SECRET).await;
    reader.token = token(&app, "auditor", AUDITOR_SECRET).await;
    assert_eq!(
        admin.post("/clients/payroll/secret", json!({"overlap_secs": 8 * 86400})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Read-only tokens read, and are refused every write with 403.
    assert_eq!(reader.get("/clients/payroll").await.0, StatusCode::OK);
    assert_eq!(reader.post("/clients", json!({"client_id": "r"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(reader.delete("/clients/payroll").await.0, StatusCode::FORBIDDEN);
    assert_eq!(reader.post("/keys/rotate", json!({})).await.0, StatusCode::FORBIDDEN);

    // Users, sessions and grants: bob signs in and gets tokens; the admin sees and ends it all.
    let bob = TestApp::handle(&app);
    assert_eq!(bob.login("bob", "bob-password").await.status(), StatusCode::SEE_OTHER);
    let (status, users) = admin.get("/users?q=BOB").await;
    assert_eq!(status, StatusCode::OK);
    let bob_id = users["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    let (_, detail) = admin.get(&format!("/users/{bob_id}")).await;
    assert_eq!(detail["user"]["username"], "bob");
    assert_eq!(detail["identities"][0]["connector_id"], "local");
    assert_eq!(detail["identities"][0]["last_sign_in_at"], detail["user"]["last_login_at"], "the identity's last sign-in");
    assert!(detail["identities"][0]["last_sign_in_at"].is_i64());
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 1);
    let (_, sessions) = admin.get(&format!("/sessions?user={bob_id}")).await;
    let session_id = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin.delete(&format!("/sessions/{session_id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("/sessions/{session_id}")).await.0, StatusCode::NOT_FOUND, "already ended");
    assert_eq!(bob.get("/").await.status(), StatusCode::SEE_OTHER, "bob is signed out");
    assert_eq!(bob.login("bob", "bob-password").await.status(), StatusCode::SEE_OTHER);
    let (status, body) = admin.post(&format!("/users/{bob_id}/disable"), json!({})).await;
    assert_eq!((status, body["sessions_ended"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(bob.login("bob", "bob-password").await.status(), StatusCode::FORBIDDEN, "disabled users cannot sign in");
    assert_eq!(admin.post(&format!("/users/{bob_id}/enable"), json!({})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(bob.login("bob", "bob-password").await.status(), StatusCode::SEE_OTHER);
    let (status, body) = admin.post(&format!("/users/{bob_id}/logout"), json!({})).await;
    assert_eq!((status, body["sessions_ended"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(admin.post("/users/nobody/disable", json!({})).await.0, StatusCode::NOT_FOUND);
    let (status, grants) = admin.get(&format!("/grants?user={bob_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(grants["items"].as_array().unwrap().is_empty(), "ending sessions revoked their grants");
    assert_eq!(admin.delete("/grants/nothing").await.0, StatusCode::NOT_FOUND);

    // Paging: a cursor this server did not give out is refused; pages chain.
    let (status, problem) = admin.get("/users?next=garbage").await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("next")));
    let (_, first) = admin.get("/users?limit=1").await;
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = admin.get(&format!("/users?limit=1&next={next}")).await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    assert_eq!(admin.get("/users?limit=abc").await.0, StatusCode::BAD_REQUEST);

    // Keys and the audit log.
    let (_, before) = admin.get("/keys").await;
    let (status, rotated) = admin.post("/keys/rotate", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let new_kid = rotated["items"][0]["kid"].as_str().unwrap().to_owned();
    let (_, after) = admin.get("/keys").await;
    assert_eq!(after["items"].as_array().unwrap().len(), before["items"].as_array().unwrap().len() + 1);
    assert!(after["items"].as_array().unwrap().iter().any(|k| k["kid"] == new_kid.as_str() && k["state"] == "active"));
    // Retiring a key early: never the active one; the tokens a retired one signed stop at once.
    let old_kid = before["items"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(admin.post(&format!("/keys/{new_kid}/retire"), json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.post("/keys/no-such-key/retire", json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(reader.post(&format!("/keys/{old_kid}/retire"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.get("/clients").await.0, StatusCode::OK, "a token of the retired key still verifies");
    assert_eq!(admin.post(&format!("/keys/{old_kid}/retire"), json!({})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get("/clients").await.0, StatusCode::UNAUTHORIZED, "its tokens stop verifying");
    admin.token = token(&app, "automation", AUTOMATION_SECRET).await;
    reader.token = token(&app, "auditor", AUDITOR_SECRET).await;
    let (_, keys) = admin.get("/keys").await;
    assert!(keys["items"].as_array().unwrap().iter().all(|k| k["kid"] != old_kid.as_str()));

    // A pasted token: what it was, and it is revoked.
    let (status, revoked) = admin.post("/tokens/revoke", json!({"token": reader.token})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((revoked["kind"].as_str(), revoked["client_id"].as_str()), (Some("access_token"), Some("auditor")));
    assert_eq!(reader.get("/clients").await.0, StatusCode::UNAUTHORIZED, "the pasted token is revoked");
    let (status, problem) = admin.post("/tokens/revoke", json!({"token": "not-a-token-we-issued"})).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("token")));
    assert_eq!(admin.post("/tokens/revoke", json!({})).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, audit) = admin.get("/audit?kind=admin.client_created").await;
    assert_eq!(audit["items"][0]["client_id"], "payroll");
    assert_eq!(audit["items"][0]["actor"], "client:automation");
    let (_, all) = admin.get("/audit?limit=200").await;
    let text = all.to_string();
    assert!(!text.contains(&secret) && !text.contains(&new_secret), "no secret in the audit log");
    for kind in [
        "admin.client_updated",
        "admin.client_secret_rotated",
        "admin.session_ended",
        "admin.user_disabled",
        "admin.keys_rotated",
    ] {
        assert!(text.contains(kind), "{kind} is audited");
    }
    assert_eq!(admin.get("/audit?since=abc").await.0, StatusCode::BAD_REQUEST);

    // Delete revokes what the client holds.
    assert_eq!(admin.delete("/clients/payroll").await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get("/clients/payroll").await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete("/clients/payroll").await.0, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn admin_api_on_sqlite() {
    api_suite(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn admin_api_on_postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    api_suite(&db).await;
}

#[tokio::test]
async fn the_admin_api_takes_only_admin_tokens_for_its_audience() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let url = app.url(&format!("{API}/clients"));
    let no_token = app.http.get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert!(no_token.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(no_token.headers()["content-type"], "application/problem+json");
    let garbage = app.http.get(&url).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    let other_audience = token(&app, "elsewhere", "elsewhere-secret-0123456789").await;
    assert_eq!(app.http.get(&url).bearer_auth(other_audience).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // The console's cookie is not accepted by the API.
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    assert_eq!(alice.get(&format!("{API}/clients")).await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Every route of the OpenAPI document exists with its methods (401 without a token), and the
/// methods it does not list are not routed.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let doc: Value = app.get("/admin/api/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 26);
    for (path, item) in paths {
        let concrete = path
            .replace("{client_id}", "some-client")
            .replace("{id}", "some-id")
            .replace("{kid}", "some-kid")
            .replace("{connector_id}", "some-connector")
            .replace("{subject}", "some-subject");
        for method in ["get", "post", "patch", "delete", "put"] {
            let response = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let expected = if item.get(method).is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::METHOD_NOT_ALLOWED };
            assert_eq!(response.status(), expected, "{method} {path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_console_is_for_admins_with_a_recent_sign_in() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;

    // Not signed in: sent to sign in, and back to the console afterwards.
    let anonymous = app.get("/admin/users").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    let login_url = location(&anonymous);
    assert!(login_url.starts_with("/login?req="), "{login_url}");
    let alice = TestApp::handle(&app);
    let csrf = alice.csrf(&login_url).await;
    let request = login_url.trim_start_matches("/login?req=").to_owned();
    let signed_in = alice
        .post_form(
            "/login",
            &[("csrf", &csrf), ("connector", "local"), ("username", "alice"), ("password", "alice-password"), ("req", &request)],
        )
        .await;
    assert_eq!(location(&signed_in), "/admin/users");
    let page = alice.get("/admin/users").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Users</h1>") && html.contains(">alice</a>"), "{html}");

    // bob is no admin: 403 on every page, not a redirect loop.
    let bob = TestApp::handle(&app);
    bob.login("bob", "bob-password").await;
    for path in
        ["/admin", "/admin/clients", "/admin/clients/new", "/admin/users", "/admin/sessions", "/admin/keys", "/admin/audit"]
    {
        assert_eq!(bob.get(path).await.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // An old sign-in goes through sign-in again.
    app.clock.advance(3601);
    let stale = alice.get("/admin").await;
    assert_eq!(stale.status(), StatusCode::SEE_OTHER);
    assert!(location(&stale).starts_with("/login?req="));
    app.stop().await;
}

#[tokio::test]
async fn the_console_creates_an_application_and_shows_its_secret_once() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let alice = TestApp::handle(&app);
    alice.login("alice", "alice-password").await;
    let form_page = alice.get("/admin/clients/new").await.text().await.unwrap();
    let csrf = field_value(&form_page, "csrf").unwrap();

    // A bad field comes back next to the field, with what was typed kept.
    let bad = alice
        .post_form(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("name", "Wiki"),
                ("client_id", "wiki"),
                ("kind", "confidential"),
                ("redirect_uris", "ftp//nope"),
                ("grant_authorization_code", "on"),
                ("scopes", "openid"),
            ],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await.unwrap();
    assert!(html.contains("class=\"field-error\"") && html.contains("ftp//nope"));

    // Without the CSRF token nothing is created.
    let forged = alice
        .post_form("/admin/clients", &[("name", "Evil"), ("client_id", "evil"), ("redirect_uris", "https://evil.example/cb")])
        .await;
    assert_ne!(forged.status(), StatusCode::OK);

    let created = alice
        .post_form(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("name", "Wiki"),
                ("client_id", "wiki"),
                ("kind", "confidential"),
                ("redirect_uris", "https://wiki.example/callback"),
                ("grant_authorization_code", "on"),
                ("grant_client_credentials", "on"),
                ("scopes", "openid profile"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    let marker = "id=\"client-secret\" readonly value=\"";
    let start = html.find(marker).expect("the new secret is shown") + marker.len();
    let secret = html[start..].split('"').next().unwrap().to_owned();
    assert!(html.contains("/.well-known/openid-configuration") && html.contains("https://wiki.example/callback"));
    token(&app, "wiki", &secret).await;
    assert_eq!(alice.get("/admin/grants/no-such-grant/revoke").await.status(), StatusCode::NOT_FOUND);
    let again = alice.get("/admin/clients/wiki").await.text().await.unwrap();
    assert!(!again.contains(&secret), "the secret is shown once");
    assert!(evil_absent(&app).await);

    // Who may use it and its tile, set in the form and shown back as set.
    let edit_page = alice.get("/admin/clients/wiki/edit").await.text().await.unwrap();
    let version = field_value(&edit_page, "version").unwrap();
    let policy = [
        ("csrf", csrf.as_str()),
        ("version", version.as_str()),
        ("name", "Wiki"),
        ("redirect_uris", "https://wiki.example/callback"),
        ("grant_authorization_code", "on"),
        ("scopes", "openid profile groups"),
        ("allowed_groups", "engineering\nwriters"),
        ("allowed_connectors", "local"),
        ("groups_filter_kind", "list"),
        ("groups_filter", "writers\nengineering"),
        ("description", "Team pages"),
        ("launch_url", "https://wiki.example/"),
        ("show_in_portal", "auto"),
    ];
    let saved = alice.post_form("/admin/clients/wiki", &policy).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER, "{}", saved.text().await.unwrap());
    let shown = alice.get("/admin/clients/wiki").await.text().await.unwrap();
    assert!(shown.contains("Members of engineering, writers, signed in through local"), "{shown}");
    assert!(
        shown.contains("Only writers, engineering") && shown.contains("Shown, opens <code>https://wiki.example/</code>"),
        "{shown}"
    );
    let wiki = app.state.store.get_client("wiki").await.unwrap();
    assert_eq!(wiki.access.allowed_groups, ["engineering", "writers"]);
    assert!(wiki.portal.show_in_portal && wiki.portal.description.as_deref() == Some("Team pages"));
    let round_trip = alice.get("/admin/clients/wiki/edit").await.text().await.unwrap();
    assert!(round_trip.contains("<option value=\"list\" selected>") && round_trip.contains("writers\nengineering</textarea>"));
    // A tile that cannot open anything is refused next to its field.
    let version = field_value(&round_trip, "version").unwrap();
    let mut no_url = policy.to_vec();
    no_url.retain(|(k, _)| !matches!(*k, "launch_url" | "show_in_portal" | "version"));
    no_url.extend([("show_in_portal", "show"), ("version", version.as_str())]);
    let refused = alice.post_form("/admin/clients/wiki", &no_url).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("a portal tile needs initiate_login_uri or launch_url"));
    app.stop().await;
}

async fn evil_absent(app: &TestApp) -> bool {
    app.state.store.get_client("evil").await.is_err()
}

/// Key choices follow the stored clients, not only the file's: a console client that asks for
/// RS256 gets a key at once, and its longer token lifetime keeps a retired key published.
#[tokio::test]
async fn a_console_client_gets_its_signing_key_and_key_retention() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &admin_config()).await;
    let admin = Api { app: &app, token: token(&app, "automation", AUTOMATION_SECRET).await };
    let (status, created) = admin
        .post(
            "/clients",
            json!({"client_id": "batch", "grant_types": ["client_credentials"], "scopes": ["reports"],
                   "signing_alg": "RS256", "access_token_lifetime_secs": 86_400}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap();
    let access = token(&app, "batch", secret).await;
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.unwrap();

    // Rotated, then an hour later (well past the settings' token lifetimes): the key that
    // signed the day-long token is still published.
    let (status, _) = admin.post("/keys/rotate", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    app.clock.advance(3600);
    let jwks: Value = app.get("/.well-known/jwks.json").await.json().await.unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str()), "{jwks}");
    app.stop().await;
}
