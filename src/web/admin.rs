//! `/admin`: the admin console, server-rendered over the admin core. Every page needs a
//! signed-in member of an admin group whose sign-in is recent enough; older sign-ins go
//! through sign-in again (step-up), others get 403. Every form carries a CSRF token, and every
//! destructive action asks for confirmation first.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::access::GroupsFilter;
use crate::admin::audit::{AuditEntry, AuditFilter};
use crate::admin::clients::{ClientView, RemovalImpact};
use crate::admin::grants::{GrantFilter, GrantView};
use crate::admin::keys::KeyView;
use crate::admin::overview::Overview;
use crate::admin::sessions::{SessionFilter, SessionView};
use crate::admin::users::UserDetail;
use crate::admin::{Actor, AdminError, Role, role_of};
use crate::provider::introspect::IdentifiedToken;
use crate::secret::Secret;
use crate::session::pending::{self, PendingLogin};
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::pages::render_page;
use crate::web::sessions;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/clients", get(clients).post(create_client))
        .route("/admin/clients/new", get(new_client))
        .route("/admin/clients/{id}", get(client).post(update_client))
        .route("/admin/clients/{id}/edit", get(edit_client))
        .route("/admin/clients/{id}/delete", get(confirm_delete_client).post(delete_client))
        .route("/admin/clients/{id}/secret", get(confirm_rotate_secret).post(rotate_secret))
        .route("/admin/grants", get(grants))
        .route("/admin/tokens/revoke", post(revoke_token))
        .route("/admin/keys/{kid}/retire", get(confirm_retire_key).post(retire_key))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}", get(user))
        .route("/admin/users/{id}/{action}", get(confirm_user_action).post(user_action))
        .route("/admin/users/{id}/links", post(link_identity))
        .route("/admin/users/{id}/merge", get(confirm_merge).post(merge_user))
        .route("/admin/users/{id}/links/remove", get(confirm_unlink).post(unlink_identity))
        .route("/admin/sessions", get(sessions_page))
        .route("/admin/sessions/{id}/end", get(confirm_end_session).post(end_session))
        .route("/admin/grants/{id}/revoke", get(confirm_revoke_grant).post(revoke_grant))
        .route("/admin/keys", get(keys).post(rotate_keys))
        .route("/admin/audit", get(audit))
        .route("/admin/audit.jsonl", get(audit_download))
}

const NOT_ADMIN: &str =
    "Your account is not allowed to use the admin console. Ask an administrator to add you to an admin group.";
const READ_ONLY: &str = "Your account may view the admin console but not change anything.";
const FORM_INCOMPLETE: &str = "The form was incomplete. Go back and try again.";

/// A signed-in admin, with a CSRF token for the page's forms.
pub struct Console {
    actor: Actor,
    forms: Forms,
    csrf: String,
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let forms = Forms::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let here = parts.uri.path_and_query().map_or("/admin", |p| p.as_str()).to_owned();
        let ip = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| client_ip(*addr, &parts.headers, &state.config.trusted_proxies))
            .ok_or_else(|| WebError::Internal(String::from("the peer address is unknown")).into_response())?;
        let Some((sso, user)) = sessions::current(state, forms.session()).await.map_err(IntoResponse::into_response)? else {
            return Err(step_up(state, &here, false, ip).await);
        };
        let Some(role) = role_of(state.admin.settings(), &user.groups) else {
            return Err(WebError::Forbidden(NOT_ADMIN).into_response());
        };
        if state.clock.now() - sso.auth_time > state.admin.settings().max_auth_age_secs {
            return Err(step_up(state, &here, true, ip).await);
        }
        let csrf = forms.token().await.map_err(IntoResponse::into_response)?;
        Ok(Self { actor: Actor { name: user.username, role, ip: Some(ip) }, forms, csrf })
    }
}

/// Sends the browser through sign-in, back to `here` afterwards; `force` asks for a fresh
/// sign-in even with a session (the console's maximum sign-in age). Each one stores a pending
/// sign-in, so they count against the address's sign-in starts.
async fn step_up(state: &AppState, here: &str, force: bool, ip: std::net::IpAddr) -> Response {
    if let Err(err) = crate::web::upstream::count_sign_in_start(state, ip) {
        return err.into_response();
    }
    let pending = PendingLogin {
        client_name: Some(String::from("the admin console")),
        resume_path: if here.starts_with("/admin") { here.to_owned() } else { String::from("/admin") },
        force_login: force,
        ..PendingLogin::default()
    };
    match pending::create(state.store.as_ref(), &pending, crate::provider::REQUEST_LIFETIME_SECS, state.clock.now()).await {
        Ok(id) => Redirect::to(&format!("/login?req={id}")).into_response(),
        Err(err) => WebError::internal(err).into_response(),
    }
}

