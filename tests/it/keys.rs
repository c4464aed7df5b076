//! Signing keys: generation, sealing at rest, JWKS publication, rotation across nodes.

use std::sync::Arc;

use gatehouse::clock::{Clock, ManualClock};
use gatehouse::config::SigningAlg;
use gatehouse::tokens::TokenError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::helpers::{START, TestApp, TestDb, config_toml, load_config};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
}

fn claims(app: &TestApp, sub: &str) -> Claims {
    let now = app.clock.now();
    Claims { iss: app.state.config.issuer.clone(), sub: sub.into(), aud: "demo-app".into(), exp: now + 3600, iat: now }
}

fn validation(app: &TestApp, alg: jsonwebtoken::Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_audience(&["demo-app"]);
    validation.set_issuer(&[app.state.config.issuer.as_str()]);
    validation
}

/// What a relying party checks with its own library. The app's clock is fixed at `START`, so
/// expiry is checked by the app's own `verify` tests, not against this machine's wall clock.
fn relying_party(app: &TestApp, alg: jsonwebtoken::Algorithm) -> Validation {
    let mut validation = validation(app, alg);
    validation.validate_exp = false;
    validation
}

async fn fetch_jwks(app: &TestApp) -> JwkSet {
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Verifies `token` the way a relying party would: with a key from the published JWKS only.
fn verify_with_jwks(jwks: &JwkSet, token: &str, validation: &Validation) -> Result<Claims, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Claims>(token, &key, validation).map(|d| d.claims).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_first_start_generates_an_es256_key_and_publishes_only_its_public_part() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let raw: serde_json::Value = app.get("/.well-known/jwks.json").await.json().await.unwrap();
    let keys = raw["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert!(key.get("d").is_none(), "the private scalar must never be published");

    let token = app.state.keys.sign(&claims(&app, "user-1"), SigningAlg::ES256, "JWT").await.unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let verified =
        verify_with_jwks(&fetch_jwks(&app).await, &token, &relying_party(&app, jsonwebtoken::Algorithm::ES256)).unwrap();
    assert_eq!(verified.sub, "user-1");

    // Sealed at rest: a PKCS#8 EC key embeds its public point, so an unsealed key would contain
    // the JWK's x coordinate; the sealed bytes must not.
    let stored = app.state.store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    use base64::Engine;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    assert_eq!(x.len(), 32);
    assert!(!stored[0].sealed_private_key.windows(32).any(|w| w == x.as_slice()), "the private key is stored in the clear");
    assert!(stored[0].sealed_private_key.len() > 12 + 16 + 32, "nonce, tag and key material are all there");
    app.stop().await;
}

#[tokio::test]
async fn an_rs256_client_gets_an_rs256_key() {
    let db = TestDb::sqlite();
    let text = config_toml(&db.url, "").replace("first_party = true", "first_party = true\nsigning_alg = \"RS256\"");
    let app = TestApp::start_config(load_config(db.dir.path(), &text), Arc::new(ManualClock::new(START))).await;
    let jwks = fetch_jwks(&app).await;
    assert_eq!(jwks.keys.len(), 2, "ES256 stays available next to RS256");
    let token = app.state.keys.sign(&claims(&app, "rs"), SigningAlg::RS256, "JWT").await.unwrap();
    let verified = verify_with_jwks(&jwks, &token, &relying_party(&app, jsonwebtoken::Algorithm::RS256)).unwrap();
    assert_eq!(verified.sub, "rs");
    app.stop().await;
}

#[tokio::test]
async fn rotation_keeps_old_tokens_verifiable_until_they_expire() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let old_token = app.state.keys.sign(&claims(&app, "before"), SigningAlg::ES256, "JWT").await.unwrap();
    let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();

    let rotated = app.state.keys.rotate().await.unwrap();
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated[0].kid, old_kid);

    let new_token = app.state.keys.sign(&claims(&app, "after"), SigningAlg::ES256, "JWT").await.unwrap();
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap(), rotated[0].kid, "new tokens use the new key");

    let jwks = fetch_jwks(&app).await;
    assert_eq!(jwks.keys.len(), 2, "old and new keys are both published");
    let check = validation(&app, jsonwebtoken::Algorithm::ES256);
    let rp = relying_party(&app, jsonwebtoken::Algorithm::ES256);
    assert_eq!(verify_with_jwks(&jwks, &old_token, &rp).unwrap().sub, "before");
    assert_eq!(verify_with_jwks(&jwks, &new_token, &rp).unwrap().sub, "after");
    assert_eq!(app.state.keys.verify::<Claims>(&old_token, &check).await.unwrap().sub, "before");

    // Once every token the old key could have signed has expired, it is withdrawn.
    app.clock.advance(3600 + 300 + 1);
    assert!(
        matches!(app.state.keys.verify::<Claims>(&new_token, &check).await, Err(TokenError::Expired)),
        "exp is checked on the injected clock"
    );
    let jwks = fetch_jwks(&app).await;
    assert_eq!(jwks.keys.len(), 1);
    assert!(jwks.find(&old_kid).is_none());
    assert!(matches!(app.state.keys.verify::<Claims>(&old_token, &check).await, Err(TokenError::UnknownKey)));
    let summaries = app.state.keys.list().await.unwrap();
    assert!(summaries.iter().any(|k| k.kid == old_kid && !k.published && k.retired_at.is_some()));
    app.stop().await;
}

