//! Health, readiness, metrics, the JWKS, and the stylesheet.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::web::AppState;
use crate::web::error::WebError;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the database answers. Connectors are listed with `?verbose` but never decide
/// readiness: one IdP being down must not take every node out of the load balancer.
pub async fn readyz(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let database_up = state.provider.database_answers().await;
    let (status, verdict) =
        if database_up { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "database unreachable") };
    let verbose =
        query.is_some_and(|query| query.split('&').any(|pair| matches!(pair, "verbose" | "verbose=1" | "verbose=true")));
    if !verbose {
        return (status, verdict).into_response();
    }
    let mut body = String::from(if database_up { "[+]database ok\n" } else { "[-]database unreachable\n" });
    for found in state.upstreams.findings() {
        let mark = if found.finding.is_usable() { '+' } else { '-' };
        body.push_str(&format!("[{mark}]connector {} {}\n", found.connector_id, found.finding.code()));
    }
    body.push_str(verdict);
    (status, body).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, WebError> {
    let body = state.metrics.render().map_err(WebError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response())
}

pub async fn jwks(State(state): State<AppState>) -> Result<Response, WebError> {
    let keys = state.keys.jwks().await?;
    // Short caching: clients refetch on an unknown `kid`, and rotation publishes at once.
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(keys)).into_response())
}

pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../static/gatehouse.css"),
    )
        .into_response()
}

/// Browsers ask for it on every page; an empty answer keeps their consoles clean.
pub async fn favicon() -> Response {
    (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, "public, max-age=86400")]).into_response()
}

pub async fn not_found() -> WebError {
    WebError::NotFound
}