impl Console {
    pub(crate) fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The admin's browser session (a test sign-in's result is kept there).
    pub(crate) fn session(&self) -> &tower_sessions::Session {
        self.forms.session()
    }

    /// Checks a form's CSRF token, for actions a read-only admin may take too.
    pub(crate) async fn verify(&self, csrf: &Secret<String>) -> Result<(), WebError> {
        self.forms.verify(csrf.expose()).await
    }

    pub(crate) fn may_write(&self) -> Result<(), WebError> {
        match self.actor.role {
            Role::Admin => Ok(()),
            Role::ReadOnly => Err(WebError::Forbidden(READ_ONLY)),
        }
    }

    pub(crate) fn nav(&self, section: &'static str) -> Nav<'_> {
        Nav { section, who: &self.actor.name, csrf: &self.csrf, read_only: self.actor.role == Role::ReadOnly }
    }
}

/// What every console page's header needs.
pub struct Nav<'a> {
    pub section: &'static str,
    pub who: &'a str,
    pub csrf: &'a str,
    pub read_only: bool,
}

pub(crate) fn admin_error(err: AdminError) -> WebError {
    match err {
        AdminError::ReadOnly => WebError::Forbidden(READ_ONLY),
        AdminError::NotFound => WebError::NotFound,
        AdminError::Invalid { .. } | AdminError::Conflict(_) => {
            WebError::BadRequest("The change was refused. Go back and check the form.")
        }
        AdminError::Store(err) => WebError::internal(err),
        AdminError::Internal(cause) => WebError::Internal(cause),
    }
}

/// A value as one URL path segment or query value.
pub(crate) fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Unix seconds as UTC, for tables.
pub fn when(time: &i64) -> String {
    crate::clock::utc(*time)
}

pub fn when_opt(time: &Option<i64>) -> String {
    time.as_ref().map_or_else(|| String::from("—"), when)
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage<'a> {
    nav: Nav<'a>,
    overview: Overview,
}

async fn overview(State(state): State<AppState>, console: Console) -> Result<Response, WebError> {
    let overview = state.admin.overview().await.map_err(admin_error)?;
    Ok(render_page(&OverviewPage { nav: console.nav("overview"), overview }).into_response())
}

#[derive(Deserialize, Default)]
pub struct ListParams {
    q: Option<String>,
    next: Option<String>,
    user: Option<String>,
    client_id: Option<String>,
    connector: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn list_params(query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>) -> Result<ListParams, WebError> {
    query.map(|Query(q)| q).map_err(|_| WebError::BadRequest("The address has a malformed query."))
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage<'a> {
    nav: Nav<'a>,
    q: &'a str,
    clients: Vec<ClientView>,
    next: Option<String>,
}

async fn clients(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    let q = params.q.unwrap_or_default();
    let page = state.admin.list_clients(Some(&q), params.next.as_deref(), None).await.map_err(admin_error)?;
    let next = page.next.map(|cursor| format!("/admin/clients?q={}&next={cursor}", enc(&q)));
    Ok(render_page(&ClientsPage { nav: console.nav("clients"), q: &q, clients: page.items, next }).into_response())
}

/// The application form's values as typed, so a refused form comes back filled in.
#[derive(Debug, Default, Deserialize)]
pub struct ClientForm {
    csrf: Secret<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    grant_authorization_code: Option<String>,
    #[serde(default)]
    grant_refresh_token: Option<String>,
    #[serde(default)]
    grant_client_credentials: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    first_party: Option<String>,
    #[serde(default)]
    signing_alg: String,
    #[serde(default)]
    access_token_lifetime_secs: String,
    #[serde(default)]
    backchannel_logout_uri: String,
    #[serde(default)]
    resources: String,
    #[serde(default)]
    default_audience: String,
    #[serde(default)]
    allowed_groups: String,
    #[serde(default)]
    allowed_connectors: String,
    /// `all`, `prefix` or `list`: how `groups_filter` is read.
    #[serde(default)]
    groups_filter_kind: String,
    #[serde(default)]
    groups_filter: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    logo_uri: String,
    #[serde(default)]
    initiate_login_uri: String,
    #[serde(default)]
    launch_url: String,
    /// `auto` (shown when it can be launched), `show` or `hide`.
    #[serde(default)]
    show_in_portal: String,
    #[serde(default)]
    version: Option<i64>,
}

fn lines(text: &str) -> Value {
    Value::from(text.split(['\n', ',', ' ']).map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect::<Vec<_>>())
}

fn optional(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() { Value::Null } else { Value::from(text.to_owned()) }
}

impl ClientForm {
    /// The form as the configuration's fields, for the admin core.
    fn fields(&self, creating: bool) -> Map<String, Value> {
        let mut map = Map::new();
        if creating {
            map.insert("client_id".into(), Value::from(self.client_id.trim().to_owned()));
            map.insert("public".into(), Value::from(self.kind == "public"));
        }
        map.insert("name".into(), optional(&self.name));
        map.insert("redirect_uris".into(), lines(&self.redirect_uris));
        map.insert("post_logout_redirect_uris".into(), lines(&self.post_logout_redirect_uris));
        map.insert("scopes".into(), lines(&self.scopes));
        let grants: Vec<&str> = [
            (self.grant_authorization_code.is_some(), "authorization_code"),
            (self.grant_refresh_token.is_some(), "refresh_token"),
            (self.grant_client_credentials.is_some(), "client_credentials"),
        ]
        .into_iter()
        .filter_map(|(on, grant)| on.then_some(grant))
        .collect();
        map.insert("grant_types".into(), Value::from(grants));
        map.insert("first_party".into(), Value::from(self.first_party.is_some()));
        if !self.signing_alg.is_empty() {
            map.insert("signing_alg".into(), Value::from(self.signing_alg.clone()));
        }
        let lifetime = self.access_token_lifetime_secs.trim();
        map.insert(
            "access_token_lifetime_secs".into(),
            if lifetime.is_empty() {
                Value::Null
            } else {
                lifetime.parse::<i64>().map_or_else(|_| Value::from(lifetime), Value::from)
            },
        );
        map.insert("backchannel_logout_uri".into(), optional(&self.backchannel_logout_uri));
        map.insert("resources".into(), lines(&self.resources));
        map.insert("default_audience".into(), optional(&self.default_audience));
        map.insert("allowed_groups".into(), lines(&self.allowed_groups));
        map.insert("allowed_connectors".into(), lines(&self.allowed_connectors));
        let filter = match self.groups_filter_kind.as_str() {
            "prefix" => Value::from(self.groups_filter.trim().to_owned()),
            "list" => lines(&self.groups_filter),
            _ => Value::Null,
        };
        map.insert("groups_claim_filter".into(), filter);
        map.insert("description".into(), optional(&self.description));
        map.insert("logo_uri".into(), optional(&self.logo_uri));
        map.insert("initiate_login_uri".into(), optional(&self.initiate_login_uri));
        map.insert("launch_url".into(), optional(&self.launch_url));
        let show = match self.show_in_portal.as_str() {
            "show" => Value::from(true),
            "hide" => Value::from(false),
            _ => Value::Null,
        };
        map.insert("show_in_portal".into(), show);
        if let Some(version) = self.version {
            map.insert("version".into(), Value::from(version));
        }
        map
    }

