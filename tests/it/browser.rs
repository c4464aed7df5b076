//! The login page in a real browser: Debian's Chromium, driven by playwright-core under Node.
//!
//! Runs when Chromium and `tests/browser/node_modules` are present; `TEST_BROWSER=1` (set by
//! `.ci/run`) makes their absence a failure, so CI never skips it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use gatehouse::clock::ManualClock;

use crate::helpers::{TEST_KEK, TestApp, TestDb, load_config, local_users_toml};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_available() -> bool {
    let ready = Path::new(CHROMIUM).exists() && Path::new("tests/browser/node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("TEST_BROWSER").is_none(),
            "TEST_BROWSER is set but Chromium or tests/browser/node_modules is missing (see .ci/run)"
        );
        eprintln!("Chromium or playwright-core is not installed: skipping the browser test (see README)");
    }
    ready
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_signs_in_and_out_in_chromium() {
    if !browser_available() {
        return;
    }
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let screenshots = std::env::var("TEST_SCREENSHOTS").unwrap_or_default();
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node").args(["tests/browser/login.mjs", &base, CHROMIUM, &screenshots]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    let users = app.state.store.list_users().await.unwrap();
    assert_eq!(users.len(), 1, "the browser sign-in provisioned alice");
    app.stop().await;
}

/// The admin console in Chromium: see `tests/browser/admin-console.mjs`.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_manages_applications_sessions_users_and_keys_in_chromium() {
    if !browser_available() || !Path::new("tests/browser/node_modules/openid-client").exists() {
        return;
    }
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "issuer = \"{base}\"\ndatabase_url = \"{}\"\nkey_encryption_key = \"{TEST_KEK}\"\n\n[admin]\ngroups = [\"engineering\"]\n{}",
        db.url,
        local_users_toml()
    );
    // openid-client checks `exp` and `iat` against the real time.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let app = TestApp::start_on(listener, load_config(db.dir.path(), &config), Arc::new(ManualClock::new(now))).await;
    let screenshots = std::env::var("TEST_SCREENSHOTS").unwrap_or_default();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["tests/browser/admin-console.mjs", &base, CHROMIUM, &app_port.to_string(), &screenshots])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    let wiki = app.state.store.get_client("wiki").await.unwrap();
    assert!(!wiki.managed_by_config && wiki.backchannel_logout_uri.is_some(), "the console created the application");
    app.stop().await;
}

