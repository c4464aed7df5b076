//! `/admin/api/v1`: the admin core as JSON, for automation. Callers authenticate with an access
//! token Gatehouse issued to a client granted `gatehouse:admin` (or `gatehouse:admin.read`),
//! whose audience is this API. Cookies are never read here, so there is no CSRF surface.
//! Errors are RFC 9457 problem details.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::admin::audit::AuditFilter;
use crate::admin::grants::GrantFilter;
use crate::admin::sessions::SessionFilter;
use crate::admin::{Actor, AdminError, role_of_scopes};
use crate::provider::split_scope;
use crate::web::AppState;
use crate::web::client::client_ip;

pub const API_PREFIX: &str = "/admin/api/v1";
/// A connector may carry its IdP's metadata document (up to 1 MiB of XML, escaped in JSON).
const MAX_CONNECTOR_BODY_BYTES: usize = 2 * 1024 * 1024 + 64 * 1024;
pub const OPENAPI_PATH: &str = "/admin/api/openapi.json";

/// The audience an admin API token must carry.
pub fn api_audience(issuer: &str) -> String {
    format!("{issuer}/admin/api")
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// The request field at fault, spelled as in the request.
    field: Option<String>,
    challenge: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, title, detail: detail.into(), field: None, challenge: None }
    }

    fn unauthorized(error: Option<&'static str>) -> Self {
        let challenge = match error {
            Some("insufficient_scope") => "Bearer realm=\"gatehouse-admin\", error=\"insufficient_scope\"",
            Some(_) => "Bearer realm=\"gatehouse-admin\", error=\"invalid_token\"",
            None => "Bearer realm=\"gatehouse-admin\"",
        };
        let (status, title, detail) = match error {
            Some("insufficient_scope") => {
                (StatusCode::FORBIDDEN, "Forbidden", "the token does not carry gatehouse:admin or gatehouse:admin.read")
            }
            _ => (StatusCode::UNAUTHORIZED, "Unauthorized", "send an admin API access token as `Authorization: Bearer …`"),
        };
        Self { challenge: Some(challenge), ..Self::new(status, title, detail) }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(field), Some(object)) = (self.field, body.as_object_mut()) {
            object.insert(String::from("field"), Value::from(field));
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

impl From<AdminError> for Problem {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::ReadOnly => {
                Self::new(StatusCode::FORBIDDEN, "Forbidden", "this token may read, not change (gatehouse:admin.read)")
            }
            AdminError::NotFound => Self::new(StatusCode::NOT_FOUND, "Not found", "no such resource"),
            AdminError::Invalid { field, reason } => Self {
                field: Some(field.clone()),
                ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid field", format!("{field}: {reason}"))
            },
            AdminError::Conflict(detail) => Self::new(StatusCode::CONFLICT, "Conflict", detail),
            AdminError::Store(err) => internal(&err),
            AdminError::Internal(cause) => internal(&cause),
        }
    }
}

fn internal(cause: &dyn std::fmt::Display) -> Problem {
    let mut problem =
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "the server could not complete the request");
    problem.detail = String::from("the server could not complete the request");
    tracing::error!(error = %cause, "admin API request failed");
    problem
}

fn bad_body(rejection: JsonRejection) -> Problem {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "Too large", "the body is larger than this server accepts")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", "send `Content-Type: application/json`")
        }
        _ => Problem {
            field: Some(String::from("body")),
            ..Problem::new(StatusCode::BAD_REQUEST, "Bad request", "the body is not a JSON object")
        },
    }
}

/// The caller of the admin API, from its bearer token.
pub struct ApiActor(pub Actor);

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or(Problem::unauthorized(None))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 8192)
            .map(|(_, token)| token.trim().to_owned())
            .ok_or(Problem::unauthorized(Some("invalid_request")))?;
        let claims = state
            .provider
            .active_access_token(&token)
            .await
            .map_err(|err| internal(&err))?
            .ok_or(Problem::unauthorized(Some("invalid_token")))?;
        let audience = api_audience(state.provider.issuer());
        let for_this_api = match &claims.aud {
            Value::String(aud) => *aud == audience,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(&audience)),
            _ => false,
        };
        if !for_this_api {
            return Err(Problem::unauthorized(Some("invalid_token")));
        }
        let role = role_of_scopes(&split_scope(&claims.scope)).ok_or(Problem::unauthorized(Some("insufficient_scope")))?;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| client_ip(*addr, &parts.headers, &state.config.trusted_proxies));
        Ok(Self(Actor { name: format!("client:{}", claims.client_id), role, ip }))
    }
}

