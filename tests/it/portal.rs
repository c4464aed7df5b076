//! The access policy (who may use which application), the portal (launcher, sessions,
//! connected apps, linked accounts) and email-first sign-in, over HTTP with a cookie jar, on
//! SQLite and PostgreSQL.

use std::sync::Arc;

use gatehouse::clock::ManualClock;
use gatehouse::store::AuditQuery;
use reqwest::StatusCode;
use serde_json::Value;

use crate::backchannel::{start_receiver, wait_for};
use crate::helpers::{
    ALICE_HASH, ALICE_PASSWORD, BOB_HASH, BOB_PASSWORD, START, TEST_KEK, TestApp, TestDb, field_value, load_config, location,
};
use crate::provider::{CHALLENGE, VERIFIER, params_of, verify_jwt};

const PAYROLL: (&str, &str) = ("payroll", "payroll-secret-0123456789");
const PAYROLL_REDIRECT: &str = "https://payroll.example/cb";
const WIKI: (&str, &str) = ("wiki", "wiki-secret-0123456789");
const WIKI_REDIRECT: &str = "https://wiki.example/cb";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Payroll is for the `payroll` group and told only about `payroll*` groups; the wiki is for
/// anyone signed in locally and asks for consent; Timesheets only for contractors; the back
/// office has no tile. `alice_groups` is alice's group list, as the file declares it.
fn portal_toml(db_url: &str, alice_groups: &str, backchannel: &str) -> String {
    format!(
        r#"
issuer = "http://127.0.0.1:8080"
database_url = "{db_url}"
key_encryption_key = "{TEST_KEK}"

[[clients]]
client_id = "payroll"
client_secret = "{payroll_secret}"
redirect_uris = ["{PAYROLL_REDIRECT}"]
scopes = ["openid", "profile", "groups", "offline_access"]
grant_types = ["authorization_code", "refresh_token"]
name = "Payroll"
first_party = true
allowed_groups = ["payroll"]
groups_claim_filter = "payroll"
description = "Payslips and expenses"
logo_uri = "https://cdn.example/payroll.png"
initiate_login_uri = "https://payroll.example/start"
backchannel_logout_uri = "{backchannel}"

[[clients]]
client_id = "wiki"
client_secret = "{wiki_secret}"
redirect_uris = ["{WIKI_REDIRECT}"]
scopes = ["openid", "profile", "groups"]
name = "Team Wiki"
allowed_connectors = ["local"]
groups_claim_filter = ["engineering", "sales"]
launch_url = "https://wiki.example/"

[[clients]]
client_id = "timesheets"
client_secret = "timesheets-secret-0123456789"
redirect_uris = ["https://timesheets.example/cb"]
name = "Timesheets"
first_party = true
allowed_connectors = ["contractors"]
launch_url = "https://timesheets.example/"

[[clients]]
client_id = "back-office"
client_secret = "back-office-secret-0123456789"
redirect_uris = ["https://back-office.example/cb"]
name = "Back office"
first_party = true

[[connectors]]
id = "local"
type = "local"
name = "Local accounts"

[[connectors.users]]
username = "alice"
password_hash = "{ALICE_HASH}"
email = "alice@example.com"
groups = {alice_groups}

[[connectors.users]]
username = "bob"
password_hash = "{BOB_HASH}"
email = "bob@example.com"
groups = ["sales"]

[[connectors]]
id = "contractors"
type = "local"
name = "Contractors"
email_domains = ["contractors.example"]
"#,
        payroll_secret = PAYROLL.1,
        wiki_secret = WIKI.1,
    )
}

const ALICE_IN_PAYROLL: &str = r#"["engineering", "payroll", "payroll-approvers"]"#;

async fn start(db: &TestDb, alice_groups: &str, backchannel: &str) -> TestApp {
    let config = load_config(db.dir.path(), &portal_toml(&db.url, alice_groups, backchannel));
    TestApp::start_config(config, Arc::new(ManualClock::new(START))).await
}

