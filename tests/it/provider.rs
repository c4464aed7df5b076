//! The downstream OpenID Provider over HTTP: authorization with PKCE, the token grants,
//! UserInfo, introspection, revocation, consent, logout, and the attacks each must refuse.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::clock::Clock;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{ALICE_PASSWORD, BOB_PASSWORD, DEMO_CLIENT_SECRET, TestApp, TestDb, field_value, location};

pub const WEB_SECRET: &str = "web-app-secret-0123456789";
pub const SERVICE_SECRET: &str = "service-secret-0123456789";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const DEMO_REDIRECT: &str = "http://localhost:3000/callback";

/// Three more clients next to the demo app: a confidential app that needs consent, a public
/// single-page app, and a machine client.
pub const CLIENTS: &str = r#"
[[clients]]
client_id = "web-app"
client_secret = "web-app-secret-0123456789"
redirect_uris = ["https://app.example/cb", "https://app.example/cb?tenant=1"]
post_logout_redirect_uris = ["https://app.example/signed-out"]
scopes = ["openid", "profile", "email", "groups", "offline_access", "api:read"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
resources = ["https://api.example"]
name = "Web App"

[[clients]]
client_id = "spa"
redirect_uris = ["https://spa.example/cb"]
scopes = ["openid", "profile", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
name = "Single-page App"
first_party = true

[[clients]]
client_id = "rsa-app"
client_secret = "rsa-app-secret-0123456789"
redirect_uris = ["https://rsa.example/cb"]
scopes = ["openid", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
first_party = true
signing_alg = "RS256"

[[clients]]
client_id = "service"
client_secret = "service-secret-0123456789"
redirect_uris = ["https://service.example/unused"]
scopes = ["api:read", "api:write"]
grant_types = ["client_credentials"]
resources = ["https://api.example"]
default_audience = "https://default.example"
access_token_lifetime_secs = 120
introspect_any = true
"#;

pub async fn start(db: &TestDb) -> TestApp {
    TestApp::start_with(db, CLIENTS).await
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// The parameters of a redirect's query, by name.
pub fn params_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

pub fn demo_authorize(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "demo-app"),
        ("redirect_uri", DEMO_REDIRECT),
        ("scope", "openid profile email groups offline_access"),
        ("state", "state-123"),
        ("nonce", "nonce-456"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        pairs.retain(|(name, _)| name != k);
        if !v.is_empty() {
            pairs.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    pairs
}

pub async fn authorize(app: &TestApp, pairs: &[(String, String)]) -> reqwest::Response {
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.get(&format!("/oauth2/authorize?{}", query(&refs))).await
}

/// Follows redirects on this server until one leaves it (returned) or a page is shown.
pub async fn follow(app: &TestApp, mut response: reqwest::Response) -> reqwest::Response {
    for _ in 0..10 {
        let target = location(&response);
        if !response.status().is_redirection() || !target.starts_with('/') {
            return response;
        }
        response = app.get(&target).await;
    }
    panic!("too many redirects");
}

/// Signs in on the login page the authorization sent the browser to, and follows on.
pub async fn sign_in_at(app: &TestApp, login_response: reqwest::Response, username: &str, password: &str) -> reqwest::Response {
    let target = location(&login_response);
    assert!(target.starts_with("/login?req="), "sent to the login page, not {target}");
    let page = app.get(&target).await.text().await.unwrap();
    let csrf = field_value(&page, "csrf").unwrap();
    let req = field_value(&page, "req").unwrap();
    let posted = app
        .post_form(
            "/login",
            &[("csrf", &csrf), ("connector", "local"), ("username", username), ("password", password), ("req", &req)],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    follow(app, posted).await
}

/// Runs the demo app's authorization as alice and returns the code.
pub async fn demo_code(app: &TestApp, extra: &[(&str, &str)]) -> String {
    let first = authorize(app, &demo_authorize(extra)).await;
    let done = if location(&first).starts_with("/login") { sign_in_at(app, first, "alice", ALICE_PASSWORD).await } else { first };
    let target = location(&done);
    assert!(target.starts_with(DEMO_REDIRECT), "back at the app, not {target} ({})", done.status());
    params_of(&target).remove("code").expect("a code")
}

pub async fn token_request(app: &TestApp, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http.post(app.url("/oauth2/token")).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

/// A first-party client's whole flow for alice: sign-in, code, redemption; the token response.
pub async fn first_party_tokens(app: &TestApp, client: (&str, &str), redirect_uri: &str, scope: &str) -> Value {
    let pairs = demo_authorize(&[("client_id", client.0), ("redirect_uri", redirect_uri), ("scope", scope)]);
    let back = sign_in_at(app, authorize(app, &pairs).await, "alice", ALICE_PASSWORD).await;
    let code = params_of(&location(&back))["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", VERIFIER),
    ];
    let response = token_request(app, Some(client), &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

pub async fn redeem(app: &TestApp, code: &str) -> reqwest::Response {
    let form =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", DEMO_REDIRECT), ("code_verifier", VERIFIER)];
    token_request(app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await
}

pub async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

/// Verifies a JWT against the server's published JWKS, as a client would.
pub async fn verify_jwt(app: &TestApp, token: &str, audience: &str) -> Value {
    let jwks: JwkSet = app.get("/.well-known/jwks.json").await.json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&["http://127.0.0.1:8080"]);
    validation.set_audience(&[audience]);
    // The tokens carry the test's fixed clock; only the signature and claims matter here.
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}

pub async fn introspect(app: &TestApp, token: &str) -> Value {
    let response = app
        .http
        .post(app.url("/oauth2/introspect"))
        .basic_auth("service", Some(SERVICE_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub async fn userinfo(app: &TestApp, access_token: &str) -> reqwest::Response {
    app.http.get(app.url("/oauth2/userinfo")).bearer_auth(access_token).send().await.unwrap()
}

#[tokio::test]
async fn discovery_advertises_every_endpoint_and_capability() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let metadata = json(app.get("/.well-known/openid-configuration").await).await;
    assert_eq!(metadata["issuer"], "http://127.0.0.1:8080");
    assert_eq!(metadata["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(metadata["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(metadata["authorization_response_iss_parameter_supported"], true);
    assert_eq!(metadata["backchannel_logout_supported"], true);
    assert_eq!(metadata["backchannel_logout_session_supported"], true);
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(metadata["grant_types_supported"].as_array().unwrap().iter().any(|g| g == grant));
    }
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(metadata["token_endpoint_auth_methods_supported"].as_array().unwrap().iter().any(|m| m == method));
    }
    for key in ["scopes_supported", "claims_supported", "id_token_signing_alg_values_supported"] {
        assert!(!metadata[key].as_array().unwrap().is_empty(), "{key}");
    }
    // Every advertised endpoint is served here (anything but 404).
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
    ] {
        let url = metadata[key].as_str().unwrap();
        let path = url.strip_prefix("http://127.0.0.1:8080").unwrap();
        assert_ne!(app.get(path).await.status(), StatusCode::NOT_FOUND, "{key} {path}");
    }
    // A browser-based app may call the token endpoint from its own origin.
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/oauth2/token"))
        .header("origin", "https://spa.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let no_cors = app.http.get(app.url("/oauth2/authorize")).header("origin", "https://spa.example").send().await.unwrap();
    assert!(no_cors.headers().get("access-control-allow-origin").is_none(), "browser pages are not cross-origin APIs");
    app.stop().await;
}

#[tokio::test]
async fn the_full_code_flow_issues_verified_tokens_that_rotate_and_revoke() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let first = authorize(&app, &demo_authorize(&[])).await;
    assert_eq!(first.status(), StatusCode::FOUND);
    let back = sign_in_at(&app, first, "alice", ALICE_PASSWORD).await;
    let params = params_of(&location(&back));
    assert_eq!(params["state"], "state-123");
    assert_eq!(params["iss"], "http://127.0.0.1:8080", "RFC 9207");

    let response = redeem(&app, &params["code"]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens = json(response).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 600);
    let id_token = verify_jwt(&app, tokens["id_token"].as_str().unwrap(), "demo-app").await;
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    assert_eq!(id_token["sub"], alice.as_str());
    assert_ne!(id_token["sub"], "alice@example.com");
    assert_eq!(id_token["nonce"], "nonce-456");
    assert_eq!(id_token["idp"], "local");
    assert_eq!(id_token["amr"], serde_json::json!(["pwd"]));
    assert_eq!(id_token["email"], "alice@example.com");
    assert_eq!(id_token["name"], "Alice Example");
    assert_eq!(id_token["preferred_username"], "alice");
    assert_eq!(id_token["groups"], serde_json::json!(["engineering"]));
    assert_eq!(id_token["auth_time"], crate::helpers::START);
    assert!(id_token["sid"].as_str().is_some_and(|s| !s.is_empty()));
    let access = tokens["access_token"].as_str().unwrap();
    let half = &Sha256::digest(access.as_bytes())[..16];
    assert_eq!(id_token["at_hash"], URL_SAFE_NO_PAD.encode(half));

    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068");
    let claims = verify_jwt(&app, access, "demo-app").await;
    assert_eq!(claims["client_id"], "demo-app");
    assert_eq!(claims["sub"], alice.as_str());
    assert_eq!(claims["sid"], id_token["sid"]);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    assert!(claims["jti"].as_str().is_some());

    let info = json(userinfo(&app, access).await).await;
    assert_eq!(info["sub"], alice.as_str());
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["email_verified"], true);
    let posted = app.http.post(app.url("/oauth2/userinfo")).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(json(posted).await["sub"], alice.as_str(), "UserInfo accepts POST with the token in the body");

    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(URL_SAFE_NO_PAD.decode(refresh).unwrap().len() >= 32, "256 bits of randomness");
    let stored = sqlx_count(&app, "SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1", refresh).await;
    assert_eq!(stored, 0, "the refresh token itself is never stored");
    assert_eq!(introspect(&app, refresh).await["active"], true);

    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let rotated = json(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh, "every use rotates the refresh token");
    assert_eq!(introspect(&app, refresh).await["active"], false, "the rotated token is spent");
    let new_access = rotated["access_token"].as_str().unwrap().to_owned();
    let active = introspect(&app, &new_access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], "demo-app");
    assert_eq!(active["username"], "alice");

    // Revoking the refresh token revokes its family: the access tokens go inactive too.
    let revoked = app
        .http
        .post(app.url("/oauth2/revoke"))
        .basic_auth("demo-app", Some(DEMO_CLIENT_SECRET))
        .form(&[("token", new_refresh.as_str()), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(introspect(&app, &new_refresh).await["active"], false);
    assert_eq!(introspect(&app, &new_access).await["active"], false);
    assert_eq!(introspect(&app, access).await["active"], false);
    assert_eq!(userinfo(&app, &new_access).await.status(), StatusCode::UNAUTHORIZED);
    let form = [("grant_type", "refresh_token"), ("refresh_token", new_refresh.as_str())];
    let (status, error) = error_code(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));

    // The browser is still signed in: a second authorization needs no sign-in.
    let again = authorize(&app, &demo_authorize(&[])).await;
    assert!(location(&again).starts_with(DEMO_REDIRECT));
    app.stop().await;
}

async fn sqlx_count(app: &TestApp, sql: &str, value: &str) -> i64 {
    let url = app.state.config.database_url.expose().clone();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let count: i64 = sqlx::query_scalar(sql).bind(value).fetch_one(&pool).await.unwrap();
    pool.close().await;
    count
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_family_and_ends_the_session() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let code = demo_code(&app, &[]).await;
    let tokens = json(redeem(&app, &code).await).await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", first)];
    let second = json(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    let second_refresh = second["refresh_token"].as_str().unwrap();

    let (status, error) = error_code(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    let form = [("grant_type", "refresh_token"), ("refresh_token", second_refresh)];
    let (_, error) = error_code(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    assert_eq!(error, "invalid_grant", "the newest token of the family is revoked too");
    assert_eq!(introspect(&app, second["access_token"].as_str().unwrap()).await["active"], false);
    let next = authorize(&app, &demo_authorize(&[])).await;
    assert!(location(&next).starts_with("/login"), "the session ended: sign in again");
    app.stop().await;
}

#[tokio::test]
async fn codes_are_single_use_bound_and_short_lived() {
    let db = TestDb::sqlite();
    let app = start(&db).await;

    // Replay: the second redemption fails and revokes what the first one issued.
    let code = demo_code(&app, &[]).await;
    let tokens = json(redeem(&app, &code).await).await;
    let (status, error) = error_code(redeem(&app, &code).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    assert_eq!(introspect(&app, tokens["access_token"].as_str().unwrap()).await["active"], false);
    assert_eq!(introspect(&app, tokens["refresh_token"].as_str().unwrap()).await["active"], false);

    // Each binding is checked before the code is spent, so the rightful redemption still works.
    let code = demo_code(&app, &[]).await;
    let base = |verifier: &'static str, redirect: &'static str| {
        vec![("grant_type", "authorization_code"), ("redirect_uri", redirect), ("code_verifier", verifier)]
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            base("wrong-verifier-wrong-verifier-wrong-verifier-0", DEMO_REDIRECT),
            Some(("demo-app", DEMO_CLIENT_SECRET)),
            "invalid_grant",
            "wrong verifier",
        ),
        (
            vec![("grant_type", "authorization_code"), ("redirect_uri", DEMO_REDIRECT)],
            Some(("demo-app", DEMO_CLIENT_SECRET)),
            "invalid_grant",
            "missing verifier",
        ),
        (base("short", DEMO_REDIRECT), Some(("demo-app", DEMO_CLIENT_SECRET)), "invalid_request", "malformed verifier"),
        (
            base(VERIFIER, "http://localhost:3000/callback/extra"),
            Some(("demo-app", DEMO_CLIENT_SECRET)),
            "invalid_grant",
            "other redirect",
        ),
        (
            vec![("grant_type", "authorization_code"), ("code_verifier", VERIFIER)],
            Some(("demo-app", DEMO_CLIENT_SECRET)),
            "invalid_grant",
            "no redirect",
        ),
        (base(VERIFIER, DEMO_REDIRECT), Some(("web-app", WEB_SECRET)), "invalid_grant", "another client"),
    ];
    for (mut form, basic, expected, what) in cases {
        form.push(("code", &code));
        let (status, error) = error_code(token_request(&app, basic, &form).await).await;
        assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, expected), "{what}");
    }
    assert_eq!(redeem(&app, &code).await.status(), StatusCode::OK, "failed attempts did not spend the code");

    // Expired after 60 seconds.
    let code = demo_code(&app, &[]).await;
    app.clock.advance(61);
    let (_, error) = error_code(redeem(&app, &code).await).await;
    assert_eq!(error, "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn invalid_clients_and_redirect_uris_get_an_error_page_never_a_redirect() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let bad = [
        ("client_id", ""),
        ("client_id", "nobody"),
        ("redirect_uri", ""),
        ("redirect_uri", "http://localhost:3000/callback/extra"),
        ("redirect_uri", "http://localhost:3000/callback?x=1"),
        ("redirect_uri", "http://localhost:3000/callback#frag"),
        ("redirect_uri", "https://localhost:3000/callback"),
        ("redirect_uri", "http://evil.example:3000/callback"),
        ("redirect_uri", "http://localhost:3001/callback"),
        ("redirect_uri", "http://localhost:3000/Callback"),
    ];
    for (name, value) in bad {
        let response = authorize(&app, &demo_authorize(&[(name, value)])).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}={value}");
        assert!(response.headers().get("location").is_none(), "{name}={value} must not redirect");
    }
    let mut doubled = demo_authorize(&[]);
    doubled.push(("redirect_uri".into(), "https://evil.example/cb".into()));
    let response = authorize(&app, &doubled).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none(), "a doubled redirect_uri is not trusted");
    app.stop().await;
}

#[tokio::test]
async fn bad_authorization_requests_are_answered_at_the_redirect_uri() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let long = "x".repeat(8 * 1024 + 1);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("response_type", "code id_token")], "unsupported_response_type"),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("scope", "")], "invalid_scope"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("prompt", "bogus")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("nonce", long.as_str())], "invalid_request"),
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "request_not_supported"),
        (vec![("response_mode", "fragment")], "invalid_request"),
        (vec![("connector_id", "nope")], "invalid_request"),
        (vec![("resource", "https://evil.example")], "invalid_target"),
        (vec![("prompt", "none")], "login_required"),
    ];
    for (extra, expected) in cases {
        let response = authorize(&app, &demo_authorize(&extra)).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{extra:?}");
        let target = location(&response);
        assert!(target.starts_with(DEMO_REDIRECT), "{extra:?}: {target}");
        let params = params_of(&target);
        assert_eq!(params["error"], expected, "{extra:?}");
        assert_eq!(params["state"], "state-123", "{extra:?}");
        assert_eq!(params["iss"], "http://127.0.0.1:8080");
        assert!(!params.contains_key("code"));
    }
    let mut doubled = demo_authorize(&[]);
    doubled.push(("scope".into(), "openid".into()));
    let params = params_of(&location(&authorize(&app, &doubled).await));
    assert_eq!(params["error"], "invalid_request", "a repeated parameter");

    // A public client must use PKCE.
    let spa = [("response_type", "code"), ("client_id", "spa"), ("redirect_uri", "https://spa.example/cb"), ("scope", "openid")];
    let pairs: Vec<(String, String)> = spa.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let params = params_of(&location(&authorize(&app, &pairs).await));
    assert_eq!(params["error"], "invalid_request");
    // The machine client may not use the authorization code grant.
    let service = [
        ("response_type", "code"),
        ("client_id", "service"),
        ("redirect_uri", "https://service.example/unused"),
        ("scope", "api:read"),
    ];
    let pairs: Vec<(String, String)> = service.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    assert_eq!(params_of(&location(&authorize(&app, &pairs).await))["error"], "unauthorized_client");
    app.stop().await;
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_clients_grants_and_input() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let cc = [("grant_type", "client_credentials")];
    let (status, error) = error_code(token_request(&app, Some(("service", "wrong-secret-0123456789")), &cc).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "invalid_client"));
    let response = token_request(&app, Some(("service", "wrong-secret-0123456789")), &cc).await;
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let (status, error) =
        error_code(token_request(&app, None, &[("grant_type", "client_credentials"), ("client_id", "service")]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "invalid_client"), "a missing secret");
    let (status, _) = error_code(token_request(&app, Some(("nobody", "x")), &cc).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let both = [("grant_type", "client_credentials"), ("client_secret", SERVICE_SECRET)];
    let (_, error) = error_code(token_request(&app, Some(("service", SERVICE_SECRET)), &both).await).await;
    assert_eq!(error, "invalid_request", "two authentication methods at once");
    let post = [("grant_type", "client_credentials"), ("client_id", "service"), ("client_secret", SERVICE_SECRET)];
    assert_eq!(token_request(&app, None, &post).await.status(), StatusCode::OK, "client_secret_post");

    let (_, error) =
        error_code(token_request(&app, Some(("service", SERVICE_SECRET)), &[("grant_type", "password")]).await).await;
    assert_eq!(error, "unsupported_grant_type");
    let (_, error) = error_code(token_request(&app, Some(("service", SERVICE_SECRET)), &[]).await).await;
    assert_eq!(error, "invalid_request");
    let (_, error) =
        error_code(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &[("grant_type", "client_credentials")]).await)
            .await;
    assert_eq!(error, "unauthorized_client");
    let (_, error) = error_code(
        token_request(&app, Some(("service", SERVICE_SECRET)), &[("grant_type", "client_credentials"), ("scope", "openid")])
            .await,
    )
    .await;
    assert_eq!(error, "invalid_scope", "a scope the client may not request");
    let doubled = [("grant_type", "client_credentials"), ("grant_type", "client_credentials")];
    let (_, error) = error_code(token_request(&app, Some(("service", SERVICE_SECRET)), &doubled).await).await;
    assert_eq!(error, "invalid_request", "a repeated parameter");
    let long = "a".repeat(8 * 1024 + 1);
    let oversized = [("grant_type", "client_credentials"), ("scope", long.as_str())];
    let (status, error) = error_code(token_request(&app, Some(("service", SERVICE_SECRET)), &oversized).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));
    let huge = "a".repeat(200 * 1024);
    let response =
        token_request(&app, Some(("service", SERVICE_SECRET)), &[("grant_type", "client_credentials"), ("x", huge.as_str())])
            .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json_body = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth("service", Some(SERVICE_SECRET))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_code(json_body).await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"), "not a form");
    let garbage =
        app.http.post(app.url("/oauth2/token")).header("authorization", "Basic !!!not-base64").form(&cc).send().await.unwrap();
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);

    // Public clients authenticate with none, and only with PKCE-bound codes.
    let (_, error) = error_code(
        token_request(&app, None, &[("grant_type", "refresh_token"), ("client_id", "spa"), ("refresh_token", "x")]).await,
    )
    .await;
    assert_eq!(error, "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_tokens_name_the_client_and_the_requested_resource() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let form = [("grant_type", "client_credentials"), ("scope", "api:read"), ("resource", "https://api.example")];
    let tokens = json(token_request(&app, Some(("service", SERVICE_SECRET)), &form).await).await;
    assert!(tokens.get("refresh_token").is_none() && tokens.get("id_token").is_none());
    assert_eq!(tokens["expires_in"], 120, "the client's own access-token lifetime");
    let claims = verify_jwt(&app, tokens["access_token"].as_str().unwrap(), "https://api.example").await;
    assert_eq!(claims["sub"], "service");
    assert_eq!(claims["client_id"], "service");
    assert_eq!(claims["scope"], "api:read");
    assert!(claims.get("sid").is_none() && claims.get("email").is_none());
    let default =
        json(token_request(&app, Some(("service", SERVICE_SECRET)), &[("grant_type", "client_credentials")]).await).await;
    let claims = verify_jwt(&app, default["access_token"].as_str().unwrap(), "https://default.example").await;
    assert_eq!(claims["scope"], "api:read api:write");
    let (_, error) = error_code(
        token_request(
            &app,
            Some(("service", SERVICE_SECRET)),
            &[("grant_type", "client_credentials"), ("resource", "https://evil.example")],
        )
        .await,
    )
    .await;
    assert_eq!(error, "invalid_target");
    let active = introspect(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], "service");
    let response = userinfo(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "a client token names no user");

    // Revoking an access token: only its own client may, and then it is inactive.
    let access = tokens["access_token"].as_str().unwrap();
    let foreign = app
        .http
        .post(app.url("/oauth2/revoke"))
        .basic_auth("web-app", Some(WEB_SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert_eq!(introspect(&app, access).await["active"], true, "another client's revocation changed nothing");
    let own = app
        .http
        .post(app.url("/oauth2/revoke"))
        .basic_auth("service", Some(SERVICE_SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(introspect(&app, access).await["active"], false);
    let unknown = app
        .http
        .post(app.url("/oauth2/revoke"))
        .basic_auth("service", Some(SERVICE_SECRET))
        .form(&[("token", "made-up")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::OK, "RFC 7009: an unknown token is answered as revoked");
    app.stop().await;
}

/// Forged tokens presented to UserInfo and introspection.
#[tokio::test]
async fn forged_tokens_are_refused() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let code = demo_code(&app, &[]).await;
    let tokens = json(redeem(&app, &code).await).await;
    let genuine = tokens["access_token"].as_str().unwrap();
    let mut parts = genuine.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();

    let none_header = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string());
    let alg_none = format!("{none_header}.{payload}.");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let jwks = app.get("/.well-known/jwks.json").await.text().await.unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    hs.typ = Some("at+jwt".into());
    let hs256 = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(jwks.as_bytes())).unwrap();
    let stranger = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&stranger).unwrap();
    let mut es = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    es.kid = Some("unknown-kid".into());
    es.typ = Some("at+jwt".into());
    let unknown_kid = jsonwebtoken::encode(&es, &claims, &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes())).unwrap();
    es.kid = Some(kid.clone());
    let wrong_key = jsonwebtoken::encode(&es, &claims, &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes())).unwrap();
    let tampered = {
        let mut forged = claims.clone();
        forged["sub"] = Value::from("someone-else");
        let body = URL_SAFE_NO_PAD.encode(forged.to_string());
        let signature = genuine.rsplit('.').next().unwrap();
        format!("{}.{body}.{signature}", genuine.split('.').next().unwrap())
    };
    let id_token_as_access = tokens["id_token"].as_str().unwrap();

    assert_eq!(userinfo(&app, genuine).await.status(), StatusCode::OK);
    for (forged, what) in [
        (alg_none.as_str(), "alg none"),
        (hs256.as_str(), "HS256 keyed with the public key"),
        (unknown_kid.as_str(), "unknown kid"),
        (wrong_key.as_str(), "signed by another key"),
        (tampered.as_str(), "tampered claims"),
        (id_token_as_access, "an ID token used as an access token"),
        ("not-a-token", "garbage"),
    ] {
        let response = userinfo(&app, forged).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{what}");
        assert_eq!(introspect(&app, forged).await, serde_json::json!({"active": false}), "{what}");
    }
    let missing = app.get("/oauth2/userinfo").await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer realm=\"gatehouse\"");

    // Introspection is for authenticated clients only.
    let anonymous = app.http.post(app.url("/oauth2/introspect")).form(&[("token", genuine)]).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let public =
        app.http.post(app.url("/oauth2/introspect")).form(&[("token", genuine), ("client_id", "spa")]).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::UNAUTHORIZED, "a public client cannot authenticate");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_user_loses_tokens_and_refreshes() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let tokens = json(redeem(&app, &demo_code(&app, &[]).await).await).await;
    let alice = app.state.store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    app.state.store.set_user_disabled(&alice, true, app.clock.now()).await.unwrap();
    assert_eq!(introspect(&app, tokens["access_token"].as_str().unwrap()).await["active"], false);
    assert_eq!(introspect(&app, tokens["refresh_token"].as_str().unwrap()).await["active"], false);
    let form = [("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())];
    let (_, error) = error_code(token_request(&app, Some(("demo-app", DEMO_CLIENT_SECRET)), &form).await).await;
    assert_eq!(error, "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn a_code_is_refused_once_its_session_is_revoked_or_its_user_disabled() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let store = &app.state.store;
    let code = demo_code(&app, &[]).await;
    let alice = store.find_linked_user_id("local", "alice").await.unwrap().unwrap();
    for session in store.list_unrevoked_sso_sessions(None, Some(&alice)).await.unwrap() {
        store.revoke_sso_session(&session, app.clock.now()).await.unwrap();
    }
    assert_eq!(error_code(redeem(&app, &code).await).await, (StatusCode::BAD_REQUEST, "invalid_grant".to_owned()));

    let code = demo_code(&app, &[]).await;
    assert!(json(redeem(&app, &code).await).await["id_token"].is_string(), "a code of a live session is redeemed");
    let code = demo_code(&app, &[]).await;
    store.set_user_disabled(&alice, true, app.clock.now()).await.unwrap();
    assert_eq!(error_code(redeem(&app, &code).await).await, (StatusCode::BAD_REQUEST, "invalid_grant".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn consent_is_asked_remembered_refused_and_withdrawn() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let web = |extra: &[(&str, &str)]| {
        let mut pairs = demo_authorize(&[
            ("client_id", "web-app"),
            ("redirect_uri", "https://app.example/cb?tenant=1"),
            ("scope", "openid email api:read"),
        ]);
        for (k, v) in extra {
            pairs.push(((*k).into(), (*v).into()));
        }
        pairs
    };
    let first = authorize(&app, &web(&[])).await;
    let page = sign_in_at(&app, first, "bob", BOB_PASSWORD).await;
    assert_eq!(page.status(), StatusCode::OK, "the consent page");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("form-action 'self' https://app.example;"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Web App") && html.contains("See your email address"), "{html}");
    let csrf = field_value(&html, "csrf").unwrap();
    let request = field_value(&html, "request").unwrap();
    let allowed = app.post_form("/oauth2/consent", &[("csrf", &csrf), ("request", &request), ("decision", "allow")]).await;
    assert_eq!(allowed.status(), StatusCode::SEE_OTHER);
    let params = params_of(&location(&allowed));
    assert!(location(&allowed).starts_with("https://app.example/cb?tenant=1&code="), "the registered query is kept");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", params["code"].as_str()),
        ("redirect_uri", "https://app.example/cb?tenant=1"),
        ("code_verifier", VERIFIER),
    ];
    let web_tokens = json(token_request(&app, Some(("web-app", WEB_SECRET)), &form).await).await;
    let replayed = app.post_form("/oauth2/consent", &[("csrf", &csrf), ("request", &request), ("decision", "allow")]).await;
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST, "a consent request is used once");

    // Remembered: the next authorization goes straight back; prompt=consent asks again.
    assert!(location(&authorize(&app, &web(&[])).await).starts_with("https://app.example/cb"));
    let asked = authorize(&app, &web(&[("prompt", "consent")])).await;
    assert!(location(&asked).starts_with("/oauth2/consent"));
    let html = app.get(&location(&asked)).await.text().await.unwrap();
    let request = field_value(&html, "request").unwrap();
    let denied = app.post_form("/oauth2/consent", &[("csrf", &csrf), ("request", &request), ("decision", "deny")]).await;
    let params = params_of(&location(&denied));
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "state-123");
    let forged = app.post_form("/oauth2/consent", &[("csrf", "forged"), ("request", &request), ("decision", "allow")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Withdrawn from the portal: asked again, and prompt=none now says so.
    let portal = app.get("/").await.text().await.unwrap();
    assert!(portal.contains("Web App"), "the portal lists approved apps");
    let withdrawn = app.post_form("/consents/revoke", &[("csrf", &csrf), ("client_id", "web-app")]).await;
    assert_eq!(withdrawn.status(), StatusCode::SEE_OTHER);
    assert_eq!(introspect(&app, web_tokens["access_token"].as_str().unwrap()).await["active"], false, "and its tokens");
    let silent = authorize(&app, &web(&[("prompt", "none")])).await;
    assert_eq!(params_of(&location(&silent))["error"], "consent_required");
    assert!(location(&authorize(&app, &web(&[])).await).starts_with("/oauth2/consent"));
    app.stop().await;
}

#[tokio::test]
async fn prompt_max_age_hints_and_connector_choice_shape_the_sign_in() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &format!("{CLIENTS}\n[[connectors]]\nid = \"partners\"\ntype = \"local\"\nname = \"Partner accounts\"\nemail_domains = [\"partner.example\"]\n")).await;
    let code = demo_code(&app, &[]).await;
    let id_token = json(redeem(&app, &code).await).await;
    let sid = verify_jwt(&app, id_token["id_token"].as_str().unwrap(), "demo-app").await["sid"].clone();

    // prompt=login shows the form to a signed-in browser, and the session (sid) is kept.
    app.clock.advance(30);
    let forced = authorize(&app, &demo_authorize(&[("prompt", "login")])).await;
    let login_page = app.get(&location(&forced)).await.text().await.unwrap();
    assert!(login_page.contains("name=\"password\""), "the sign-in form is shown again");
    let back = sign_in_at(&app, authorize(&app, &demo_authorize(&[("prompt", "login")])).await, "alice", ALICE_PASSWORD).await;
    let tokens = json(redeem(&app, &params_of(&location(&back))["code"]).await).await;
    let claims = verify_jwt(&app, tokens["id_token"].as_str().unwrap(), "demo-app").await;
    assert_eq!(claims["auth_time"], crate::helpers::START + 30, "a fresh auth_time");
    assert_eq!(claims["sid"], sid, "the same session");

    // max_age: an older sign-in is not good enough.
    app.clock.advance(100);
    let stale = authorize(&app, &demo_authorize(&[("max_age", "60")])).await;
    assert!(location(&stale).starts_with("/login"));
    let fresh = authorize(&app, &demo_authorize(&[("max_age", "600")])).await;
    assert!(location(&fresh).starts_with(DEMO_REDIRECT));
    // max_age=0 asks for a sign-in now; once done, the browser goes back to the app even though
    // a second has passed by then.
    let zero = authorize(&app, &demo_authorize(&[("max_age", "0")])).await;
    let login = location(&zero);
    assert!(login.starts_with("/login"));
    let page = app.get(&login).await.text().await.unwrap();
    let (csrf, req) = (field_value(&page, "csrf").unwrap(), field_value(&page, "req").unwrap());
    let form =
        [("csrf", csrf.as_str()), ("connector", "local"), ("username", "alice"), ("password", ALICE_PASSWORD), ("req", &req)];
    let posted = app.post_form("/login", &form).await;
    app.clock.advance(1);
    assert!(location(&follow(&app, posted).await).starts_with(DEMO_REDIRECT), "no second sign-in");

    // A fresh browser: the login hint's domain picks the partners connector and fills the form.
    let other = TestApp::handle(&app);
    let hinted = authorize(&other, &demo_authorize(&[("login_hint", "dana@partner.example")])).await;
    let page = other.get(&location(&hinted)).await.text().await.unwrap();
    assert!(page.contains("Partner accounts") && !page.contains("Local accounts"), "home-realm discovery");
    assert!(page.contains("value=\"dana@partner.example\""), "the hint fills the username");
    let chosen = authorize(&other, &demo_authorize(&[("connector_id", "local")])).await;
    let page = other.get(&location(&chosen)).await.text().await.unwrap();
    assert!(page.contains("Local accounts") && !page.contains("Partner accounts"), "connector_id skips the chooser");
    let csp = other.get(&location(&chosen)).await.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("form-action 'self' http://localhost:3000;"), "the form may lead to the app: {csp}");
    app.stop().await;
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_its_tokens() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let web_authorize = demo_authorize(&[
        ("client_id", "web-app"),
        ("redirect_uri", "https://app.example/cb"),
        ("scope", "openid offline_access"),
    ]);
    let first = authorize(&app, &web_authorize).await;
    let html = sign_in_at(&app, first, "alice", ALICE_PASSWORD).await.text().await.unwrap();
    let (csrf, request) = (field_value(&html, "csrf").unwrap(), field_value(&html, "request").unwrap());
    let allowed = app.post_form("/oauth2/consent", &[("csrf", &csrf), ("request", &request), ("decision", "allow")]).await;
    let code = params_of(&location(&allowed))["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example/cb"),
        ("code_verifier", VERIFIER),
    ];
    let tokens = json(token_request(&app, Some(("web-app", WEB_SECRET)), &form).await).await;
    let id_token = tokens["id_token"].as_str().unwrap();

    let logout = |pairs: &[(&str, &str)]| format!("/oauth2/logout?{}", query(pairs));
    let unregistered =
        app.get(&logout(&[("id_token_hint", id_token), ("post_logout_redirect_uri", "https://evil.example/")])).await;
    assert_eq!(unregistered.status(), StatusCode::BAD_REQUEST);
    assert!(unregistered.headers().get("location").is_none(), "never a redirect to an unregistered URI");
    let mismatched = app.get(&logout(&[("id_token_hint", id_token), ("client_id", "demo-app")])).await;
    assert_eq!(mismatched.status(), StatusCode::BAD_REQUEST);
    let forged = app.get(&logout(&[("id_token_hint", "eyJhbGciOiJub25lIn0.e30."), ("client_id", "web-app")])).await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let access_as_hint = app.get(&logout(&[("id_token_hint", tokens["access_token"].as_str().unwrap())])).await;
    assert_eq!(access_as_hint.status(), StatusCode::BAD_REQUEST, "an access token is not an ID token hint");

    // Without a hint the user confirms; a cross-site GET cannot sign anyone out.
    let unconfirmed =
        app.get(&logout(&[("client_id", "web-app"), ("post_logout_redirect_uri", "https://app.example/signed-out")])).await;
    assert_eq!(unconfirmed.status(), StatusCode::OK);
    assert!(unconfirmed.headers()["content-security-policy"].to_str().unwrap().contains("https://app.example"));
    assert_eq!(introspect(&app, tokens["refresh_token"].as_str().unwrap()).await["active"], true, "nothing ended yet");

    let done = app
        .get(&logout(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://app.example/signed-out"),
            ("state", "bye"),
        ]))
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "https://app.example/signed-out?state=bye");
    assert_eq!(introspect(&app, tokens["refresh_token"].as_str().unwrap()).await["active"], false);
    assert_eq!(introspect(&app, tokens["access_token"].as_str().unwrap()).await["active"], false);
    assert!(location(&authorize(&app, &web_authorize).await).starts_with("/login"), "signed out");
    let form = [("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())];
    let (_, error) = error_code(token_request(&app, Some(("web-app", WEB_SECRET)), &form).await).await;
    assert_eq!(error, "invalid_grant", "a refresh after the session ended");
    app.stop().await;
}

#[tokio::test]
async fn rs256_clients_get_rs256_tokens_and_refresh_tokens_expire_when_idle() {
    let db = TestDb::sqlite();
    let app = TestApp::start_with(&db, &format!("[tokens]\nrefresh_token_idle_lifetime_secs = 3600\n{CLIENTS}")).await;
    let client = ("rsa-app", "rsa-app-secret-0123456789");
    let tokens = first_party_tokens(&app, client, "https://rsa.example/cb", "openid offline_access").await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(id_token).unwrap().alg, jsonwebtoken::Algorithm::RS256);
    verify_jwt(&app, id_token, "rsa-app").await;

    let refresh = tokens["refresh_token"].as_str().unwrap();
    app.clock.advance(3599);
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let rotated = json(token_request(&app, Some(("rsa-app", "rsa-app-secret-0123456789")), &form).await).await;
    let refresh = rotated["refresh_token"].as_str().unwrap();
    app.clock.advance(3600);
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let (_, error) = error_code(token_request(&app, Some(("rsa-app", "rsa-app-secret-0123456789")), &form).await).await;
    assert_eq!(error, "invalid_grant", "unused for the idle lifetime");
    app.stop().await;
}