type ApiResult = Result<Response, Problem>;

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    user: Option<String>,
    client_id: Option<String>,
    connector: Option<String>,
    kind: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    next: Option<String>,
    limit: Option<u32>,
}

/// Query strings are parsed by hand so a malformed one is a problem, not axum's plain text.
fn list_query(query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Result<ListQuery, Problem> {
    query.map(|Query(q)| q).map_err(|rejection| Problem {
        field: Some(String::from("query")),
        ..Problem::new(StatusCode::BAD_REQUEST, "Bad request", rejection.body_text())
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(OPENAPI_PATH, get(openapi))
        .route(&format!("{API_PREFIX}/clients"), get(list_clients).post(create_client))
        .route(&format!("{API_PREFIX}/clients/{{client_id}}"), get(get_client).patch(update_client).delete(delete_client))
        .route(&format!("{API_PREFIX}/clients/{{client_id}}/secret"), post(rotate_secret))
        .route(
            &format!("{API_PREFIX}/connectors"),
            get(list_connectors).post(create_connector).layer(DefaultBodyLimit::max(MAX_CONNECTOR_BODY_BYTES)),
        )
        .route(
            &format!("{API_PREFIX}/connectors/{{id}}"),
            get(get_connector)
                .patch(update_connector)
                .delete(delete_connector)
                .layer(DefaultBodyLimit::max(MAX_CONNECTOR_BODY_BYTES)),
        )
        .route(&format!("{API_PREFIX}/connectors/{{id}}/disable"), post(disable_connector))
        .route(&format!("{API_PREFIX}/connectors/{{id}}/enable"), post(enable_connector))
        .route(&format!("{API_PREFIX}/connectors/{{id}}/check"), post(check_connector))
        .route(&format!("{API_PREFIX}/connectors/{{id}}/dry-run"), post(dry_run))
        .route(&format!("{API_PREFIX}/users"), get(list_users))
        .route(&format!("{API_PREFIX}/users/{{id}}"), get(get_user))
        .route(&format!("{API_PREFIX}/users/{{id}}/disable"), post(disable_user))
        .route(&format!("{API_PREFIX}/users/{{id}}/enable"), post(enable_user))
        .route(&format!("{API_PREFIX}/users/{{id}}/logout"), post(logout_user))
        .route(&format!("{API_PREFIX}/users/{{id}}/links"), post(link_identity))
        .route(&format!("{API_PREFIX}/users/{{id}}/merge"), post(merge_user))
        .route(&format!("{API_PREFIX}/users/{{id}}/links/{{connector_id}}/{{subject}}"), axum::routing::delete(unlink_identity))
        .route(&format!("{API_PREFIX}/sessions"), get(list_sessions))
        .route(&format!("{API_PREFIX}/sessions/{{id}}"), axum::routing::delete(end_session))
        .route(&format!("{API_PREFIX}/grants"), get(list_grants))
        .route(&format!("{API_PREFIX}/grants/{{id}}"), axum::routing::delete(revoke_grant))
        .route(&format!("{API_PREFIX}/keys"), get(list_keys))
        .route(&format!("{API_PREFIX}/keys/rotate"), post(rotate_keys))
        .route(&format!("{API_PREFIX}/keys/{{kid}}/retire"), post(retire_key))
        .route(&format!("{API_PREFIX}/tokens/revoke"), post(revoke_token))
        .route(&format!("{API_PREFIX}/audit"), get(audit))
        .route("/admin/api/{*rest}", axum::routing::any(not_found))
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not found", "no such resource")
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("admin_openapi.json")).into_response()
}

async fn list_clients(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    ok(state.admin.list_clients(query.q.as_deref(), query.next.as_deref(), query.limit).await?)
}

async fn create_client(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_body)?;
    let created = state.admin.create_client(&actor, body).await?;
    let mut record = serde_json::to_value(&created.client).map_err(|err| internal(&err))?;
    if let (Some(secret), Some(object)) = (&created.client_secret, record.as_object_mut()) {
        object.insert(String::from("client_secret"), Value::from(secret.expose().clone()));
    }
    created_at(&format!("{API_PREFIX}/clients/{}", created.client.client_id), record)
}

fn encode_segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

/// `201 Created` with the record and where it lives.
fn created_at(location: &str, record: Value) -> ApiResult {
    let mut response = (StatusCode::CREATED, Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// A string field of a small request body, or the problem naming it.
fn required_text(body: &Map<String, Value>, field: &str, what: &str) -> Result<String, Problem> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AdminError::Invalid { field: field.to_owned(), reason: format!("is required: {what}") }.into())
}

async fn get_client(State(state): State<AppState>, ApiActor(_): ApiActor, Path(client_id): Path<String>) -> ApiResult {
    ok(state.admin.client(&client_id).await?)
}

async fn update_client(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(client_id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(mut body) = body.map_err(bad_body)?;
    if_match(&headers, &mut body)?;
    ok(state.admin.update_client(&actor, &client_id, body).await?)
}

async fn delete_client(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(client_id): Path<String>) -> ApiResult {
    state.admin.delete_client(&actor, &client_id).await?;
    no_content()
}

async fn rotate_secret(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(client_id): Path<String>,
    body: Option<Json<Map<String, Value>>>,
) -> ApiResult {
    let overlap = match body.as_ref().and_then(|Json(b)| b.get("overlap_secs")) {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_i64().ok_or(AdminError::Invalid {
            field: String::from("overlap_secs"),
            reason: String::from("must be a whole number of seconds"),
        })?,
    };
    let secret = state.admin.rotate_client_secret(&actor, &client_id, overlap).await?;
    let client = state.admin.client(&client_id).await?;
    let mut record = serde_json::to_value(&client).map_err(|err| internal(&err))?;
    if let Some(object) = record.as_object_mut() {
        object.insert(String::from("client_secret"), Value::from(secret.expose().clone()));
    }
    ok(record)
}

/// `If-Match: "<version>"` names the version edited, as the `version` field does.
fn if_match(headers: &axum::http::HeaderMap, body: &mut Map<String, Value>) -> Result<(), Problem> {
    if let Some(tag) = headers.get(header::IF_MATCH) {
        let version = tag.to_str().ok().map(|t| t.trim_matches('"')).and_then(|t| t.parse::<i64>().ok()).ok_or(Problem {
            field: Some(String::from("If-Match")),
            ..Problem::new(StatusCode::BAD_REQUEST, "Bad request", "If-Match must be the quoted version")
        })?;
        body.insert(String::from("version"), Value::from(version));
    }
    Ok(())
}

fn saved_connector(
    view: &crate::admin::connectors::ConnectorView,
    check: &crate::admin::connectors::ConnectorCheck,
) -> Result<Value, Problem> {
    let mut record = serde_json::to_value(view).map_err(|err| internal(&err))?;
    let check = serde_json::to_value(check).map_err(|err| internal(&err))?;
    if let Some(object) = record.as_object_mut() {
        object.insert(String::from("check"), check);
    }
    Ok(record)
}

async fn list_connectors(State(state): State<AppState>, ApiActor(_): ApiActor) -> ApiResult {
    ok(json!({ "items": state.admin.list_connectors().await?, "next": null }))
}

async fn create_connector(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_body)?;
    let (view, check) = state.admin.create_connector(&actor, body).await?;
    created_at(&format!("{API_PREFIX}/connectors/{}", view.spec.id), saved_connector(&view, &check)?)
}

async fn get_connector(State(state): State<AppState>, ApiActor(_): ApiActor, Path(id): Path<String>) -> ApiResult {
    ok(state.admin.connector(&id).await?)
}

async fn update_connector(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(mut body) = body.map_err(bad_body)?;
    if_match(&headers, &mut body)?;
    let (view, check) = state.admin.update_connector(&actor, &id, body).await?;
    ok(saved_connector(&view, &check)?)
}

async fn delete_connector(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    let ended = state.admin.delete_connector(&actor, &id).await?;
    ok(json!({ "sessions_ended": ended }))
}

async fn disable_connector(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    let ended = state.admin.set_connector_disabled(&actor, &id, true).await?;
    ok(json!({ "sessions_ended": ended }))
}

async fn enable_connector(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    state.admin.set_connector_disabled(&actor, &id, false).await?;
    no_content()
}

async fn check_connector(State(state): State<AppState>, ApiActor(_): ApiActor, Path(id): Path<String>) -> ApiResult {
    ok(state.admin.recheck_connector(&id).await?)
}

async fn dry_run(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    Path(id): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(mut body) = body.map_err(bad_body)?;
    let claims = body.remove("claims").unwrap_or(Value::Null);
    let mapping = body.remove("mapping").filter(|m| !m.is_null());
    if let Some(unknown) = body.keys().next() {
        return Err(AdminError::Invalid {
            field: unknown.clone(),
            reason: String::from("is not a dry-run field (claims, mapping)"),
        }
        .into());
    }
    ok(state.admin.dry_run(&id, &claims, mapping).await?)
}

async fn list_users(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    ok(state.admin.search_users(query.q.as_deref(), query.next.as_deref(), query.limit).await?)
}

async fn get_user(State(state): State<AppState>, ApiActor(_): ApiActor, Path(id): Path<String>) -> ApiResult {
    ok(state.admin.user(&id).await?)
}

async fn disable_user(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    let ended = state.admin.disable_user(&actor, &id).await?;
    ok(json!({ "sessions_ended": ended }))
}

async fn enable_user(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    state.admin.enable_user(&actor, &id).await?;
    no_content()
}

async fn logout_user(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    let ended = state.admin.sign_out_user(&actor, &id).await?;
    ok(json!({ "sessions_ended": ended }))
}

async fn link_identity(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_body)?;
    let connector_id = required_text(&body, "connector_id", "the connector the identity signs in through")?;
    let subject = required_text(&body, "subject", "the NameID or `sub` the IdP sends")?;
    state.admin.link_identity(&actor, &id, &connector_id, &subject).await?;
    let location = format!("{API_PREFIX}/users/{id}/links/{connector_id}/{}", encode_segment(&subject));
    created_at(&location, json!({ "connector_id": connector_id, "subject": subject }))
}