/// A browser with its own cookie jar and user agent.
fn browser_as(app: &TestApp, user_agent: &str) -> TestApp {
    let mut other = TestApp::handle(app);
    other.http = reqwest::Client::builder()
        .cookie_store(true)
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    other
}

fn authorize_path(client_id: &str, redirect_uri: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", "s-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!("/oauth2/authorize?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

async fn redeem(app: &TestApp, client: (&str, &str), redirect_uri: &str, code: &str) -> Value {
    let form =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri), ("code_verifier", VERIFIER)];
    let response = app.http.post(app.url("/oauth2/token")).basic_auth(client.0, Some(client.1)).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, client: (&str, &str), token: &str) -> (StatusCode, Value) {
    let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
    let response = app.http.post(app.url("/oauth2/token")).basic_auth(client.0, Some(client.1)).form(&form).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Payroll tokens for the signed-in browser (first party: no consent).
async fn payroll_tokens(app: &TestApp) -> Value {
    let response = app.get(&authorize_path(PAYROLL.0, PAYROLL_REDIRECT, "openid profile groups offline_access", &[])).await;
    let target = location(&response);
    assert!(target.starts_with(PAYROLL_REDIRECT), "alice gets a code: {target} ({})", response.status());
    redeem(app, PAYROLL, PAYROLL_REDIRECT, &params_of(&target)["code"]).await
}

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&").replace("&#38;", "&").replace("&#39;", "'").replace("&#34;", "\"")
}

/// The `href` of the element with `id`.
fn href_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" href=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} in {html}")) + marker.len();
    let end = html[start..].find('"').unwrap();
    unescape(&html[start..start + end])
}

/// Every `value` of inputs named `name`.
fn field_values(html: &str, name: &str) -> Vec<String> {
    let marker = format!("name=\"{name}\" value=\"");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let start = at + marker.len();
            html[start..start + html[start..].find('"').unwrap()].to_owned()
        })
        .collect()
}

async fn audit_details(app: &TestApp, kind: &str) -> Vec<(Option<String>, Option<String>)> {
    let query = AuditQuery { kind: Some(kind.to_owned()), limit: 100, ..AuditQuery::default() };
    let found = app.state.store.search_audit(&query).await.unwrap();
    found.into_iter().map(|listing| (listing.event.client_id, listing.event.detail)).collect()
}