/// Malformed, hostile and oversized input to the endpoints not covered above.
#[tokio::test]
async fn every_endpoint_refuses_malformed_and_oversized_input() {
    let db = TestDb::sqlite();
    let app = start(&db).await;
    let long = "a".repeat(8 * 1024 + 1);
    let huge = "a".repeat(200 * 1024);
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let post = |form: Vec<(&'static str, String)>| {
            app.http.post(app.url(path)).basic_auth("service", Some(SERVICE_SECRET)).form(&form).send()
        };
        let (status, error) = error_code(post(vec![]).await.unwrap()).await;
        assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"), "{path}: no token");
        let (_, error) = error_code(post(vec![("token", "a".into()), ("token", "b".into())]).await.unwrap()).await;
        assert_eq!(error, "invalid_request", "{path}: repeated token");
        let (_, error) = error_code(post(vec![("token", long.clone())]).await.unwrap()).await;
        assert_eq!(error, "invalid_request", "{path}: oversized token");
        assert_eq!(post(vec![("token", huge.clone())]).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let not_form =
            app.http.post(app.url(path)).basic_auth("service", Some(SERVICE_SECRET)).body("token=x").send().await.unwrap();
        assert_eq!(not_form.status(), StatusCode::BAD_REQUEST, "{path}: no form content type");
        let wrong =
            app.http.post(app.url(path)).basic_auth("service", Some("nope")).form(&[("token", "x")]).send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}: wrong secret");
    }
    let oversized = userinfo(&app, &long).await;
    assert_eq!(oversized.status(), StatusCode::UNAUTHORIZED);
    let scheme = app.http.get(app.url("/oauth2/userinfo")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(scheme.status(), StatusCode::UNAUTHORIZED);
    let both =
        app.http.post(app.url("/oauth2/userinfo")).bearer_auth("x.y.z").form(&[("access_token", "x.y.z")]).send().await.unwrap();
    assert_eq!(both.status(), StatusCode::BAD_REQUEST, "a token in two places");

    let logout = app.get(&format!("/oauth2/logout?state={long}")).await;
    assert_eq!(logout.status(), StatusCode::BAD_REQUEST);
    let logout = app.get("/oauth2/logout?client_id=a&client_id=b").await;
    assert_eq!(logout.status(), StatusCode::BAD_REQUEST);
    let logout = app.get("/oauth2/logout?client_id=nobody").await;
    assert_eq!(logout.status(), StatusCode::BAD_REQUEST);
    let unconfirmed =
        app.http.post(app.url("/oauth2/logout")).form(&[("confirm", "yes"), ("csrf", "forged")]).send().await.unwrap();
    assert_eq!(unconfirmed.status(), StatusCode::FORBIDDEN, "a confirmation needs the CSRF token");

    for path in ["/oauth2/authorize/resume?request=nope", "/oauth2/consent?request=nope", "/oauth2/authorize/resume"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(response.headers().get("location").is_none());
    }
    let resume = app.get(&format!("/oauth2/authorize/resume?request={long}")).await;
    assert_eq!(resume.status(), StatusCode::BAD_REQUEST);
    let post = app.http.post(app.url("/oauth2/authorize")).body("client_id=demo-app").send().await.unwrap();
    assert_eq!(post.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = crate::provider::demo_authorize(&[]);
    let posted = app.http.post(app.url("/oauth2/authorize")).form(&body).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::SEE_OTHER, "a POST continues as a GET, which carries the Lax cookie");
    let as_get = app.get(&location(&posted)).await;
    assert!(location(&as_get).starts_with("/login?req="), "the authorization endpoint also takes POST");
    let mut logout =
        app.http.post(app.url("/oauth2/logout")).form(&[("client_id", "web-app"), ("state", "s")]).send().await.unwrap();
    assert_eq!(location(&logout), "/oauth2/logout?client_id=web-app&state=s");
    logout = app.get(&location(&logout)).await;
    assert_eq!(logout.status(), StatusCode::OK, "an anonymous browser is already signed out");
    app.stop().await;
}
