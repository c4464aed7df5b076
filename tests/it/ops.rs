//! Health, readiness, metrics and the headers every page carries.

use reqwest::StatusCode;

use crate::helpers::{ALICE_PASSWORD, TestApp, TestDb};

#[tokio::test]
async fn health_and_readiness() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let db = TestDb::postgres().await;
    let Some(db) = db else { return };
    let app = TestApp::start(&db).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // Drop the database under the running app: readiness must notice.
    let base = std::env::var("TEST_DATABASE_URL").unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.unwrap();
    let name = url::Url::parse(&db.url).unwrap().path().trim_start_matches('/').to_owned();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "the process itself is still up");
    // A page that needs the database fails cleanly, with nothing internal in the body.
    let page = app.get("/login").await;
    assert_eq!(page.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = page.text().await.unwrap();
    assert!(body.contains("Something went wrong"));
    assert!(!body.to_lowercase().contains("database") && !body.contains("sqlx") && !body.contains("gatehouse_test_"), "{body}");
}

#[tokio::test]
async fn metrics_count_requests_and_logins() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    app.login("alice", ALICE_PASSWORD).await;
    TestApp::handle(&app).login("alice", "wrong").await;
    app.get("/no-such-page").await;
    // Input must not mint new series: invented methods and connector ids get fixed labels.
    let method = reqwest::Method::from_bytes(b"INVENTED").unwrap();
    app.http.request(method, app.url("/anything")).send().await.unwrap();
    let other = TestApp::handle(&app);
    let csrf = other.csrf("/login").await;
    other.post_form("/login", &[("csrf", &csrf), ("connector", "made-up-connector"), ("username", "a"), ("password", "b")]).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for expected in [
        r#"gatehouse_logins_total{connector="local",outcome="success"} 1"#,
        r#"gatehouse_logins_total{connector="local",outcome="invalid_credentials"} 1"#,
        r#"gatehouse_http_requests_total{route="/login",method="POST",status="303"} 1"#,
        r#"gatehouse_http_requests_total{route="/login",method="POST",status="200"} 1"#,
        r#"gatehouse_http_requests_total{route="/login",method="GET",status="200"} 3"#,
        r#"gatehouse_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"gatehouse_http_request_duration_seconds_count{route="/login",method="POST",status="303"} 1"#,
        "# TYPE gatehouse_tokens_issued counter",
        r#"gatehouse_http_requests_total{route="unmatched",method="OTHER",status="404"} 1"#,
        r#"gatehouse_logins_total{connector="unknown",outcome="unknown_connector"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("INVENTED") && !text.contains("made-up-connector"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    for path in ["/login", "/no-such-page", "/logout"] {
        let response = app.get(path).await;
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: no inline script or style");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(headers.contains_key("x-request-id"), "{path}");
    }
    let page = app.get("/login").await.text().await.unwrap();
    assert!(!page.contains("<script"), "pages carry no script at all");
    assert!(!page.contains("style="), "no inline styles: the CSP would block them");
    let css = app.get("/static/gatehouse.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    app.stop().await;
}

#[tokio::test]
async fn the_background_task_deletes_expired_rows() {
    use gatehouse::clock::Clock;
    use gatehouse::store::SingleUseKind;
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "cleanup_interval_secs = 1").await;
    let store = app.state.store.clone();
    let now = app.clock.now();
    store.put_single_use(SingleUseKind::AuthorizationCode, "stale", "p", now + 5).await.unwrap();
    store.put_single_use(SingleUseKind::AuthorizationCode, "fresh", "p", now + 500).await.unwrap();
    app.clock.advance(10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Taking would delete it; the only other way out of the table is the cleanup task.
    while store.put_single_use(SingleUseKind::AuthorizationCode, "stale", "p", now + 5).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the expired row was never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        store.put_single_use(SingleUseKind::AuthorizationCode, "fresh", "p", now + 500).await.is_err(),
        "an unexpired row is kept"
    );
    app.stop().await;
}
