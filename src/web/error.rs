//! The one error type that becomes an HTTP response. Its text is fixed per variant; the cause
//! of an internal error goes into the response extensions for the request log, never the body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::web::pages::{MessagePage, render_page};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("not found")]
    NotFound,
    #[error("too many requests: {0}")]
    TooManyRequests(&'static str),
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Set on responses for internal errors so the request middleware logs the cause once.
#[derive(Debug, Clone)]
pub struct InternalErrorCause(pub String);

impl WebError {
    pub fn internal(err: impl std::error::Error) -> Self {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Internal(text)
    }

    /// Maps an extractor rejection to its status, with a fixed message for the user.
    pub fn from_rejection(status: StatusCode, message: &'static str) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            _ => Self::BadRequest(message),
        }
    }

    fn status_and_message(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, "Forbidden", message),
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Request too large", "The request was larger than this server accepts.")
            }
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported request", "The request was not sent as a form.")
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is no page at this address."),
            Self::TooManyRequests(message) => (StatusCode::TOO_MANY_REQUESTS, "Too many requests", message),
            Self::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, "Busy", message),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not complete the request. Try again; if it keeps happening, contact your administrator.",
            ),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = self.status_and_message();
        let page = MessagePage { title, message, logout_csrf: None, signed_out: false };
        let mut response = (status, render_page(&page)).into_response();
        let retry_after = match &self {
            Self::TooManyRequests(_) => Some("60"),
            Self::Unavailable(_) => Some("1"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(seconds));
        }
        if let Self::Internal(cause) = self {
            response.extensions_mut().insert(InternalErrorCause(cause));
        }
        response
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(err: crate::store::StoreError) -> Self {
        Self::internal(err)
    }
}

impl From<crate::tokens::TokenError> for WebError {
    fn from(err: crate::tokens::TokenError) -> Self {
        Self::internal(err)
    }
}

impl From<tower_sessions::session::Error> for WebError {
    fn from(err: tower_sessions::session::Error) -> Self {
        Self::internal(err)
    }
}

/// A protocol error shown to a person: its fixed description as the page text.
impl From<crate::provider::ProviderError> for WebError {
    fn from(err: crate::provider::ProviderError) -> Self {
        match err {
            crate::provider::ProviderError::OAuth(error) => WebError::BadRequest(error.description),
            other => WebError::internal(other),
        }
    }
}
