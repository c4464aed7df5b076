//! Page templates. askama escapes every value for HTML.

use askama::Template;

pub use crate::portal::ApprovedApp;
use axum::response::Html;

pub struct ConnectorView {
    pub id: String,
    pub name: String,
    /// Where a redirect-style connector starts; `None` for a password form.
    pub start: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub csrf: &'a str,
    pub connectors: Vec<ConnectorView>,
    pub error: Option<&'a str>,
    pub username: &'a str,
    pub request: Option<&'a str>,
    pub client_name: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "portal.html")]
pub struct PortalPage<'a> {
    pub display_name: &'a str,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    pub connector: &'a str,
    pub csrf: &'a str,
    pub approved: Vec<ApprovedApp>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// When set, the page offers a sign-out button (the logout confirmation).
    pub logout_csrf: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub csrf: &'a str,
    pub request: &'a str,
    pub client_name: &'a str,
    pub username: &'a str,
    /// What each requested scope lets the application do, in words.
    pub scopes: Vec<&'static str>,
    /// The API the access will be for, when the application named one (RFC 8707 `resource`).
    pub resource: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "logout_confirm.html")]
pub struct LogoutConfirmPage<'a> {
    pub csrf: &'a str,
    pub client_name: Option<&'a str>,
    /// The logout request's own parameters, posted back with the confirmation.
    pub fields: Vec<(&'static str, String)>,
}

/// An IdP-initiated SAML sign-in waits for the person to confirm who they are becoming, so a
/// response someone else obtained cannot sign them in by a link (login CSRF).
#[derive(Template)]
#[template(path = "confirm_sign_in.html")]
pub struct ConfirmSignInPage<'a> {
    pub csrf: &'a str,
    pub connector_id: &'a str,
    pub connector_name: &'a str,
    pub who: &'a str,
    pub handoff: &'a str,
}

#[derive(Template)]
#[template(path = "oidc_connector.html")]
pub struct OidcConnectorPage<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
}

pub struct ReturnLink {
    /// Always a registered redirect URI.
    pub href: String,
    pub name: String,
}

/// An upstream sign-in that failed; when an app was waiting, a link carries the matching OAuth
/// error back to it.
#[derive(Template)]
#[template(path = "upstream_error.html")]
pub struct UpstreamErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub return_to: Option<ReturnLink>,
}

/// Renders a page; a template failure becomes a plain message rather than a panic.
pub fn render_page<T: Template>(page: &T) -> Html<String> {
    Html(
        page.render()
            .unwrap_or_else(|_| String::from("<!doctype html><title>Gatehouse</title><p>The page could not be shown.</p>")),
    )
}
