//! `/admin/connectors`: identity providers in the console, over the admin core's connector
//! operations. Same rules as the rest of the console: admins only, CSRF on every form, and a
//! confirmation that says how many sessions end before a connector is disabled or removed.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::admin::AdminError;
use crate::admin::connectors::{ConnectorCheck, ConnectorView, SignInFailure};
use crate::login::TestSignIn;
use crate::secret::Secret;
use crate::web::AppState;
use crate::web::admin::{ConfirmPage, Console, CsrfForm, Nav, admin_error, checked_form, enc};
use crate::web::error::WebError;
use crate::web::pages::{ContinueUpstreamPage, render_page};
use crate::web::upstream::TEST_RESULT_KEY;

/// Pasted IdP metadata can be large (AD FS documents run to hundreds of kilobytes); the
/// validator allows 1 MiB of XML, which form encoding can triple.
const MAX_CONNECTOR_FORM_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;

/// An uploaded metadata file: the validator's 1 MiB of XML and the form around it.
const MAX_UPLOAD_BYTES: usize = crate::config::MAX_METADATA_XML_BYTES + 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/connectors", get(connectors).post(create_connector).layer(DefaultBodyLimit::max(MAX_CONNECTOR_FORM_BYTES)))
        .route("/admin/connectors/new", get(new_connector))
        .route(
            "/admin/connectors/{id}",
            get(connector).post(update_connector).layer(DefaultBodyLimit::max(MAX_CONNECTOR_FORM_BYTES)),
        )
        .route("/admin/connectors/{id}/edit", get(edit_connector))
        .route("/admin/connectors/{id}/check", axum::routing::post(check_connector))
        .route("/admin/connectors/{id}/test", get(test_result).post(start_test))
        .route("/admin/connectors/{id}/mapping", get(mapping_page).post(mapping_action))
        .route(
            "/admin/connectors/{id}/metadata",
            axum::routing::post(upload_metadata).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/admin/connectors/{id}/{action}", get(confirm_action).post(action))
}

#[derive(Template)]
#[template(path = "admin/connectors.html")]
struct ConnectorsPage<'a> {
    nav: Nav<'a>,
    connectors: Vec<ConnectorView>,
}

async fn connectors(State(state): State<AppState>, console: Console) -> Result<Response, WebError> {
    let connectors = state.admin.list_connectors().await.map_err(admin_error)?;
    Ok(render_page(&ConnectorsPage { nav: console.nav("connectors"), connectors }).into_response())
}

/// The connector form: both kinds' fields, shown by kind.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectorForm {
    #[serde(default)]
    csrf: Secret<String>,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email_domains: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    /// Write-only: empty keeps the stored secret.
    #[serde(default)]
    client_secret: Secret<String>,
    #[serde(default)]
    public_client: Option<String>,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    userinfo: Option<String>,
    #[serde(default)]
    trust_email: Option<String>,
    #[serde(default)]
    metadata_source: String,
    #[serde(default)]
    idp_metadata_url: String,
    #[serde(default)]
    idp_metadata_xml: String,
    #[serde(default)]
    sign_requests: Option<String>,
    #[serde(default)]
    allow_idp_initiated: Option<String>,
    #[serde(default)]
    allow_sha1: Option<String>,
    #[serde(default)]
    claim_subject: String,
    #[serde(default)]
    claim_username: String,
    #[serde(default)]
    claim_email: String,
    #[serde(default)]
    claim_name: String,
    #[serde(default)]
    claim_groups: String,
    #[serde(default)]
    link_by_email: Option<String>,
    #[serde(default)]
    when_email_taken: String,
    #[serde(default)]
    clock_skew_secs: String,
    #[serde(default)]
    timeout_secs: String,
    #[serde(default)]
    version: Option<i64>,
}

