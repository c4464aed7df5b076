//! The portal home page, and withdrawing an application's access.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::secret::Secret;
use crate::web::AppState;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::pages::{PortalPage, render_page};
use crate::web::sessions;

pub async fn home(State(state): State<AppState>, session: Session, forms: Forms) -> Result<Response, WebError> {
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let csrf = forms.token().await?;
    let home = crate::portal::home(state.store.as_ref(), &sso, &user).await?;
    let page = PortalPage {
        display_name: user.display_name.as_deref().unwrap_or(&user.username),
        username: &user.username,
        email: user.email.as_deref(),
        groups: &user.groups,
        connector: &home.connector_name,
        csrf: &csrf,
        approved: home.approved,
    };
    Ok(render_page(&page).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RevokeConsentForm {
    csrf: Secret<String>,
    client_id: String,
}

/// Withdraws the user's approval of one application: the next sign-in to it asks again.
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
    crate::portal::withdraw_consent(state.store.as_ref(), &user, &form.client_id, state.clock.now()).await?;
    Ok(Redirect::to("/").into_response())
}
