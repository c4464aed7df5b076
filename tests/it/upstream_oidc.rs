//! Signing in through an upstream OpenID Provider.
//!
//! The happy paths run against panva's `oidc-provider` (a certified OpenID Provider nobody here
//! wrote), started by Node on loopback: `tests/upstream/oidc-op.mjs`. They run when
//! `tests/browser/node_modules` is installed; `TEST_BROWSER=1` (set by `.ci/run`) makes its
//! absence a failure. The bad cases need a provider that misbehaves on demand, so they use a
//! scripted one (`Rogue`, below) that serves discovery, keys and tokens exactly as told.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::clock::{Clock, ManualClock};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::helpers::{TEST_KEK, TestApp, TestDb, field_value, load_config, location, spawn_ready};
use crate::provider::{CHALLENGE, DEMO_REDIRECT, VERIFIER, params_of};

const APP_SECRET: &str = "demo-app-secret-change-me";
pub(crate) const UPSTREAM_SECRET: &str = "gatehouse-upstream-secret";

pub(crate) fn node_modules_available() -> bool {
    let ready = Path::new("tests/browser/node_modules/oidc-provider").exists();
    if !ready {
        assert!(
            std::env::var_os("TEST_BROWSER").is_none(),
            "TEST_BROWSER is set but tests/browser/node_modules is missing (see .ci/run)"
        );
        eprintln!("oidc-provider is not installed: skipping the upstream OpenID Provider test (see README)");
    }
    ready
}

/// The real upstream provider, killed when dropped.
pub(crate) struct UpstreamOp {
    pub(crate) issuer: String,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl UpstreamOp {
    pub(crate) fn start(config: &Value) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), config.to_string()).unwrap();
        let (child, ready) = spawn_ready("oidc-provider", || {
            let mut command = Command::new("node");
            command.arg("tests/upstream/oidc-op.mjs").arg(file.path());
            command
        });
        Self { issuer: ready["issuer"].as_str().unwrap().to_owned(), child, _config: file }
    }
}