    fn from_view(client: &ClientView) -> Self {
        let has = |g: &str| client.grant_types.iter().any(|x| x == g).then(String::new);
        Self {
            client_id: client.client_id.clone(),
            name: client.name.clone(),
            redirect_uris: client.redirect_uris.join("\n"),
            post_logout_redirect_uris: client.post_logout_redirect_uris.join("\n"),
            scopes: client.scopes.join(" "),
            grant_authorization_code: has("authorization_code"),
            grant_refresh_token: has("refresh_token"),
            grant_client_credentials: has("client_credentials"),
            kind: String::from(if client.public { "public" } else { "confidential" }),
            first_party: client.first_party.then(String::new),
            signing_alg: client.signing_alg.clone(),
            access_token_lifetime_secs: client.access_token_lifetime_secs.map(|s| s.to_string()).unwrap_or_default(),
            backchannel_logout_uri: client.backchannel_logout_uri.clone().unwrap_or_default(),
            resources: client.resources.join("\n"),
            default_audience: client.default_audience.clone().unwrap_or_default(),
            allowed_groups: client.allowed_groups.join("\n"),
            allowed_connectors: client.allowed_connectors.join("\n"),
            groups_filter_kind: String::from(match &client.groups_claim_filter {
                None => "all",
                Some(GroupsFilter::Prefix(_)) => "prefix",
                Some(GroupsFilter::List(_)) => "list",
            }),
            groups_filter: match &client.groups_claim_filter {
                None => String::new(),
                Some(GroupsFilter::Prefix(prefix)) => prefix.clone(),
                Some(GroupsFilter::List(names)) => names.join("\n"),
            },
            description: client.description.clone().unwrap_or_default(),
            logo_uri: client.logo_uri.clone().unwrap_or_default(),
            initiate_login_uri: client.initiate_login_uri.clone().unwrap_or_default(),
            launch_url: client.launch_url.clone().unwrap_or_default(),
            show_in_portal: String::from(match (client.show_in_portal_by_default(), client.show_in_portal) {
                (true, _) => "auto",
                (false, true) => "show",
                (false, false) => "hide",
            }),
            version: Some(client.version),
            ..Self::default()
        }
    }

    fn new_defaults() -> Self {
        Self {
            scopes: String::from("openid profile email"),
            grant_authorization_code: Some(String::new()),
            kind: String::from("confidential"),
            signing_alg: String::from("ES256"),
            groups_filter_kind: String::from("all"),
            show_in_portal: String::from("auto"),
            ..Self::default()
        }
    }
}

#[derive(Template)]
#[template(path = "admin/client_form.html")]
struct ClientFormPage<'a> {
    nav: Nav<'a>,
    creating: bool,
    form: &'a ClientForm,
    /// The field at fault and why, shown next to it.
    errors: BTreeMap<String, String>,
    /// A refusal that is not about one field (a conflict).
    problem: Option<String>,
}