async fn policy_suite(db: &TestDb) {
    let app = start(db, ALICE_IN_PAYROLL, "https://payroll.example/bcl").await;

    // bob is not in the payroll group: a page that says so, and a way back with access_denied.
    let bob = TestApp::handle(&app);
    assert_eq!(bob.login("bob", BOB_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let denied = bob.get(&authorize_path(PAYROLL.0, PAYROLL_REDIRECT, "openid", &[])).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let page = denied.text().await.unwrap();
    assert!(unescape(&page).contains("You don't have access to Payroll"), "{page}");
    assert!(page.contains("Ask your administrator for the payroll group."), "{page}");
    let back = params_of(&href_of(&page, "return"));
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "s-1");
    assert!(href_of(&page, "return").starts_with(PAYROLL_REDIRECT));
    // The request was spent: resuming it is not possible.
    let silent = bob.get(&authorize_path(PAYROLL.0, PAYROLL_REDIRECT, "openid", &[("prompt", "none")])).await;
    assert_eq!(silent.status(), StatusCode::FOUND);
    let silent = params_of(&location(&silent));
    assert_eq!((silent["error"].as_str(), silent["state"].as_str()), ("access_denied", "s-1"));
    let refusals = audit_details(&app, "access_denied").await;
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals.iter().all(|(client, detail)| client.as_deref() == Some("payroll")
            && detail.as_deref() == Some("not_in_allowed_groups at authorize")),
        "{refusals:?}"
    );

    // alice is: a code, and tokens that carry only the payroll groups.
    let alice = TestApp::handle(&app);
    assert_eq!(alice.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let tokens = payroll_tokens(&alice).await;
    let id_token = verify_jwt(&alice, tokens["id_token"].as_str().unwrap(), "payroll").await;
    assert_eq!(id_token["groups"], serde_json::json!(["payroll", "payroll-approvers"]));
    let info: Value = alice
        .http
        .get(alice.url("/oauth2/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["groups"], serde_json::json!(["payroll", "payroll-approvers"]), "UserInfo filters like the ID token");

    // Timesheets takes contractors only: alice signed in locally is told so.
    let timesheets = alice.get(&authorize_path("timesheets", "https://timesheets.example/cb", "openid", &[])).await;
    assert_eq!(timesheets.status(), StatusCode::FORBIDDEN);
    let page = timesheets.text().await.unwrap();
    assert!(page.contains("Timesheets accepts accounts from Contractors only."), "{page}");
    assert!(audit_details(&app, "access_denied").await.iter().any(|(client, detail)| client.as_deref() == Some("timesheets")
        && detail.as_deref() == Some("connector_not_allowed at authorize")));

    // The launcher: the apps each may open, and nothing else.
    let home = alice.get("/").await;
    let csp = home.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("img-src 'self' https://cdn.example;"), "the logo's origin, and only it, may load: {csp}");
    let home = home.text().await.unwrap();
    let tiles = &home[home.find("id=\"app-tiles\"").expect("alice has tiles")..home.find("id=\"sessions\"").unwrap()];
    assert!(
        unescape(tiles)
            .contains("href=\"https://payroll.example/start?iss=http%3A%2F%2F127.0.0.1%3A8080&login_hint=alice%40example.com\""),
        "third-party-initiated login with iss and login_hint: {tiles}"
    );
    assert!(tiles.contains("Payslips and expenses") && tiles.contains("https://wiki.example/"), "{tiles}");
    assert!(!tiles.contains("Timesheets") && !tiles.contains("Back office"), "{tiles}");
    let bob_home = bob.get("/").await.text().await.unwrap();
    assert!(bob_home.contains("Team Wiki") && !bob_home.contains("Payroll"), "bob's launcher has no Payroll tile");

    // A refresh checks the policy again: unchanged configuration, a refresh works...
    let (status, refreshed) = refresh(&app, PAYROLL, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    app.stop().await;
    let app = start(db, ALICE_IN_PAYROLL, "https://payroll.example/bcl").await;
    let (status, refreshed) = refresh(&app, PAYROLL, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "a restart alone takes nothing away: {refreshed}");
    app.stop().await;
    // ...and once the file takes alice out of the group, the next refresh is refused.
    let app = start(db, r#"["engineering"]"#, "https://payroll.example/bcl").await;
    let (status, error) = refresh(&app, PAYROLL, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{error}");
    assert!(
        audit_details(&app, "access_denied").await.iter().any(|(client, detail)| client.as_deref() == Some("payroll")
            && detail.as_deref() == Some("not_in_allowed_groups at refresh"))
    );
    let revoked = audit_details(&app, "grant_revoked").await;
    assert!(revoked.iter().any(|(_, detail)| detail.as_deref() == Some("access_policy")), "{revoked:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_access_policy_decides_at_sign_in_at_refresh_and_in_the_launcher_on_sqlite() {
    policy_suite(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn the_access_policy_decides_at_sign_in_at_refresh_and_in_the_launcher_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        policy_suite(&db).await;
    }
}

async fn sessions_suite(db: &TestDb) {
    let (receiver_url, receiver) = start_receiver(0).await;
    let app = start(db, ALICE_IN_PAYROLL, &receiver_url).await;
    let laptop = browser_as(&app, FIREFOX_LINUX);
    let desktop = browser_as(&app, CHROME_WINDOWS);
    let bob = TestApp::handle(&app);
    for (browser, user, password) in
        [(&laptop, "alice", ALICE_PASSWORD), (&desktop, "alice", ALICE_PASSWORD), (&bob, "bob", BOB_PASSWORD)]
    {
        assert_eq!(browser.login(user, password).await.status(), StatusCode::SEE_OTHER);
    }

    // alice's sessions, each with its device, this one marked.
    let home = laptop.get("/").await.text().await.unwrap();
    let sessions = &home[home.find("id=\"session-list\"").unwrap()..home.find("id=\"connected\"").unwrap()];
    assert!(sessions.contains("Firefox on Linux") && sessions.contains("Chrome on Windows"), "{sessions}");
    assert_eq!(sessions.matches("This device").count(), 1);
    assert!(sessions.contains("through Local accounts"), "{sessions}");
    let handles = field_values(sessions, "session");
    assert_eq!(handles.len(), 2);
    let csrf = field_value(&home, "csrf").unwrap();
    let bob_home = bob.get("/").await.text().await.unwrap();
    let bob_handle = field_values(&bob_home, "session").pop().unwrap();

    // Hostile and stale input: refused, nothing ended.
    for handle in ["", "not-a-session", &"x".repeat(5000), &bob_handle] {
        let refused = laptop.post_form("/sessions/sign-out", &[("csrf", &csrf), ("session", handle)]).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{:.40}", handle);
    }
    assert_eq!(laptop.post_form("/sessions/sign-out", &[("session", &handles[0])]).await.status(), StatusCode::BAD_REQUEST);
    let forged = laptop.post_form("/sessions/sign-out", &[("csrf", "forged"), ("session", &handles[0])]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(bob.get("/").await.status(), StatusCode::OK, "bob's session survived alice's attempts");

    // Signing the desktop out from the laptop.
    let other: String = sessions
        .split("<li")
        .filter(|item| !item.contains("data-this-device"))
        .flat_map(|item| field_values(item, "session"))
        .next()
        .expect("the desktop's session is listed");
    assert!(handles.contains(&other));
    let ended = laptop.post_form("/sessions/sign-out", &[("csrf", &csrf), ("session", &other)]).await;
    assert_eq!((ended.status(), location(&ended).as_str()), (StatusCode::SEE_OTHER, "/#sessions"));
    assert_eq!(location(&desktop.get("/").await), "/login", "the desktop is signed out");
    assert_eq!(field_values(&laptop.get("/").await.text().await.unwrap(), "session").len(), 1);
    let signed_out = audit_details(&app, "session_signed_out").await;
    assert_eq!(signed_out.len(), 1, "{signed_out:?}");

    // Everywhere: both of alice's sessions end, every grant is revoked, the app is told. A
    // forged or missing token ends nothing.
    assert_eq!(desktop.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(desktop.post_form("/sessions/sign-out-everywhere", &[("csrf", "forged")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(desktop.post_form("/sessions/sign-out-everywhere", &[]).await.status(), StatusCode::BAD_REQUEST);
    let as_json = desktop
        .http
        .post(desktop.url("/sessions/sign-out-everywhere"))
        .json(&serde_json::json!({"csrf": "x"}))
        .send()
        .await
        .unwrap();
    assert!(as_json.status().is_client_error(), "{}", as_json.status());
    assert_eq!(field_values(&laptop.get("/").await.text().await.unwrap(), "session").len(), 2, "nothing ended yet");
    let tokens = payroll_tokens(&laptop).await;
    let everywhere = desktop.post_form("/sessions/sign-out-everywhere", &[("csrf", &desktop.csrf("/").await)]).await;
    assert_eq!(everywhere.status(), StatusCode::OK);
    assert!(everywhere.text().await.unwrap().contains("signed out of Gatehouse on 2 devices"));
    assert_eq!(location(&laptop.get("/").await), "/login");
    assert_eq!(location(&desktop.get("/").await), "/login");
    let (status, error) = refresh(&app, PAYROLL, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    wait_for(&receiver, 1).await;
    let id_token = verify_jwt(&app, tokens["id_token"].as_str().unwrap(), "payroll").await;
    let delivered = receiver.lock().unwrap().tokens[0].clone();
    let logout = verify_jwt(&app, &delivered, "payroll").await;
    assert_eq!(logout["sid"], id_token["sid"], "the logout token names the laptop's session");
    let report = audit_details(&app, "signed_out_everywhere").await;
    assert_eq!(report.len(), 1);
    assert_eq!(
        report[0].1.as_deref(),
        Some("sessions ended: 2, other grants revoked: 0, back-channel logouts queued: 1"),
        "the payroll grant ended with its session"
    );
    assert_eq!(bob.get("/").await.status(), StatusCode::OK, "bob is still signed in");
    app.stop().await;
}

#[tokio::test]
async fn an_employee_signs_out_a_device_or_everywhere_on_sqlite() {
    sessions_suite(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn an_employee_signs_out_a_device_or_everywhere_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        sessions_suite(&db).await;
    }
}

#[tokio::test]
async fn connected_apps_show_their_access_and_lose_it_on_request() {
    let db = TestDb::sqlite();
    let app = start(&db, ALICE_IN_PAYROLL, "https://payroll.example/bcl").await;
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let consent = app.get(&authorize_path(WIKI.0, WIKI_REDIRECT, "openid profile groups", &[])).await;
    let consent_page = app.get(&location(&consent)).await.text().await.unwrap();
    let request = field_value(&consent_page, "request").unwrap();
    let csrf = field_value(&consent_page, "csrf").unwrap();
    let allowed = app.post_form("/oauth2/consent", &[("csrf", &csrf), ("request", &request), ("decision", "allow")]).await;
    let tokens = redeem(&app, WIKI, WIKI_REDIRECT, &params_of(&location(&allowed))["code"]).await;
    let id_token = verify_jwt(&app, tokens["id_token"].as_str().unwrap(), "wiki").await;
    assert_eq!(id_token["groups"], serde_json::json!(["engineering"]), "a list filter keeps only the listed groups");

    let home = app.get("/").await.text().await.unwrap();
    let connected = &home[home.find("id=\"connected-list\"").unwrap()..home.find("id=\"accounts\"").unwrap()];
    assert!(connected.contains("Team Wiki") && connected.contains("See your name and username"), "{connected}");
    assert!(connected.contains("Last used") && connected.contains("just now"), "{connected}");
    let linked = &home[home.find("id=\"linked-list\"").unwrap()..];
    assert!(linked.contains("Local accounts") && linked.contains("Account alice") && linked.contains("last sign-in"), "{linked}");

    let csrf = field_value(&home, "csrf").unwrap();
    assert_eq!(
        app.post_form("/consents/revoke", &[("csrf", &csrf), ("client_id", &"w".repeat(300))]).await.status(),
        StatusCode::BAD_REQUEST
    );
    let removed = app.post_form("/consents/revoke", &[("csrf", &csrf), ("client_id", "wiki")]).await;
    assert_eq!(location(&removed), "/#connected");
    let home = app.get("/").await.text().await.unwrap();
    assert!(!home.contains("data-client=\"wiki\"><div>") && home.contains("No app holds access to your account."), "{home}");
    let access =
        app.http.get(app.url("/oauth2/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(access.status(), StatusCode::UNAUTHORIZED, "the wiki's token stopped working");
    let again = app.get(&authorize_path(WIKI.0, WIKI_REDIRECT, "openid profile groups", &[])).await;
    assert!(location(&again).starts_with("/oauth2/consent"), "the wiki asks again");

    // The consent page stays open while alice loses the wiki: approving it issues nothing.
    let consent_page = app.get(&location(&again)).await.text().await.unwrap();
    let wiki = app.state.store.get_client("wiki").await.unwrap();
    let restricted = gatehouse::access::AccessPolicy { allowed_groups: vec!["writers".into()], ..wiki.access.clone() };
    app.state
        .store
        .update_client("wiki", &move |old| Ok(gatehouse::store::ClientRecord { access: restricted.clone(), ..old }))
        .await
        .unwrap();
    app.state.provider.clients.forget("wiki");
    let form = [
        ("csrf", field_value(&consent_page, "csrf").unwrap()),
        ("request", field_value(&consent_page, "request").unwrap()),
        ("decision", String::from("allow")),
    ];
    let approved = app.http.post(app.url("/oauth2/consent")).form(&form).send().await.unwrap();
    assert_eq!(approved.status(), StatusCode::FORBIDDEN);
    assert!(unescape(&approved.text().await.unwrap()).contains("You don't have access to Team Wiki"));
    assert!(app.state.store.list_consents(&wiki_user(&app).await).await.unwrap().is_empty(), "no consent recorded");
    assert!(
        audit_details(&app, "access_denied")
            .await
            .iter()
            .any(|(client, detail)| client.as_deref() == Some("wiki")
                && detail.as_deref() == Some("not_in_allowed_groups at issue"))
    );
    app.stop().await;
}

async fn wiki_user(app: &TestApp) -> String {
    let query = gatehouse::store::UserQuery { text: Some("alice".into()), limit: 1, ..Default::default() };
    app.state.store.search_users(&query).await.unwrap().remove(0).id
}

#[tokio::test]
async fn the_launcher_searches_when_there_are_many_apps_and_keeps_bad_searches_harmless() {
    let db = TestDb::sqlite();
    let mut extra = String::new();
    for i in 0..12 {
        extra.push_str(&format!(
            "\n[[clients]]\nclient_id = \"tool-{i}\"\nclient_secret = \"tool-secret-0123456789\"\nredirect_uris = [\"https://tool{i}.example/cb\"]\nname = \"Tool {i:02}\"\nlaunch_url = \"https://tool{i}.example/\"\n"
        ));
    }
    let toml = portal_toml(&db.url, ALICE_IN_PAYROLL, "https://payroll.example/bcl").replacen(
        "[[connectors]]",
        &format!("{extra}\n[[connectors]]"),
        1,
    );
    let app = TestApp::start_config(load_config(db.dir.path(), &toml), Arc::new(ManualClock::new(START))).await;
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let all = app.get("/").await.text().await.unwrap();
    assert!(all.contains("id=\"app-search\""), "many apps: a search field");
    assert_eq!(all.matches("class=\"tile\"").count(), 14);
    let found = app.get("/?q=tool+07").await.text().await.unwrap();
    assert_eq!(found.matches("class=\"tile\"").count(), 1);
    assert!(found.contains("Tool 07"));
    let by_description = app.get("/?q=PAYSLIPS").await.text().await.unwrap();
    assert_eq!(by_description.matches("class=\"tile\"").count(), 1, "descriptions are searched, case-insensitively");
    let none = app.get("/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert_eq!(none.status(), StatusCode::OK);
    let none = none.text().await.unwrap();
    assert!(none.contains("No app matches") && !none.contains("<script>alert"), "escaped, not run");
    let long = app.get(&format!("/?q={}", "a".repeat(10_000))).await;
    assert_eq!(long.status(), StatusCode::OK, "an overlong search is cut, not an error");
    let repeated = app.get("/?q=a&q=b").await;
    assert_eq!(repeated.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// Email-first routing, with an OpenID connector whose provider is never contacted here (see
/// `upstream_oidc` for the whole sign-in through a real provider).
fn email_first_toml(db_url: &str) -> String {
    format!(
        r#"
issuer = "http://127.0.0.1:8080"
database_url = "{db_url}"
key_encryption_key = "{TEST_KEK}"

[[connectors]]
id = "local"
type = "local"
name = "Local accounts"
email_domains = ["example.com"]

[[connectors.users]]
username = "alice"
password_hash = "{ALICE_HASH}"
email = "alice@example.com"

[[connectors]]
id = "corp"
type = "oidc"
name = "Corp Login"
issuer = "http://127.0.0.1:9/corp"
client_id = "gatehouse"
client_secret = "gatehouse-upstream-secret"
email_domains = ["corp.example"]

[[connectors]]
id = "partner"
type = "oidc"
name = "Partner Login"
issuer = "http://127.0.0.1:9/partner"
client_id = "gatehouse"
client_secret = "gatehouse-upstream-secret"
email_domains = ["partner.example"]
"#
    )
}

async fn email_first_suite(db: &TestDb) {
    let app =
        TestApp::start_config(load_config(db.dir.path(), &email_first_toml(&db.url)), Arc::new(ManualClock::new(START))).await;
    let page = app.get("/login").await.text().await.unwrap();
    assert!(page.contains("action=\"/login/identify\"") && !page.contains("type=\"password\""), "email first: {page}");
    let csrf = field_value(&page, "csrf").unwrap();
    let identify = |identifier: String| {
        let app = &app;
        let csrf = csrf.clone();
        async move { app.post_form("/login/identify", &[("csrf", &csrf), ("identifier", &identifier)]).await }
    };

    // A domain one connector lists goes straight there, with the address as the hint; an
    // address nobody has goes the same way, so nothing tells whether an account exists.
    for who in ["someone@corp.example", "nobody-at-all@CORP.example"] {
        let routed = identify(who.to_owned()).await;
        assert_eq!(routed.status(), StatusCode::OK, "{who}");
        let page = routed.text().await.unwrap();
        let target = href_of(&page, "continue");
        assert!(target.starts_with("/oidc/corp/login?req="), "{who}: {page}");
        assert!(
            page.contains(&format!("<meta http-equiv=\"refresh\" content=\"0;url={}", target.replace('&', "&#38;"))),
            "{page}"
        );
        assert!(page.contains("Continuing to Corp Login"), "{page}");
    }
    // The local connector's form appears only for its own users' domain, or a plain username.
    for who in ["alice@example.com", "alice", "nobody@example.com"] {
        let form = identify(who.to_owned()).await;
        assert_eq!(form.status(), StatusCode::OK);
        let form = form.text().await.unwrap();
        assert!(form.contains("type=\"password\"") && !form.contains("/oidc/"), "{who}: {form}");
        assert!(
            form.contains(&format!("name=\"username\" autocomplete=\"username\" required maxlength=\"256\" value=\"{who}\""))
        );
    }
    // An unknown domain gets the choices open to it: here none, said plainly.
    let nowhere = identify("x@elsewhere.example".to_owned()).await.text().await.unwrap();
    assert!(nowhere.contains("There is no way to sign in with that address here") && !nowhere.contains("type=\"password\""));
    // "Other ways to sign in" lists everything.
    let choices = app.get("/login?choose=1").await.text().await.unwrap();
    assert!(
        choices.contains("Sign in with Corp Login")
            && choices.contains("Sign in with Partner Login")
            && choices.contains("type=\"password\"")
    );

    // Bad input: a clear message, the form again, never a server error.
    for (bad, message) in [
        (String::new(), "Enter your email address or username."),
        ("   ".to_owned(), "Enter your email address or username."),
        ("two words@corp.example".to_owned(), "That is not an email address or username."),
        ("@corp.example".to_owned(), "That is not an email address or username."),
        ("someone@".to_owned(), "That is not an email address or username."),
        ("a\u{0}b@corp.example".to_owned(), "That is not an email address or username."),
        (format!("{}@corp.example", "x".repeat(300)), "That is not an email address or username."),
    ] {
        let refused = identify(bad.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad:.30}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(message) && text.contains("action=\"/login/identify\""), "{bad:.30}: {text}");
    }
    assert_eq!(app.post_form("/login/identify", &[("identifier", "a@corp.example")]).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.post_form("/login/identify", &[("csrf", "forged"), ("identifier", "a@corp.example")]).await.status(),
        StatusCode::FORBIDDEN
    );
    let huge = app.post_form("/login/identify", &[("csrf", &csrf), ("identifier", &"a".repeat(100_000))]).await;
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let stale =
        app.post_form("/login/identify", &[("csrf", &csrf), ("identifier", "a@corp.example"), ("req", "no-such-request")]).await;
    assert_eq!(stale.status(), StatusCode::BAD_REQUEST);

    // Signing in remembers the connector (an id, nothing personal) and offers it first.
    let signed_in = app
        .post_form(
            "/login",
            &[("csrf", &csrf), ("connector", "local"), ("username", "alice@example.com"), ("password", ALICE_PASSWORD)],
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER, "a local user signs in with their email address");
    let cookie = crate::helpers::set_cookie(&signed_in, "gatehouse_last_connector").expect("remembered");
    assert!(
        cookie.starts_with("gatehouse_last_connector=local;") && cookie.contains("Path=/login") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let csrf = app.csrf("/").await;
    app.post_form("/logout", &[("csrf", &csrf)]).await;
    let again = app.get("/login").await.text().await.unwrap();
    assert!(
        again.contains("You signed in with <strong>Local accounts</strong> last time.") && again.contains("type=\"password\""),
        "{again}"
    );
    let forget = app.get("/login/forget").await;
    assert_eq!(location(&forget), "/login");
    assert!(crate::helpers::set_cookie(&forget, "gatehouse_last_connector").unwrap().contains("Max-Age=0"));
    let fresh = app.get("/login").await.text().await.unwrap();
    assert!(fresh.contains("action=\"/login/identify\"") && !fresh.contains("last time"));
    // Malformed parameters of the login pages: a clear refusal or no effect, never a 500.
    assert_eq!(app.get("/login/forget?req=%3Cscript%3E").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/login?req=a&req=b").await.status(), StatusCode::BAD_REQUEST);
    let odd = app.get("/login?choose=%00%FF").await;
    assert_eq!(odd.status(), StatusCode::OK);
    assert!(odd.text().await.unwrap().contains("action=\"/login/identify\""), "an unknown choose value is ignored");
    // A forged cookie naming no connector is ignored.
    let forged = app.http.get(app.url("/login")).header("cookie", "gatehouse_last_connector=../../etc").send().await.unwrap();
    assert!(forged.text().await.unwrap().contains("action=\"/login/identify\""));
    app.stop().await;
}

#[tokio::test]
async fn email_first_sign_in_routes_by_domain_and_remembers_the_connector_on_sqlite() {
    email_first_suite(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn email_first_sign_in_routes_by_domain_and_remembers_the_connector_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        email_first_suite(&db).await;
    }
}

#[tokio::test]
async fn policy_keys_are_validated_in_the_file() {
    let db = TestDb::sqlite();
    let base = portal_toml(&db.url, ALICE_IN_PAYROLL, "https://payroll.example/bcl");
    for (from, to, key) in [
        ("allowed_connectors = [\"local\"]", "allowed_connectors = [\"nowhere\"]", "clients[1].allowed_connectors"),
        ("allowed_groups = [\"payroll\"]", "allowed_groups = [\"\"]", "clients[0].allowed_groups"),
        ("groups_claim_filter = \"payroll\"", "groups_claim_filter = \"\"", "clients[0].groups_claim_filter"),
        ("groups_claim_filter = \"payroll\"", "groups_claim_filter = 7", "groups_claim_filter"),
        (
            "initiate_login_uri = \"https://payroll.example/start\"",
            "initiate_login_uri = \"javascript:alert(1)\"",
            "clients[0].initiate_login_uri",
        ),
        ("launch_url = \"https://wiki.example/\"", "launch_url = \"ftp://wiki.example/\"", "clients[1].launch_url"),
        ("logo_uri = \"https://cdn.example/payroll.png\"", "logo_uri = \"not a url\"", "clients[0].logo_uri"),
        ("description = \"Payslips and expenses\"", "description = \"\"", "clients[0].description"),
        ("name = \"Back office\"", "name = \"Back office\"\nshow_in_portal = true", "clients[3].show_in_portal"),
    ] {
        assert!(base.contains(from), "{from}");
        let path = crate::helpers::write_config(db.dir.path(), &base.replacen(from, to, 1));
        let error = gatehouse::config::load(&path, &[]).unwrap_err().to_string();
        // Entries are named by id as well (`clients[1] (client_id = "wiki").launch_url`).
        let unnamed = match (error.find(" (client_id = "), error.find("\").")) {
            (Some(start), Some(end)) if start < end => format!("{}{}", &error[..start], &error[end + 2..]),
            _ => error.clone(),
        };
        assert!(unnamed.contains(key), "{key}: {error}");
    }
}
