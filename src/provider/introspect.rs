//! Reading tokens back: introspection (RFC 7662), revocation (RFC 7009) and UserInfo.

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::provider::params::Params;
use crate::provider::{
    AUDIT_ACCESS_TOKEN_REVOKED, AUDIT_GRANT_REVOKED, ErrorCode, Provider, ProviderResult, SCOPE_OPENID, grant_event, has_scope,
    oauth, split_scope, user_claims,
};
use crate::store::{AuditOutcome, ClientRecord, StoreError};
use crate::tokens::digest;

/// The claims Gatehouse puts in its access tokens, as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Value,
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub sid: Option<String>,
    /// The grant of a user token; client-credentials tokens have none.
    pub gid: Option<String>,
}

/// Why a bearer token was not accepted, for the `WWW-Authenticate` challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    InvalidToken,
    InsufficientScope,
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

impl Provider {
    /// The claims of an access token this server issued and that is still valid: signed by a
    /// published key with the key's own algorithm, typed `at+jwt`, unexpired, not revoked, and
    /// its grant, session and user still good. `None` for anything else.
    pub async fn active_access_token(&self, token: &str) -> ProviderResult<Option<AccessClaims>> {
        let Some(claims) = self.verified_access_token(token, true).await? else { return Ok(None) };
        // A client removed (and perhaps registered again since) takes its tokens with it.
        if self.client(&claims.client_id).await?.is_none_or(|client| claims.iat < client.created_at) {
            return Ok(None);
        }
        if self.access_token_revoked(&claims.jti).await? {
            return Ok(None);
        }
        let live = match &claims.gid {
            Some(grant_id) => self.store.grant_state(grant_id).await?.is_some_and(|state| state.is_live(self.clock.now())),
            None => true,
        };
        Ok(live.then_some(claims))
    }

    async fn verified_access_token(&self, token: &str, check_exp: bool) -> ProviderResult<Option<AccessClaims>> {
        if !looks_like_jwt(token) {
            return Ok(None);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Ok(None) };
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Ok(None);
        }
        // The algorithm here is replaced by the signing key's own inside `verify`.
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[self.issuer()]);
        validation.validate_aud = false;
        validation.validate_exp = check_exp;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match self.keys.verify::<AccessClaims>(token, &validation).await {
            Ok(claims) => Ok(Some(claims)),
            Err(err) if err.is_server_fault() => Err(err.into()),
            Err(_) => Ok(None),
        }
    }

    /// RFC 7662. A client learns about the tokens meant for it: access tokens whose audience is
    /// its client id or one of its resources (a resource server checking what apps present),
    /// and its own refresh tokens. A client marked `introspect_any` (a gateway in front of many
    /// APIs) learns about every token. Anything else reads as inactive (RFC 7662 §2.2).
    pub async fn introspect(&self, caller: &ClientRecord, params: &Params) -> ProviderResult<Value> {
        params.check_all()?;
        let token = params.require("token", "token is required")?;
        let inactive = json!({ "active": false });
        if looks_like_jwt(token) {
            let Some(claims) = self.active_access_token(token).await? else { return Ok(inactive) };
            let audiences: Vec<&str> = match &claims.aud {
                Value::String(aud) => vec![aud.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let meant_for_caller =
                audiences.iter().any(|aud| *aud == caller.client_id || caller.resources.iter().any(|resource| resource == aud));
            if !(caller.introspect_any || meant_for_caller) {
                return Ok(inactive);
            }
            let mut response = Map::new();
            response.insert("active".into(), Value::Bool(true));
            response.insert("token_type".into(), Value::from("Bearer"));
            response.insert("scope".into(), Value::from(claims.scope));
            response.insert("client_id".into(), Value::from(claims.client_id));
            if claims.gid.is_some() {
                match self.store.get_user(&claims.sub).await {
                    Ok(user) => {
                        response.insert("username".into(), Value::from(user.username));
                    }
                    Err(StoreError::NotFound) => return Ok(inactive),
                    Err(err) => return Err(err.into()),
                }
            }
            response.insert("sub".into(), Value::from(claims.sub));
            response.insert("aud".into(), claims.aud);
            response.insert("iss".into(), Value::from(claims.iss));
            response.insert("exp".into(), Value::from(claims.exp));
            response.insert("iat".into(), Value::from(claims.iat));
            response.insert("jti".into(), Value::from(claims.jti));
            if let Some(sid) = claims.sid {
                response.insert("sid".into(), Value::from(sid));
            }
            return Ok(Value::Object(response));
        }
        let now = self.clock.now();
        let Some(record) = self.store.find_refresh_token(&digest(token)).await? else { return Ok(inactive) };
        let Some(state) = self.store.grant_state(&record.grant_id).await? else { return Ok(inactive) };
        if record.rotated_at.is_some() || record.expires_at <= now || !state.is_live(now) {
            return Ok(inactive);
        }
        if !(caller.introspect_any || state.grant.client_id == caller.client_id) {
            return Ok(inactive);
        }
        let user = match self.store.get_user(&state.grant.user_id).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Ok(inactive),
            Err(err) => return Err(err.into()),
        };
        Ok(json!({
            "active": true,
            "scope": state.grant.scope,
            "client_id": state.grant.client_id,
            "username": user.username,
            "sub": user.id,
            "iss": self.issuer(),
            "exp": record.expires_at,
            "iat": record.issued_at,
        }))
    }

    /// RFC 7009. A token the server does not know is answered as revoked; a token of another
    /// client is refused and left alone.
    pub async fn revoke(&self, client: &ClientRecord, params: &Params) -> ProviderResult<()> {
        params.check_all()?;
        let token = params.require("token", "token is required")?;
        let now = self.clock.now();
        if looks_like_jwt(token) {
            let Some(claims) = self.verified_access_token(token, true).await? else { return Ok(()) };
            if claims.client_id != client.client_id {
                return Err(oauth(ErrorCode::UnauthorizedClient, "the token was issued to another client").into());
            }
            self.revoke_access_token(&claims.jti, claims.exp).await?;
            if let Some(grant_id) = claims.gid.as_deref()
                && let Some(state) = self.store.grant_state(grant_id).await?
            {
                let event =
                    grant_event(AUDIT_ACCESS_TOKEN_REVOKED, AuditOutcome::Success, &state.grant, "revoked_by_client", now);
                self.store.record_audit(&event).await?;
            }
            return Ok(());
        }
        let Some(record) = self.store.find_refresh_token(&digest(token)).await? else { return Ok(()) };
        let Some(state) = self.store.grant_state(&record.grant_id).await? else { return Ok(()) };
        if state.grant.client_id != client.client_id {
            return Err(oauth(ErrorCode::UnauthorizedClient, "the token was issued to another client").into());
        }
        if self.store.revoke_grant(&state.grant.id, now).await? && state.grant.revoked_at.is_none() {
            let event = grant_event(AUDIT_GRANT_REVOKED, AuditOutcome::Success, &state.grant, "revoked_by_client", now);
            self.store.record_audit(&event).await?;
        }
        Ok(())
    }

    /// OpenID Connect Core §5.3: the signed-in user's claims, by the token's scopes.
    pub async fn userinfo(&self, token: &str) -> ProviderResult<Result<Value, BearerError>> {
        let Some(claims) = self.active_access_token(token).await? else { return Ok(Err(BearerError::InvalidToken)) };
        if claims.gid.is_none() {
            return Ok(Err(BearerError::InvalidToken));
        }
        let scopes = split_scope(&claims.scope);
        if !has_scope(&scopes, SCOPE_OPENID) {
            return Ok(Err(BearerError::InsufficientScope));
        }
        let user = match self.store.get_user(&claims.sub).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Ok(Err(BearerError::InvalidToken)),
            Err(err) => return Err(err.into()),
        };
        // The filter of the application the token was issued to, as in its ID token.
        let Some(client) = self.client(&claims.client_id).await? else { return Ok(Err(BearerError::InvalidToken)) };
        let mut response = user_claims(&user, &scopes, &client.access);
        response.insert("sub".into(), Value::from(user.id));
        Ok(Ok(Value::Object(response)))
    }
}