impl ClientFormPage<'_> {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f.as_str() == field || f.starts_with(&format!("{field}["))).map(|(_, e)| e.as_str())
    }
}

fn form_page(console: &Console, creating: bool, form: &ClientForm, err: Option<AdminError>) -> Result<Response, WebError> {
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
    let page = ClientFormPage { nav: console.nav("clients"), creating, form, errors, problem };
    Ok((status, render_page(&page)).into_response())
}

async fn new_client(console: Console) -> Result<Response, WebError> {
    console.may_write()?;
    form_page(&console, true, &ClientForm::new_defaults(), None)
}

async fn edit_client(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    console.may_write()?;
    let client = state.admin.client(&id).await.map_err(admin_error)?;
    if client.managed_by_config {
        return Err(WebError::Forbidden("This application is managed by the configuration file; change it there."));
    }
    form_page(&console, false, &ClientForm::from_view(&client), None)
}

pub(crate) async fn checked_form<T: serde::de::DeserializeOwned>(
    console: &Console,
    form: Result<Form<T>, FormRejection>,
    csrf: impl Fn(&T) -> &Secret<String>,
) -> Result<T, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), FORM_INCOMPLETE))?;
    console.forms.verify(csrf(&form).expose()).await?;
    console.may_write()?;
    Ok(form)
}

async fn create_client(
    State(state): State<AppState>,
    console: Console,
    form: Result<Form<ClientForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    match state.admin.create_client(&console.actor, form.fields(true)).await {
        Ok(created) => client_page(&state, &console, &created.client.client_id, created.client_secret.as_ref()).await,
        Err(err) => form_page(&console, true, &form, Some(err)),
    }
}

async fn update_client(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<ClientForm>, FormRejection>,
) -> Result<Response, WebError> {
    let mut form = checked_form(&console, form, |f| &f.csrf).await?;
    match state.admin.update_client(&console.actor, &id, form.fields(false)).await {
        Ok(_) => Ok(Redirect::to(&format!("/admin/clients/{}", enc(&id))).into_response()),
        Err(err) => {
            form.client_id = id;
            form_page(&console, false, &form, Some(err))
        }
    }
}

#[derive(Template)]
#[template(path = "admin/client.html")]
struct ClientPage<'a> {
    nav: Nav<'a>,
    client: ClientView,
    discovery_url: String,
    /// Shown this once, right after creation or rotation.
    new_secret: Option<&'a str>,
    grants: Vec<GrantView>,
}

async fn client_page(
    state: &AppState,
    console: &Console,
    id: &str,
    new_secret: Option<&Secret<String>>,
) -> Result<Response, WebError> {
    let client = state.admin.client(id).await.map_err(admin_error)?;
    let filter = GrantFilter { client_id: Some(id.to_owned()), ..GrantFilter::default() };
    let grants = state.admin.list_grants(filter, None, None).await.map_err(admin_error)?.items;
    let page = ClientPage {
        nav: console.nav("clients"),
        client,
        discovery_url: format!("{}/.well-known/openid-configuration", state.provider.issuer()),
        new_secret: new_secret.map(|s| s.expose().as_str()),
        grants,
    };
    Ok(render_page(&page).into_response())
}

async fn client(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    client_page(&state, &console, &id, None).await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub(crate) csrf: Secret<String>,
}

#[derive(Deserialize)]
pub struct RotateForm {
    csrf: Secret<String>,
    #[serde(default)]
    overlap_hours: String,
}

fn overlap_hours(text: &str) -> Result<i64, WebError> {
    let hours = text.trim();
    let hours = if hours.is_empty() { Ok(0) } else { hours.parse::<i64>() };
    match hours {
        Ok(hours) if (0..=crate::admin::clients::MAX_SECRET_OVERLAP_SECS / 3600).contains(&hours) => Ok(hours),
        _ => Err(WebError::BadRequest("The overlap must be a whole number of hours between 0 and 168 (seven days).")),
    }
}

#[derive(Deserialize)]
pub struct OverlapQuery {
    #[serde(default)]
    overlap_hours: String,
}

async fn confirm_rotate_secret(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    query: Result<Query<OverlapQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let Query(query) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    let hours = overlap_hours(&query.overlap_hours)?;
    let client = state.admin.client(&id).await.map_err(admin_error)?;
    let old_secret = if hours == 0 {
        String::from("The current secret stops working at once: the application fails to get tokens until it has the new one.")
    } else {
        format!("The current secret keeps working for {hours} hours, then stops.")
    };
    let page = ConfirmPage {
        nav: console.nav("clients"),
        title: format!("Give {} a new secret?", client.name),
        consequences: vec![String::from("A new secret is generated and shown once, on the next page."), old_secret],
        action: format!("/admin/clients/{}/secret", enc(&id)),
        button: "Rotate secret",
        back: format!("/admin/clients/{}", enc(&id)),
        hidden: vec![("overlap_hours", hours.to_string())],
    };
    Ok(render_page(&page).into_response())
}