fn words(text: &str) -> Vec<String> {
    text.split(['\n', ',', ' ']).map(str::trim).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn text_or_null(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() { Value::Null } else { Value::from(text.to_owned()) }
}

fn number_or_null(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() { Value::Null } else { text.parse::<i64>().map_or_else(|_| Value::from(text), Value::from) }
}

impl ConnectorForm {
    fn is_saml(&self) -> bool {
        self.kind == "saml"
    }

    /// The form as the configuration's fields. Every field is sent, empty ones as `null`, so
    /// an edit clears what the form cleared.
    fn fields(&self, creating: bool) -> Map<String, Value> {
        let mut map = Map::new();
        if creating {
            map.insert("id".into(), Value::from(self.id.trim().to_owned()));
            map.insert("type".into(), Value::from(self.kind.clone()));
        }
        map.insert("name".into(), text_or_null(&self.name));
        map.insert("email_domains".into(), Value::from(words(&self.email_domains)));
        map.insert("trust_email".into(), Value::from(self.trust_email.is_some()));
        map.insert("link_by_email".into(), Value::from(self.link_by_email.is_some()));
        map.insert(
            "when_email_taken".into(),
            if self.when_email_taken == "refuse" { Value::from("refuse") } else { Value::Null },
        );
        map.insert("clock_skew_secs".into(), number_or_null(&self.clock_skew_secs));
        map.insert("timeout_secs".into(), number_or_null(&self.timeout_secs));
        let mut claims = Map::new();
        let claim_fields: &[(&str, &str)] = if self.is_saml() {
            &[
                ("subject", &self.claim_subject),
                ("username", &self.claim_username),
                ("email", &self.claim_email),
                ("name", &self.claim_name),
                ("groups", &self.claim_groups),
            ]
        } else {
            &[
                ("username", &self.claim_username),
                ("email", &self.claim_email),
                ("name", &self.claim_name),
                ("groups", &self.claim_groups),
            ]
        };
        for (claim, value) in claim_fields {
            if !value.trim().is_empty() {
                claims.insert((*claim).to_owned(), Value::from(value.trim().to_owned()));
            }
        }
        map.insert("claims".into(), Value::Object(claims));
        if self.is_saml() {
            let by_url = self.metadata_source != "xml";
            map.insert("idp_metadata_url".into(), if by_url { text_or_null(&self.idp_metadata_url) } else { Value::Null });
            map.insert("idp_metadata_xml".into(), if by_url { Value::Null } else { text_or_null(&self.idp_metadata_xml) });
            map.insert("sign_requests".into(), Value::from(self.sign_requests.is_some()));
            map.insert("allow_idp_initiated".into(), Value::from(self.allow_idp_initiated.is_some()));
            map.insert("allow_sha1".into(), Value::from(self.allow_sha1.is_some()));
        } else {
            map.insert("issuer".into(), text_or_null(&self.issuer));
            map.insert("client_id".into(), text_or_null(&self.client_id));
            let scopes = words(&self.scopes);
            map.insert("scopes".into(), if scopes.is_empty() { Value::Null } else { Value::from(scopes) });
            map.insert("userinfo".into(), Value::from(self.userinfo.is_some()));
            if self.public_client.is_some() {
                map.insert("client_secret".into(), Value::Null);
            } else if !self.client_secret.expose().is_empty() {
                map.insert("client_secret".into(), Value::from(self.client_secret.expose().clone()));
            }
        }
        if let Some(version) = self.version {
            map.insert("version".into(), Value::from(version));
        }
        map
    }

    fn new_defaults(kind: &str) -> Self {
        let saml = kind == "saml";
        Self {
            kind: String::from(if saml { "saml" } else { "oidc" }),
            scopes: String::from("openid email profile"),
            metadata_source: String::from("url"),
            sign_requests: saml.then(String::new),
            claim_subject: String::from("NameID"),
            claim_email: String::from(if saml { "mail" } else { "email" }),
            claim_name: String::from(if saml { "displayName" } else { "name" }),
            claim_groups: String::from("groups"),
            claim_username: String::from(if saml { "" } else { "preferred_username" }),
            ..Self::default()
        }
    }

    fn from_view(view: &ConnectorView) -> Self {
        let spec = &view.spec;
        let saml = spec.kind == "saml";
        let defaults = Self::new_defaults(&spec.kind);
        let or_default = |value: &Option<String>, default: &str| value.clone().unwrap_or_else(|| default.to_owned());
        Self {
            kind: spec.kind.clone(),
            id: spec.id.clone(),
            name: view.name().to_owned(),
            email_domains: spec.email_domains.join("\n"),
            issuer: spec.issuer.clone().unwrap_or_default(),
            client_id: spec.client_id.clone().unwrap_or_default(),
            public_client: (!saml && !view.has_client_secret).then(String::new),
            scopes: spec.scopes.as_ref().map_or(defaults.scopes.clone(), |s| s.join(" ")),
            userinfo: spec.userinfo.then(String::new),
            trust_email: spec.trust_email.then(String::new),
            link_by_email: spec.link_by_email.then(String::new),
            when_email_taken: spec.when_email_taken.clone().unwrap_or_default(),
            metadata_source: String::from(if spec.idp_metadata_xml.is_some() { "xml" } else { "url" }),
            idp_metadata_url: spec.idp_metadata_url.clone().unwrap_or_default(),
            idp_metadata_xml: spec.idp_metadata_xml.clone().unwrap_or_default(),
            sign_requests: spec.sign_requests.unwrap_or(true).then(String::new),
            allow_idp_initiated: spec.allow_idp_initiated.then(String::new),
            allow_sha1: spec.allow_sha1.then(String::new),
            claim_subject: or_default(&spec.claims.subject, &defaults.claim_subject),
            claim_username: or_default(&spec.claims.username, &defaults.claim_username),
            claim_email: or_default(&spec.claims.email, &defaults.claim_email),
            claim_name: or_default(&spec.claims.name, &defaults.claim_name),
            claim_groups: or_default(&spec.claims.groups, &defaults.claim_groups),
            clock_skew_secs: spec.clock_skew_secs.map(|s| s.to_string()).unwrap_or_default(),
            timeout_secs: spec.timeout_secs.map(|s| s.to_string()).unwrap_or_default(),
            version: Some(view.version),
            ..Self::default()
        }
    }
}

#[derive(Template)]
#[template(path = "admin/connector_form.html")]
struct ConnectorFormPage<'a> {
    nav: Nav<'a>,
    creating: bool,
    form: &'a ConnectorForm,
    /// Whether a secret is stored (edits keep it unless a new one is typed).
    has_secret: bool,
    /// Where the IdP sends people back, shown before the connector exists.
    callback_hint: String,
    errors: BTreeMap<String, String>,
    problem: Option<String>,
}