/// What a pasted token turned out to be, for an administrator revoking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentifiedToken {
    /// `access_token` or `refresh_token`.
    pub kind: &'static str,
    pub client_id: String,
    /// The user it was issued for; `None` for a client-credentials token.
    pub user_id: Option<String>,
    pub grant_id: Option<String>,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Provider {
    /// Revokes a token this server issued, whatever it is and whoever holds it: an access token
    /// is put on the revocation list, and the grant behind it (or behind a refresh token) is
    /// revoked with everything issued from it. `None` for a token this server does not know.
    pub async fn revoke_any(&self, token: &str) -> ProviderResult<Option<IdentifiedToken>> {
        let now = self.clock.now();
        if looks_like_jwt(token) {
            // Signature and issuer checked; an expired token can still be revoked.
            let Some(claims) = self.verified_access_token(token, false).await? else { return Ok(None) };
            self.revoke_access_token(&claims.jti, claims.exp).await?;
            if let Some(grant_id) = &claims.gid {
                self.store.revoke_grant(grant_id, now).await?;
            }
            return Ok(Some(IdentifiedToken {
                kind: "access_token",
                user_id: claims.gid.is_some().then(|| claims.sub.clone()),
                client_id: claims.client_id,
                grant_id: claims.gid,
                scope: claims.scope,
                issued_at: claims.iat,
                expires_at: claims.exp,
            }));
        }
        let Some(record) = self.store.find_refresh_token(&digest(token)).await? else { return Ok(None) };
        let Some(state) = self.store.grant_state(&record.grant_id).await? else { return Ok(None) };
        self.store.revoke_grant(&state.grant.id, now).await?;
        Ok(Some(IdentifiedToken {
            kind: "refresh_token",
            client_id: state.grant.client_id,
            user_id: Some(state.grant.user_id),
            grant_id: Some(state.grant.id),
            scope: state.grant.scope,
            issued_at: record.issued_at,
            expires_at: record.expires_at,
        }))
    }
}