async fn rotate_secret(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<RotateForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    let overlap = overlap_hours(&form.overlap_hours)?;
    let secret = state.admin.rotate_client_secret(&console.actor, &id, overlap * 3600).await.map_err(admin_error)?;
    client_page(&state, &console, &id, Some(&secret)).await
}

/// A confirmation step: what will happen, and the button that does it.
#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub(crate) struct ConfirmPage<'a> {
    pub(crate) nav: Nav<'a>,
    pub(crate) title: String,
    pub(crate) consequences: Vec<String>,
    pub(crate) action: String,
    pub(crate) button: &'static str,
    pub(crate) back: String,
    /// Values the action needs, carried through the confirmation.
    pub(crate) hidden: Vec<(&'static str, String)>,
}

async fn confirm_delete_client(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let client = state.admin.client(&id).await.map_err(admin_error)?;
    let RemovalImpact { grants, has_backchannel_logout } = state.admin.client_removal_impact(&id).await.map_err(admin_error)?;
    let mut consequences = vec![
        format!("{} can no longer sign anyone in or get tokens.", client.name),
        format!("{grants} active grants (signed-in users' tokens) are revoked at once."),
    ];
    if has_backchannel_logout {
        consequences.push(String::from("The application is told through back-channel logout for each session."));
    }
    let page = ConfirmPage {
        nav: console.nav("clients"),
        title: format!("Delete {}?", client.name),
        consequences,
        action: format!("/admin/clients/{}/delete", enc(&id)),
        button: "Delete application",
        back: format!("/admin/clients/{}", enc(&id)),
        hidden: Vec::new(),
    };
    Ok(render_page(&page).into_response())
}

async fn delete_client(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.delete_client(&console.actor, &id).await.map_err(admin_error)?;
    Ok(Redirect::to("/admin/clients").into_response())
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage<'a> {
    nav: Nav<'a>,
    q: &'a str,
    users: Vec<crate::store::User>,
    next: Option<String>,
}

async fn users(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    let q = params.q.unwrap_or_default();
    let page = state.admin.search_users(Some(&q), params.next.as_deref(), None).await.map_err(admin_error)?;
    let next = page.next.map(|cursor| format!("/admin/users?q={}&next={cursor}", enc(&q)));
    Ok(render_page(&UsersPage { nav: console.nav("users"), q: &q, users: page.items, next }).into_response())
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage<'a> {
    nav: Nav<'a>,
    detail: UserDetail,
    /// Why linking an identity was refused, shown at its form.
    link_error: Option<String>,
    connectors: Vec<String>,
}

async fn user_page(
    state: &AppState,
    console: &Console,
    id: &str,
    link_error: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let detail = state.admin.user(id).await.map_err(admin_error)?;
    let connectors = state.admin.list_connectors().await.map_err(admin_error)?.into_iter().map(|c| c.spec.id).collect::<Vec<_>>();
    Ok((status, render_page(&UserPage { nav: console.nav("users"), detail, link_error, connectors })).into_response())
}

async fn user(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Response, WebError> {
    user_page(&state, &console, &id, None, StatusCode::OK).await
}

async fn confirm_user_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let detail = state.admin.user(&id).await.map_err(admin_error)?;
    let name = detail.user.username.clone();
    let sessions = detail.sessions.len();
    let (title, consequences, button) = match action.as_str() {
        "disable" => (
            format!("Disable {name}?"),
            vec![
                format!("{name} cannot sign in until enabled again."),
                format!("{sessions} active sessions end now, and every token issued to {name} stops working."),
            ],
            "Disable user",
        ),
        "enable" => (format!("Enable {name}?"), vec![format!("{name} can sign in again.")], "Enable user"),
        "logout" => (
            format!("Sign {name} out everywhere?"),
            vec![format!(
                "{sessions} active sessions end now, with the tokens issued under them; apps are told by back-channel logout."
            )],
            "Sign out everywhere",
        ),
        _ => return Err(WebError::NotFound),
    };
    let page = ConfirmPage {
        nav: console.nav("users"),
        title,
        consequences,
        action: format!("/admin/users/{}/{action}", enc(&id)),
        button,
        back: format!("/admin/users/{}", enc(&id)),
        hidden: Vec::new(),
    };
    Ok(render_page(&page).into_response())
}

async fn user_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    let admin = &state.admin;
    match action.as_str() {
        "disable" => admin.disable_user(&console.actor, &id).await.map(|_| ()),
        "enable" => admin.enable_user(&console.actor, &id).await,
        "logout" => admin.sign_out_user(&console.actor, &id).await.map(|_| ()),
        _ => return Err(WebError::NotFound),
    }
    .map_err(admin_error)?;
    Ok(Redirect::to(&format!("/admin/users/{}", enc(&id))).into_response())
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: Secret<String>,
    #[serde(default)]
    connector_id: String,
    #[serde(default)]
    subject: String,
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    connector_id: String,
    #[serde(default)]
    subject: String,
}

