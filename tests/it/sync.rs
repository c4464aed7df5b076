//! Clients and connectors from the configuration are synced into the database at start-up.

use std::sync::Arc;

use gatehouse::clock::ManualClock;
use gatehouse::store::SessionQuery;

use crate::helpers::{DEMO_CLIENT_SECRET, START, TestApp, TestDb, client_record, config_toml, load_config};

#[tokio::test]
async fn configured_entries_are_synced_and_runtime_entries_survive_restarts() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let demo = app.state.store.get_client("demo-app").await.unwrap();
    assert!(demo.managed_by_config);
    let hash = demo.secret_hash.clone().unwrap();
    assert!(hash.starts_with("hmac-sha256:"), "client secrets are stored only as keyed hashes");
    assert!(!hash.contains(DEMO_CLIENT_SECRET));
    assert!(app.state.provider.secrets.verify_keyed(&hash, DEMO_CLIENT_SECRET));
    assert!(!app.state.provider.secrets.verify_keyed(&hash, "demo-app-secret-change-mE"));
    let connector = app.state.store.get_connector("local").await.unwrap();
    assert!(connector.managed_by_config);
    let first = app.state.store.list_audit(20).await.unwrap();
    let synced = |audit: &[gatehouse::store::AuditEvent], client: &str| {
        audit
            .iter()
            .filter(|e| e.kind == "config_change" && e.client_id.as_deref() == Some(client))
            .filter_map(|e| e.detail.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(synced(&first, "demo-app"), ["created"], "a client new to the database is created, not updated");
    app.state.store.upsert_client(&client_record("created-at-runtime", false)).await.unwrap();
    app.stop().await;

    // Restart with the same file: nothing is rewritten, the runtime client stays.
    let clock = Arc::new(ManualClock::new(START + 100));
    let app = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, "")), clock.clone()).await;
    let again = app.state.store.get_client("demo-app").await.unwrap();
    assert_eq!(again.secret_hash.as_deref(), Some(hash.as_str()), "an unchanged secret keeps its hash");
    assert_eq!(again.updated_at, START, "an unchanged entry is not rewritten");
    assert!(app.state.store.get_client("created-at-runtime").await.is_ok());
    app.stop().await;

    // Restart with the demo client renamed and the connector removed from the file.
    let text = config_toml(&db.url, "").replace("name = \"Demo App\"", "name = \"Renamed\"");
    let text = text[..text.find("[[connectors]]").unwrap()].to_owned();
    let app = TestApp::start_config(load_config(db.dir.path(), &text), clock).await;
    assert_eq!(app.state.store.get_client("demo-app").await.unwrap().name, "Renamed");
    assert!(app.state.store.get_connector("local").await.is_err(), "a connector dropped from the file is removed");
    assert!(app.state.store.get_client("created-at-runtime").await.is_ok(), "runtime entries are never removed by the file");
    let audit = app.state.store.list_audit(20).await.unwrap();
    assert!(audit.iter().any(|e| e.kind == "config_change"
        && e.connector_id.as_deref() == Some("local")
        && e.detail.as_deref() == Some("removed")));
    assert_eq!(synced(&audit, "demo-app"), ["updated", "created"], "the rename is an update (newest first)");
    app.stop().await;
}

#[tokio::test]
async fn users_the_file_disables_or_drops_lose_their_sessions_at_the_next_start() {
    use crate::helpers::{ALICE_PASSWORD, BOB_PASSWORD};
    use gatehouse::clock::Clock;
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let alice_browser = TestApp::handle(&app);
    let bob_browser = TestApp::handle(&app);
    assert_eq!(alice_browser.login("alice", ALICE_PASSWORD).await.status(), 303);
    assert_eq!(bob_browser.login("bob", BOB_PASSWORD).await.status(), 303);
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    let bob = app.state.store.find_linked_user_id("local", "bob").await.unwrap().unwrap();
    app.stop().await;

    // Alice is disabled in the file and bob is removed from it.
    let text = config_toml(&db.url, "").replacen("groups = [\"engineering\"]", "groups = [\"engineering\"]\ndisabled = true", 1);
    let bob_start = text.find("username = \"bob\"").unwrap();
    let bob_end = bob_start + text[bob_start..].find("[[connectors.users]]").unwrap();
    let text = format!("{}{}", &text[..bob_start], &text[bob_end..]).replacen(
        "[[connectors.users]]\n[[connectors.users]]",
        "[[connectors.users]]",
        1,
    );
    let clock = Arc::new(ManualClock::new(START + 10));
    let app = TestApp::start_config(load_config(db.dir.path(), &text), clock).await;
    let now = app.clock.now();
    let of = |user_id: &str| SessionQuery { user_id: Some(user_id.to_owned()), limit: 10, ..SessionQuery::default() };
    assert!(app.state.store.search_sso_sessions(&of(&alice), now, 1800).await.unwrap().is_empty(), "alice's session ended");
    assert!(app.state.store.search_sso_sessions(&of(&bob), now, 1800).await.unwrap().is_empty(), "bob's session ended");
    app.stop().await;
}

/// A user the file withdraws loses what apps hold: sessions end, grants are revoked, and the
/// account is disabled, so nothing comes back when the session rows are cleaned up.
#[tokio::test]
async fn withdrawing_a_user_in_the_file_revokes_their_tokens() {
    use crate::provider::{CLIENTS, demo_code, introspect, json, redeem};
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, CLIENTS).await;
    let tokens = json(redeem(&app, &demo_code(&app, &[]).await).await).await;
    app.stop().await;

    let withdrawn = config_toml(&db.url, CLIENTS).replace("username = \"alice\"\n", "username = \"alice\"\ndisabled = true\n");
    let clock = Arc::new(ManualClock::new(START + 10));
    let app = TestApp::start_config(load_config(db.dir.path(), &withdrawn), clock.clone()).await;
    // The session rows are cleaned up after their 10 hours; the 30-day grant stays, revoked.
    let report = app.state.store.delete_expired(START + 11 * 3600, 0).await.unwrap();
    assert_eq!((report.sessions, report.grants), (1, 0));
    assert_eq!(introspect(&app, tokens["refresh_token"].as_str().unwrap()).await["active"], false);
    assert_eq!(introspect(&app, tokens["access_token"].as_str().unwrap()).await["active"], false);
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    assert!(app.state.store.get_user(&alice).await.unwrap().disabled);
    app.stop().await;

    // Listed again: enabled again.
    let app = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, CLIENTS)), clock).await;
    assert!(!app.state.store.get_user(&alice).await.unwrap().disabled);
    app.stop().await;
}
