//! The provider's lifecycle under stress and misuse: refreshes that fail without spending the
//! token, racing code replays, resources bound to the authorization, introspection limited to
//! the caller's audiences, clients removed with what they hold, throttled client
//! authentication, and pages that write nothing for anonymous visitors.

use std::sync::Arc;

use gatehouse::clock::ManualClock;
use gatehouse::store::ClientRecord;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    ALICE_PASSWORD, DEMO_CLIENT_SECRET, START, TestApp, TestDb, config_toml, field_value, load_config, location,
};
use crate::provider::{
    CLIENTS, SERVICE_SECRET, VERIFIER, authorize, demo_authorize, demo_code, first_party_tokens, json, params_of, redeem,
    sign_in_at, token_request, userinfo,
};

const DEMO: (&str, &str) = ("demo-app", DEMO_CLIENT_SECRET);
const RS_SECRET: &str = "resource-server-secret-0123";
const API: &str = "https://api.example";
const OTHER_API: &str = "https://other-api.example";

/// Next to the provider tests' clients: an app allowed two APIs and a resource server for one
/// of them that is not a gateway.
const MORE_CLIENTS: &str = r#"
[[clients]]
client_id = "two-apis"
client_secret = "two-apis-secret-0123456789"
redirect_uris = ["https://two.example/cb"]
scopes = ["openid", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
resources = ["https://api.example", "https://other-api.example"]
name = "Two APIs"

[[clients]]
client_id = "rs-api"
client_secret = "resource-server-secret-0123"
scopes = ["api:read"]
grant_types = ["client_credentials"]
resources = ["https://api.example"]
"#;

async fn start(db: &TestDb, extra: &str) -> TestApp {
    TestApp::start_with(db, &format!("{extra}\n{CLIENTS}\n{MORE_CLIENTS}")).await
}

async fn refresh_with(app: &TestApp, client: (&str, &str), token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    form.extend_from_slice(extra);
    token_request(app, Some(client), &form).await
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

async fn introspect_as(app: &TestApp, client: (&str, &str), token: &str) -> Value {
    let response = app
        .http
        .post(app.url("/oauth2/introspect"))
        .basic_auth(client.0, Some(client.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn demo_tokens(app: &TestApp) -> Value {
    let code = demo_code(app, &[]).await;
    let response = redeem(app, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_refresh_token_usable() {
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let tokens = demo_tokens(&app).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // Each of these is refused after the token was found and before anything was spent.
    let refused = [
        (vec![("resource", API)], "invalid_target"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("resource", "not a uri")], "invalid_target"),
    ];
    for (extra, code) in refused {
        let (status, error) = error_of(refresh_with(&app, DEMO, refresh, &extra).await).await;
        assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, code), "{extra:?}");
    }
    // The client's ordinary retry works, and the session and grant are intact.
    let retried = refresh_with(&app, DEMO, refresh, &[]).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let next = json(retried).await;
    assert_eq!(introspect_as(&app, ("service", SERVICE_SECRET), next["refresh_token"].as_str().unwrap()).await["active"], true);
    assert_eq!(introspect_as(&app, ("service", SERVICE_SECRET), next["access_token"].as_str().unwrap()).await["active"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_racing_its_redemption_revokes_the_winner() {
    for backend in ["sqlite", "postgres"] {
        let db = if backend == "sqlite" {
            TestDb::sqlite()
        } else {
            match TestDb::postgres().await {
                Some(db) => db,
                None => continue,
            }
        };
        let app = start(&db, "").await;
        for round in 0..15 {
            let code = demo_code(&app, &[]).await;
            let (first, second) = tokio::join!(redeem(&app, &code), redeem(&app, &code));
            let mut statuses = [first.status(), second.status()];
            statuses.sort();
            assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST], "{backend} round {round}");
            let winner = if first.status() == StatusCode::OK { json(first).await } else { json(second).await };
            for token in ["access_token", "refresh_token"] {
                let seen = introspect_as(&app, ("service", SERVICE_SECRET), winner[token].as_str().unwrap()).await;
                assert_eq!(seen["active"], false, "{backend} round {round}: the {token} issued from a replayed code");
            }
        }
        app.stop().await;
    }
}

/// Two nodes on one database; node B's clock is set by hand.
async fn two_nodes(db: &TestDb) -> (TestApp, TestApp) {
    let node_a = start(db, "").await;
    let config = load_config(db.dir.path(), &config_toml(&db.url, &format!("\n{CLIENTS}\n{MORE_CLIENTS}")));
    let node_b = TestApp::start_config(config, std::sync::Arc::new(gatehouse::clock::ManualClock::new(START))).await;
    (node_a, node_b)
}

/// Introspection reads revocations from each node's copy of the list: a revocation applies at
/// once on the node that made it and within 2 seconds on the others.
#[tokio::test]
async fn a_revoked_access_token_is_inactive_at_once_here_and_within_two_seconds_elsewhere() {
    let db = TestDb::sqlite();
    let (node_a, node_b) = two_nodes(&db).await;
    let service = ("service", SERVICE_SECRET);
    let access = demo_tokens(&node_a).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect_as(&node_b, service, &access).await["active"], true);

    let revoked = node_a.http.post(node_a.url("/oauth2/revoke")).basic_auth(DEMO.0, Some(DEMO.1)).form(&[("token", &access)]);
    assert_eq!(revoked.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(introspect_as(&node_a, service, &access).await["active"], false, "at once on the node that revoked it");
    assert_eq!(introspect_as(&node_b, service, &access).await["active"], true, "node B answers from its copy, read this second");
    node_b.clock.advance(1);
    assert_eq!(
        introspect_as(&node_b, service, &access).await["active"],
        false,
        "node B reads the list again a second later, before its copy goes stale: within 2 s"
    );
    node_a.stop().await;
    node_b.stop().await;
}

/// Each node reads a client at most every 2 seconds: a client removed through another node
/// stops working here within 2 s. The copy is read again a second after it was read, by one
/// request, so it never goes stale under load.
#[tokio::test]
async fn a_client_removed_elsewhere_stops_within_two_seconds() {
    let db = TestDb::sqlite();
    let (node_a, node_b) = two_nodes(&db).await;
    let grant =
        || token_request(&node_b, Some(("rs-api", "resource-server-secret-0123")), &[("grant_type", "client_credentials")]);
    assert_eq!(grant().await.status(), StatusCode::OK);

    node_a.state.store.delete_client("rs-api", START, gatehouse::session::public_sid).await.unwrap();
    assert_eq!(grant().await.status(), StatusCode::OK, "node B answers from its copy, read this second");
    node_b.clock.advance(1);
    assert_eq!(grant().await.status(), StatusCode::UNAUTHORIZED, "read again a second later: within 2 s");
    assert_eq!(grant().await.status(), StatusCode::UNAUTHORIZED, "the copy is gone, not served to the next request");
    node_b.clock.advance(1);
    assert_eq!(grant().await.status(), StatusCode::UNAUTHORIZED, "and not back later");
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn a_code_is_redeemed_only_for_the_resource_it_was_authorized_for() {
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let pairs = demo_authorize(&[
        ("client_id", "two-apis"),
        ("redirect_uri", "https://two.example/cb"),
        ("scope", "openid offline_access"),
        ("resource", API),
    ]);
    let consent = sign_in_at(&app, authorize(&app, &pairs).await, "alice", ALICE_PASSWORD).await;
    let page = consent.text().await.unwrap();
    assert!(page.contains(&format!("The access is for <strong>{API}</strong> only")), "{page}");
    let decided = app
        .post_form(
            "/oauth2/consent",
            &[
                ("csrf", &field_value(&page, "csrf").unwrap()),
                ("request", &field_value(&page, "request").unwrap()),
                ("decision", "allow"),
            ],
        )
        .await;
    let code = params_of(&location(&decided))["code"].clone();
    let client = ("two-apis", "two-apis-secret-0123456789");
    let form = |resource: &'static str| {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://two.example/cb"),
            ("code_verifier", VERIFIER),
            ("resource", resource),
        ]
    };
    // The client may use the other API, but the user did not authorize it for this code.
    let (status, error) = error_of(token_request(&app, Some(client), &form(OTHER_API)).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_target"));
    let tokens = json(token_request(&app, Some(client), &form(API)).await).await;
    let refresh = tokens["refresh_token"].as_str().expect("the refused attempt left the code usable");
    let (status, error) = error_of(refresh_with(&app, client, refresh, &[("resource", OTHER_API)]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_target"));
    let refreshed = json(refresh_with(&app, client, refresh, &[("resource", API)]).await).await;
    let claims = introspect_as(&app, ("rs-api", RS_SECRET), refreshed["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], API);
    app.stop().await;
}

#[tokio::test]
async fn introspection_answers_only_for_the_callers_own_audiences() {
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let demo = demo_tokens(&app).await;
    let access = demo["access_token"].as_str().unwrap();
    let refresh = demo["refresh_token"].as_str().unwrap();
    let rs = ("rs-api", RS_SECRET);

    // The resource server learns nothing about a token for another audience.
    assert_eq!(introspect_as(&app, rs, access).await, serde_json::json!({"active": false}));
    assert_eq!(introspect_as(&app, rs, refresh).await, serde_json::json!({"active": false}));
    // The client the token is for, and a gateway marked introspect_any, do.
    assert_eq!(introspect_as(&app, DEMO, access).await["active"], true);
    assert_eq!(introspect_as(&app, DEMO, refresh).await["active"], true);
    assert_eq!(introspect_as(&app, ("service", SERVICE_SECRET), access).await["username"], "alice");

    // A token for the API the resource server serves.
    let minted = token_request(
        &app,
        Some(("web-app", "web-app-secret-0123456789")),
        &[("grant_type", "client_credentials"), ("scope", "api:read"), ("resource", API)],
    )
    .await;
    let api_token = json(minted).await["access_token"].as_str().unwrap().to_owned();
    let seen = introspect_as(&app, rs, &api_token).await;
    assert_eq!((seen["active"].clone(), seen["aud"].clone()), (Value::Bool(true), Value::from(API)));
    app.stop().await;
}

#[tokio::test]
async fn removing_a_client_revokes_its_tokens_and_a_new_registration_revives_nothing() {
    let db = TestDb::sqlite();
    let (uri, receiver) = crate::backchannel::start_receiver(0).await;
    let rsa_app = format!(
        r#"
[[clients]]
client_id = "rsa-app"
client_secret = "rsa-app-secret-0123456789"
redirect_uris = ["https://rsa.example/cb"]
scopes = ["openid", "offline_access"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
first_party = true
signing_alg = "RS256"
backchannel_logout_uri = "{uri}"
"#
    );
    let without = CLIENTS.replace("client_id = \"rsa-app\"", "client_id = \"rsa-app-old\"");
    let with_it = format!("{without}\n{rsa_app}");
    let clock = Arc::new(ManualClock::new(START));
    let config = |clients: &str| load_config(db.dir.path(), &config_toml(&db.url, clients));
    let app = TestApp::start_config(config(&with_it), clock.clone()).await;
    let client = ("rsa-app", "rsa-app-secret-0123456789");
    let tokens = first_party_tokens(&app, client, "https://rsa.example/cb", "openid offline_access").await;
    let machine = json(token_request(&app, Some(client), &[("grant_type", "client_credentials")]).await).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let machine_access = machine["access_token"].as_str().unwrap().to_owned();
    app.stop().await;

    // The file drops the client: the next start removes it, with everything it was issued.
    clock.advance(5);
    let app = TestApp::start_config(config(&without), clock.clone()).await;
    let gateway = ("service", SERVICE_SECRET);
    for token in [&access, &refresh, &machine_access] {
        assert_eq!(introspect_as(&app, gateway, token).await["active"], false);
    }
    assert_eq!(userinfo(&app, &access).await.status(), StatusCode::UNAUTHORIZED);
    // The app is told by back-channel logout that its user's session there is over.
    crate::backchannel::wait_for(&receiver, 1).await;
    let logout_token = receiver.lock().unwrap().tokens[0].clone();
    let claims = crate::provider::verify_jwt(&app, &logout_token, "rsa-app").await;
    assert!(claims["events"].get("http://schemas.openid.net/event/backchannel-logout").is_some());
    app.stop().await;

    // Registered again under the same id: nothing issued before comes back to life.
    clock.advance(5);
    let app = TestApp::start_config(config(&with_it), clock.clone()).await;
    for token in [&access, &refresh, &machine_access] {
        assert_eq!(introspect_as(&app, gateway, token).await["active"], false, "revived after re-registration");
    }
    let (status, error) = error_of(refresh_with(&app, client, &refresh, &[]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    app.stop().await;
}

#[tokio::test]
async fn a_refresh_is_narrowed_to_the_scopes_the_client_still_has() {
    let db = TestDb::sqlite();
    let clock = Arc::new(ManualClock::new(START));
    let app = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, "")), clock.clone()).await;
    let tokens = demo_tokens(&app).await;
    assert_eq!(tokens["scope"], "openid profile email groups offline_access");
    app.stop().await;

    let narrowed = config_toml(&db.url, "").replace(
        r#"scopes = ["openid", "profile", "email", "groups", "offline_access"]"#,
        r#"scopes = ["openid", "offline_access"]"#,
    );
    let app = TestApp::start_config(load_config(db.dir.path(), &narrowed), clock).await;
    let refreshed = json(refresh_with(&app, DEMO, tokens["refresh_token"].as_str().unwrap(), &[]).await).await;
    assert_eq!(refreshed["scope"], "openid offline_access");
    let id_token = crate::provider::verify_jwt(&app, refreshed["id_token"].as_str().unwrap(), "demo-app").await;
    assert!(id_token.get("email").is_none() && id_token.get("groups").is_none(), "{id_token}");
    let info = json(userinfo(&app, refreshed["access_token"].as_str().unwrap()).await).await;
    assert!(info.get("email").is_none(), "{info}");
    app.stop().await;
}

#[tokio::test]
async fn a_public_client_gets_no_client_credentials_token_even_if_recorded_so() {
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let public_machine = ClientRecord {
        client_id: "public-machine".into(),
        secret_hash: None,
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        scopes: vec!["api:read".into()],
        grant_types: vec!["client_credentials".into()],
        name: "Public machine".into(),
        first_party: false,
        signing_alg: "ES256".into(),
        access_token_lifetime_secs: None,
        issue_refresh_token: false,
        default_audience: None,
        resources: vec![],
        backchannel_logout_uri: None,
        introspect_any: false,
        managed_by_config: false,
        created_at: START,
        updated_at: START,
        version: 1,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        access: Default::default(),
        portal: Default::default(),
    };
    app.state.store.upsert_client(&public_machine).await.unwrap();
    let response = token_request(
        &app,
        None,
        &[("grant_type", "client_credentials"), ("client_id", "public-machine"), ("scope", "api:read")],
    )
    .await;
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "unauthorized_client"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_reuse_grace_a_rotated_token_gets_the_same_successor() {
    let db = TestDb::sqlite();
    let app = start(&db, "[tokens]\nrefresh_token_reuse_grace_secs = 30").await;
    let tokens = demo_tokens(&app).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // Two tabs at once: both succeed, with one successor.
    let (a, b) = tokio::join!(refresh_with(&app, DEMO, refresh, &[]), refresh_with(&app, DEMO, refresh, &[]));
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let (a, b) = (json(a).await, json(b).await);
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_ne!(a["access_token"], b["access_token"]);
    let successor = a["refresh_token"].as_str().unwrap();
    assert_ne!(successor, refresh);
    // A third try within the grace (a lost response, retried) still gets the same successor.
    app.clock.advance(29);
    let retried = json(refresh_with(&app, DEMO, refresh, &[]).await).await;
    assert_eq!(retried["refresh_token"], successor);

    // Once the successor is used, or the grace is over, the old token is reuse.
    let next = json(refresh_with(&app, DEMO, successor, &[]).await).await;
    let (status, error) = error_of(refresh_with(&app, DEMO, refresh, &[]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    let gateway = ("service", SERVICE_SECRET);
    assert_eq!(introspect_as(&app, gateway, next["refresh_token"].as_str().unwrap()).await["active"], false, "family revoked");
    app.stop().await;

    // Strict by default: no grace, the second presentation revokes.
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let tokens = demo_tokens(&app).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(refresh_with(&app, DEMO, refresh, &[]).await.status(), StatusCode::OK);
    assert_eq!(refresh_with(&app, DEMO, refresh, &[]).await.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn a_machine_client_needs_no_redirect_uris() {
    let db = TestDb::sqlite();
    let app = start(&db, "").await;
    let minted = token_request(&app, Some(("rs-api", RS_SECRET)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(minted.status(), StatusCode::OK);
    app.stop().await;

    let needs_one = config_toml(&db.url, "").replace("redirect_uris = [\"http://localhost:3000/callback\"]\n", "");
    let err = gatehouse::config::load(&crate::helpers::write_config(db.dir.path(), &needs_one), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration key `clients[0] (client_id = \"demo-app\").redirect_uris`: at least one redirect URI is required for the authorization_code grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_client_authentication_is_throttled_and_argon2_runs_a_bounded_number_at_once() {
    let db = TestDb::sqlite();
    // alice's password hash stands in for a client secret hash (argon2id, 19 MiB).
    let hash = crate::helpers::ALICE_HASH;
    let hashed_clients: String = (0..48)
        .map(|i| {
            format!(
                "\n[[clients]]\nclient_id = \"hashed-{i}\"\nclient_secret_hash = \"{hash}\"\nscopes = [\"api:read\"]\ngrant_types = [\"client_credentials\"]\n"
            )
        })
        .collect();
    let extra = format!("[client_auth]\nmax_failures_per_client = 3\nmax_failures_per_ip = 200\n{hashed_clients}");
    let app = TestApp::start_with(&db, &extra).await;
    let grant = [("grant_type", "client_credentials")];

    // 48 wrong secrets at once, each for its own client: argon2 runs at most once per core.
    let attempts: Vec<_> = (0..48)
        .map(|i| {
            let request =
                app.http.post(app.url("/oauth2/token")).basic_auth(format!("hashed-{i}"), Some("wrong-secret")).form(&grant);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(app.state.provider.hashing.peak() <= cores, "{} argon2 checks ran at once", app.state.provider.hashing.peak());

    // A client that authenticated keeps working while someone else's guesses have it throttled.
    let right = ("hashed-0", crate::helpers::ALICE_PASSWORD);
    assert_eq!(token_request(&app, Some(right), &grant).await.status(), StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(token_request(&app, Some(("hashed-0", "guess")), &grant).await.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = token_request(&app, Some(("hashed-0", "guess")), &grant).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: i64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    assert_eq!(json(throttled).await["error"], "invalid_client");
    assert_eq!(token_request(&app, Some(right), &grant).await.status(), StatusCode::OK, "the remembered secret still works");
    // An unknown client id is counted like any other.
    for _ in 0..3 {
        token_request(&app, Some(("nobody", "guess")), &grant).await;
    }
    assert_eq!(token_request(&app, Some(("nobody", "guess")), &grant).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // The window ends.
    app.clock.advance(301);
    assert_eq!(token_request(&app, Some(("hashed-0", "guess")), &grant).await.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn anonymous_pages_write_nothing_and_sign_in_starts_are_counted_per_address() {
    let db = TestDb::sqlite();
    let app = start(&db, "[login]\nmax_starts_per_ip_per_minute = 5").await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let rows = |table: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&pool).await.unwrap() }
    };
    let before = (rows("tower_sessions").await, rows("single_use").await);
    for _ in 0..50 {
        let browser = TestApp::handle(&app);
        let page = browser.get("/login").await;
        assert_eq!(page.status(), StatusCode::OK);
    }
    assert_eq!((rows("tower_sessions").await, rows("single_use").await), before, "fifty anonymous login pages wrote nothing");

    // Starting a sign-in stores the request until it completes: five a minute from one address.
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    for i in 0..5 {
        let browser = TestApp::handle(&app);
        let started = authorize(&browser, &demo_authorize(&[])).await;
        assert!(location(&started).starts_with("/login?req="), "start {i}");
    }
    let refused = authorize(&TestApp::handle(&app), &demo_authorize(&[])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "60");
    // A signed-in browser stores nothing to continue, so it is not counted.
    let code = demo_code(&app, &[]).await;
    assert!(!code.is_empty());
    app.clock.advance(60);
    let next_minute = authorize(&TestApp::handle(&app), &demo_authorize(&[])).await;
    assert!(location(&next_minute).starts_with("/login?req="));
    app.stop().await;
}

#[tokio::test]
async fn metrics_move_to_their_own_listener_when_configured() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, "metrics_listen = \"127.0.0.1:0\"").await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND, "not on the public listener");
    let metrics_base = app.metrics_base.clone().expect("a metrics listener");
    let scraped = reqwest::get(format!("{metrics_base}/metrics")).await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("gatehouse_"));
    assert_eq!(
        reqwest::get(format!("{metrics_base}/login")).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "only metrics there"
    );
    app.stop().await;

    let app = TestApp::start(&TestDb::sqlite()).await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::OK, "without it, metrics stay on the main listener");
    assert!(app.metrics_base.is_none());
    app.stop().await;
    let same = load_config_error(&db, "listen = \"127.0.0.1:9555\"\nmetrics_listen = \"127.0.0.1:9555\"");
    assert_eq!(same, "configuration key `metrics_listen`: must differ from `listen`");
}

fn load_config_error(db: &TestDb, extra: &str) -> String {
    let text = config_toml(&db.url, extra).replace("listen = \"127.0.0.1:0\"\n", "");
    gatehouse::config::load(&crate::helpers::write_config(db.dir.path(), &text), &[]).unwrap_err().to_string()
}
