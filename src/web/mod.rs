//! HTTP: handlers parse requests, call a core, and render. Nothing here decides policy.

pub mod admin;
pub mod admin_api;
pub mod admin_connectors;
pub mod client;
pub mod csrf;
pub mod error;
pub mod login;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod portal;
pub mod saml;
pub mod sessions;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::{Metrics, RequestLabels};
use crate::provider::Provider;
use crate::provider::discovery::{AUTHORIZE_PATH, INTROSPECT_PATH, LOGOUT_PATH, REVOKE_PATH, TOKEN_PATH, USERINFO_PATH};
use crate::store::Store;
use crate::tokens::KeyManager;
use crate::web::error::{InternalErrorCause, WebError};
use crate::web::sessions::SessionBackend;

/// Forms here are small; anything bigger is refused before it is read.
const MAX_BODY_BYTES: usize = 64 * 1024;
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a value can stand as one CSP source expression: it must not be able to end the
/// directive or add another.
pub fn is_csp_source(source: &str) -> bool {
    !source.is_empty() && source.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'\'')
}

/// The CSP of a page whose form may end, through redirects, at `target` (an app's redirect URI
/// origin): browsers apply `form-action` to every hop after the submission.
pub fn form_action_csp(target: Option<&str>) -> Option<HeaderValue> {
    let target = target.filter(|t| is_csp_source(t))?;
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {target}; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).ok()
}

/// What every handler is given: one shared pointer, since axum clones the state for each
/// request and each handler.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub provider: Arc<Provider>,
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// Where password checks (argon2) run, a bounded number at once.
    pub hashing: crate::work::BlockingPool,
    pub forms: Arc<csrf::FormTokens>,
    /// Sign-ins started per client network in the current minute.
    pub starts: Arc<crate::throttle::WindowCounter>,
    /// Admin operations, for the console and the admin API.
    pub admin: Arc<crate::admin::Admin>,
}

pub fn router(state: AppState, sessions: SessionBackend) -> Router {
    let session_layer = SessionManagerLayer::new(sessions)
        .with_name(state.config.session.cookie_name.clone())
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.issuer_is_https())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(state.config.session.idle_timeout_secs)));

    // What a browser-based app (a public client) calls directly: metadata, keys, token,
    // UserInfo, revocation. None of them reads a cookie, so any origin may call them.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(3600));
    let cross_origin = Router::new()
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route("/.well-known/oauth-authorization-server", get(oauth::discovery))
        .route(TOKEN_PATH, post(oauth::token))
        .route(USERINFO_PATH, get(oauth::userinfo_get).post(oauth::userinfo_post))
        .route(REVOKE_PATH, post(oauth::revoke))
        .layer(cors);
    // The endpoints apps and resource servers call read no cookie: the session layer, which
    // parses cookies and readies a session for every request it sees, stays off their path.
    let machine = cross_origin.route(INTROSPECT_PATH, post(oauth::introspect));

    let mut routes = Router::new()
        .route("/", get(portal::home))
        .route("/login", get(login::page).post(login::submit))
        .route("/login/identify", post(login::identify))
        .route("/login/forget", get(login::forget))
        .route("/logout", get(login::logout_page).post(login::logout))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route(AUTHORIZE_PATH, get(oauth::authorize_get).post(oauth::authorize_post))
        .route("/oauth2/authorize/resume", get(oauth::authorize_resume))
        .route("/oauth2/consent", get(oauth::consent_page).post(oauth::consent_submit))
        .route(LOGOUT_PATH, get(oauth::logout_get).post(oauth::logout_post))
        .route("/consents/revoke", post(portal::revoke_consent))
        .route("/sessions/sign-out", post(portal::end_session))
        .route("/sessions/sign-out-everywhere", post(portal::sign_out_everywhere))
        .route("/oidc/{id}", get(upstream::oidc_page))
        .route("/oidc/{id}/login", get(upstream::oidc_login))
        .route("/oidc/{id}/callback", get(upstream::oidc_callback))
        .route("/saml/{id}", get(saml::page))
        .route("/saml/{id}/metadata", get(saml::metadata))
        .route("/saml/{id}/login", get(saml::login))
        .route("/saml/{id}/finish", get(saml::finish).post(saml::finish_confirmed))
        .route("/saml/{id}/acs", post(saml::acs).layer(DefaultBodyLimit::max(crate::upstream::saml::MAX_POST_BYTES)))
        .merge(admin::router())
        .merge(admin_connectors::router())
        .route("/static/gatehouse.css", get(ops::stylesheet))
        .route("/favicon.ico", get(ops::favicon));
    // With a listener of their own, metrics are not on the public one.
    if state.config.metrics_listen.is_none() {
        routes = routes.route("/metrics", get(ops::metrics));
    }
    // The admin API reads no cookie either.
    let mut router = routes
        .layer(session_layer)
        .merge(machine)
        .merge(admin_api::router())
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::CACHE_CONTROL, "no-store"));
    if state.config.issuer_is_https() {
        router = router.layer(header_layer(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    }
    router.layer(middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

/// `/metrics` alone, for the `metrics_listen` address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(ops::metrics)).fallback(ops::not_found).with_state(state)
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// One span per request with its id, method, matched route and status; never the URI, whose
/// query can hold codes and state, nor any header.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    // Clients may send any method token; only the standard ones become metric labels.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::HEAD | Method::PUT | Method::DELETE | Method::PATCH | Method::OPTIONS => {
            request.method().as_str().to_owned()
        }
        _ => String::from("OTHER"),
    };
    // From the thread's generator: `new_v4` asks the kernel for every id, a system call per request.
    let request_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid().simple().to_string();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route, status = tracing::field::Empty);
    let started = Instant::now();
    // The handler runs as its own task, so a client that disconnects cannot cancel it halfway:
    // sqlx leaves a PostgreSQL connection inside an open transaction when a `begin` is dropped
    // mid-flight (transact-rs/sqlx#4385), and half-done writes help no one. Its writes are on
    // disk before its answer leaves (`durable_before_answer`).
    let handler = tokio::spawn(crate::store::durable_before_answer(next.run(request)).instrument(span.clone()));
    let mut response = match handler.await {
        Ok((response, Ok(()))) => response,
        Ok((_, Err(err))) => WebError::Internal(format!("the request's writes could not be made durable: {err}")).into_response(),
        Err(_) => WebError::Internal(String::from("the request handler stopped unexpectedly")).into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    {
        // Entered, not named as `parent:`: the JSON log lists only the spans entered.
        let _entered = span.enter();
        if let Some(InternalErrorCause(cause)) = response.extensions().get::<InternalErrorCause>() {
            tracing::error!(error = %cause, "request failed");
        }
        // Health probes come every few seconds from orchestrators; an answer other than 200 is news.
        if matches!(route.as_str(), "/healthz" | "/readyz") && status == 200 {
            tracing::debug!(latency_ms = elapsed.as_millis() as u64, "request finished");
        } else {
            tracing::info!(latency_ms = elapsed.as_millis() as u64, "request finished");
        }
    }
    let labels = RequestLabels { route, method, status };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.request_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