impl ConnectorFormPage<'_> {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f.as_str() == field || f.starts_with(&format!("{field}.")) || f.starts_with(&format!("{field}[")))
            .map(|(_, e)| e.as_str())
    }
}

fn form_page(
    state: &AppState,
    console: &Console,
    creating: bool,
    form: &ConnectorForm,
    has_secret: bool,
    err: Option<AdminError>,
) -> Result<Response, WebError> {
    let mut errors = BTreeMap::new();
    let mut problem = None;
    let status = match err {
        None => StatusCode::OK,
        Some(AdminError::Invalid { field, reason }) => {
            errors.insert(field, reason);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Some(AdminError::Conflict(message)) => {
            problem = Some(message);
            StatusCode::CONFLICT
        }
        Some(other) => return Err(admin_error(other)),
    };
    let issuer = state.provider.issuer();
    let callback_hint = if form.is_saml() {
        format!("{issuer}/saml/<id>/acs")
    } else {
        format!("{issuer}{}", crate::upstream::oidc::callback_path("<id>"))
    };
    let page = ConnectorFormPage { nav: console.nav("connectors"), creating, form, has_secret, callback_hint, errors, problem };
    Ok((status, render_page(&page)).into_response())
}

#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default, rename = "type")]
    kind: String,
}

async fn new_connector(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<NewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let Query(query) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    form_page(&state, &console, true, &ConnectorForm::new_defaults(&query.kind), false, None)
}

async fn edit_connector(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    console.may_write()?;
    let view = state.admin.connector(&id).await.map_err(admin_error)?;
    if view.managed_by_config {
        return Err(WebError::Forbidden("This connector is managed by the configuration file; change it there."));
    }
    form_page(&state, &console, false, &ConnectorForm::from_view(&view), view.has_client_secret, None)
}

async fn create_connector(
    State(state): State<AppState>,
    console: Console,
    form: Result<Form<ConnectorForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    if form.kind != "saml" && form.kind != "oidc" {
        return Err(WebError::BadRequest("Choose SAML or OpenID Connect."));
    }
    match state.admin.create_connector(console.actor(), form.fields(true)).await {
        Ok((view, check)) => connector_page(&state, &console, &view.spec.id, Some(check), StatusCode::CREATED).await,
        Err(err) => form_page(&state, &console, true, &form, false, Some(err)),
    }
}

async fn update_connector(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<ConnectorForm>, FormRejection>,
) -> Result<Response, WebError> {
    let mut form = checked_form(&console, form, |f| &f.csrf).await?;
    let current = state.admin.connector(&id).await.map_err(admin_error)?;
    form.kind = current.spec.kind.clone();
    match state.admin.update_connector(console.actor(), &id, form.fields(false)).await {
        Ok((_, check)) => connector_page(&state, &console, &id, Some(check), StatusCode::OK).await,
        Err(err) => {
            form.id = id;
            form_page(&state, &console, false, &form, current.has_client_secret, Some(err))
        }
    }
}

