//! The token endpoint's grants: `authorization_code`, `refresh_token`, `client_credentials`.
//! Each is its own function over the shared minting in `provider`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::UnixTime;
use crate::provider::authorize::CodeGrant;
use crate::provider::params::Params;
use crate::provider::{
    AUDIT_GRANT_REVOKED, AUDIT_TOKEN_GRANTED, AccessGrant, ErrorCode, Provider, ProviderResult, SCOPE_OFFLINE_ACCESS,
    SCOPE_OPENID, USER_SCOPES, client_alg, grant_event, has_scope, is_scope_token, oauth, split_scope, user_claims,
};
use crate::session::public_sid;
use crate::store::{
    AuditOutcome, ClientRecord, GrantRecord, GrantState, PeekedCode, RefreshTokenRecord, RefreshTokenState, Rotation, StoreError,
    User,
};
use crate::tokens::{digest, random_token};

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_code_verifier(value: &str) -> bool {
    (43..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token.
fn at_hash(access_token: &str) -> String {
    let hash = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.get(..16).unwrap_or_default())
}

/// The access token's audience: the `resource` asked for at the token endpoint (RFC 8707 §2.2)
/// when it is one of `allowed`, else `default`.
fn token_audience(params: &Params, default: &str, allowed: &[String]) -> ProviderResult<String> {
    match params.get("resource")? {
        None => Ok(default.to_owned()),
        Some(resource) if resource == default || allowed.iter().any(|r| r == resource) => Ok(resource.to_owned()),
        Some(_) => Err(oauth(ErrorCode::InvalidTarget, "the resource is not one this grant was authorized for").into()),
    }
}

fn invalid_grant(description: &'static str) -> crate::provider::ProviderError {
    oauth(ErrorCode::InvalidGrant, description).into()
}

struct IdTokenInput<'a> {
    client: &'a ClientRecord,
    user: &'a User,
    grant: &'a GrantRecord,
    scopes: &'a [String],
    nonce: Option<&'a str>,
    access_token: &'a str,
}

impl Provider {
    pub async fn token(&self, client: &ClientRecord, params: &Params) -> ProviderResult<TokenResponse> {
        let answered = self.grant(client, params).await;
        if let Err(crate::provider::ProviderError::OAuth(refusal)) = &answered {
            // The fixed description, never the code, token or redirect URI presented.
            tracing::info!(
                client_id = %client.client_id,
                reason = refusal.code.as_str(),
                "token request refused: {}",
                refusal.description
            );
        }
        answered
    }

    async fn grant(&self, client: &ClientRecord, params: &Params) -> ProviderResult<TokenResponse> {
        params.check_all()?;
        let grant_type = params.require("grant_type", "grant_type is required")?;
        if !["authorization_code", "refresh_token", "client_credentials"].contains(&grant_type) {
            return Err(oauth(ErrorCode::UnsupportedGrantType, "this grant type is not supported").into());
        }
        if !client.grant_types.iter().any(|g| g == grant_type) {
            return Err(oauth(ErrorCode::UnauthorizedClient, "this client may not use this grant type").into());
        }
        match grant_type {
            "authorization_code" => self.redeem_code(client, params).await,
            "refresh_token" => self.refresh(client, params).await,
            _ => self.client_credentials(client, params).await,
        }
    }