async fn link_identity(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<LinkForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    match state.admin.link_identity(&console.actor, &id, form.connector_id.trim(), form.subject.trim()).await {
        Ok(()) => Ok(Redirect::to(&format!("/admin/users/{}", enc(&id))).into_response()),
        Err(AdminError::Invalid { reason, .. } | AdminError::Conflict(reason)) => {
            user_page(&state, &console, &id, Some(reason), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(err) => Err(admin_error(err)),
    }
}

#[derive(Deserialize)]
pub struct MergeQuery {
    #[serde(default)]
    user_id: String,
}

#[derive(Deserialize)]
pub struct MergeForm {
    #[serde(default)]
    csrf: Secret<String>,
    #[serde(default)]
    user_id: String,
}

async fn confirm_merge(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    query: Result<Query<MergeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let Query(query) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    let other = query.user_id.trim().to_owned();
    let impact = match state.admin.merge_impact(&id, &other).await {
        Ok(impact) => impact,
        Err(AdminError::Invalid { reason, .. }) => {
            return user_page(&state, &console, &id, Some(format!("User to merge: {reason}")), StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        }
        Err(err) => return Err(admin_error(err)),
    };
    let kept = state.admin.user(&id).await.map_err(admin_error)?.user.username;
    let merged = impact.merged_username.clone();
    let page = ConfirmPage {
        nav: console.nav("users"),
        title: format!("Merge {merged} into {kept}?"),
        consequences: vec![
            format!("{} linked identities of {merged} move to {kept}: signing in through them lands on {kept}.", impact.links),
            format!("{merged} is disabled: {} active sessions end and {} grants are revoked.", impact.sessions, impact.grants),
            format!("Applications knew {merged} by its own user ID; they see {kept} at its next sign-in."),
        ],
        action: format!("/admin/users/{}/merge", enc(&id)),
        button: "Merge users",
        back: format!("/admin/users/{}", enc(&id)),
        hidden: vec![("user_id", other)],
    };
    Ok(render_page(&page).into_response())
}

async fn merge_user(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<MergeForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.merge_users(&console.actor, &id, form.user_id.trim()).await.map_err(admin_error)?;
    Ok(Redirect::to(&format!("/admin/users/{}", enc(&id))).into_response())
}

async fn confirm_unlink(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let Query(link) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    let detail = state.admin.user(&id).await.map_err(admin_error)?;
    if !detail.identities.iter().any(|l| l.connector_id == link.connector_id && l.subject == link.subject) {
        return Err(WebError::NotFound);
    }
    let name = detail.user.username.clone();
    let sessions = detail.sessions.iter().filter(|s| s.connector_id == link.connector_id).count();
    let page = ConfirmPage {
        nav: console.nav("users"),
        title: format!("Unlink {} at {} from {name}?", link.subject, link.connector_id),
        consequences: vec![
            format!(
                "The next sign-in as {} through {} is a first sign-in again: it creates a user, or links by the connector's email policy.",
                link.subject, link.connector_id
            ),
            format!("{sessions} active sessions of {name} through {} end now.", link.connector_id),
        ],
        action: format!("/admin/users/{}/links/remove", enc(&id)),
        button: "Unlink",
        back: format!("/admin/users/{}", enc(&id)),
        hidden: vec![("connector_id", link.connector_id), ("subject", link.subject)],
    };
    Ok(render_page(&page).into_response())
}

async fn unlink_identity(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<LinkForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.unlink_identity(&console.actor, &id, &form.connector_id, &form.subject).await.map_err(admin_error)?;
    Ok(Redirect::to(&format!("/admin/users/{}", enc(&id))).into_response())
}

#[derive(Template)]
#[template(path = "admin/sessions.html")]
struct SessionsPage<'a> {
    nav: Nav<'a>,
    user: &'a str,
    connector: &'a str,
    sessions: Vec<SessionView>,
    next: Option<String>,
}

async fn sessions_page(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    let user = params.user.clone().unwrap_or_default();
    let connector = params.connector.clone().unwrap_or_default();
    let filter = SessionFilter { user_id: nonempty(params.user), connector_id: nonempty(params.connector) };
    let page = state.admin.list_sessions(filter, params.next.as_deref(), None).await.map_err(admin_error)?;
    let next = page.next.map(|cursor| format!("/admin/sessions?user={}&connector={}&next={cursor}", enc(&user), enc(&connector)));
    let page = SessionsPage { nav: console.nav("sessions"), user: &user, connector: &connector, sessions: page.items, next };
    Ok(render_page(&page).into_response())
}

async fn confirm_end_session(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let who = state.admin.session(&id).await.map_err(admin_error)?.username;
    let page = ConfirmPage {
        nav: console.nav("sessions"),
        title: format!("End {who}'s session?"),
        consequences: vec![
            format!("{who} is signed out of Gatehouse in that browser."),
            String::from("Tokens issued under the session stop working; its apps are told by back-channel logout."),
        ],
        action: format!("/admin/sessions/{}/end", enc(&id)),
        button: "End session",
        back: String::from("/admin/sessions"),
        hidden: Vec::new(),
    };
    Ok(render_page(&page).into_response())
}

async fn end_session(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.end_session(&console.actor, &id).await.map_err(admin_error)?;
    Ok(Redirect::to("/admin/sessions").into_response())
}

#[derive(Deserialize)]
pub struct RevokeGrantForm {
    csrf: Secret<String>,
    back: String,
}

#[derive(Deserialize)]
pub struct BackQuery {
    #[serde(default)]
    back: String,
}

/// Where to go after acting on a grant: a console page, else the overview.
fn console_path(back: String) -> String {
    if back.starts_with("/admin/") && pending::is_local_path(&back) { back } else { String::from("/admin") }
}

async fn confirm_revoke_grant(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    query: Result<Query<BackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let Query(query) = query.map_err(|_| WebError::BadRequest("The address has a malformed query."))?;
    let (username, client_id) = state.admin.grant_owner(&id).await.map_err(admin_error)?;
    let back = console_path(query.back);
    let page = ConfirmPage {
        nav: console.nav("grants"),
        title: format!("Revoke {client_id}'s access for {username}?"),
        consequences: vec![
            format!("{client_id} can no longer use the access and refresh tokens it holds for {username}."),
            format!("{username} stays signed in to Gatehouse; the application asks them to sign in again."),
        ],
        action: format!("/admin/grants/{}/revoke", enc(&id)),
        button: "Revoke access",
        back: back.clone(),
        hidden: vec![("back", back)],
    };
    Ok(render_page(&page).into_response())
}

async fn revoke_grant(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
    form: Result<Form<RevokeGrantForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.revoke_grant(&console.actor, &id).await.map_err(admin_error)?;
    Ok(Redirect::to(&console_path(form.back)).into_response())
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage<'a> {
    nav: Nav<'a>,
    keys: Vec<KeyView>,
}

async fn keys(State(state): State<AppState>, console: Console) -> Result<Response, WebError> {
    let keys = state.admin.list_keys().await.map_err(admin_error)?;
    Ok(render_page(&KeysPage { nav: console.nav("keys"), keys }).into_response())
}

async fn rotate_keys(
    State(state): State<AppState>,
    console: Console,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.rotate_keys(&console.actor).await.map_err(admin_error)?;
    Ok(Redirect::to("/admin/keys").into_response())
}

async fn confirm_retire_key(
    State(state): State<AppState>,
    console: Console,
    Path(kid): Path<String>,
) -> Result<Response, WebError> {
    console.may_write()?;
    let key = state.admin.key(&kid).await.map_err(admin_error)?;
    if key.state == "active" {
        return Err(WebError::BadRequest("This key signs new tokens. Rotate the keys first, then retire it."));
    }
    let signed_from = when(&key.created_at);
    let signed_until = when_opt(&key.retired_at);
    let page = ConfirmPage {
        nav: console.nav("keys"),
        title: format!("Retire key {kid} now?"),
        consequences: vec![
            format!(
                "Every ID token and access token it signed ({signed_from} to {signed_until}) stops verifying: at once on this server, and on the others within {} seconds.",
                state.config.tokens.key_cache_secs
            ),
            String::from(
                "Apps holding such tokens must get new ones; their refresh tokens keep working, and people stay signed in.",
            ),
            String::from("Do this when the key may be compromised. Otherwise let it expire on its own."),
        ],
        action: format!("/admin/keys/{}/retire", enc(&kid)),
        button: "Retire key now",
        back: String::from("/admin/keys"),
        hidden: Vec::new(),
    };
    Ok(render_page(&page).into_response())
}

async fn retire_key(
    State(state): State<AppState>,
    console: Console,
    Path(kid): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    checked_form(&console, form, |f| &f.csrf).await?;
    state.admin.retire_key(&console.actor, &kid).await.map_err(admin_error)?;
    Ok(Redirect::to("/admin/keys").into_response())
}

#[derive(Template)]
#[template(path = "admin/grants.html")]
struct GrantsPage<'a> {
    nav: Nav<'a>,
    user: &'a str,
    client_id: &'a str,
    grants: Vec<GrantView>,
    next: Option<String>,
    /// What a pasted token turned out to be, after revoking it.
    revoked: Option<IdentifiedToken>,
    token_error: Option<String>,
}

async fn grants(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    grants_page(&state, &console, params, None, None).await
}

async fn grants_page(
    state: &AppState,
    console: &Console,
    params: ListParams,
    revoked: Option<IdentifiedToken>,
    token_error: Option<String>,
) -> Result<Response, WebError> {
    let user = params.user.clone().unwrap_or_default();
    let client_id = params.client_id.clone().unwrap_or_default();
    let filter = GrantFilter { user_id: nonempty(params.user), client_id: nonempty(params.client_id) };
    let page = state.admin.list_grants(filter, params.next.as_deref(), None).await.map_err(admin_error)?;
    let next = page.next.map(|cursor| format!("/admin/grants?user={}&client_id={}&next={cursor}", enc(&user), enc(&client_id)));
    let status = if token_error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = GrantsPage {
        nav: console.nav("grants"),
        user: &user,
        client_id: &client_id,
        grants: page.items,
        next,
        revoked,
        token_error,
    };
    Ok((status, render_page(&page)).into_response())
}

#[derive(Deserialize)]
pub struct RevokeTokenForm {
    csrf: Secret<String>,
    token: Secret<String>,
}

async fn revoke_token(
    State(state): State<AppState>,
    console: Console,
    form: Result<Form<RevokeTokenForm>, FormRejection>,
) -> Result<Response, WebError> {
    let form = checked_form(&console, form, |f| &f.csrf).await?;
    match state.admin.revoke_token(&console.actor, form.token.expose()).await {
        Ok(revoked) => grants_page(&state, &console, ListParams::default(), Some(revoked), None).await,
        Err(AdminError::Invalid { reason, .. }) => grants_page(&state, &console, ListParams::default(), None, Some(reason)).await,
        Err(err) => Err(admin_error(err)),
    }
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage<'a> {
    nav: Nav<'a>,
    kinds: &'static [&'static str],
    params: &'a ListParams,
    entries: Vec<AuditEntry>,
    next: Option<String>,
    download: String,
}

