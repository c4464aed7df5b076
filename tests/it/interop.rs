//! Interoperability with a certified third-party client: panva's `openid-client` (OpenID
//! Certified), run by Node, with Chromium as the user's browser. Runs when Chromium and
//! `tests/browser/node_modules` are present; `TEST_BROWSER=1` (set by `.ci/run`) makes their
//! absence a failure.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use gatehouse::clock::ManualClock;

use crate::helpers::{START, TEST_KEK, TestApp, TestDb, load_config, local_users_toml};

const CHROMIUM: &str = "/usr/bin/chromium";

fn tools_available() -> bool {
    let ready = Path::new(CHROMIUM).exists() && Path::new("tests/browser/node_modules/openid-client").exists();
    if !ready {
        assert!(
            std::env::var_os("TEST_BROWSER").is_none(),
            "TEST_BROWSER is set but Chromium or tests/browser/node_modules is missing (see .ci/run)"
        );
        eprintln!("Chromium or openid-client is not installed: skipping the interoperability test (see README)");
    }
    ready
}

#[tokio::test(flavor = "multi_thread")]
async fn openid_client_completes_the_whole_flow_in_chromium() {
    if !tools_available() {
        return;
    }
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let callback_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        r#"
issuer = "{base}"
database_url = "{db}"
key_encryption_key = "{TEST_KEK}"

[[clients]]
client_id = "interop-app"
client_secret = "interop-app-secret-123456"
redirect_uris = ["http://127.0.0.1:{callback_port}/callback"]
post_logout_redirect_uris = ["http://127.0.0.1:{callback_port}/signed-out"]
scopes = ["openid", "profile", "email", "groups", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
name = "Interop App"
first_party = true
{users}"#,
        db = db.url,
        users = local_users_toml()
    );
    // The library checks `exp` and `iat` against the real time.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(now > START);
    let app = TestApp::start_on(listener, load_config(db.dir.path(), &config), Arc::new(ManualClock::new(now))).await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["tests/browser/oidc-interop.mjs", &base, CHROMIUM, &callback_port.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openid-client flow failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    app.stop().await;
}
