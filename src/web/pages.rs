//! Page templates. askama escapes every value for HTML.

use askama::Template;

pub use crate::portal::{AppTile, ConnectedApp, LinkedAccount, SessionEntry};
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
    /// Ask for an email address (or username) first.
    pub identify: bool,
    /// The connector this browser used last, offered before the email field.
    pub remembered: Option<&'a ConnectorView>,
    /// The choices follow an identifier the person typed (or the app named).
    pub identified: bool,
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
    pub apps: Vec<AppTile>,
    /// Before the search narrowed them.
    pub total_apps: usize,
    pub offer_search: bool,
    pub search: &'a str,
    pub sessions: Vec<SessionEntry>,
    pub connected: Vec<ConnectedApp>,
    pub linked: Vec<LinkedAccount>,
    pub now: i64,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// When set, the page offers a sign-out button (the logout confirmation).
    pub logout_csrf: Option<&'a str>,
    /// The page follows a sign-out: its link offers to sign in again rather than the portal.
    pub signed_out: bool,
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

#[derive(Template)]
#[template(path = "saml_connector.html")]
pub struct SamlConnectorPage<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    pub metadata_url: &'a str,
    pub signing_fingerprints: Vec<String>,
    pub encryption_fingerprints: Vec<String>,
    /// "7 days", "12 hours".
    pub metadata_validity: String,
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

/// An application's access policy refused the signed-in person.
#[derive(Template)]
#[template(path = "access_denied.html")]
pub struct AccessDeniedPage<'a> {
    pub app: &'a str,
    /// What to ask for, in words.
    pub advice: &'a str,
    pub username: &'a str,
    /// The app's registered redirect URI with `error=access_denied` and its `state`.
    pub return_to: String,
}

/// Email-first sign-in found the person's provider. A form's `form-action` would also govern
/// the redirects after it, out to a provider whose address is not known in advance, so the
/// browser continues by this page's refresh (and its link) instead.
#[derive(Template)]
#[template(path = "continue_upstream.html")]
pub struct ContinueUpstreamPage<'a> {
    pub name: &'a str,
    /// Always a path on this server: the connector's sign-in start.
    pub target: &'a str,
}

/// Renders a page; a template failure becomes a plain message rather than a panic.
pub fn render_page<T: Template>(page: &T) -> Html<String> {
    Html(
        page.render()
            .unwrap_or_else(|_| String::from("<!doctype html><title>Gatehouse</title><p>The page could not be shown.</p>")),
    )
}
