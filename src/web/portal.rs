//! The portal home page, and withdrawing an application's access.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::secret::Secret;
use crate::store::StoreError;
use crate::web::AppState;
use crate::web::csrf::Forms;
use crate::web::error::WebError;
use crate::web::pages::{ApprovedApp, PortalPage, render_page};
use crate::web::sessions;

pub async fn home(State(state): State<AppState>, session: Session, forms: Forms) -> Result<Response, WebError> {
    let Some((sso, user)) = sessions::current(&state, &session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let csrf = forms.token().await?;
    let connector = match state.store.get_connector(&sso.connector_id).await {
        Ok(connector) => connector.name,
        Err(_) => sso.connector_id.clone(),
    };
    let mut approved = Vec::new();
    for (client_id, _) in state.store.list_consents(&user.id).await? {
        let name = match state.store.get_client(&client_id).await {
            Ok(client) => client.name,
            Err(StoreError::NotFound) => continue,
            Err(err) => return Err(err.into()),
        };
        approved.push(ApprovedApp { client_id, name });
    }
    let page = PortalPage {
        display_name: user.display_name.as_deref().unwrap_or(&user.username),
        username: &user.username,
        email: user.email.as_deref(),
        groups: &user.groups,
        connector: &connector,
        csrf: &csrf,
        approved,
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
    state.store.revoke_consent(&user.id, &form.client_id).await?;
    // Withdrawn approval also withdraws what the app already holds.
    state.store.revoke_user_client_grants(&user.id, &form.client_id, state.clock.now()).await?;
    Ok(Redirect::to("/").into_response())
}
