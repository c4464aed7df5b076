//! Test scaffolding: a real database per test, the real app on a free port, a cookie jar.

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse::access::{AccessPolicy, GroupsFilter, PortalEntry};
use gatehouse::clock::ManualClock;
use gatehouse::config::{self, Config};
use gatehouse::startup;
use gatehouse::store::{ClientRecord, Store};
use gatehouse::web::AppState;
use sqlx::Connection;

/// Passwords of the demo users; the hashes below are theirs.
pub const ALICE_PASSWORD: &str = "alice-password";
pub const BOB_PASSWORD: &str = "bob-password";
pub const CAROL_PASSWORD: &str = "carol-password";
pub const ALICE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$uVHQekRhPbu6UhtrGd89bg$wFZw5yhno320bIS1oN5yLa67qUxkZyABA70reR9tS8A";
pub const BOB_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c02eN0x2JPJ5qlgzxEJMQg$Hq8VjETeUpyCiLEl0keIVzLfcXXWJBKK7XHX6avxEyY";
pub const CAROL_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$97CVVflArc4Ne78cyfohSQ$B2rWPPeL01j/HhZkqF+RWLc8XQASrrP5dLcYFAT6HFQ";
pub const TEST_KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const DEMO_CLIENT_SECRET: &str = "demo-app-secret-change-me";
/// 2026-11-22T00:00:00Z
pub const START: i64 = 1_795_305_600;

/// A database that lives as long as the test: a temporary SQLite file, or a fresh PostgreSQL
/// database created next to `TEST_DATABASE_URL`.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/gatehouse.db", dir.path().display());
        Self { url, dir }
    }

    /// `None` when `TEST_DATABASE_URL` is unset (a plain `cargo test`); then an unreachable
    /// server fails the test. `TEST_POSTGRES=1` (set by `.ci/run`) makes PostgreSQL mandatory,
    /// so a CI run that lost its database URL fails instead of passing on SQLite alone.
    pub async fn postgres() -> Option<Self> {
        let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
            assert!(std::env::var_os("TEST_POSTGRES").is_none(), "TEST_POSTGRES is set but TEST_DATABASE_URL is not");
            eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL part of this test");
            return None;
        };
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("TEST_DATABASE_URL must reach PostgreSQL");
        let name = format!("gatehouse_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        Some(Self { url: url.to_string(), dir: tempfile::tempdir().unwrap() })
    }

    /// The store as the app opens it: connected and migrated.
    pub async fn open_store(&self) -> Arc<dyn Store> {
        startup::open_database(&self.url, gatehouse::store::SqliteDurability::Full).await.unwrap().0
    }
}

impl Drop for TestDb {
    /// Drops a PostgreSQL test database, closing whatever connections the test left open.
    fn drop(&mut self) {
        if !self.url.starts_with("postgres") {
            return;
        }
        let (Ok(base), Ok(url)) = (std::env::var("TEST_DATABASE_URL"), url::Url::parse(&self.url)) else { return };
        let name = url.path().trim_start_matches('/').to_owned();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

/// A client record as the admin side would create it; `managed` marks it as from the file.
pub fn client_record(id: &str, managed: bool) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        secret_hash: Some("$argon2id$hash".into()),
        redirect_uris: vec!["https://app.example/cb".into()],
        post_logout_redirect_uris: vec![],
        scopes: vec!["openid".into()],
        grant_types: vec!["authorization_code".into()],
        name: "App".into(),
        first_party: false,
        signing_alg: "ES256".into(),
        access_token_lifetime_secs: Some(300),
        issue_refresh_token: false,
        default_audience: Some("https://api.example".into()),
        resources: vec!["https://api.example".into()],
        backchannel_logout_uri: Some("https://app.example/bcl".into()),
        introspect_any: false,
        managed_by_config: managed,
        created_at: START,
        updated_at: START,
        version: 1,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        access: AccessPolicy {
            allowed_groups: vec!["staff".into()],
            allowed_connectors: vec!["local".into()],
            groups_claim_filter: Some(GroupsFilter::List(vec!["staff".into()])),
        },
        portal: PortalEntry {
            description: Some("Where the team writes things down".into()),
            logo_uri: Some("https://app.example/logo.png".into()),
            initiate_login_uri: Some("https://app.example/login".into()),
            launch_url: None,
            show_in_portal: true,
        },
    }
}

pub fn local_users_toml() -> String {
    format!(
        r#"
[[connectors]]
id = "local"
type = "local"
name = "Local accounts"

[[connectors.users]]
username = "alice"
password_hash = "{ALICE_HASH}"
email = "alice@example.com"
name = "Alice Example"
groups = ["engineering"]

[[connectors.users]]
username = "bob"
password_hash = "{BOB_HASH}"
email = "bob@example.com"
name = "Bob Example"
groups = ["sales"]

[[connectors.users]]
username = "carol"
password_hash = "{CAROL_HASH}"
name = "Carol Example"
disabled = true
"#
    )
}

