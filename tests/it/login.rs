//! The local connector, the login page and the SSO session, driven over HTTP like a browser.
use gatehouse::clock::Clock;

use gatehouse::session::pending::{self, PendingLogin};
use gatehouse::store::{AuditOutcome, SingleUseKind};
use reqwest::StatusCode;

use crate::helpers::{
    ALICE_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD, TestApp, TestDb, active_sessions, browser, field_value, location, set_cookie,
};

/// Who the portal greets, or `None` when it sends the browser to sign in. Anything else (an
/// error page, say) fails the test rather than passing for "signed out".
async fn signed_in_name(app: &TestApp) -> Option<String> {
    let response = app.get("/").await;
    if response.status() == StatusCode::SEE_OTHER {
        assert_eq!(location(&response), "/login");
        return None;
    }
    assert_eq!(response.status(), StatusCode::OK, "the portal neither greeted nor redirected");
    let page = response.text().await.unwrap();
    let start = page.find("<h2 id=\"greeting\">Welcome, ")? + "<h2 id=\"greeting\">Welcome, ".len();
    let end = page[start..].find("</h2>")?;
    Some(page[start..start + end].to_owned())
}

#[tokio::test]
async fn a_demo_user_signs_in_and_the_portal_greets_them() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;

    let anonymous = app.get("/").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/login");

    let page = app.get("/login").await.text().await.unwrap();
    assert!(page.contains("Local accounts"), "the login page lists the connectors");
    assert!(page.contains("name=\"connector\" value=\"local\""));

    let response = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    assert_eq!(signed_in_name(&app).await.as_deref(), Some("Alice Example"));

    // The user was provisioned and linked on first sign-in.
    let users = app.state.store.list_users().await.unwrap();
    let alice = users.iter().find(|u| u.username == "alice").unwrap();
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.groups, vec!["engineering".to_owned()]);
    assert_eq!(alice.last_login_at, Some(app.clock.now()));
    assert_eq!(app.state.store.find_linked_user_id("local", "alice").await.unwrap(), Some(alice.id.clone()));
    let sessions = active_sessions(&app, &alice.id, 1800).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].connector_id, "local");
    assert_eq!(sessions[0].ip.as_deref(), Some("127.0.0.1"));
    app.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_lax_and_cycled_at_sign_in() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let first = app.get("/login").await;
    assert!(set_cookie(&first, "gatehouse_session").is_none(), "the login page starts no session");
    let form_cookie = set_cookie(&first, "gatehouse_session_csrf").expect("the login page sets its form cookie");
    assert!(
        form_cookie.contains("HttpOnly") && form_cookie.contains("SameSite=Lax") && form_cookie.contains("Path=/"),
        "{form_cookie}"
    );
    assert!(!form_cookie.contains("Secure"), "plain-http issuer: no Secure flag ({form_cookie})");
    let csrf = field_value(&first.text().await.unwrap(), "csrf").unwrap();

    let response = app
        .post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD)])
        .await;
    let after = set_cookie(&response, "gatehouse_session").expect("sign-in issues a session id");
    assert!(after.contains("HttpOnly") && after.contains("SameSite=Lax") && after.contains("Path=/"), "{after}");
    assert!(!after.contains("Secure"), "plain-http issuer: no Secure flag ({after})");
    let renewed = set_cookie(&response, "gatehouse_session_csrf").expect("sign-in renews the form cookie");
    let value = |cookie: &str| cookie.split(';').next().unwrap().to_owned();
    assert_ne!(value(&form_cookie), value(&renewed), "a form token from before sign-in is worthless after it");
    let stale = app
        .post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "bob"), ("password", BOB_PASSWORD)])
        .await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN, "the pre-sign-in form token no longer counts");

    // Signing in again in a browser that has a session gives it a new session id (no fixation).
    let portal_csrf = field_value(&app.get("/").await.text().await.unwrap(), "csrf").unwrap();
    let again = app
        .post_form("/login", &[("csrf", &portal_csrf), ("connector", "local"), ("username", "bob"), ("password", BOB_PASSWORD)])
        .await;
    let cycled = set_cookie(&again, "gatehouse_session").expect("a second sign-in issues a session id");
    assert_ne!(value(&after), value(&cycled), "the session id must change at sign-in");
    app.stop().await;
}

