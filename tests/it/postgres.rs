//! The same broker, unchanged, on PostgreSQL; and two nodes sharing one database.

use reqwest::StatusCode;

use crate::helpers::{ALICE_PASSWORD, TestApp, TestDb, config_toml, load_config, location, set_cookie};

#[tokio::test]
async fn sign_in_works_on_postgres_and_the_session_is_shared_by_two_nodes() {
    let Some(db) = TestDb::postgres().await else { return };
    let node_a = TestApp::start(&db).await;
    let node_b = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, "")), node_a.clock.clone()).await;

    let response = node_a.login("alice", ALICE_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    let cookie = set_cookie(&response, "gatehouse_session").unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let form_cookie = set_cookie(&response, "gatehouse_session_csrf").unwrap();
    let both = format!("{cookie}; {}", form_cookie.split(';').next().unwrap());

    // The browser's cookie, sent to the other node, finds the same session there.
    let on_b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(node_b.url("/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), StatusCode::OK);
    assert!(on_b.text().await.unwrap().contains("Welcome, Alice Example"));

    // Signing out on node B ends the session for node A too.
    let page = node_a.get("/").await.text().await.unwrap();
    let csrf = crate::helpers::field_value(&page, "csrf").unwrap();
    let logout =
        reqwest::Client::new().post(node_b.url("/logout")).header("cookie", both).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(node_a.get("/").await.status(), StatusCode::SEE_OTHER);
    node_b.stop().await;
    node_a.stop().await;
}

/// The provider on PostgreSQL across two nodes: a code issued by one node is redeemed on the
/// other, refresh tokens rotate wherever they are presented, and reuse is caught across nodes.
#[tokio::test]
async fn the_provider_works_across_two_nodes_on_postgres() {
    use crate::helpers::DEMO_CLIENT_SECRET;
    use crate::provider::{CLIENTS, DEMO_REDIRECT, demo_code, introspect, json, redeem, token_request};
    let Some(db) = TestDb::postgres().await else { return };
    let node_a = TestApp::start_with(&db, CLIENTS).await;
    let node_b = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, CLIENTS)), node_a.clock.clone()).await;

    let code = demo_code(&node_a, &[]).await;
    let tokens = json(redeem(&node_b, &code).await).await;
    assert!(tokens["id_token"].as_str().is_some());
    assert_eq!(redeem(&node_a, &code).await.status(), StatusCode::BAD_REQUEST, "spent on the other node");
    assert_eq!(introspect(&node_a, tokens["access_token"].as_str().unwrap()).await["active"], false, "replay revoked the grant");

    let code = demo_code(&node_a, &[]).await;
    let tokens = json(redeem(&node_a, &code).await).await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", first)];
    let rotated = json(token_request(&node_b, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    assert_eq!(introspect(&node_a, rotated["refresh_token"].as_str().unwrap()).await["active"], true);
    let reused = token_request(&node_a, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(introspect(&node_b, rotated["refresh_token"].as_str().unwrap()).await["active"], false);
    let next = crate::provider::authorize(&node_a, &crate::provider::demo_authorize(&[])).await;
    assert!(!location(&next).starts_with(DEMO_REDIRECT), "reuse ended the session on every node");
    node_b.stop().await;
    node_a.stop().await;
}