async fn merge_user(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_body)?;
    let other = required_text(&body, "user_id", "the id of the user to merge into this one")?;
    ok(state.admin.merge_users(&actor, &id, &other).await?)
}

async fn unlink_identity(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, connector_id, subject)): Path<(String, String, String)>,
) -> ApiResult {
    let ended = state.admin.unlink_identity(&actor, &id, &connector_id, &subject).await?;
    ok(json!({ "sessions_ended": ended }))
}

async fn list_sessions(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let filter = SessionFilter { user_id: query.user, connector_id: query.connector };
    ok(state.admin.list_sessions(filter, query.next.as_deref(), query.limit).await?)
}

async fn end_session(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    state.admin.end_session(&actor, &id).await?;
    no_content()
}

async fn list_grants(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let filter = GrantFilter { user_id: query.user, client_id: query.client_id };
    ok(state.admin.list_grants(filter, query.next.as_deref(), query.limit).await?)
}

async fn revoke_grant(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(id): Path<String>) -> ApiResult {
    state.admin.revoke_grant(&actor, &id).await?;
    no_content()
}

async fn list_keys(State(state): State<AppState>, ApiActor(_): ApiActor) -> ApiResult {
    ok(json!({ "items": state.admin.list_keys().await?, "next": null }))
}

async fn rotate_keys(State(state): State<AppState>, ApiActor(actor): ApiActor) -> ApiResult {
    ok(json!({ "items": state.admin.rotate_keys(&actor).await?, "next": null }))
}

async fn retire_key(State(state): State<AppState>, ApiActor(actor): ApiActor, Path(kid): Path<String>) -> ApiResult {
    state.admin.retire_key(&actor, &kid).await?;
    no_content()
}

async fn revoke_token(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_body)?;
    let token = body.get("token").and_then(Value::as_str).ok_or(AdminError::Invalid {
        field: String::from("token"),
        reason: String::from("is required: the access or refresh token to revoke"),
    })?;
    ok(state.admin.revoke_token(&actor, token).await?)
}

async fn audit(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let filter = AuditFilter {
        user_id: query.user,
        client_id: query.client_id,
        connector_id: query.connector,
        kind: query.kind,
        since: query.since,
        until: query.until,
    };
    ok(state.admin.audit_log(filter, query.next.as_deref(), query.limit).await?)
}
