//! The portal home page.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use crate::web::AppState;
use crate::web::csrf;
use crate::web::error::WebError;
use crate::web::pages::{PortalPage, render_page};
use crate::web::sessions;

pub async fn home(State(state): State<AppState>, session: Session) -> Result<Response, WebError> {
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let csrf = csrf::token(&session).await?;
    let connector = match state.store.get_connector(&sso.connector_id).await {
        Ok(connector) => connector.name,
        Err(_) => sso.connector_id.clone(),
    };
    let page = PortalPage {
        display_name: user.display_name.as_deref().unwrap_or(&user.username),
        username: &user.username,
        email: user.email.as_deref(),
        groups: &user.groups,
        connector: &connector,
        csrf: &csrf,
    };
    Ok(render_page(&page).into_response())
}