impl Drop for UpstreamOp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real time: the upstream provider stamps its tokens with it.
pub(crate) fn real_now() -> i64 {
    #[allow(clippy::disallowed_methods)]
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn gatehouse_toml(base: &str, db: &TestDb, connectors: &str) -> String {
    format!(
        r#"
issuer = "{base}"
database_url = "{db}"
key_encryption_key = "{TEST_KEK}"
# These tests count and time the connectors' own fetches, and some publish the IdP's metadata
# after start-up; a background check would fetch on its own schedule.
connector_check_interval_secs = 0

[[clients]]
client_id = "demo-app"
client_secret = "{APP_SECRET}"
redirect_uris = ["{DEMO_REDIRECT}"]
scopes = ["openid", "profile", "email", "groups"]
name = "Demo App"
first_party = true

[[connectors]]
id = "local"
type = "local"
{connectors}"#,
        db = db.url
    )
}

pub(crate) async fn start_gatehouse(db: &TestDb, listener: tokio::net::TcpListener, connectors: &str) -> TestApp {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = load_config(db.dir.path(), &gatehouse_toml(&base, db, connectors));
    TestApp::start_on(listener, config, Arc::new(ManualClock::new(real_now()))).await
}

pub(crate) fn authorize_path(login_hint: Option<&str>) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", "demo-app"),
        ("redirect_uri", DEMO_REDIRECT),
        ("scope", "openid profile email groups"),
        ("state", "app-state"),
        ("nonce", "app-nonce"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    if let Some(hint) = login_hint {
        pairs.push(("login_hint", hint));
    }
    format!("/oauth2/authorize?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

/// Follows redirects (on any host) until one points at `stop` or a page is shown.
pub(crate) async fn follow_until(app: &TestApp, mut url: String, stop: &str) -> (String, reqwest::Response) {
    for _ in 0..20 {
        let response = app.http.get(&url).send().await.unwrap();
        if !response.status().is_redirection() {
            return (url, response);
        }
        let next = reqwest::Url::parse(&url).unwrap().join(&location(&response)).unwrap().to_string();
        if next.starts_with(stop) {
            return (next, response);
        }
        url = next;
    }
    panic!("too many redirects");
}

/// The `action` of the form on `page` whose action ends with `suffix`.
fn form_action(page: &str, suffix: &str) -> String {
    page.split("action=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .find(|action| action.ends_with(suffix))
        .unwrap_or_else(|| panic!("no form ending in {suffix} on {page}"))
        .to_owned()
}

/// Submits an upstream form (no fields but `fields`) and follows on until `stop`.
async fn submit(
    app: &TestApp,
    page_url: &str,
    page: &str,
    suffix: &str,
    fields: &[(&str, &str)],
    stop: &str,
) -> (String, reqwest::Response) {
    let action = reqwest::Url::parse(page_url).unwrap().join(&form_action(page, suffix)).unwrap();
    let posted = app.http.post(action.clone()).form(fields).send().await.unwrap();
    assert!(posted.status().is_redirection(), "{suffix} answered {}", posted.status());
    let next = action.join(&location(&posted)).unwrap().to_string();
    follow_until(app, next, stop).await
}

pub(crate) async fn redeem(app: &TestApp, code: &str) -> Value {
    let form =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", DEMO_REDIRECT), ("code_verifier", VERIFIER)];
    let response =
        app.http.post(app.url("/oauth2/token")).basic_auth("demo-app", Some(APP_SECRET)).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub(crate) async fn verified_id_token(app: &TestApp, token: &str) -> Value {
    let jwks: JwkSet = app.get("/.well-known/jwks.json").await.json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&app.base]);
    validation.set_audience(&["demo-app"]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}

fn corp_connector(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[connectors]]
id = "corp"
type = "oidc"
name = "Corp Login"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile", "groups"]
email_domains = ["corp.example"]
{extra}
[connectors.claims]
email = "email"
name = "name"
groups = "groups"
"#
    )
}

pub(crate) fn op_config(callback: &str, alg: &str, secret: Option<&str>) -> Value {
    let mut client = json!({"client_id": "gatehouse", "redirect_uris": [callback]});
    if let Some(secret) = secret {
        client["client_secret"] = json!(secret);
    }
    json!({
        "port": 0,
        "id_token_alg": alg,
        "clients": [client],
        "accounts": {
            "alice-7f3a": {
                "email": "alice@corp.example", "email_verified": true, "name": "Alice Corp",
                "groups": ["eng", "ops"], "realm_access": {"roles": ["admin"]}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_signs_in_through_a_real_upstream_provider() {
    if !node_modules_available() {
        return;
    }
    for (alg, public_client, userinfo) in
        [("RS256", false, false), ("ES256", true, true), ("PS256", false, true), ("EdDSA", false, false)]
    {
        let db = TestDb::sqlite();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback = format!("http://{}/oidc/corp/callback", listener.local_addr().unwrap());
        let op = UpstreamOp::start(&op_config(&callback, alg, (!public_client).then_some(UPSTREAM_SECRET)));
        let mut connector = corp_connector(&op.issuer, if userinfo { "userinfo = true" } else { "" });
        if public_client {
            connector = connector.replace(&format!("client_secret = \"{UPSTREAM_SECRET}\"\n"), "");
        }
        let app = start_gatehouse(&db, listener, &connector).await;

        // The connector's page names the redirect URI to register upstream.
        let info = app.get("/oidc/corp").await.text().await.unwrap();
        assert!(info.contains(&callback), "{info}");

        // The login hint's domain picks the connector; the browser goes straight upstream.
        let (url, page) = follow_until(&app, app.url(&authorize_path(Some("alice@corp.example"))), DEMO_REDIRECT).await;
        assert!(url.starts_with(&format!("{}/interaction/", op.issuer)), "{alg}: {url}");
        let page = page.text().await.unwrap();
        assert!(page.contains("value=\"alice@corp.example\""), "login_hint passed through: {page}");
        let (url, consent) = submit(&app, &url, &page, "/login", &[("login", "alice-7f3a")], DEMO_REDIRECT).await;
        let consent = consent.text().await.unwrap();
        let (done, _) = submit(&app, &url, &consent, "/confirm", &[], DEMO_REDIRECT).await;
        let params = params_of(&done);
        assert_eq!(params["state"], "app-state", "{alg}");
        assert_eq!(params["iss"], app.base);

        let tokens = redeem(&app, &params["code"]).await;
        let claims = verified_id_token(&app, tokens["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["email"], "alice@corp.example", "{alg}");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["name"], "Alice Corp");
        assert_eq!(claims["groups"], json!(["eng", "ops"]));
        assert_eq!(claims["idp"], "corp");
        assert_eq!(claims["nonce"], "app-nonce");
        assert!(claims.get("amr").is_none(), "an upstream sign-in's methods are not Gatehouse's to state: {claims}");

        // Linked by the upstream subject; the portal shows who signed in through what.
        let store = app.state.store.clone();
        let links = store.list_identity_links("corp").await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].0, "alice-7f3a");
        let portal = app.get("/").await.text().await.unwrap();
        assert!(portal.contains("Alice Corp") && portal.contains("Corp Login"), "{portal}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_refusal_reaches_the_user_and_the_app() {
    if !node_modules_available() {
        return;
    }
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/oidc/corp/callback", listener.local_addr().unwrap());
    let op = UpstreamOp::start(&op_config(&callback, "RS256", Some(UPSTREAM_SECRET)));
    let app = start_gatehouse(&db, listener, &corp_connector(&op.issuer, "")).await;

    let (url, page) = follow_until(&app, app.url(&authorize_path(Some("alice@corp.example"))), DEMO_REDIRECT).await;
    let page = page.text().await.unwrap();
    let (back, refused) = submit(&app, &url, &page, "/abort", &[], DEMO_REDIRECT).await;
    assert!(back.starts_with(&callback), "{back}");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.unwrap();
    assert!(page.contains("access denied"), "{page}");
    let link = field_between(&page, "id=\"return\" class=\"button\" href=\"", "\"").replace("&#38;", "&");
    assert!(link.starts_with(DEMO_REDIRECT), "{link}");
    let params = params_of(&link);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "app-state");

    // The app's request is over: the same sign-in cannot be resumed.
    let audit = app.state.store.list_audit(50).await.unwrap();
    assert!(
        audit.iter().any(|e| e.detail.as_deref() == Some("upstream_error: the provider answered error=access_denied")),
        "{audit:?}"
    );
    app.stop().await;
}

fn field_between(page: &str, start: &str, end: &str) -> String {
    let from = page.find(start).unwrap_or_else(|| panic!("{start} not in {page}")) + start.len();
    page[from..from + page[from..].find(end).unwrap()].to_owned()
}

// -------------------------------------------------------------------------------------------
// A provider that misbehaves on demand.

#[derive(Clone)]
struct RogueKey {
    kid: String,
    encoding: Arc<EncodingKey>,
    jwk: Value,
}

fn rsa_key(kid: &str) -> RogueKey {
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = private.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let public = private.to_public_key();
    RogueKey {
        kid: kid.to_owned(),
        encoding: Arc::new(EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }),
    }
}

type Change = Box<dyn Fn(&mut Behaviour)>;

/// How the rogue answers; tests change it between logins.
struct Behaviour {
    /// The `issuer` its discovery document claims (mix-up when not its own).
    discovery_issuer: Option<String>,
    published: Vec<RogueKey>,
    signing: RogueKey,
    /// Overrides merged into the ID token's claims (`aud`, `nonce`, `exp`, …).
    claims: Value,
    unsigned: bool,
    /// Delay before any answer, to look slow.
    delay: Duration,
    userinfo_sub: Option<String>,
    jwks_fetches: usize,
    last_nonce: Option<String>,
    /// The last authorization request's parameters.
    last_query: HashMap<String, String>,
    clock: Arc<ManualClock>,
}

#[derive(Clone)]
struct Rogue {
    issuer: String,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Rogue {
    async fn start(clock: Arc<ManualClock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let key = rsa_key("key-a");
        let behaviour = Behaviour {
            discovery_issuer: None,
            published: vec![key.clone()],
            signing: key,
            claims: json!({}),
            unsigned: false,
            delay: Duration::ZERO,
            userinfo_sub: None,
            jwks_fetches: 0,
            last_nonce: None,
            last_query: HashMap::new(),
            clock,
        };
        let rogue = Self { issuer, behaviour: Arc::new(Mutex::new(behaviour)) };
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(rogue_discovery))
            .route("/jwks", get(rogue_jwks))
            .route("/authorize", get(rogue_authorize))
            .route("/token", post(rogue_token))
            .route("/userinfo", get(rogue_userinfo))
            .with_state(rogue.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        rogue
    }

    fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap());
    }

    fn get<T>(&self, read: impl FnOnce(&Behaviour) -> T) -> T {
        read(&self.behaviour.lock().unwrap())
    }

    async fn pause(&self) {
        let delay = self.get(|b| b.delay);
        tokio::time::sleep(delay).await;
    }
}

async fn rogue_discovery(State(rogue): State<Rogue>) -> impl IntoResponse {
    rogue.pause().await;
    let issuer = rogue.get(|b| b.discovery_issuer.clone()).unwrap_or_else(|| rogue.issuer.clone());
    let base = &rogue.issuer;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn rogue_jwks(State(rogue): State<Rogue>) -> impl IntoResponse {
    let keys = {
        let mut behaviour = rogue.behaviour.lock().unwrap();
        behaviour.jwks_fetches += 1;
        behaviour.published.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
    };
    axum::Json(json!({ "keys": keys }))
}

async fn rogue_authorize(State(rogue): State<Rogue>, Query(query): Query<HashMap<String, String>>) -> impl IntoResponse {
    rogue.set(|b| {
        b.last_nonce = query.get("nonce").cloned();
        b.last_query = query.clone();
    });
    let target = format!(
        "{}?code=rogue-code&state={}&iss={}",
        query["redirect_uri"],
        query["state"],
        url::form_urlencoded::byte_serialize(rogue.issuer.as_bytes()).collect::<String>()
    );
    Redirect::to(&target)
}

async fn rogue_token(State(rogue): State<Rogue>) -> impl IntoResponse {
    rogue.pause().await;
    let token = {
        let behaviour = rogue.behaviour.lock().unwrap();
        let now = behaviour.clock.now();
        let mut claims = json!({
            "iss": rogue.issuer, "sub": "rogue-user", "aud": "gatehouse", "iat": now, "exp": now + 300, "auth_time": now,
            "nonce": behaviour.last_nonce, "email": "eve@rogue.example", "email_verified": true,
        });
        for (name, value) in behaviour.claims.as_object().unwrap() {
            claims[name] = value.clone();
        }
        if behaviour.unsigned {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
        } else {
            let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some(behaviour.signing.kid.clone());
            jsonwebtoken::encode(&header, &claims, &behaviour.signing.encoding).unwrap()
        }
    };
    axum::Json(json!({"access_token": "rogue-access", "token_type": "Bearer", "expires_in": 300, "id_token": token}))
}

async fn rogue_userinfo(State(rogue): State<Rogue>) -> impl IntoResponse {
    let sub = rogue.get(|b| b.userinfo_sub.clone()).unwrap_or_else(|| String::from("rogue-user"));
    axum::Json(json!({"sub": sub, "groups": ["from-userinfo"]}))
}

fn rogue_connector(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[connectors]]
id = "rogue"
type = "oidc"
name = "Rogue"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "{UPSTREAM_SECRET}"
timeout_secs = 1
{extra}

[[connectors]]
id = "rogue-twin"
type = "oidc"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "{UPSTREAM_SECRET}"
"#
    )
}

async fn rogue_setup(extra: &str) -> (TestDb, TestApp, Rogue) {
    let db = TestDb::sqlite();
    let clock = Arc::new(ManualClock::new(real_now()));
    let rogue = Rogue::start(clock.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = load_config(db.dir.path(), &gatehouse_toml(&base, &db, &rogue_connector(&rogue.issuer, extra)));
    let app = TestApp::start_on(listener, config, clock).await;
    (db, app, rogue)
}

/// Starts a sign-in through the rogue; returns the callback URL it sends the browser to.
async fn rogue_callback(app: &TestApp) -> String {
    let started = app.get("/oidc/rogue/login").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER, "{}", started.text().await.unwrap());
    let authorize = location(&started);
    let answered = app.http.get(&authorize).send().await.unwrap();
    location(&answered)
}

/// A full sign-in through the rogue: the status of the callback and its page.
async fn rogue_login(app: &TestApp) -> (StatusCode, String) {
    let callback = rogue_callback(app).await;
    let response = app.http.get(&callback).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

const NOT_VERIFIED: &str = "could not verify the answer of the identity provider";

/// The reason the last refused sign-in was recorded under (without the values involved).
pub(crate) async fn last_failure(app: &TestApp) -> String {
    let detail = last_failure_detail(app).await;
    detail.split_once(": ").map_or(detail.clone(), |(reason, _)| reason.to_owned())
}

/// The last refused sign-in's reason and the values involved, as the audit log has them.
pub(crate) async fn last_failure_detail(app: &TestApp) -> String {
    let audit = app.state.store.list_audit(1).await.unwrap();
    audit[0].detail.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scripted_provider_signs_in_when_it_behaves() {
    let (_db, app, rogue) = rogue_setup("").await;
    let (status, _) = rogue_login(&app).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a well-behaved answer signs in, so the refusals below are the checks'");
    let portal = app.get("/").await.text().await.unwrap();
    assert!(portal.contains("eve@rogue.example"), "{portal}");
    let links = app.state.store.list_identity_links("rogue").await.unwrap();
    assert_eq!(links.len(), 1);

    // The provider changes the person's email: same link, same user, new email.
    rogue.set(|b| b.claims = json!({"email": "eve.new@rogue.example"}));
    let again = TestApp::handle(&app);
    assert_eq!(rogue_login(&again).await.0, StatusCode::SEE_OTHER);
    assert_eq!(app.state.store.list_identity_links("rogue").await.unwrap(), links);
    let user = app.state.store.get_user(&links[0].1).await.unwrap();
    assert_eq!(user.email.as_deref(), Some("eve.new@rogue.example"));

    // The start refuses unknown connectors and malformed or expired request ids.
    assert_eq!(app.get("/oidc/nope/login").await.status(), StatusCode::NOT_FOUND);
    for query in ["req=%00bad", "req=a&req=b", "req=unknown-request-id", &format!("req={}", "r".repeat(9000))] {
        assert_eq!(app.get(&format!("/oidc/rogue/login?{query}")).await.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_must_be_known_unused_and_from_this_browser() {
    let (_db, app, _rogue) = rogue_setup("").await;
    // Unknown state.
    let forged = app.get("/oidc/rogue/callback?code=x&state=never-issued").await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert_eq!(last_failure(&app).await, "unknown_state");
    // No state at all, duplicated parameters, an oversized value: a clear 400 each.
    for query in ["code=x", "code=x&state=a&state=b", &format!("code=x&state={}", "s".repeat(9000))] {
        let response = app.get(&format!("/oidc/rogue/callback?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(response.text().await.unwrap().contains("malformed"), "{query}");
    }

    // A callback carried to another browser (login CSRF) is refused.
    let callback = rogue_callback(&app).await;
    let other = TestApp::handle(&app);
    let response = other.http.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(last_failure(&app).await, "other_browser");

    // The other browser's attempt spent nothing: the right browser finishes; then never again.
    assert_eq!(app.http.get(&callback).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let replay = app.http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(replay.text().await.unwrap().contains("already completed"));

    // A response naming another issuer (RFC 9207) is a mix-up.
    let callback = rogue_callback(&app).await.replace("iss=", "iss=https%3A%2F%2Fother.example&x=");
    assert_eq!(app.http.get(&callback).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(last_failure(&app).await, "iss_mismatch");
    // A state issued for one connector cannot complete another's callback.
    let callback = rogue_callback(&app).await;
    let twin = callback.replace("/oidc/rogue/", "/oidc/rogue-twin/");
    assert_eq!(app.http.get(&twin).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(last_failure(&app).await, "state_for_other_connector");
    assert_eq!(
        app.http.get(callback.replace("/oidc/rogue/", "/oidc/nope/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_that_fail_validation_are_refused() {
    let (_db, app, rogue) = rogue_setup("").await;
    // Each refusal is recorded under the reason an administrator can act on.
    let cases: Vec<(&str, &str, Change)> = vec![
        ("nonce mismatch", "nonce_mismatch", Box::new(|b| b.claims = json!({"nonce": "not-the-one-sent"}))),
        ("wrong audience", "audience_mismatch", Box::new(|b| b.claims = json!({"aud": "some-other-client"}))),
        (
            "extra untrusted audience",
            "audience_mismatch",
            Box::new(|b| b.claims = json!({"aud": ["gatehouse", "other"], "azp": "gatehouse"})),
        ),
        ("azp names another client", "audience_mismatch", Box::new(|b| b.claims = json!({"azp": "other"}))),
        ("expired beyond the skew", "clock_skew", Box::new(|b| b.claims = json!({"exp": b.clock.now() - 61}))),
        (
            "issued in the future",
            "clock_skew",
            Box::new(|b| b.claims = json!({"iat": b.clock.now() + 600, "exp": b.clock.now() + 900})),
        ),
        ("wrong issuer", "iss_mismatch", Box::new(|b| b.claims = json!({"iss": "https://idp.example"}))),
        ("alg none", "signature_invalid", Box::new(|b| b.unsigned = true)),
        ("unknown key", "signature_invalid", Box::new(|b| b.signing = rsa_key("key-x"))),
    ];
    for (name, reason, change) in cases {
        let original = rogue.get(|b| b.signing.clone());
        rogue.set(|b| {
            b.claims = json!({});
            b.unsigned = false;
            b.signing = original;
            change(b);
        });
        let (status, page) = rogue_login(&app).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{name}");
        assert!(page.contains(NOT_VERIFIED), "{name}: {page}");
        assert_eq!(last_failure(&app).await, reason, "{name}: {}", last_failure_detail(&app).await);
        assert!(app.get("/").await.status().is_redirection(), "{name}: not signed in");
    }
    // The skew allows a token that expired a few seconds ago.
    rogue.set(|b| {
        b.signing = b.published[0].clone();
        b.unsigned = false;
        b.claims = json!({"exp": b.clock.now() - 30});
    });
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_is_picked_up_and_unknown_keys_refresh_at_most_every_30_seconds() {
    let (_db, app, rogue) = rogue_setup("").await;
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    assert_eq!(rogue.get(|b| b.jwks_fetches), 1);

    // The provider rotates: key B replaces key A.
    let key_b = rsa_key("key-b");
    rogue.set(|b| {
        b.published = vec![key_b.clone()];
        b.signing = key_b;
    });
    app.clock.advance(31);
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER, "the new key was fetched");
    assert_eq!(rogue.get(|b| b.jwks_fetches), 2);

    // Tokens under unknown key ids do not make the broker fetch again within 30 seconds.
    rogue.set(|b| b.signing = rsa_key("key-forged"));
    for _ in 0..3 {
        assert_eq!(rogue_login(&app).await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(rogue.get(|b| b.jwks_fetches), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn userinfo_must_describe_the_same_subject() {
    let (_db, app, rogue) = rogue_setup("userinfo = true\n[connectors.claims]\ngroups = \"groups\"").await;
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    let portal = app.get("/").await.text().await.unwrap();
    assert!(portal.contains("from-userinfo"), "UserInfo groups fill in: {portal}");

    let fresh = TestApp::handle(&app);
    rogue.set(|b| b.userinfo_sub = Some(String::from("someone-else")));
    let (status, page) = rogue_login(&fresh).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert_eq!(last_failure(&app).await, "userinfo_invalid");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let (_db, app, rogue) = rogue_setup("").await;
    rogue.set(|b| b.discovery_issuer = Some(String::from("https://login.example")));
    let started = app.get("/oidc/rogue/login").await;
    assert_eq!(started.status(), StatusCode::BAD_GATEWAY);
    assert!(location(&started).is_empty(), "no redirect to a provider that is not the configured one");
    assert!(started.text().await.unwrap().contains(NOT_VERIFIED));
    assert_eq!(last_failure(&app).await, "discovery_failed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_slow_provider_fails_fast_and_clearly() {
    // Nothing listens on the configured issuer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    drop(std::net::TcpListener::bind(closed));
    let (_db, app, rogue) = rogue_setup("").await;
    let db = TestDb::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = gatehouse_toml(&base, &db, &rogue_connector(&format!("http://{closed}"), ""));
    let down = TestApp::start_on(listener, load_config(db.dir.path(), &config), Arc::new(ManualClock::new(real_now()))).await;
    let response = down.get("/oidc/rogue/login").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await.unwrap().contains("could not be reached"));
    down.stop().await;

    // Slow: a provider that takes 5 seconds is abandoned after the 1-second timeout.
    rogue.set(|b| b.delay = Duration::from_secs(5));
    let started = Instant::now();
    let response = app.get("/oidc/rogue/login").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < Duration::from_secs(4), "gave up after {:?}", started.elapsed());
    assert_eq!(last_failure(&app).await, "unreachable");

    // Failing discovery is not retried for a minute: logins fail at once instead of queueing.
    rogue.set(|b| b.delay = Duration::ZERO);
    let started = Instant::now();
    assert_eq!(app.get("/oidc/rogue/login").await.status(), StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < Duration::from_millis(500));
    app.clock.advance(61);

    // Slow at the token endpoint, once discovery is cached.
    let callback = rogue_callback(&app).await;
    rogue.set(|b| b.delay = Duration::from_secs(5));
    let started = Instant::now();
    let response = app.http.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_downstream_request_with_an_upstream_failure_gets_the_oauth_error() {
    let (_db, app, rogue) = rogue_setup("").await;
    rogue.set(|b| b.claims = json!({"aud": "some-other-client"}));
    let login = app.get(&authorize_path(None)).await;
    // Email first; the provider is under "Other ways to sign in".
    let login_page = app.get(&format!("{}&choose=1", location(&login))).await.text().await.unwrap();
    let start = field_between(&login_page, "href=\"/oidc/rogue/login?req=", "\"");
    let started = app.get(&format!("/oidc/rogue/login?req={start}")).await;
    let callback = location(&app.http.get(location(&started)).send().await.unwrap());
    let failed = app.http.get(&callback).send().await.unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let page = failed.text().await.unwrap();
    let link = field_between(&page, "id=\"return\" class=\"button\" href=\"", "\"").replace("&#38;", "&");
    let params = params_of(&link);
    assert_eq!(params.get("error").map(String::as_str), Some("server_error"), "{link}");
    assert_eq!(params.get("state").map(String::as_str), Some("app-state"), "{link}");
    assert!(page.contains("Return to Demo App"), "{page}");
    assert_eq!(field_value(&page, "csrf"), None);
    app.stop().await;
}

/// Stateless nodes behind a load balancer: the sign-in starts on one node and the provider's
/// callback lands on the other, which has never seen the provider's metadata.
#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_started_on_one_node_finishes_on_another_on_postgres() {
    let Some(db) = TestDb::postgres().await else { return };
    let clock = Arc::new(ManualClock::new(real_now()));
    let rogue = Rogue::start(clock.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let toml = gatehouse_toml(&base, &db, &rogue_connector(&rogue.issuer, ""));
    let node_a = TestApp::start_on(listener, load_config(db.dir.path(), &toml), clock.clone()).await;
    let node_b = TestApp::start_config(load_config(db.dir.path(), &toml), clock).await;

    let callback = rogue_callback(&node_a).await.replace(&node_a.base, &node_b.base);
    // The same browser (cookies are per host, not per port) reaches node B.
    let finished = node_a.http.get(&callback).send().await.unwrap();
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    assert!(node_a.http.get(node_b.url("/")).send().await.unwrap().text().await.unwrap().contains("eve@rogue.example"));
    let replay = node_a.http.get(callback.replace(&node_b.base, &node_a.base)).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST, "the state was spent on the other node");
    node_b.stop().await;
    node_a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_asking_for_a_fresh_sign_in_gets_one_from_the_provider() {
    let (_db, app, rogue) = rogue_setup("").await;
    let fresh_login = |app: &TestApp| {
        let app = TestApp::handle(app);
        async move {
            let login = app.get(&authorize_path(None).replace("state=app-state", "state=app-state&prompt=login")).await;
            let page = app.get(&format!("{}&choose=1", location(&login))).await.text().await.unwrap();
            let req = field_between(&page, "href=\"/oidc/rogue/login?req=", "\"");
            let started = app.get(&format!("/oidc/rogue/login?req={req}")).await;
            let callback = location(&app.http.get(location(&started)).send().await.unwrap());
            app.http.get(&callback).send().await.unwrap().status()
        }
    };
    // The provider is told to authenticate afresh and proves it did with `auth_time`.
    assert_eq!(fresh_login(&app).await, StatusCode::SEE_OTHER);
    let sent = rogue.get(|b| b.last_query.clone());
    assert_eq!((sent["prompt"].as_str(), sent["max_age"].as_str()), ("login", "0"));
    // A provider that reuses an old sign-in (or omits auth_time) is refused.
    rogue.set(|b| b.claims = json!({"auth_time": b.clock.now() - 3600}));
    assert_eq!(fresh_login(&app).await, StatusCode::BAD_GATEWAY);
    assert_eq!(last_failure(&app).await, "not_fresh");
    rogue.set(|b| b.claims = json!({"auth_time": null}));
    assert_eq!(fresh_login(&app).await, StatusCode::BAD_GATEWAY);
    // Without prompt=login the same old auth_time is fine.
    rogue.set(|b| b.claims = json!({"auth_time": b.clock.now() - 3600}));
    assert_eq!(rogue_login(&TestApp::handle(&app)).await.0, StatusCode::SEE_OTHER);
    assert!(!rogue.get(|b| b.last_query.contains_key("prompt")));
    app.stop().await;
}

/// An account that already has eve's address, made before her first upstream sign-in.
async fn existing_eve(app: &TestApp, email_verified: bool) -> String {
    let profile = gatehouse::store::UserProfile {
        username: String::from("eve"),
        email: Some(String::from("Eve@Rogue.example")),
        email_verified,
        display_name: None,
        groups: vec![String::from("admins")],
    };
    let (user, _) = app.state.store.get_or_create_linked_user("local", "eve", &profile, app.clock.now()).await.unwrap();
    user.id
}

/// `link_by_email`: a first sign-in joins an existing user only when the address is verified
/// at the connector and on the account; otherwise a new user, or a refusal by choice. Linking
/// on an unverified address would hand the account (and its groups) to whoever typed it.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_sign_in_links_by_email_only_when_verified_on_both_sides() {
    struct Case {
        what: &'static str,
        extra: &'static str,
        upstream_verified: bool,
        account_verified: bool,
        /// Some(true): linked to the existing user; Some(false): a new user; None: refused.
        linked: Option<bool>,
        refusal: &'static str,
        /// The account is already linked to another subject at this provider.
        linked_elsewhere: bool,
    }
    let cases = [
        Case {
            what: "verified on both sides",
            extra: "link_by_email = true",
            upstream_verified: true,
            account_verified: true,
            linked: Some(true),
            refusal: "",
            linked_elsewhere: false,
        },
        Case {
            what: "unverified upstream",
            extra: "link_by_email = true",
            upstream_verified: false,
            account_verified: true,
            linked: Some(false),
            refusal: "",
            linked_elsewhere: false,
        },
        Case {
            what: "unverified account",
            extra: "link_by_email = true",
            upstream_verified: true,
            account_verified: false,
            linked: Some(false),
            refusal: "",
            linked_elsewhere: false,
        },
        Case {
            what: "linking off",
            extra: "",
            upstream_verified: true,
            account_verified: true,
            linked: Some(false),
            refusal: "",
            linked_elsewhere: false,
        },
        Case {
            what: "unverified account, refusing",
            extra: "link_by_email = true\nwhen_email_taken = \"refuse\"",
            upstream_verified: true,
            account_verified: false,
            linked: None,
            refusal: "email_unverified_on_account",
            linked_elsewhere: false,
        },
        Case {
            what: "unverified upstream, refusing",
            extra: "link_by_email = true\nwhen_email_taken = \"refuse\"",
            upstream_verified: false,
            account_verified: true,
            linked: None,
            refusal: "email_unverified_at_connector",
            linked_elsewhere: false,
        },
        Case {
            what: "the account has another subject here (a reassigned address)",
            extra: "link_by_email = true\nwhen_email_taken = \"refuse\"",
            upstream_verified: true,
            account_verified: true,
            linked: None,
            refusal: "account_linked_to_another_subject",
            linked_elsewhere: true,
        },
    ];
    for case in cases {
        let (_db, app, rogue) = rogue_setup(case.extra).await;
        let existing = existing_eve(&app, case.account_verified).await;
        if case.linked_elsewhere {
            app.state.store.link_identity("rogue", "eve-before", &existing, app.clock.now()).await.unwrap();
        }
        rogue.set(|b| b.claims = json!({"email_verified": case.upstream_verified}));
        let (status, page) = rogue_login(&app).await;
        let links: Vec<(String, String)> =
            app.state.store.list_identity_links("rogue").await.unwrap().into_iter().filter(|(s, _)| s != "eve-before").collect();
        match case.linked {
            Some(to_existing) => {
                assert_eq!(status, StatusCode::SEE_OTHER, "{}: {page}", case.what);
                assert_eq!(links.len(), 1, "{}", case.what);
                assert_eq!(links[0].1 == existing, to_existing, "{}", case.what);
                let users = app.state.store.count_users().await.unwrap();
                assert_eq!(users, if to_existing { 1 } else { 2 }, "{}", case.what);
            }
            None => {
                assert_eq!(status, StatusCode::FORBIDDEN, "{}", case.what);
                assert!(page.contains("could not match this sign-in to your account"), "{}: {page}", case.what);
                assert!(links.is_empty(), "{}: nothing linked", case.what);
                assert_eq!(app.state.store.count_users().await.unwrap(), 1, "{}: nothing created", case.what);
                let detail = last_failure_detail(&app).await;
                assert_eq!(detail, format!("link_refused: {} (subject `rogue-user`, email `eve@rogue.example`)", case.refusal));
                // The administrator links it by hand; the next sign-in lands on the account.
                let alice = crate::connectors::console_actor();
                app.state.admin.link_identity(&alice, &existing, "rogue", "rogue-user").await.unwrap();
                assert_eq!(rogue_login(&TestApp::handle(&app)).await.0, StatusCode::SEE_OTHER, "{}", case.what);
                assert_eq!(app.state.store.find_linked_user_id("rogue", "rogue-user").await.unwrap(), Some(existing.clone()));
                app.state.admin.unlink_identity(&alice, &existing, "rogue", "rogue-user").await.unwrap();
                assert_eq!(app.state.store.find_linked_user_id("rogue", "rogue-user").await.unwrap(), None);
            }
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connector_check_finds_a_working_provider_usable() {
    let (_db, app, rogue) = rogue_setup("").await;
    let found = app.state.upstreams.check_all(real_now()).await;
    let mut checked: Vec<&str> = found.iter().map(|f| f.connector_id.as_str()).collect();
    checked.sort_unstable();
    assert_eq!(checked, ["rogue", "rogue-twin"], "every redirect connector, not the local one");
    assert!(found.iter().all(|f| f.finding.is_usable()), "{found:?}");
    assert_eq!(rogue.get(|b| b.jwks_fetches), 2, "each connector fetched the key set once");
    let readyz = app.get("/readyz?verbose").await.text().await.unwrap();
    assert!(readyz.contains("[+]connector rogue ok"), "{readyz}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("gatehouse_connector_up{connector=\"rogue\"} 1"), "{metrics}");
    // The sign-in that follows uses what the check fetched.
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    assert_eq!(rogue.get(|b| b.jwks_fetches), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapped_claim_that_never_arrives_is_logged_once_with_the_names_that_did() {
    crate::helpers::upstream_warnings();
    let (_db, app, rogue) = rogue_setup("").await;
    // A claim no other test sends, to find this test's warning among every test's.
    rogue.set(|b| b.claims = json!({"marker_claim_c41d": true}));
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    let warnings = crate::helpers::upstream_warnings();
    let ours: Vec<&str> = warnings.lines().filter(|line| line.contains("marker_claim_c41d")).collect();
    let missing_groups: Vec<&&str> = ours.iter().filter(|line| line.contains("field=\"groups\"")).collect();
    assert_eq!(missing_groups.len(), 1, "once per connector, not per sign-in: {ours:?}");
    let line = missing_groups[0];
    assert!(line.contains("WARN") && line.contains("connector=rogue"), "{line}");
    assert!(line.contains("a sign-in carried no `groups`, which `claims.groups` maps"), "{line}");
    assert!(line.contains("arrived=") && line.contains("email") && line.contains("sub"), "names that did arrive: {line}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_check_does_not_hold_up_sign_ins_once_the_provider_answers() {
    let (_db, app, rogue) = rogue_setup("").await;
    rogue.set(|b| b.delay = Duration::from_secs(5));
    let found = app.state.upstreams.check_all(real_now()).await;
    let rogue_found = found.iter().find(|f| f.connector_id == "rogue").unwrap();
    assert_eq!(rogue_found.finding.code(), "unreachable", "{found:?}");
    // A failed sign-in makes the next ones fail at once for a minute; a failed check does not.
    rogue.set(|b| b.delay = Duration::ZERO);
    assert_eq!(rogue_login(&app).await.0, StatusCode::SEE_OTHER);
    app.stop().await;
}