#[tokio::test]
async fn an_https_issuer_makes_the_cookie_secure() {
    let db = TestDb::sqlite();
    let text = crate::helpers::config_toml(&db.url, "")
        .replace("issuer = \"http://127.0.0.1:8080\"", "issuer = \"https://sso.example.com\"");
    let config = crate::helpers::load_config(db.dir.path(), &text);
    let app = TestApp::start_config(config, std::sync::Arc::new(gatehouse::clock::ManualClock::new(crate::helpers::START))).await;
    let response = app.get("/login").await;
    let cookie = set_cookie(&response, "gatehouse_session_csrf").unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(response.headers().get("strict-transport-security").is_some());
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_clear_error() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    for (username, password) in [("alice", "wrong-password"), ("nobody", ALICE_PASSWORD)] {
        let response = app.login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.unwrap();
        assert!(page.contains("Invalid username or password."), "{page}");
        assert!(page.contains(&format!("value=\"{username}\"")), "the username is kept in the form");
        assert!(!page.contains(password), "the password is never echoed back");
    }
    assert_eq!(signed_in_name(&app).await, None);
    let audit = app.state.store.list_audit(10).await.unwrap();
    let failures: Vec<_> = audit.iter().filter(|e| e.kind == "login" && e.outcome == AuditOutcome::Failure).collect();
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|e| e.detail.as_deref() == Some("invalid_credentials") && e.ip.as_deref() == Some("127.0.0.1")));
    app.stop().await;
}