fn date_bound(field: &Option<String>) -> Result<Option<i64>, WebError> {
    let Some(text) = field.as_deref().map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let bad = || WebError::BadRequest("Dates are written as YYYY-MM-DD.");
    let mut parts = text.splitn(3, '-').map(str::parse::<i32>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let month = u8::try_from(month).ok().and_then(|m| time::Month::try_from(m).ok()).ok_or_else(bad)?;
    let day = u8::try_from(day).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| bad())?;
    Ok(Some(date.midnight().assume_utc().unix_timestamp()))
}

fn audit_filter(params: &ListParams) -> Result<AuditFilter, WebError> {
    Ok(AuditFilter {
        user_id: nonempty(params.user.clone()),
        client_id: nonempty(params.client_id.clone()),
        connector_id: nonempty(params.connector.clone()),
        kind: nonempty(params.kind.clone()),
        since: date_bound(&params.since)?,
        // "Until" a day includes that day.
        until: date_bound(&params.until)?.map(|t| t + 24 * 3600),
    })
}

fn audit_query_string(params: &ListParams) -> String {
    let pairs = [
        ("user", &params.user),
        ("client_id", &params.client_id),
        ("connector", &params.connector),
        ("kind", &params.kind),
        ("since", &params.since),
        ("until", &params.until),
    ];
    pairs
        .iter()
        .filter_map(|(name, value)| value.as_deref().filter(|v| !v.is_empty()).map(|v| format!("{name}={}", enc(v))))
        .collect::<Vec<_>>()
        .join("&")
}