    async fn redeem_code(&self, client: &ClientRecord, params: &Params) -> ProviderResult<TokenResponse> {
        let code = params.require("code", "code is required")?;
        let redirect_uri = params.get("redirect_uri")?;
        let verifier = params.get("code_verifier")?;
        let now = self.clock.now();
        let code_hash = digest(code);

        let Some(PeekedCode { payload, signed_in }) = self.store.peek_code(&code_hash, now).await? else {
            return Err(self.code_replayed(&code_hash, None).await);
        };
        let bound: CodeGrant = serde_json::from_str(&payload).map_err(StoreError::from)?;
        // Every binding is checked before the code is spent, so a wrong guess by another party
        // does not destroy the rightful client's code.
        if bound.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if redirect_uri != Some(bound.redirect_uri.as_str()) {
            return Err(invalid_grant("redirect_uri does not match the authorization request"));
        }
        match (&bound.code_challenge, verifier) {
            (Some(challenge), Some(verifier)) => {
                if !is_code_verifier(verifier) {
                    return Err(oauth(ErrorCode::InvalidRequest, "code_verifier is malformed").into());
                }
                if !bool::from(s256(verifier).as_bytes().ct_eq(challenge.as_bytes())) {
                    return Err(invalid_grant("code_verifier does not match the code challenge"));
                }
            }
            (Some(_), None) => return Err(invalid_grant("code_verifier is required")),
            // A verifier for a code issued without a challenge is a downgrade attempt.
            (None, Some(_)) => return Err(invalid_grant("the authorization request had no code challenge")),
            (None, None) => {}
        }
        let (session, user) = match signed_in {
            Some((session, user))
                if user.id == bound.user_id && !user.disabled && session.revoked_at.is_none() && session.expires_at > now =>
            {
                (session, user)
            }
            _ => return Err(invalid_grant("the user's sign-in is no longer valid")),
        };
        // RFC 8707 §2.2: the token endpoint may only narrow the resource authorized, and one
        // resource is all an authorization here carries.
        let audience = token_audience(params, &bound.audience, &[])?;
        let wants_refresh = client.grant_types.iter().any(|g| g == "refresh_token")
            && (has_scope(&bound.scopes, SCOPE_OFFLINE_ACCESS) || client.issue_refresh_token);
        // Without a refresh token the grant still lives as long as the session, so that the
        // session's end reaches this client by back-channel logout.
        let expires_at = if wants_refresh {
            now + self.config.tokens.refresh_token_absolute_lifetime_secs
        } else {
            (now + self.access_token_lifetime(client)).max(session.expires_at)
        };
        let grant = GrantRecord {
            id: bound.grant_id.clone(),
            client_id: client.client_id.clone(),
            user_id: user.id.clone(),
            session_id: Some(session.id.clone()),
            code_hash: Some(code_hash.clone()),
            scope: bound.scopes.join(" "),
            audience,
            auth_time: bound.auth_time,
            amr: bound.amr.clone(),
            idp: bound.idp.clone(),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let refresh_token = wants_refresh.then(random_token);
        // Minted before anything is spent: a failure here leaves the code for a retry.
        let response =
            self.tokens_for_grant(client, &user, &grant, &bound.scopes, bound.nonce.as_deref(), refresh_token.clone()).await?;
        let refresh_record = RefreshTokenRecord {
            grant_id: grant.id.clone(),
            issued_at: now,
            expires_at: (now + self.config.tokens.refresh_token_idle_lifetime_secs).min(grant.expires_at),
            rotated_at: None,
        };
        let refresh_hash = refresh_token.as_deref().map(digest);
        let first_refresh = refresh_hash.as_deref().map(|hash| (hash, &refresh_record));
        let granted = grant_event(AUDIT_TOKEN_GRANTED, AuditOutcome::Success, &grant, &grant.scope, now);
        if !self.store.redeem_code(&code_hash, &grant, first_refresh, &granted, now).await? {
            return Err(self.code_replayed(&code_hash, Some(&bound.grant_id)).await);
        }
        Ok(response)
    }

    /// A code that is unknown, expired or already spent. If it was spent, whoever presents it
    /// again may have stolen it: every token issued from it is revoked (RFC 6749 §4.1.2). The
    /// grant is found by the id fixed when the code was issued (when this caller read the code
    /// before it was spent) or by the code's digest.
    async fn code_replayed(&self, code_hash: &str, grant_id: Option<&str>) -> crate::provider::ProviderError {
        let now = self.clock.now();
        let by_id = match grant_id {
            Some(id) => match self.store.revoke_grant(id, now).await {
                Ok(revoked) => revoked.then(|| id.to_owned()),
                Err(err) => return err.into(),
            },
            None => None,
        };
        let revoked = match by_id {
            Some(id) => Some(id),
            None => match self.store.revoke_grant_by_code(code_hash, now).await {
                Ok(found) => found,
                Err(err) => return err.into(),
            },
        };
        if let Some(grant_id) = revoked {
            tracing::warn!(grant_id = %grant_id, "authorization code replayed: its grant is revoked");
            if let Err(err) = self.audit_revoked(&grant_id, "code_replayed", now).await {
                return err;
            }
        }
        invalid_grant("the code is invalid, expired or already used")
    }

    /// Audits the revocation of a replayed code's grant.
    async fn audit_revoked(&self, grant_id: &str, reason: &str, now: UnixTime) -> Result<(), crate::provider::ProviderError> {
        if let Some(state) = self.store.grant_state(grant_id).await? {
            let event = grant_event(AUDIT_GRANT_REVOKED, AuditOutcome::Failure, &state.grant, reason, now);
            self.store.record_audit(&event).await?;
        }
        Ok(())
    }

    async fn tokens_for_grant(
        &self,
        client: &ClientRecord,
        user: &User,
        grant: &GrantRecord,
        scopes: &[String],
        nonce: Option<&str>,
        refresh_token: Option<String>,
    ) -> ProviderResult<TokenResponse> {
        let scope = scopes.join(" ");
        let access = self
            .mint_access_token(
                client,
                AccessGrant {
                    subject: &user.id,
                    audience: &grant.audience,
                    scope: &scope,
                    sid: grant.session_id.as_deref().map(public_sid),
                    auth_time: Some(grant.auth_time),
                    grant_id: Some(&grant.id),
                    not_after: grant.expires_at,
                },
            )
            .await?;
        let id_token = if has_scope(scopes, SCOPE_OPENID) {
            let input = IdTokenInput { client, user, grant, scopes, nonce, access_token: &access.token };
            Some(self.mint_id_token(input).await?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope,
            refresh_token,
            id_token,
        })
    }

    async fn mint_id_token(&self, input: IdTokenInput<'_>) -> ProviderResult<String> {
        use serde_json::Value;
        let now = self.clock.now();
        let mut claims = user_claims(input.user, input.scopes, &input.client.access);
        claims.insert("iss".into(), Value::from(self.issuer()));
        claims.insert("sub".into(), Value::from(input.user.id.clone()));
        claims.insert("aud".into(), Value::from(input.client.client_id.clone()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.config.tokens.id_token_lifetime_secs));
        claims.insert("auth_time".into(), Value::from(input.grant.auth_time));
        if let Some(nonce) = input.nonce {
            claims.insert("nonce".into(), Value::from(nonce));
        }
        if let Some(session_id) = &input.grant.session_id {
            claims.insert("sid".into(), Value::from(public_sid(session_id)));
        }
        // An empty list would claim nothing; an upstream sign-in's methods are its IdP's to state.
        if !input.grant.amr.is_empty() {
            claims.insert("amr".into(), Value::from(input.grant.amr.clone()));
        }
        claims.insert("at_hash".into(), Value::from(at_hash(input.access_token)));
        claims.insert("idp".into(), Value::from(input.grant.idp.clone()));
        Ok(self.keys.sign(&claims, client_alg(input.client), "JWT").await?)
    }

    async fn refresh(&self, client: &ClientRecord, params: &Params) -> ProviderResult<TokenResponse> {
        let presented = params.require("refresh_token", "refresh_token is required")?;
        let now = self.clock.now();
        let old_hash = digest(presented);
        let Some(RefreshTokenState { token: record, grant: state, user }) = self.store.refresh_token_state(&old_hash).await?
        else {
            return Err(invalid_grant("the refresh token is invalid"));
        };
        if state.grant.client_id != client.client_id {
            return Err(invalid_grant("the refresh token was issued to another client"));
        }
        let successor = self.secrets.refresh_successor(presented);
        if let Some(rotated_at) = record.rotated_at {
            return self.rotated_token_presented(client, params, &state, &user, &successor, rotated_at).await;
        }
        if record.expires_at <= now || !state.is_live(now) {
            return Err(invalid_grant("the refresh token has expired or was revoked"));
        }
        // Everything that can refuse the request, and the new tokens themselves, come before the
        // presented token is spent: a refused or failed refresh leaves it usable.
        let (scopes, grant) = self.refreshable(client, params, &state, &user).await?;
        let response = self.tokens_for_grant(client, &user, &grant, &scopes, None, Some(successor.clone())).await?;
        let new_record = RefreshTokenRecord {
            grant_id: state.grant.id.clone(),
            issued_at: now,
            expires_at: (now + self.config.tokens.refresh_token_idle_lifetime_secs).min(state.grant.expires_at),
            rotated_at: None,
        };
        match self.store.rotate_refresh_token(&old_hash, &digest(&successor), &new_record, now).await? {
            Rotation::Rotated => Ok(response),
            Rotation::AlreadyRotated => self.rotated_token_presented(client, params, &state, &user, &successor, now).await,
            Rotation::NotFound => Err(invalid_grant("the refresh token has expired or was revoked")),
        }
    }

    /// The scopes and grant a refresh issues for, or why it may not. The scopes are the granted
    /// ones the client still may use, narrowed further by `scope`.
    async fn refreshable(
        &self,
        client: &ClientRecord,
        params: &Params,
        state: &GrantState,
        user: &User,
    ) -> ProviderResult<(Vec<String>, GrantRecord)> {
        let granted: Vec<String> = split_scope(&state.grant.scope).into_iter().filter(|s| client.scopes.contains(s)).collect();
        if granted.is_empty() {
            return Err(invalid_grant("this client may no longer use any scope of this grant"));
        }
        let scopes = match params.get("scope")? {
            None => granted,
            Some(asked) => {
                let asked = split_scope(asked);
                if asked.is_empty() || !asked.iter().all(|s| is_scope_token(s) && has_scope(&granted, s)) {
                    return Err(oauth(ErrorCode::InvalidScope, "a refresh may only narrow the granted scope").into());
                }
                asked
            }
        };
        let grant = GrantRecord { audience: token_audience(params, &state.grant.audience, &[])?, ..state.grant.clone() };
        if user.disabled {
            return Err(invalid_grant("the refresh token has expired or was revoked"));
        }
        // Group membership is read afresh, with the token: someone removed from the allowed
        // groups loses the application now, and the grant with it, rather than when the refresh
        // token expires.
        if self.check_access(client, user, &state.grant.idp, "refresh").await?.is_err() {
            let now = self.clock.now();
            if self.store.revoke_grant(&state.grant.id, now).await? {
                let event = grant_event(AUDIT_GRANT_REVOKED, AuditOutcome::Success, &state.grant, "access_policy", now);
                self.store.record_audit(&event).await?;
            }
            return Err(invalid_grant("the user may no longer use this application"));
        }
        Ok((scopes, grant))
    }

    /// A refresh token that was already exchanged. Within `refresh_token_reuse_grace_secs` of
    /// the exchange, while its successor is unused, the client gets that same successor again
    /// (two tabs refreshing at once, a retry after a lost response); otherwise it is reuse.
    async fn rotated_token_presented(
        &self,
        client: &ClientRecord,
        params: &Params,
        state: &GrantState,
        user: &User,
        successor: &str,
        rotated_at: UnixTime,
    ) -> ProviderResult<TokenResponse> {
        let now = self.clock.now();
        let grace = self.config.tokens.refresh_token_reuse_grace_secs;
        if grace > 0 && now - rotated_at <= grace && state.is_live(now) {
            let next = self.store.find_refresh_token(&digest(successor)).await?;
            if next.is_some_and(|next| next.rotated_at.is_none() && next.expires_at > now && next.grant_id == state.grant.id) {
                // The successor was stored by another request, perhaps not yet durably.
                self.store.sync_writes().await?;
                let (scopes, grant) = self.refreshable(client, params, state, user).await?;
                return self.tokens_for_grant(client, user, &grant, &scopes, None, Some(successor.to_owned())).await;
            }
        }
        Err(self.refresh_token_reused(&state.grant).await)
    }

    /// A rotated refresh token came back: two parties hold the family. Both lose it, and the
    /// session it came from ends (OAuth 2.0 Security BCP §4.14.2).
    async fn refresh_token_reused(&self, grant: &GrantRecord) -> crate::provider::ProviderError {
        let now = self.clock.now();
        tracing::warn!(grant_id = %grant.id, client_id = %grant.client_id, "refresh token reused: revoking its family");
        if let Err(err) = self.store.revoke_grant(&grant.id, now).await {
            return err.into();
        }
        let event = grant_event(AUDIT_GRANT_REVOKED, AuditOutcome::Failure, grant, "refresh_token_reused", now);
        if let Err(err) = self.store.record_audit(&event).await {
            return err.into();
        }
        if let Some(session_id) = &grant.session_id {
            match crate::session::end(self.store.as_ref(), session_id, now).await {
                Ok(queued) if queued > 0 => self.backchannel.notify_one(),
                Ok(_) => {}
                Err(err) => return err.into(),
            }
        }
        invalid_grant("the refresh token was already used; its grant is revoked")
    }

    async fn client_credentials(&self, client: &ClientRecord, params: &Params) -> ProviderResult<TokenResponse> {
        // Configuration refuses this combination, but records can come from elsewhere.
        if client.secret_hash.is_none() {
            return Err(oauth(ErrorCode::UnauthorizedClient, "a public client cannot use client_credentials").into());
        }
        let allowed: Vec<String> = client.scopes.iter().filter(|s| !USER_SCOPES.contains(&s.as_str())).cloned().collect();
        let scopes = match params.get("scope")? {
            None => allowed,
            Some(asked) => {
                let asked = split_scope(asked);
                if asked.is_empty() || !asked.iter().all(|s| is_scope_token(s) && has_scope(&allowed, s)) {
                    return Err(oauth(ErrorCode::InvalidScope, "a requested scope is not allowed for this client").into());
                }
                asked
            }
        };
        let audience = token_audience(params, client.audience_by_default(), &client.resources)?;
        let scope = scopes.join(" ");
        let access = self
            .mint_access_token(
                client,
                AccessGrant {
                    subject: &client.client_id,
                    audience: &audience,
                    scope: &scope,
                    sid: None,
                    auth_time: None,
                    grant_id: None,
                    not_after: i64::MAX,
                },
            )
            .await?;
        Ok(TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope,
            refresh_token: None,
            id_token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_and_at_hash_follow_their_rfcs() {
        // RFC 7636 appendix B.
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(is_code_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!is_code_verifier("short"));
        assert!(!is_code_verifier(&"a".repeat(129)));
        assert!(!is_code_verifier(&format!("{}+", "a".repeat(43))));
        assert_eq!(at_hash("x").len(), 22);
    }
}