#[tokio::test]
async fn disabled_users_cannot_sign_in() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;

    // Disabled in the configuration.
    let response = app.login("carol", CAROL_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("This account is disabled"));
    // With a wrong password a disabled account looks like any other failure.
    assert_eq!(app.login("carol", "wrong").await.status(), StatusCode::OK);

    // Disabled by an administrator after a first sign-in: the running session ends too.
    assert_eq!(app.login("bob", BOB_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in_name(&app).await.as_deref(), Some("Bob Example"));
    let bob = app.state.store.find_linked_user_id("local", "bob").await.unwrap().unwrap();
    app.state.store.set_user_disabled(&bob, true, app.clock.now()).await.unwrap();
    assert_eq!(signed_in_name(&app).await, None, "a disabled user's session no longer counts");
    let again = browser();
    let csrf = field_value(&again.get(app.url("/login")).send().await.unwrap().text().await.unwrap(), "csrf").unwrap();
    let response = again
        .post(app.url("/login"))
        .form(&[("csrf", csrf.as_str()), ("connector", "local"), ("username", "bob"), ("password", BOB_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_username_until_the_window_passes() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", "guess").await.status(), StatusCode::OK);
    }
    let throttled = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(throttled.text().await.unwrap().contains("Too many failed sign-in attempts"));
    // Her email address names the same account, so it shares the same counter.
    assert_eq!(app.login("alice@example.com", ALICE_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(signed_in_name(&app).await, None);
    // Another user from the same address is not affected by alice's lockout.
    assert_eq!(app.login("bob", BOB_PASSWORD).await.status(), StatusCode::SEE_OTHER);

    app.clock.advance(15 * 60 + 1);
    let other = TestApp::handle(&app);
    assert_eq!(other.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_address() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "[login]\nmax_failures_per_ip = 3\n").await;
    for username in ["u1", "u2", "u3"] {
        assert_eq!(app.login(username, "guess").await.status(), StatusCode::OK);
    }
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"gatehouse_logins_total{connector="local",outcome="throttled"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gatehouse_logins_total{connector="local",outcome="invalid_credentials"} 3"#), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_cannot_slip_under_the_limit() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let mut browsers = Vec::new();
    for _ in 0..20 {
        let browser = TestApp::handle(&app);
        let csrf = browser.csrf("/login").await;
        browsers.push((browser, csrf));
    }
    let mut tasks = Vec::new();
    for (browser, csrf) in browsers {
        tasks.push(tokio::spawn(async move {
            browser
                .post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "alice"), ("password", "guess")])
                .await
                .status()
        }));
    }
    let mut checked = 0;
    let mut throttled = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => throttled += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(checked, 5, "exactly the allowed number of passwords were checked");
    assert_eq!(throttled, 15);
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted_and_audited() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "trusted_proxies = [\"127.0.0.1\"]\n[login]\nmax_failures_per_ip = 2\n").await;
    let from = |address: &'static str| {
        let browser = TestApp::handle(&app);
        async move {
            let page = browser.http.get(browser.url("/login")).send().await.unwrap().text().await.unwrap();
            let csrf = field_value(&page, "csrf").unwrap();
            browser
                .http
                .post(browser.url("/login"))
                .header("x-forwarded-for", address)
                .form(&[("csrf", csrf.as_str()), ("connector", "local"), ("username", "nobody"), ("password", "guess")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(from("203.0.113.1").await, StatusCode::OK);
    assert_eq!(from("203.0.113.1").await, StatusCode::OK);
    assert_eq!(from("203.0.113.1").await, StatusCode::TOO_MANY_REQUESTS, "the forwarded client is throttled");
    assert_eq!(from("203.0.113.2").await, StatusCode::OK, "another client behind the same proxy is not");
    let audit = app.state.store.list_audit(10).await.unwrap();
    assert!(audit.iter().any(|e| e.ip.as_deref() == Some("203.0.113.2")), "the audit log names the real client");
    app.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_from_untrusted_peers_are_ignored() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let csrf = app.csrf("/login").await;
    app.http
        .post(app.url("/login"))
        .header("x-forwarded-for", "203.0.113.66")
        .form(&[("csrf", csrf.as_str()), ("connector", "local"), ("username", "nobody"), ("password", "guess")])
        .send()
        .await
        .unwrap();
    let audit = app.state.store.list_audit(1).await.unwrap();
    assert_eq!(audit[0].ip.as_deref(), Some("127.0.0.1"));
    app.stop().await;
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let valid = app.csrf("/login").await;
    let attempts: [&[(&str, &str)]; 3] = [
        &[("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD), ("csrf", "")],
        &[("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD), ("csrf", "forged-token")],
        &[("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD), ("csrf", &valid[..valid.len() - 1])],
    ];
    for form in attempts {
        let response = app.post_form("/login", form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.text().await.unwrap().contains("This form has expired"));
    }
    // A token from another browser session is worthless here.
    let other = browser();
    other.get(app.url("/login")).send().await.unwrap();
    let response = other
        .post(app.url("/login"))
        .form(&[("csrf", valid.as_str()), ("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(signed_in_name(&app).await, None);

    // Sign-out is a form too.
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.post_form("/logout", &[("csrf", "forged")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(signed_in_name(&app).await.as_deref(), Some("Alice Example"));
    app.stop().await;
}

#[tokio::test]
async fn signing_in_again_ends_the_previous_session() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    app.login("alice", ALICE_PASSWORD).await;
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    // The portal's token is valid for a new sign-in post from the same browser.
    let csrf = field_value(&app.get("/").await.text().await.unwrap(), "csrf").unwrap();
    let response = app
        .post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "bob"), ("password", BOB_PASSWORD)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in_name(&app).await.as_deref(), Some("Bob Example"));
    let left = active_sessions(&app, &alice, 1800).await;
    assert!(left.is_empty(), "alice's session must not outlive the cookie that pointed at it");
    app.stop().await;
}

#[tokio::test]
async fn the_csrf_token_changes_at_sign_in() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let before = app.csrf("/login").await;
    app.login("alice", ALICE_PASSWORD).await;
    let page = app.get("/").await.text().await.unwrap();
    let after = field_value(&page, "csrf").unwrap();
    assert_ne!(before, after);
    app.stop().await;
}

#[tokio::test]
async fn malformed_hostile_and_oversized_input_gets_a_clear_error() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let csrf = app.csrf("/login").await;

    let missing = app.post_form("/login", &[("csrf", &csrf)]).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(missing.text().await.unwrap().contains("The sign-in form was incomplete"));

    let json = app.http.post(app.url("/login")).json(&serde_json::json!({"username": "alice"})).send().await.unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = "a".repeat(100 * 1024);
    let oversized =
        app.post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", &huge), ("password", "x")]).await;
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let long_name = "b".repeat(300);
    let response =
        app.post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", &long_name), ("password", "x")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("That username is not valid."));

    let long_password = "p".repeat(2000);
    let response = app
        .post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "alice"), ("password", &long_password)])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("That password is too long."));

    let response =
        app.post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", "al\u{0}ice"), ("password", "x")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let script = "<script>alert(1)</script>\"'&";
    let response =
        app.post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", script), ("password", "x")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script>"), "input is HTML-escaped");
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"), "{page}");

    let response =
        app.post_form("/login", &[("csrf", &csrf), ("connector", "nope"), ("username", "alice"), ("password", "x")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("That sign-in method does not exist."));

    let response = app
        .post_form(
            "/login",
            &[("csrf", &csrf), ("connector", "local"), ("username", "'; DROP TABLE users; --"), ("password", "x")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    for query in
        ["/login?req=%zz", "/login?req=../../etc", "/login?req=unknown-request-id", &format!("/login?req={}", "r".repeat(500))]
    {
        let response = app.get(query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(response.text().await.unwrap().contains("This sign-in link has expired"), "{query}");
    }

    // Nothing was lost: a proper sign-in still works afterwards.
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.state.store.list_users().await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_pending_request_is_carried_by_an_opaque_id_and_resumed_once() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let store = app.state.store.as_ref();
    let pending =
        PendingLogin { client_name: Some("Demo App".into()), resume_path: "/?after=login".into(), ..Default::default() };
    let id = pending::create(store, &pending, 600, app.clock.now()).await.unwrap();
    assert!(
        store.peek_single_use(SingleUseKind::PendingLogin, &id, app.clock.now()).await.unwrap().is_none(),
        "only a hash of the id is stored"
    );

    let page = app.get(&format!("/login?req={id}")).await.text().await.unwrap();
    assert!(page.contains("to continue to <strong>Demo App</strong>"));
    assert_eq!(field_value(&page, "req").as_deref(), Some(id.as_str()));
    let csrf = field_value(&page, "csrf").unwrap();
    let response = app
        .post_form(
            "/login",
            &[("csrf", &csrf), ("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD), ("req", &id)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/?after=login");

    // Used up: the same id cannot be replayed.
    assert_eq!(app.get(&format!("/login?req={id}")).await.status(), StatusCode::BAD_REQUEST);

    // A second application during the same session goes straight through.
    let second = PendingLogin { client_name: Some("Other App".into()), resume_path: "/?second".into(), ..Default::default() };
    let second_id = pending::create(store, &second, 600, app.clock.now()).await.unwrap();
    let response = app.get(&format!("/login?req={second_id}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/?second");

    // An expired request is refused with a clear message.
    let expired_id = pending::create(store, &pending, 60, app.clock.now()).await.unwrap();
    app.clock.advance(61);
    let fresh = browser();
    let response = fresh.get(app.url(&format!("/login?req={expired_id}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let offsite = PendingLogin { client_name: None, resume_path: "//evil.example/".into(), ..Default::default() };
    assert!(pending::create(store, &offsite, 600, app.clock.now()).await.is_err(), "a resume path can never leave this server");
    app.stop().await;
}

#[tokio::test]
async fn sessions_end_after_the_idle_and_absolute_timeouts() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "[session]\nidle_timeout_secs = 600\nabsolute_timeout_secs = 1000\n").await;
    app.login("alice", ALICE_PASSWORD).await;
    app.clock.advance(500);
    assert!(signed_in_name(&app).await.is_some(), "activity inside the idle window keeps the session");
    app.clock.advance(450);
    assert!(signed_in_name(&app).await.is_some(), "idle time counts from the last activity");
    app.clock.advance(100);
    assert_eq!(signed_in_name(&app).await, None, "past the absolute lifetime, activity does not help");

    let idle = TestApp::handle(&app);
    idle.login("bob", BOB_PASSWORD).await;
    let bob = app.state.store.find_linked_user_id("local", "bob").await.unwrap().unwrap();
    app.clock.advance(601);
    assert_eq!(signed_in_name(&idle).await, None);
    let active = active_sessions(&app, &bob, 600).await;
    assert!(active.is_empty(), "an idle session is no longer listed as active on the server");
    app.stop().await;
}

/// The cookie record expires on the wall clock, so this test takes real seconds: with a
/// 3-second idle timeout, a browser active every second stays signed in well past 3 seconds.
#[tokio::test]
async fn an_active_session_outlives_the_idle_timeout_in_real_time() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "[session]\nidle_timeout_secs = 3\nabsolute_timeout_secs = 600\n").await;
    app.login("alice", ALICE_PASSWORD).await;
    for second in 1..=6 {
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        app.clock.advance(1);
        assert!(signed_in_name(&app).await.is_some(), "signed out after {second} s of activity");
    }
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    app.clock.advance(4);
    assert_eq!(signed_in_name(&app).await, None, "idle past the timeout ends the session");
    app.stop().await;
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    app.login("alice", ALICE_PASSWORD).await;
    let page = app.get("/").await.text().await.unwrap();
    let csrf = field_value(&page, "csrf").unwrap();
    let response = app.post_form("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("You are signed out"));
    assert_eq!(signed_in_name(&app).await, None);
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    assert!(active_sessions(&app, &alice, 1800).await.is_empty());
    assert!(
        app.state
            .store
            .list_audit(5)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "logout" && e.user_id.as_deref() == Some(alice.as_str()))
    );

    // GET /logout from this site or a typed address signs out; from another site it asks first.
    app.login("alice", ALICE_PASSWORD).await;
    let cross = app.http.get(app.url("/logout")).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(cross.status(), StatusCode::OK);
    assert!(cross.text().await.unwrap().contains("Do you want to sign out"));
    assert!(signed_in_name(&app).await.is_some(), "a cross-site link must not sign the user out");
    let typed = app.http.get(app.url("/logout")).header("sec-fetch-site", "none").send().await.unwrap();
    assert_eq!(typed.status(), StatusCode::OK);
    assert_eq!(signed_in_name(&app).await, None);
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_sign_out_forms_change_nothing() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    app.login("alice", ALICE_PASSWORD).await;
    let missing = app.post_form("/logout", &[]).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(missing.text().await.unwrap().contains("The sign-out form was incomplete."));
    let huge = "c".repeat(100 * 1024);
    assert_eq!(app.post_form("/logout", &[("csrf", &huge)]).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json = app.http.post(app.url("/logout")).json(&serde_json::json!({"csrf": "x"})).send().await.unwrap();
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(signed_in_name(&app).await.as_deref(), Some("Alice Example"), "the session survives bad sign-out posts");
    app.stop().await;
}

#[tokio::test]
async fn unknown_pages_and_methods_get_clear_errors() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("There is no page at this address."));
    let response = app.http.delete(app.url("/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    app.stop().await;
}
