//! The portal: the launcher, the person's sessions, connected apps and linked accounts, and
//! what they may end themselves.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::portal::{PortalContext, PortalError};
use crate::secret::Secret;
use crate::web::AppState;
use crate::web::client::client_ip;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::pages::{MessagePage, PortalPage, render_page};
use crate::web::sessions::{self, SignOut};

/// Above this many applications the launcher offers a search field.
const SEARCH_FROM_APPS: usize = 8;
const MAX_QUERY_CHARS: usize = 100;
/// A public session id is a base64url SHA-256 digest.
const MAX_HANDLE_LEN: usize = 64;

#[derive(Debug, Deserialize)]
pub struct HomeQuery {
    q: Option<String>,
}

/// The page's CSP, allowing the logos' origins as image sources and nothing else new.
fn csp_with_images(origins: &[String]) -> Option<HeaderValue> {
    let mut sources = String::new();
    for origin in origins.iter().filter(|o| crate::web::is_csp_source(o)) {
        if !sources.split(' ').any(|s| s == origin) {
            sources.push(' ');
            sources.push_str(origin);
        }
    }
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'{sources}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).ok()
}

pub async fn home(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    query: Result<Query<HomeQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Query(query) = query.map_err(|_| WebError::BadRequest("That search is not valid."))?;
    let search = query.q.map(|q| q.trim().chars().filter(|c| !c.is_control()).take(MAX_QUERY_CHARS).collect::<String>());
    let csrf = forms.token().await?;
    let context = PortalContext {
        issuer: state.provider.issuer(),
        idle_timeout_secs: state.config.session.idle_timeout_secs,
        now: state.clock.now(),
    };
    let home = crate::portal::home(state.store.as_ref(), &context, &sso, &user).await?;
    let offer_search = home.apps.len() > SEARCH_FROM_APPS || search.as_deref().is_some_and(|q| !q.is_empty());
    let needle = search.as_deref().map(str::to_lowercase).filter(|q| !q.is_empty());
    let total_apps = home.apps.len();
    let apps: Vec<_> = home
        .apps
        .into_iter()
        .filter(|app| {
            needle.as_deref().is_none_or(|q| {
                app.name.to_lowercase().contains(q) || app.description.as_deref().is_some_and(|d| d.to_lowercase().contains(q))
            })
        })
        .collect();
    let logo_origins: Vec<String> =
        apps.iter().filter_map(|app| app.logo_uri.as_deref()).filter_map(crate::provider::authorize::csp_source).collect();
    let page = PortalPage {
        display_name: user.display_name.as_deref().unwrap_or(&user.username),
        username: &user.username,
        email: user.email.as_deref(),
        groups: &user.groups,
        connector: &home.connector_name,
        csrf: &csrf,
        apps,
        total_apps,
        offer_search,
        search: search.as_deref().unwrap_or_default(),
        sessions: home.sessions,
        connected: home.connected,
        linked: home.linked,
        now: context.now,
    };
    let mut response = render_page(&page).into_response();
    if let Some(csp) = csp_with_images(&logo_origins) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct RevokeConsentForm {
    csrf: Secret<String>,
    client_id: String,
}

/// "Remove access": withdraws the user's approval of one application and revokes its grants;
/// the next sign-in to it asks again.
pub async fn revoke_consent(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    form: Result<Form<RevokeConsentForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    forms.verify(form.csrf.expose()).await?;
    let Some((_, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    if form.client_id.is_empty() || form.client_id.len() > 128 {
        return Err(WebError::BadRequest("That application is not one you can remove."));
    }
    crate::portal::withdraw_consent(state.store.as_ref(), &user, &form.client_id, state.clock.now()).await?;
    Ok(Redirect::to("/#connected").into_response())
}

#[derive(Debug, Deserialize)]
pub struct EndSessionForm {
    csrf: Secret<String>,
    session: String,
}

/// Signs the person out of one of their sessions; their own browser's ends like a sign-out.
pub async fn end_session(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    session: Session,
    forms: Forms,
    headers: HeaderMap,
    form: Result<Form<EndSessionForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    forms.verify(form.csrf.expose()).await?;
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    if form.session.is_empty() || form.session.len() > MAX_HANDLE_LEN {
        return Err(WebError::BadRequest("That session is not one of yours, or it has already ended."));
    }
    if form.session == crate::session::public_sid(&sso.id) {
        let ip = client_ip(addr, &headers, &state.config.trusted_proxies);
        sessions::sign_out(&state, &session, Some((sso, user)), SignOut { ip, client_id: None, detail: Some("from the portal") })
            .await?;
        return Ok(signed_out_page("You are signed out of Gatehouse on this device."));
    }
    match crate::portal::end_session(state.store.as_ref(), &user, &form.session, state.clock.now()).await {
        Ok(ended) => {
            if ended.notices_queued > 0 {
                state.provider.backchannel.notify_one();
            }
            Ok(Redirect::to("/#sessions").into_response())
        }
        Err(PortalError::UnknownSession) => {
            Err(WebError::BadRequest("That session is not one of yours, or it has already ended."))
        }
        Err(PortalError::Store(err)) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Secret<String>,
}

/// Ends every session of the person, this one included, and revokes every grant.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    session: Session,
    forms: Forms,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form.map_err(|rejection| WebError::from_rejection(rejection.status(), "The form was incomplete."))?;
    forms.verify(form.csrf.expose()).await?;
    let Some((_, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let report = crate::portal::sign_out_everywhere(state.store.as_ref(), &user, state.clock.now()).await?;
    if report.notices_queued > 0 {
        state.provider.backchannel.notify_one();
    }
    sessions::detach(&state, &session).await?;
    let message = match report.sessions {
        1 => String::from("You are signed out of Gatehouse. Applications you had signed in to have been told to sign you out."),
        n => format!(
            "You are signed out of Gatehouse on {n} devices. Applications you had signed in to have been told to sign you out."
        ),
    };
    Ok(signed_out_page(&message))
}

fn signed_out_page(message: &str) -> Response {
    let page = MessagePage { title: "Signed out", message, logout_csrf: None, signed_out: true };
    (StatusCode::OK, render_page(&page)).into_response()
}

/// How long ago `time` was, in words a person reads at a glance ("5 minutes ago").
pub fn ago(now: &i64, time: &i64) -> String {
    let secs = now - time;
    let plural = |n: i64, unit: &str| if n == 1 { format!("1 {unit} ago") } else { format!("{n} {unit}s ago") };
    match secs {
        ..60 => String::from("just now"),
        60..3600 => plural(secs / 60, "minute"),
        3600..86_400 => plural(secs / 3600, "hour"),
        86_400..2_592_000 => plural(secs / 86_400, "day"),
        _ => crate::clock::utc(*time).split(' ').next().map_or_else(String::new, |date| format!("on {date}")),
    }
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn times_read_as_how_long_ago() {
        assert_eq!(ago(&1000, &990), "just now");
        assert_eq!(ago(&1000, &1005), "just now");
        assert_eq!(ago(&4000, &3880), "2 minutes ago");
        assert_eq!(ago(&10_000, &6_400), "1 hour ago");
        assert_eq!(ago(&1_000_000, &800_000), "2 days ago");
        assert_eq!(ago(&1_795_305_600, &1_700_000_000), "on 2023-11-14");
    }
}