#[derive(Template)]
#[template(path = "admin/connector.html")]
struct ConnectorPage<'a> {
    nav: Nav<'a>,
    connector: ConnectorView,
    /// What the IdP said when the connector was just saved or checked.
    check: Option<ConnectorCheck>,
    check_error: Option<String>,
    failures: Vec<SignInFailure>,
    warnings: Vec<String>,
}

async fn connector_page(
    state: &AppState,
    console: &Console,
    id: &str,
    check: Option<ConnectorCheck>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let connector = state.admin.connector(id).await.map_err(admin_error)?;
    let failures = state.admin.connector_failures(id).await.map_err(admin_error)?;
    let warnings = state.admin.connector_attention(Some(id)).await.map_err(admin_error)?;
    let page = ConnectorPage { nav: console.nav("connectors"), connector, check, check_error: None, failures, warnings };
    Ok((status, render_page(&page)).into_response())
}

async fn connector(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    connector_page(&state, &console, &id, None, StatusCode::OK).await
}

/// Asks the IdP now (discovery and keys, or the metadata) and shows what it said.
async fn check_connector(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    console.verify(&form.csrf).await?;
    match state.admin.recheck_connector(&id).await {
        Ok(check) => connector_page(&state, &console, &id, Some(check), StatusCode::OK).await,
        Err(AdminError::Invalid { reason, .. }) => {
            let connector = state.admin.connector(&id).await.map_err(admin_error)?;
            let failures = state.admin.connector_failures(&id).await.map_err(admin_error)?;
            let warnings = state.admin.connector_attention(Some(&id)).await.map_err(admin_error)?;
            let page = ConnectorPage {
                nav: console.nav("connectors"),
                connector,
                check: None,
                check_error: Some(reason),
                failures,
                warnings,
            };
            Ok((StatusCode::BAD_GATEWAY, render_page(&page)).into_response())
        }
        Err(err) => Err(admin_error(err)),
    }
}

/// What a confirmation offers for each action.
fn action_of(action: &str) -> Result<&'static str, WebError> {
    match action {
        "disable" => Ok("disable"),
        "enable" => Ok("enable"),
        "delete" => Ok("delete"),
        _ => Err(WebError::NotFound),
    }
}

async fn confirm_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let action = action_of(&action)?;
    console.may_write()?;
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    if connector.managed_by_config {
        return Err(WebError::Forbidden("This connector is managed by the configuration file; change it there."));
    }
    let sessions = state.admin.connector_sessions(&id).await.map_err(admin_error)?;
    let name = connector.name().to_owned();
    let ends = format!(
        "{sessions} active session{} signed in through {name} end{} at once, with the tokens issued in them; applications with back-channel logout are told.",
        if sessions == 1 { "" } else { "s" },
        if sessions == 1 { "s" } else { "" }
    );
    let (title, consequences, button) = match action {
        "disable" => (
            format!("Disable {name}?"),
            vec![format!("No one can sign in through {name} until it is enabled again."), ends],
            "Disable connector",
        ),
        "enable" => (format!("Enable {name}?"), vec![format!("People can sign in through {name} again.")], "Enable connector"),
        _ => (
            format!("Delete {name}?"),
            vec![
                format!("{name} is removed; no one can sign in through it."),
                ends,
                String::from(
                    "Users who signed in through it are kept, with their links: a connector added again with the same id finds them.",
                ),
            ],
            "Delete connector",
        ),
    };
    let page = ConfirmPage {
        nav: console.nav("connectors"),
        title,
        consequences,
        action: format!("/admin/connectors/{}/{action}", enc(&id)),
        button,
        back: format!("/admin/connectors/{}", enc(&id)),
        hidden: Vec::new(),
    };
    Ok(render_page(&page).into_response())
}

async fn action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    let action = action_of(&action)?;
    checked_form(&console, form, |f| &f.csrf).await?;
    let actor = console.actor();
    match action {
        "disable" => state.admin.set_connector_disabled(actor, &id, true).await.map(drop),
        "enable" => state.admin.set_connector_disabled(actor, &id, false).await.map(drop),
        _ => {
            state.admin.delete_connector(actor, &id).await.map_err(admin_error)?;
            return Ok(Redirect::to("/admin/connectors").into_response());
        }
    }
    .map_err(admin_error)?;
    Ok(Redirect::to(&format!("/admin/connectors/{}", enc(&id))).into_response())
}

