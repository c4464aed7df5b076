//! OpenID Provider metadata (OpenID Connect Discovery 1.0, RFC 8414).

use serde_json::{Value, json};

use crate::provider::Provider;

pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const USERINFO_PATH: &str = "/oauth2/userinfo";
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
pub const REVOKE_PATH: &str = "/oauth2/revoke";
pub const LOGOUT_PATH: &str = "/oauth2/logout";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl Provider {
    pub fn discovery(&self) -> Value {
        let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": self.endpoint(AUTHORIZE_PATH),
            "token_endpoint": self.endpoint(TOKEN_PATH),
            "userinfo_endpoint": self.endpoint(USERINFO_PATH),
            "jwks_uri": self.endpoint(JWKS_PATH),
            "introspection_endpoint": self.endpoint(INTROSPECT_PATH),
            "revocation_endpoint": self.endpoint(REVOKE_PATH),
            "end_session_endpoint": self.endpoint(LOGOUT_PATH),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "userinfo_signing_alg_values_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            // Introspection needs an authenticated client; a public client may revoke its own tokens.
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "amr", "at_hash", "idp",
                "name", "preferred_username", "updated_at", "email", "email_verified", "groups"
            ],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "frontchannel_logout_supported": false,
        })
    }
}