/// The portal's configuration for `tests/browser/portal.mjs`: two launchable applications on
/// `app_origin`, Payroll for the `payroll` group only, local users and a corporate provider.
fn portal_toml(base: &str, db: &TestDb, app_origin: &str, backchannel: &str, upstream: &str, dave_groups: &str) -> String {
    use crate::helpers::{ALICE_HASH, BOB_HASH, CAROL_HASH};
    use crate::upstream_oidc::UPSTREAM_SECRET;
    format!(
        r#"
issuer = "{base}"
database_url = "{db}"
key_encryption_key = "{TEST_KEK}"

[[clients]]
client_id = "wiki"
client_secret = "wiki-secret-0123456789"
redirect_uris = ["{app_origin}/wiki/callback"]
scopes = ["openid", "profile", "email"]
name = "Team Wiki"
first_party = true
description = "How we work, decisions and runbooks"
initiate_login_uri = "{app_origin}/wiki/login"
backchannel_logout_uri = "{backchannel}"

[[clients]]
client_id = "payroll"
client_secret = "payroll-secret-0123456789"
redirect_uris = ["{app_origin}/payroll/callback"]
scopes = ["openid", "profile", "groups", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
name = "Payroll"
first_party = true
description = "Payslips and expenses"
allowed_groups = ["payroll"]
groups_claim_filter = "payroll"
initiate_login_uri = "{app_origin}/payroll/login"

[[connectors]]
id = "local"
type = "local"
name = "Local accounts"

[[connectors.users]]
username = "alice"
password_hash = "{ALICE_HASH}"
email = "alice@example.com"
name = "Alice Example"
groups = ["engineering", "payroll"]

[[connectors.users]]
username = "bob"
password_hash = "{BOB_HASH}"
email = "bob@example.com"
groups = ["sales"]

[[connectors.users]]
username = "dave"
password_hash = "{CAROL_HASH}"
groups = {dave_groups}

[[connectors]]
id = "corp"
type = "oidc"
name = "Corp Login"
issuer = "{upstream}"
client_id = "gatehouse"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile", "groups"]
email_domains = ["corp.example"]
"#,
        db = db.url
    )
}

/// The portal and access policy in Chromium: see `tests/browser/portal.mjs`. Afterwards, dave
/// is taken out of the payroll group in the file and loses Payroll at his next refresh.
#[tokio::test(flavor = "multi_thread")]
async fn employees_use_the_portal_and_the_access_policy_in_chromium() {
    use crate::upstream_oidc::{UPSTREAM_SECRET, UpstreamOp, op_config};
    if !browser_available() || !Path::new("tests/browser/node_modules/openid-client").exists() {
        return;
    }
    let (receiver_url, receiver) = crate::backchannel::start_receiver(0).await;
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let op = UpstreamOp::start(&op_config(&format!("{base}/oidc/corp/callback"), "ES256", Some(UPSTREAM_SECRET)));
    let app_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app_origin = format!("http://127.0.0.1:{app_port}");
    let config = |dave_groups: &str| {
        load_config(db.dir.path(), &portal_toml(&base, &db, &app_origin, &receiver_url, &op.issuer, dave_groups))
    };
    // openid-client checks `exp` and `iat` against the real time.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let clock = Arc::new(ManualClock::new(now));
    let app = TestApp::start_on(listener, config(r#"["payroll"]"#), clock.clone()).await;
    let screenshots = std::env::var("TEST_SCREENSHOTS").unwrap_or_default();
    let (script_base, issuer) = (base.clone(), op.issuer.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["tests/browser/portal.mjs", &script_base, CHROMIUM, &app_port.to_string(), &issuer, &screenshots])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "portal checks failed:\n{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true, "{stdout}");

    // Signing out everywhere told the wiki, by back-channel logout, which session ended.
    crate::backchannel::wait_for(&receiver, 1).await;
    let logout = receiver.lock().unwrap().tokens[0].clone();
    // Its signature is checked in `backchannel`; here only which session it names matters.
    let payload = logout.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap())
            .unwrap();
    assert_eq!(claims["sid"], result["aliceWikiSid"], "the logout names alice's session");

    // dave's refresh works while the file has him in the group, and not once it does not.
    let refresh = |app: &TestApp, token: String| {
        let request = app
            .http
            .post(app.url("/oauth2/token"))
            .basic_auth("payroll", Some("payroll-secret-0123456789"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str())]);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, tokens) = refresh(&app, result["daveRefreshToken"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{tokens}");
    app.stop().await;
    let app = TestApp::start_config(config("[]"), clock).await;
    let (status, error) = refresh(&app, tokens["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!((status, error["error"].as_str()), (reqwest::StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");
    app.stop().await;
}

/// Identity providers managed in the console, against pysaml2 and oidc-provider: see
/// `tests/browser/connectors.mjs`.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_connects_and_debugs_identity_providers_in_chromium() {
    use crate::upstream_oidc::{UPSTREAM_SECRET, UpstreamOp, op_config};
    if !browser_available() || !Path::new("tests/browser/node_modules/oidc-provider").exists() {
        return;
    }
    let Some(python) = crate::upstream_saml::idp_python() else { return };
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let op = UpstreamOp::start(&op_config(&format!("{base}/oidc/corp/callback"), "ES256", Some(UPSTREAM_SECRET)));
    let config = format!(
        "issuer = \"{base}\"\ndatabase_url = \"{}\"\nkey_encryption_key = \"{TEST_KEK}\"\n\n[admin]\ngroups = [\"engineering\"]\n{}",
        db.url,
        local_users_toml()
    );
    // The IdPs stamp their messages with the real time.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let app = TestApp::start_on(listener, load_config(db.dir.path(), &config), Arc::new(ManualClock::new(now))).await;
    let screenshots = std::env::var("TEST_SCREENSHOTS").unwrap_or_default();
    let (script_base, issuer, python) = (base.clone(), op.issuer.clone(), python.display().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["tests/browser/connectors.mjs", &script_base, CHROMIUM, &python, &issuer, &screenshots])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "connector checks failed:\n{stdout}\n{stderr}");
    // Four test sign-ins created no one: alice (the admin) and the person who signed in
    // through the OIDC provider are the only users, and only that person is linked upstream.
    let users = app.state.store.list_users().await.unwrap();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(app.state.store.list_identity_links("corp-saml").await.unwrap().is_empty());
    assert_eq!(app.state.store.list_identity_links("corp").await.unwrap().len(), 1);
    app.stop().await;
}
