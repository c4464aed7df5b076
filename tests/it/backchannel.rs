//! Back-channel logout against a real HTTP receiver: signed logout tokens, retries with
//! backoff, and a queue that survives a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use gatehouse::clock::{Clock, ManualClock};

use crate::helpers::{START, TestApp, TestDb, config_toml, load_config};
use crate::provider::{first_party_tokens, verify_jwt};

const BCL_APP: (&str, &str) = ("bcl-app", "bcl-app-secret-0123456789");

#[derive(Default)]
pub(crate) struct Receiver {
    /// How many requests to refuse before accepting.
    refuse: usize,
    /// Every logout token received, accepted or not.
    pub(crate) tokens: Vec<String>,
}

async fn receive(State(receiver): State<Arc<Mutex<Receiver>>>, Form(form): Form<Vec<(String, String)>>) -> StatusCode {
    let mut receiver = receiver.lock().unwrap();
    let token = form.into_iter().find(|(k, _)| k == "logout_token").map(|(_, v)| v).unwrap_or_default();
    receiver.tokens.push(token);
    if receiver.refuse > 0 {
        receiver.refuse -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

pub(crate) async fn start_receiver(refuse: usize) -> (String, Arc<Mutex<Receiver>>) {
    let receiver = Arc::new(Mutex::new(Receiver { refuse, tokens: Vec::new() }));
    let router = axum::Router::new().route("/logout", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/logout", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, receiver)
}

pub(crate) async fn wait_for(receiver: &Arc<Mutex<Receiver>>, count: usize) {
    for _ in 0..100 {
        if receiver.lock().unwrap().tokens.len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} deliveries, got {}", receiver.lock().unwrap().tokens.len());
}

/// Waits until the queued notification records `attempts` failed deliveries, so the test moves
/// the clock only after the retry is scheduled.
async fn wait_for_attempts(app: &TestApp, attempts: i64) {
    let pool = sqlx::SqlitePool::connect(app.state.config.database_url.expose()).await.unwrap();
    for _ in 0..100 {
        let recorded: Option<i64> =
            sqlx::query_scalar("SELECT attempts FROM backchannel_logouts").fetch_optional(&pool).await.unwrap();
        if recorded == Some(attempts) {
            pool.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the notification never recorded {attempts} failed attempts");
}

fn clients(receiver_url: &str) -> String {
    format!(
        r#"
[[clients]]
client_id = "bcl-app"
client_secret = "bcl-app-secret-0123456789"
redirect_uris = ["https://bcl.example/cb"]
scopes = ["openid", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
first_party = true
backchannel_logout_uri = "{receiver_url}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_reaches_the_app_through_failures_and_a_restart() {
    let (receiver_url, receiver) = start_receiver(1).await;
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &clients(&receiver_url)).await;
    let tokens = first_party_tokens(&app, BCL_APP, "https://bcl.example/cb", "openid offline_access").await;
    let id_token = verify_jwt(&app, tokens["id_token"].as_str().unwrap(), "bcl-app").await;

    let csrf = app.csrf("/").await;
    assert_eq!(app.post_form("/logout", &[("csrf", &csrf)]).await.status(), StatusCode::OK);
    wait_for(&receiver, 1).await;
    wait_for_attempts(&app, 1).await;
    app.stop().await;

    // The receiver refused the first attempt; the retry is due 10 s later, on whichever node
    // runs by then — here a fresh process over the same database.
    let clock = Arc::new(ManualClock::new(START + 5));
    let config = load_config(db.dir.path(), &config_toml(&db.url, &clients(&receiver_url)));
    let restarted = TestApp::start_config(config, clock.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.lock().unwrap().tokens.len(), 1, "not before the backoff has passed");
    clock.set(START + 11);
    wait_for(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.lock().unwrap().tokens.len(), 2, "delivered once, not again");

    let logout_token = receiver.lock().unwrap().tokens[1].clone();
    let header = jsonwebtoken::decode_header(&logout_token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let claims = verify_jwt(&restarted, &logout_token, "bcl-app").await;
    assert_eq!(claims["sub"], id_token["sub"]);
    assert_eq!(claims["sid"], id_token["sid"]);
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims.get("nonce").is_none(), "a logout token never carries a nonce");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(claims["iat"], START + 11);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_app_is_retried_with_growing_backoff() {
    let (receiver_url, receiver) = start_receiver(usize::MAX).await;
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &clients(&receiver_url)).await;
    first_party_tokens(&app, BCL_APP, "https://bcl.example/cb", "openid").await;
    // An app without a refresh token still hears of the logout after its access token expired
    // and the cleanup ran.
    app.clock.advance(700);
    app.state.store.delete_expired(app.clock.now(), 0).await.unwrap();
    assert!(app.get("/").await.status().is_success(), "still signed in");
    let csrf = app.csrf("/").await;
    app.post_form("/logout", &[("csrf", &csrf)]).await;
    wait_for(&receiver, 1).await;
    wait_for_attempts(&app, 1).await;
    app.clock.advance(10);
    wait_for(&receiver, 2).await;
    wait_for_attempts(&app, 2).await;
    app.clock.advance(10);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.lock().unwrap().tokens.len(), 2, "the second retry waits 20 s, not 10");
    app.clock.advance(10);
    wait_for(&receiver, 3).await;
    app.stop().await;
}