/// A complete configuration for `db_url`; `extra` is appended as top-level TOML before the
/// tables, so it can set plain keys.
pub fn config_toml(db_url: &str, extra: &str) -> String {
    format!(
        r#"
issuer = "http://127.0.0.1:8080"
listen = "127.0.0.1:0"
database_url = "{db_url}"
key_encryption_key = "{TEST_KEK}"
{extra}

[[clients]]
client_id = "demo-app"
client_secret = "{DEMO_CLIENT_SECRET}"
redirect_uris = ["http://localhost:3000/callback"]
scopes = ["openid", "profile", "email", "groups", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
name = "Demo App"
first_party = true
{users}"#,
        users = local_users_toml()
    )
}

/// Warnings `gatehouse::upstream` logged, in every test of this binary so far. The first call
/// installs the capturing subscriber, so call it before what should warn.
pub fn upstream_warnings() -> String {
    #[derive(Clone)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    let captured = CAPTURED.get_or_init(|| {
        let captured = Captured(Arc::default());
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("gatehouse::upstream=warn"))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    });
    String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned()
}

pub fn write_config(dir: &std::path::Path, text: &str) -> PathBuf {
    let path = dir.join(format!("gatehouse-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load_config(dir: &std::path::Path, text: &str) -> Config {
    config::load(&write_config(dir, text), &[]).unwrap()
}

pub struct TestApp {
    pub base: String,
    /// The `metrics_listen` address, when the configuration sets one.
    pub metrics_base: Option<String>,
    pub http: reqwest::Client,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts the app on SQLite with the standard test configuration.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, "").await
    }

    pub async fn start_with(db: &TestDb, extra: &str) -> Self {
        let config = load_config(db.dir.path(), &config_toml(&db.url, extra));
        Self::start_config(config, Arc::new(ManualClock::new(START))).await
    }

    pub async fn start_config(config: Config, clock: Arc<ManualClock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config, clock).await
    }

    /// Serves on a listener bound beforehand, so the configuration can name its address.
    pub async fn start_on(listener: tokio::net::TcpListener, config: Config, clock: Arc<ManualClock>) -> Self {
        let app = startup::build(config, clock.clone()).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics_base = app.metrics_addr().map(|addr| format!("http://{addr}"));
        let state = app.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        Self { base, metrics_base, http: browser(), state, clock, shutdown: Some(tx), server: Some(server) }
    }

    /// A second browser (its own cookie jar) against the same running app.
    pub fn handle(app: &TestApp) -> TestApp {
        TestApp {
            base: app.base.clone(),
            metrics_base: app.metrics_base.clone(),
            http: browser(),
            state: app.state.clone(),
            clock: app.clock.clone(),
            shutdown: None,
            server: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url(path)).form(form).send().await.unwrap()
    }

    /// Opens the login page and returns its CSRF token.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await.text().await.unwrap();
        field_value(&page, "csrf").expect("the page has a CSRF field")
    }

    /// Signs in through the login form; returns the response to the form post.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        let csrf = self.csrf("/login").await;
        self.post_form("/login", &[("csrf", &csrf), ("connector", "local"), ("username", username), ("password", password)]).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// A client that keeps cookies and does not follow redirects, so each hop can be checked.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `value` of the input named `name` in an HTML page.
pub fn field_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// The value of the session cookie set by `response`, with its attributes.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The user's active SSO sessions (not revoked, not expired, seen within `idle_timeout_secs`).
pub async fn active_sessions(app: &TestApp, user_id: &str, idle_timeout_secs: i64) -> Vec<gatehouse::store::SsoSession> {
    let query = gatehouse::store::SessionQuery { user_id: Some(user_id.to_owned()), limit: 200, ..Default::default() };
    let now = gatehouse::clock::Clock::now(app.clock.as_ref());
    let found = app.state.store.search_sso_sessions(&query, now, idle_timeout_secs).await.unwrap();
    found.into_iter().map(|listing| listing.session).collect()
}

/// Starts a third-party harness process that prints one JSON line on stdout when ready, and
/// returns it with that line. A start that prints nothing within 30 s (a stuck runtime on a
/// loaded machine was seen once) is killed and tried again, so a test fails in bounded time
/// instead of hanging the run.
pub fn spawn_ready(what: &str, command: impl Fn() -> std::process::Command) -> (std::process::Child, serde_json::Value) {
    use std::io::{BufRead, BufReader};
    const ATTEMPTS: usize = 3;
    const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
    let mut last = String::from("nothing");
    for _ in 0..ATTEMPTS {
        let mut child = command()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(READY_WITHIN) {
            Ok(line) => match serde_json::from_str(&line) {
                Ok(ready) => return (child, ready),
                Err(_) => last = format!("{line:?}"),
            },
            Err(_) => last = String::from("nothing within 30 s"),
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{what} did not start in {ATTEMPTS} attempts; it printed {last}");
}
