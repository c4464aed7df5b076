//! The login page in a real browser: Debian's Chromium, driven by playwright-core under Node.
//!
//! Runs when Chromium and `tests/browser/node_modules` are present; `TEST_BROWSER=1` (set by
//! `.ci/run`) makes their absence a failure, so CI never skips it.

use std::path::Path;
use std::process::Command;

use crate::helpers::{TestApp, TestDb};

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