async fn audit(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    let page = state.admin.audit_log(audit_filter(&params)?, params.next.as_deref(), None).await.map_err(admin_error)?;
    let query = audit_query_string(&params);
    let next = page.next.map(|cursor| format!("/admin/audit?{query}&next={cursor}"));
    let download = format!("/admin/audit.jsonl?{query}");
    let page = AuditPage {
        nav: console.nav("audit"),
        kinds: &crate::admin::audit::EVENT_KINDS,
        params: &params,
        entries: page.items,
        next,
        download,
    };
    Ok(render_page(&page).into_response())
}

/// The filtered audit log as JSON lines, read a page at a time so it never sits whole in memory.
async fn audit_download(
    State(state): State<AppState>,
    _console: Console,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let params = list_params(query)?;
    let filter = audit_filter(&params)?;
    let admin = state.admin.clone();
    let lines = futures_util::stream::unfold(Some(None::<String>), move |cursor| {
        let admin = admin.clone();
        let filter = filter.clone();
        async move {
            let cursor = cursor?;
            match admin.audit_log(filter, cursor.as_deref(), Some(crate::admin::MAX_PAGE)).await {
                Ok(page) => {
                    let mut chunk = String::new();
                    for entry in &page.items {
                        if let Ok(line) = serde_json::to_string(entry) {
                            chunk.push_str(&line);
                            chunk.push('\n');
                        }
                    }
                    Some((Ok::<_, std::io::Error>(chunk), page.next.map(Some)))
                }
                Err(err) => Some((Err(std::io::Error::other(err.to_string())), None)),
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"gatehouse-audit.jsonl\""),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}
