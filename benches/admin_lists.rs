//! The admin lists at scale: user search among 100,000 users, and the sessions page with
//! 10,000 active sessions, through the real application on loopback (admin API and console).
//! Latency is per request, one request at a time, after a warm-up. Run:
//! `cargo bench --bench admin_lists` (SQLite), or with `BENCH_DATABASE_URL=postgres://…/db`
//! (an empty database it may fill).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::clock::ManualClock;

const USERS: i64 = 100_000;
const SESSIONS: i64 = 10_000;
const REQUESTS: usize = 200;
/// 2026-11-22T00:00:00Z, the clock of the run.
const NOW: i64 = 1_795_305_600;
const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ALICE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$uVHQekRhPbu6UhtrGd89bg$wFZw5yhno320bIS1oN5yLa67qUxkZyABA70reR9tS8A";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

/// Users `u1`…, named `user1`…, with a tenth of them at each of ten domains; the first
/// `SESSIONS` of them signed in.
const SEED: [&str; 2] = [
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
     INSERT INTO users (id, username, email, email_verified, display_name, groups_json, disabled, created_at, updated_at) \
     SELECT 'u' || i, 'user' || i, 'user' || i || '@dept' || (i % 10) || '.example.com', TRUE, 'Person ' || i, '[]', FALSE, \
     1795305600, 1795305600 FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
     INSERT INTO sso_sessions (id, user_id, connector_id, auth_time, last_seen_at, expires_at, revoked_at, ip, user_agent) \
     SELECT 's' || i, 'u' || i, 'local', 1795305600 - i, 1795305600, 1795305600 + 36000, NULL, '192.0.2.1', \
     'Mozilla/5.0 (X11; Linux x86_64) bench' FROM n",
];

async fn run() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url =
        std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.path().display()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let config_text = format!(
        r#"
issuer = "{base}"
database_url = "{database_url}"
key_encryption_key = "{KEK}"
log_format = "json"

[admin]
groups = ["admins"]

[[clients]]
client_id = "automation"
client_secret = "automation-secret-0123456789"
grant_types = ["client_credentials"]
scopes = ["gatehouse:admin"]
default_audience = "{base}/admin/api"

[[connectors]]
id = "local"
type = "local"
name = "Local accounts"

[[connectors.users]]
username = "alice"
password_hash = "{ALICE_HASH}"
groups = ["admins"]
"#
    );
    let config_path = dir.path().join("gatehouse.toml");
    std::fs::write(&config_path, config_text).expect("config");
    let config = gatehouse::config::load(&config_path, &[]).expect("valid config");

    let seeded = Instant::now();
    let (store, _) =
        gatehouse::startup::open_database(&database_url, gatehouse::store::SqliteDurability::default()).await.expect("database");
    drop(store);
    seed(&database_url).await;
    println!(
        "seeded {USERS} users and {SESSIONS} sessions in {:.1} s ({database_url_kind})",
        seeded.elapsed().as_secs_f64(),
        database_url_kind = if database_url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
    );

    let app = gatehouse::startup::build(config, Arc::new(ManualClock::new(NOW))).await.expect("app");
    tokio::spawn(app.serve(listener, std::future::pending()));
    let http = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let token: serde_json::Value = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth("automation", Some("automation-secret-0123456789"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = token["access_token"].as_str().expect("access token").to_owned();
    sign_in_alice(&http, &base).await;

    let searches: Vec<String> = (0..REQUESTS).map(|i| format!("{}", (i * 7919 + 13) % 100_000)).collect();
    report(
        "API: user search, q = a number (substring of username/email/name)",
        &http,
        &token,
        searches.iter().map(|q| format!("{base}/admin/api/v1/users?q={q}")),
    )
    .await;
    report(
        "API: user search, q = a domain (10,000 matches, first page)",
        &http,
        &token,
        (0..REQUESTS).map(|i| format!("{base}/admin/api/v1/users?q=dept{}", i % 10)),
    )
    .await;
    report(
        "API: user search, no match (whole table scanned)",
        &http,
        &token,
        (0..REQUESTS).map(|i| format!("{base}/admin/api/v1/users?q=nobody{i}")),
    )
    .await;
    report("Console: /admin/users?q= a number", &http, "", searches.iter().map(|q| format!("{base}/admin/users?q={q}"))).await;
    report(
        "API: sessions, first page (50 of 10,000)",
        &http,
        &token,
        (0..REQUESTS).map(|_| format!("{base}/admin/api/v1/sessions")),
    )
    .await;
    let deep = deep_cursor(&http, &base, &token).await;
    report(
        "API: sessions, page 100 (rows 4,951-5,000)",
        &http,
        &token,
        (0..REQUESTS).map(|_| format!("{base}/admin/api/v1/sessions?next={deep}")),
    )
    .await;
    report("Console: /admin/sessions (50 of 10,000)", &http, "", (0..REQUESTS).map(|_| format!("{base}/admin/sessions"))).await;
    report("Console: /admin overview (counts over 100,000 users)", &http, "", (0..REQUESTS).map(|_| format!("{base}/admin")))
        .await;
}

async fn seed(database_url: &str) {
    if database_url.starts_with("sqlite") {
        let store = gatehouse::store::SqliteStore::connect(database_url, gatehouse::store::SqliteDurability::default())
            .await
            .expect("sqlite");
        for statement in SEED {
            sqlx::query(statement).execute(store.pool()).await.expect("seed");
        }
    } else {
        let store = gatehouse::store::PostgresStore::connect(database_url).await.expect("postgres");
        for statement in SEED {
            sqlx::query(statement).execute(store.pool()).await.expect("seed");
        }
        sqlx::query("ANALYZE").execute(store.pool()).await.expect("analyze");
    }
}

async fn sign_in_alice(http: &reqwest::Client, base: &str) {
    let page = http.get(format!("{base}/login")).send().await.expect("login page").text().await.expect("login html");
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("csrf field") + marker.len();
    let csrf = page[start..].split('"').next().expect("csrf value").to_owned();
    let signed_in = http
        .post(format!("{base}/login"))
        .form(&[("csrf", csrf.as_str()), ("connector", "local"), ("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .expect("sign-in");
    assert_eq!(signed_in.status(), 303, "alice signs in");
}

/// The cursor of the sessions list's 100th page.
async fn deep_cursor(http: &reqwest::Client, base: &str, token: &str) -> String {
    let mut next = String::new();
    for _ in 0..99 {
        let page: serde_json::Value = http
            .get(format!("{base}/admin/api/v1/sessions?next={next}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("page json");
        next = page["next"].as_str().expect("a next page").to_owned();
    }
    next
}

/// Requests each URL once, after 20 warm-up requests; prints p50, p99 and the slowest.
async fn report(label: &str, http: &reqwest::Client, token: &str, urls: impl Iterator<Item = String>) {
    let urls: Vec<String> = urls.collect();
    let get = |url: &str| {
        let request = http.get(url);
        if token.is_empty() { request } else { request.bearer_auth(token) }
    };
    for url in urls.iter().take(20) {
        get(url).send().await.expect("warm-up").bytes().await.expect("body");
    }
    let mut times: Vec<Duration> = Vec::with_capacity(urls.len());
    let mut bytes = 0;
    for url in &urls {
        let started = Instant::now();
        let response = get(url).send().await.expect("request");
        assert!(response.status().is_success(), "{label}: {url} answered {}", response.status());
        bytes += response.bytes().await.expect("body").len();
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0;
    println!(
        "{label}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests, {} KB/response)",
        at(0.5),
        at(0.99),
        at(1.0),
        times.len(),
        bytes / times.len() / 1024
    );
}