/// Starts a test sign-in through the connector in this browser: the IdP's answer ends on the
/// result page below instead of in a session.
async fn start_test(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let target = match state.admin.start_test_sign_in(console.actor(), &id).await {
        Ok(target) => target,
        Err(AdminError::Invalid { .. }) => {
            return Err(WebError::BadRequest("Only SAML and OpenID Connect providers can be tested this way."));
        }
        Err(AdminError::Conflict(_)) => return Err(WebError::BadRequest("This provider is disabled: enable it to test it.")),
        Err(err) => return Err(admin_error(err)),
    };
    // A page that moves on by itself, not a redirect: the console's CSP (`form-action 'self'`)
    // does not let a form's answer redirect to the IdP.
    Ok(render_page(&ContinueUpstreamPage { name: connector.name(), target: &target }).into_response())
}

#[derive(Deserialize)]
pub struct TestQuery {
    #[serde(default)]
    failed: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/connector_test.html")]
struct TestPage<'a> {
    nav: Nav<'a>,
    connector: ConnectorView,
    result: Option<TestSignIn>,
    /// The refusal a failed test ended with.
    failure: Option<SignInFailure>,
    /// A failed test's result was asked for but is gone (shown once, or expired).
    expired: bool,
}

async fn test_result(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    query: Result<Query<TestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let Query(query) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let (result, failure) = if let Some(failed) = query.failed.as_deref() {
        // Only the failure this browser's test was sent back with, never someone else's.
        (None, state.admin.take_test_failure(&id, failed).await.map_err(admin_error)?)
    } else {
        let stored: Option<TestSignIn> = console.session().get(TEST_RESULT_KEY).await?;
        (stored.filter(|r| r.connector_id == id), None)
    };
    let expired = query.failed.is_some() && failure.is_none();
    let page = TestPage { nav: console.nav("connectors"), connector, result, failure, expired };
    Ok(render_page(&page).into_response())
}

#[derive(Template)]
#[template(path = "admin/connector_mapping.html")]
struct MappingPage<'a> {
    nav: Nav<'a>,
    connector: ConnectorView,
    claims: String,
    mapping: String,
    result: Option<crate::admin::connectors::DryRun>,
    /// The field at fault and why.
    error: Option<(String, String)>,
    saved: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct MappingForm {
    #[serde(default)]
    csrf: Secret<String>,
    #[serde(default)]
    claims: String,
    #[serde(default)]
    mapping: String,
    #[serde(default)]
    action: String,
    /// The version the page showed: a save refuses to overwrite a later change.
    #[serde(default)]
    version: Option<i64>,
}

/// The claims of this browser's last test sign-in of the connector, as a dry run's input.
async fn last_test_claims(console: &Console, id: &str) -> Result<Option<String>, WebError> {
    let stored: Option<TestSignIn> = console.session().get(TEST_RESULT_KEY).await?;
    Ok(stored.filter(|r| r.connector_id == id).map(|r| {
        let object: Map<String, Value> = r
            .received
            .into_iter()
            .map(|(name, mut values)| {
                let value = match (values.pop(), values.is_empty()) {
                    (Some(only), true) => Value::from(only),
                    (Some(last), false) => {
                        values.push(last);
                        Value::from(values)
                    }
                    (None, _) => Value::Array(Vec::new()),
                };
                (name, value)
            })
            .collect();
        serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default()
    }))
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

async fn mapping_page(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let example = if connector.kind() == "saml" {
        r#"{
  "NameID": "alice@corp.example",
  "mail": "Alice@Corp.Example",
  "groups": ["eng", "ops"]
}"#
    } else {
        r#"{
  "sub": "248289761001",
  "email": "Alice@Corp.Example",
  "email_verified": true,
  "groups": ["eng", "ops"]
}"#
    };
    let claims = last_test_claims(&console, &id).await?.unwrap_or_else(|| example.to_owned());
    let mapping = pretty(&connector.spec.mapping);
    let page =
        MappingPage { nav: console.nav("connectors"), connector, claims, mapping, result: None, error: None, saved: false };
    Ok(render_page(&page).into_response())
}

