//! Health, readiness, metrics, the JWKS, and the stylesheet.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::web::AppState;
use crate::web::error::WebError;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
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
