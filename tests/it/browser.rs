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