/// A dry run of the rules in the form against the claims in the form, or saving the rules.
async fn mapping_action(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<MappingForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    console.verify(&form.csrf).await?;
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let parse = |text: &str, field: &str| -> Result<Value, (String, String)> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        serde_json::from_str(text).map_err(|err| (field.to_owned(), format!("is not JSON: {err}")))
    };
    let outcome = async {
        let mapping = parse(&form.mapping, "mapping")?;
        let claims = parse(&form.claims, "claims")?;
        let result = state.admin.dry_run(&id, &claims, Some(mapping.clone())).await.map_err(field_error)?;
        if form.action == "save" {
            console.may_write().map_err(|_| (String::from("mapping"), String::from("read-only access cannot save")))?;
            let mut patch = Map::new();
            patch.insert(String::from("mapping"), mapping);
            patch.insert(String::from("version"), Value::from(form.version.unwrap_or(connector.version)));
            state.admin.update_connector(console.actor(), &id, patch).await.map_err(field_error)?;
        }
        Ok::<_, (String, String)>(result)
    }
    .await;
    let saved = outcome.is_ok() && form.action == "save";
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let (result, error, status) = match outcome {
        Ok(result) => (Some(result), None, StatusCode::OK),
        Err(error) => (None, Some(error), StatusCode::UNPROCESSABLE_ENTITY),
    };
    let page = MappingPage {
        nav: console.nav("connectors"),
        connector,
        claims: form.claims,
        mapping: form.mapping,
        result,
        error,
        saved,
    };
    Ok((status, render_page(&page)).into_response())
}

fn field_error(err: AdminError) -> (String, String) {
    match err {
        AdminError::Invalid { field, reason } => (field, reason),
        AdminError::Conflict(reason) => (String::from("mapping"), reason),
        other => (String::from("mapping"), other.to_string()),
    }
}

/// Replaces a SAML provider's metadata with an uploaded file (what an IdP such as Google
/// Workspace offers instead of a URL), checked like any change.
async fn upload_metadata(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    mut multipart: axum::extract::Multipart,
) -> Result<Response, WebError> {
    const UNREADABLE: &str = "The upload could not be read. Choose the metadata file and try again.";
    let mut csrf = None;
    let mut xml = None;
    let mut version = None;
    while let Some(field) = multipart.next_field().await.map_err(|err| WebError::from_rejection(err.status(), UNREADABLE))? {
        let name = field.name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|err| WebError::from_rejection(err.status(), UNREADABLE))?;
        match name.as_deref() {
            Some("csrf") => csrf = Some(Secret::new(String::from_utf8_lossy(&bytes).into_owned())),
            Some("metadata") => xml = Some(bytes),
            Some("version") => version = String::from_utf8_lossy(&bytes).trim().parse::<i64>().ok(),
            _ => {}
        }
    }
    let csrf = csrf.ok_or(WebError::BadRequest(UNREADABLE))?;
    console.verify(&csrf).await?;
    console.may_write()?;
    let connector = state.admin.connector(&id).await.map_err(admin_error)?;
    let text = match xml.map(|bytes| String::from_utf8(bytes.to_vec())) {
        Some(Ok(text)) if !text.trim().is_empty() => text,
        Some(Ok(_)) | None => {
            return upload_refused(&state, &console, &id, String::from("Choose the IdP's metadata file first.")).await;
        }
        Some(Err(_)) => {
            return upload_refused(&state, &console, &id, String::from("The file is not UTF-8 text: it is not SAML metadata."))
                .await;
        }
    };
    let mut patch = Map::new();
    patch.insert(String::from("idp_metadata_xml"), Value::from(text));
    patch.insert(String::from("version"), Value::from(version.unwrap_or(connector.version)));
    match state.admin.update_connector(console.actor(), &id, patch).await {
        Ok((_, check)) => connector_page(&state, &console, &id, Some(check), StatusCode::OK).await,
        Err(AdminError::Invalid { reason, .. } | AdminError::Conflict(reason)) => {
            upload_refused(&state, &console, &id, reason).await
        }
        Err(err) => Err(admin_error(err)),
    }
}

async fn upload_refused(state: &AppState, console: &Console, id: &str, reason: String) -> Result<Response, WebError> {
    let connector = state.admin.connector(id).await.map_err(admin_error)?;
    let failures = state.admin.connector_failures(id).await.map_err(admin_error)?;
    let warnings = state.admin.connector_attention(Some(id)).await.map_err(admin_error)?;
    let page =
        ConnectorPage { nav: console.nav("connectors"), connector, check: None, check_error: Some(reason), failures, warnings };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render_page(&page)).into_response())
}
