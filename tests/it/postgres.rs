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
        reqwest::Client::new().post(node_b.url("/logout")).header("cookie", cookie).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(node_a.get("/").await.status(), StatusCode::SEE_OTHER);
    node_b.stop().await;
    node_a.stop().await;
}