#[tokio::test]
async fn every_node_picks_up_a_rotation_without_a_restart() {
    let db = TestDb::sqlite();
    let node_a = TestApp::start(&db).await;
    let node_b = TestApp::start_config(load_config(db.dir.path(), &config_toml(&db.url, "")), node_a.clock.clone()).await;
    let first = node_b.state.keys.sign(&claims(&node_b, "b1"), SigningAlg::ES256, "JWT").await.unwrap();
    let first_kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();
    assert_eq!(fetch_jwks(&node_a).await.keys.len(), 1, "both nodes share one key; the second start made none");

    let rotated = node_a.state.keys.rotate().await.unwrap();
    assert!(fetch_jwks(&node_b).await.find(&rotated[0].kid).is_some(), "node B publishes the new key at once");

    node_b.clock.advance(11);
    let later = node_b.state.keys.sign(&claims(&node_b, "b2"), SigningAlg::ES256, "JWT").await.unwrap();
    let later_kid = jsonwebtoken::decode_header(&later).unwrap().kid.unwrap();
    assert_eq!(later_kid, rotated[0].kid, "node B signs with the new key once its cache expires");
    assert_ne!(later_kid, first_kid);
    let check = validation(&node_a, jsonwebtoken::Algorithm::ES256);
    assert_eq!(node_a.state.keys.verify::<Claims>(&first, &check).await.unwrap().sub, "b1");
    node_b.stop().await;
    node_a.stop().await;
}

#[tokio::test]
async fn tampered_and_foreign_tokens_are_refused() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let check = validation(&app, jsonwebtoken::Algorithm::ES256);
    let token = app.state.keys.sign(&claims(&app, "x"), SigningAlg::ES256, "JWT").await.unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = base64_claims(r#"{"iss":"http://127.0.0.1:8080","sub":"admin","aud":"demo-app","exp":9999999999,"iat":0}"#);
    assert!(app.state.keys.verify::<Claims>(&parts.join("."), &check).await.is_err());

    let unsigned = format!("{}.{}.", base64_claims(r#"{"alg":"none","kid":"x"}"#), parts[1]);
    assert!(app.state.keys.verify::<Claims>(&unsigned, &check).await.is_err());

    // Algorithm confusion: HS256 under the ES256 key's kid, "signed" with the public key as the
    // HMAC secret, offered to a caller whose algorithm list allows HS256. It must be refused.
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwks: serde_json::Value = app.get("/.well-known/jwks.json").await.json().await.unwrap();
    let public = jwks["keys"][0].to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    let confused =
        jsonwebtoken::encode(&header, &claims(&app, "admin"), &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()))
            .unwrap();
    let mut lenient = check.clone();
    lenient.algorithms = vec![jsonwebtoken::Algorithm::HS256, jsonwebtoken::Algorithm::ES256];
    assert!(
        matches!(app.state.keys.verify::<Claims>(&confused, &lenient).await, Err(TokenError::Invalid(_))),
        "a key verifies only its own algorithm, whatever the caller allows"
    );

    let other_db = TestDb::sqlite();
    let other = TestApp::start(&other_db).await;
    let foreign = other.state.keys.sign(&claims(&other, "x"), SigningAlg::ES256, "JWT").await.unwrap();
    assert!(matches!(app.state.keys.verify::<Claims>(&foreign, &check).await, Err(TokenError::UnknownKey)));
    other.stop().await;
    app.stop().await;
}

fn base64_claims(json: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn a_wrong_key_encryption_key_stops_start_up() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    app.stop().await;
    let text = config_toml(&db.url, "").replace(crate::helpers::TEST_KEK, "HxwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgEAAAA=");
    let config = load_config(db.dir.path(), &text);
    let err = gatehouse::startup::build(config, Arc::new(ManualClock::new(START))).await.unwrap_err();
    assert!(err.to_string().contains("wrong key-encryption key"), "{err}");
}
