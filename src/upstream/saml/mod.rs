//! The upstream SAML 2.0 connector: this broker as a service provider. SP-initiated logins send
//! an `AuthnRequest` by HTTP-Redirect; the IdP answers by HTTP-POST to the assertion consumer
//! service, where the response is verified by our own XML-signature code (`dsig`, `c14n`) with
//! the keys from the IdP's metadata and mapped onto an `UpstreamIdentity`.

pub mod c14n;
pub mod decrypt;
pub mod dsig;
pub mod metadata;
pub mod request;
pub mod response;
pub mod sp_key;
pub mod xml;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::clock::UnixTime;
use crate::config::{MetadataSource, SamlConnectorSettings};
use crate::metrics::ConnectorLabels;
use crate::upstream::{FetchFor, UpstreamIdentity, http};
use crate::work::{BlockingPool, Deadline, PoolError};
use metadata::IdpMetadata;
use response::{Expectations, VerifiedAssertion};
pub use sp_key::SpKeys;

/// How long the browser may take at the IdP before the request expires.
pub const LOGIN_LIFETIME_SECS: i64 = 900;
/// The largest `SAMLResponse` POST body accepted.
pub const MAX_POST_BYTES: usize = 256 * 1024;
/// A real response verifies in about a millisecond; a hostile one is abandoned after this.
pub const VERIFY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a response waits for a free verification slot before the ACS answers 503.
pub const VERIFY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Metadata is fetched again after its `cacheDuration`, kept between these bounds, and never
/// used past its `validUntil`.
pub const METADATA_REFRESH_FLOOR_SECS: i64 = 300;
pub const METADATA_REFRESH_CEILING_SECS: i64 = 86_400;
const METADATA_REFRESH_DEFAULT_SECS: i64 = 3600;
/// After a failed fetch, how long before the IdP is asked again.
const METADATA_RETRY_SECS: i64 = 60;
/// While fetches fail, the last good metadata (when it states no `validUntil`) is trusted this
/// long, so a certificate the IdP has withdrawn is not trusted for ever.
const METADATA_MAX_STALE_SECS: i64 = 7 * 86_400;
const MAX_METADATA_BYTES: usize = 1024 * 1024;
const MAX_GROUPS: usize = 256;
const MAX_VALUE_CHARS: usize = 256;
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("signature refused: {0}")]
    Signature(&'static str),
    #[error("neither the response nor the assertion is signed")]
    Unsigned,
    #[error("decryption failed: {0}")]
    Decryption(&'static str),
    #[error("the issuer is not the configured IdP")]
    Issuer { expected: String, got: String },
    #[error("the response is addressed to another endpoint (Destination)")]
    Destination { expected: String, got: Option<String> },
    #[error("the subject confirmation names another endpoint (Recipient)")]
    Recipient { expected: String, got: Option<String> },
    #[error("the assertion is for another audience")]
    Audience { expected: String, got: Vec<String> },
    #[error("no usable bearer subject confirmation")]
    Confirmation,
    #[error("the assertion has expired")]
    Expired(TimeBound),
    #[error("the assertion is not yet valid")]
    NotYetValid(TimeBound),
    #[error("the response answers another request (InResponseTo)")]
    InResponseTo { got: Option<String> },
    #[error("signature algorithm refused: {0}")]
    AlgorithmRefused(&'static str),
    #[error("the {element}'s signature refused: {reason}")]
    SignatureIn { element: &'static str, reason: &'static str },
    #[error("signature refused: {reason}")]
    SignatureTried { element: Option<&'static str>, reason: &'static str, tried: Vec<String> },
    #[error("unsolicited responses are not accepted by this connector")]
    Unsolicited,
    #[error("the assertion was already used")]
    Replay,
    #[error("the IdP refused the sign-in: {code}")]
    Status { code: String, detail: Option<String> },
    #[error("the sign-in was not fresh enough (ForceAuthn)")]
    NotFresh,
    #[error("the verified attributes are not usable: {0}")]
    Attributes(&'static str),
    #[error("IdP metadata refused: {0}")]
    Metadata(&'static str),
    #[error("IdP metadata unavailable: {0}")]
    MetadataUnavailable(String),
    #[error("the request could not be built: {0}")]
    Request(&'static str),
    #[error("the message is refused as too costly to verify: {0}")]
    TooCostly(&'static str),
    #[error("every verification slot is busy")]
    Busy,
    #[error("the SP keys are unavailable: {0}")]
    SpKeys(String),
}

impl SamlError {
    /// A fixed label for metrics and the audit trail.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "saml_malformed",
            Self::Signature(_)
            | Self::Unsigned
            | Self::AlgorithmRefused(_)
            | Self::SignatureIn { .. }
            | Self::SignatureTried { .. } => "saml_signature",
            Self::Decryption(_) => "saml_decryption",
            Self::Issuer { .. } => "saml_issuer",
            Self::Destination { .. } => "saml_destination",
            Self::Recipient { .. } => "saml_recipient",
            Self::Audience { .. } => "saml_audience",
            Self::Confirmation => "saml_confirmation",
            Self::Expired(_) => "saml_expired",
            Self::NotYetValid(_) => "saml_not_yet_valid",
            Self::InResponseTo { .. } => "saml_in_response_to",
            Self::Unsolicited => "saml_unsolicited",
            Self::Replay => "saml_replay",
            Self::Status { .. } => "saml_status",
            Self::NotFresh => "saml_not_fresh",
            Self::Attributes(_) => "saml_attributes",
            Self::Metadata(_) | Self::MetadataUnavailable(_) => "saml_metadata",
            Self::Request(_) => "saml_request",
            Self::TooCostly(_) => "saml_too_costly",
            Self::Busy => "saml_busy",
            Self::SpKeys(_) => "saml_sp_keys",
        }
    }
}

/// A time limit an assertion did not meet: which one, its value, Gatehouse's time and the skew
/// allowed, so an administrator can tell a clock problem from a stale message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeBound {
    pub bound: &'static str,
    pub at: UnixTime,
    pub now: UnixTime,
    pub skew_secs: i64,
}

/// Attacker-supplied values are recorded for the administrator, but never at length.
fn shown(value: &str) -> String {
    let mut shown: String = value.chars().filter(|c| !c.is_control()).take(200).collect();
    if value.chars().count() > 200 {
        shown.push('…');
    }
    format!("`{shown}`")
}

impl SamlError {
    /// The reason a refused sign-in is recorded under (the audit log and the connector's page).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_response",
            Self::Signature(_) | Self::Unsigned | Self::SignatureIn { .. } | Self::SignatureTried { .. } => "signature_invalid",
            Self::AlgorithmRefused(_) => "algorithm_refused",
            Self::Decryption(_) => "decryption_failed",
            Self::Issuer { .. } => "issuer_mismatch",
            Self::Destination { .. } => "destination_mismatch",
            Self::Recipient { .. } => "recipient_mismatch",
            Self::Audience { .. } => "audience_mismatch",
            Self::Confirmation => "subject_confirmation_invalid",
            Self::Expired(_) | Self::NotYetValid(_) => "clock_skew",
            Self::InResponseTo { .. } => "in_response_to_unknown",
            Self::Unsolicited => "unsolicited",
            Self::Replay => "replay",
            Self::Status { .. } => "status",
            Self::NotFresh => "not_fresh",
            Self::Attributes(_) => "attributes_unusable",
            Self::Metadata(_) | Self::MetadataUnavailable(_) => "metadata_unavailable",
            Self::Request(_) => "request_failed",
            Self::TooCostly(_) => "too_costly",
            Self::Busy => "busy",
            Self::SpKeys(_) => "sp_keys_unavailable",
        }
    }

    /// The values involved, for the administrator: never a message body or a token.
    pub fn explain(&self) -> String {
        let time = crate::clock::utc;
        match self {
            Self::Issuer { expected, got } => format!("expected {}, got {}", shown(expected), shown(got)),
            Self::Destination { expected, got } | Self::Recipient { expected, got } => {
                format!("expected {}, got {}", shown(expected), got.as_deref().map_or_else(|| String::from("none"), shown))
            }
            Self::Audience { expected, got } => format!(
                "expected {}, got {}",
                shown(expected),
                if got.is_empty() {
                    String::from("none")
                } else {
                    got.iter().take(5).map(|a| shown(a)).collect::<Vec<_>>().join(", ")
                }
            ),
            Self::Expired(b) => format!("{} {}, now {}, allowed skew {} s", b.bound, time(b.at), time(b.now), b.skew_secs),
            Self::NotYetValid(b) => format!("{} {}, now {}, allowed skew {} s", b.bound, time(b.at), time(b.now), b.skew_secs),
            Self::InResponseTo { got } => format!(
                "the response answers {}, which is no sign-in Gatehouse is waiting for here",
                got.as_deref().map_or_else(|| String::from("no request"), shown)
            ),
            Self::SignatureTried { element, reason, tried } => format!(
                "{}{reason}; IdP certificates tried (SHA-256): {}",
                element.map(|e| format!("on the {e}: ")).unwrap_or_default(),
                if tried.is_empty() { String::from("none") } else { tried.join(", ") }
            ),
            Self::SignatureIn { element, reason } => format!("on the {element}: {reason}"),
            Self::Status { code, detail } => match detail {
                Some(detail) => format!("the IdP answered {code} / {detail}"),
                None => format!("the IdP answered {code}"),
            },
            other => other.to_string(),
        }
    }
}

/// What must survive the browser's trip to the IdP, stored under the digest of `RelayState`
/// and taken exactly once by the ACS.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSamlLogin {
    pub connector_id: String,
    /// The `AuthnRequest` ID the response's `InResponseTo` must name.
    pub request_id: String,
    /// The downstream pending-login id (`/login?req=`), when an app started this.
    pub pending_login: Option<String>,
    /// Set when the app asked for a fresh sign-in: `AuthnInstant` must not be older.
    pub fresh_since: Option<UnixTime>,
    /// Digest of a value held in the starting browser's session: the sign-in completes only
    /// in that browser (no login CSRF with someone else's response). A record without one
    /// (stored before this field existed) matches no browser.
    #[serde(default)]
    pub browser_binding: String,
    /// An administrator's test sign-in: it never ends in a session.
    #[serde(default)]
    pub test: bool,
}

impl std::fmt::Debug for PendingSamlLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSamlLogin").field("connector_id", &self.connector_id).finish_non_exhaustive()
    }
}

pub struct LoginStart {
    pub redirect_url: String,
    pub relay_state: String,
    pub pending: PendingSamlLogin,
}

struct CachedMetadata {
    metadata: Arc<IdpMetadata>,
    refresh_at: UnixTime,
    fetched_at: UnixTime,
}

pub struct SamlConnector {
    id: String,
    name: String,
    settings: SamlConnectorSettings,
    entity_id: String,
    acs_url: String,
    metadata_url: String,
    sp_keys: Arc<SpKeys>,
    verifier: BlockingPool,
    sp_metadata_validity_secs: i64,
    http: reqwest::Client,
    cached: RwLock<Option<CachedMetadata>>,
    fetching: Mutex<()>,
    failed_at: std::sync::Mutex<Option<UnixTime>>,
    metadata_failures: Family<ConnectorLabels, Counter>,
    missing_claims: crate::upstream::MissingClaims,
}

impl std::fmt::Debug for SamlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlConnector").field("id", &self.id).field("entity_id", &self.entity_id).finish_non_exhaustive()
    }
}

impl SamlConnector {
    pub fn new(
        id: &str,
        name: &str,
        settings: SamlConnectorSettings,
        issuer: &str,
        shared: &crate::upstream::SamlShared,
        metadata_failures: Family<ConnectorLabels, Counter>,
    ) -> Result<Self, SamlError> {
        let base = format!("{}/saml/{id}", issuer.trim_end_matches('/'));
        let http = metadata_client(&settings)?;
        Ok(Self {
            id: id.to_owned(),
            name: name.to_owned(),
            settings,
            acs_url: format!("{base}/acs"),
            metadata_url: format!("{base}/metadata"),
            entity_id: base,
            sp_keys: shared.sp_keys.clone(),
            verifier: shared.verifier.clone(),
            sp_metadata_validity_secs: shared.sp_metadata_validity_secs,
            http,
            cached: RwLock::new(None),
            fetching: Mutex::new(()),
            failed_at: std::sync::Mutex::new(None),
            metadata_failures,
            missing_claims: crate::upstream::MissingClaims::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    pub fn acs_url(&self) -> &str {
        &self.acs_url
    }

    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    pub fn settings(&self) -> &SamlConnectorSettings {
        &self.settings
    }

    /// This SP's metadata document.
    pub async fn sp_metadata(&self, now: UnixTime) -> Result<String, SamlError> {
        let keys = self.sp_keys.ring().await.map_err(|err| SamlError::SpKeys(err.to_string()))?;
        metadata::sp_metadata_xml(
            &self.entity_id,
            &self.acs_url,
            &keys.signing_certificates,
            &keys.encryption_certificates,
            self.settings.sign_requests,
            now + self.sp_metadata_validity_secs,
        )
    }

    /// SHA-256 fingerprints of the SP's published signing and encryption certificates, as IdP
    /// consoles show them, for an administrator comparing what the IdP holds.
    pub async fn sp_certificate_fingerprints(&self) -> Result<(Vec<String>, Vec<String>), SamlError> {
        let keys = self.sp_keys.ring().await.map_err(|err| SamlError::SpKeys(err.to_string()))?;
        let fingerprints = |certificates: &[Vec<u8>]| certificates.iter().map(|der| metadata::thumbprint(der)).collect();
        Ok((fingerprints(&keys.signing_certificates), fingerprints(&keys.encryption_certificates)))
    }

    /// How long the SP metadata says it is valid.
    pub fn sp_metadata_validity_secs(&self) -> i64 {
        self.sp_metadata_validity_secs
    }

    /// When fetching the IdP's metadata last failed, unless it succeeded since.
    pub fn last_failure_at(&self) -> Option<UnixTime> {
        self.failed_at.lock().ok().and_then(|failed| *failed)
    }

    /// When the IdP's first signing certificate expires, from the metadata last fetched.
    pub async fn certificates_expire_at(&self) -> Option<UnixTime> {
        self.cached.read().await.as_ref().and_then(|cached| cached.metadata.certificates_expire_at)
    }

    /// The IdP's metadata, fetched again when due. A failed fetch keeps the last good copy
    /// (until its `validUntil`), is logged and counted, and is retried after a pause.
    pub async fn idp_metadata(&self, now: UnixTime) -> Result<Arc<IdpMetadata>, SamlError> {
        self.idp_metadata_for(now, FetchFor::SignIn).await
    }

    /// As `idp_metadata`, for a sign-in or for a check (which neither waits for the pause
    /// after a failed fetch nor starts one).
    pub async fn idp_metadata_for(&self, now: UnixTime, fetch_for: FetchFor) -> Result<Arc<IdpMetadata>, SamlError> {
        // A check fetches every time (and refreshes the cache when the IdP answers); a sign-in
        // uses the cached copy until it is due.
        let sign_in = fetch_for == FetchFor::SignIn;
        let usable = |cached: &CachedMetadata| {
            cached.metadata.valid_until.is_none_or(|until| until > now) && now - cached.fetched_at <= METADATA_MAX_STALE_SECS
        };
        let last_good = match self.cached.read().await.as_ref() {
            Some(cached) if sign_in && cached.refresh_at > now && usable(cached) => return Ok(cached.metadata.clone()),
            Some(cached) if usable(cached) => Some(cached.metadata.clone()),
            _ => None,
        };
        // One fetch at a time; while it runs, sign-ins go on with the last good copy.
        let _one_fetch = match (self.fetching.try_lock(), last_good) {
            (Ok(guard), _) => guard,
            (Err(_), Some(metadata)) if sign_in => return Ok(metadata),
            (Err(_), _) => self.fetching.lock().await,
        };
        let last_good = self.cached.read().await.as_ref().filter(|c| usable(c)).map(|c| (c.metadata.clone(), c.refresh_at));
        // Another caller may have refreshed it while this one waited.
        if sign_in
            && let Some((metadata, refresh_at)) = &last_good
            && *refresh_at > now
        {
            return Ok(metadata.clone());
        }
        let backing_off = self.failed_at.lock().ok().and_then(|failed| *failed).is_some_and(|at| now - at < METADATA_RETRY_SECS);
        if backing_off && sign_in {
            return last_good
                .map(|(metadata, _)| metadata)
                .ok_or_else(|| SamlError::MetadataUnavailable("the last fetch failed moments ago".into()));
        }
        match load_idp_metadata(&self.settings.metadata, &self.http, now).await {
            Ok(metadata) => {
                let lifetime = metadata
                    .cache_duration_secs
                    .unwrap_or(METADATA_REFRESH_DEFAULT_SECS)
                    .clamp(METADATA_REFRESH_FLOOR_SECS, METADATA_REFRESH_CEILING_SECS);
                let refresh_at = metadata.valid_until.map_or(now + lifetime, |until| (now + lifetime).min(until));
                let metadata = Arc::new(metadata);
                *self.cached.write().await = Some(CachedMetadata { metadata: metadata.clone(), refresh_at, fetched_at: now });
                if let Ok(mut failed) = self.failed_at.lock() {
                    *failed = None;
                }
                Ok(metadata)
            }
            Err(err) => {
                self.metadata_failures.get_or_create(&ConnectorLabels { connector: self.id.clone() }).inc();
                // Sign-ins go on with the last good copy; a check reports the failure.
                if !sign_in {
                    return Err(err);
                }
                tracing::warn!(connector = %self.id, error = %err, "IdP metadata could not be refreshed; keeping the last good copy if there is one");
                if let Ok(mut failed) = self.failed_at.lock() {
                    *failed = Some(now);
                }
                last_good.map(|(metadata, _)| metadata).ok_or(err)
            }
        }
    }

    /// Builds the `AuthnRequest` and the IdP URL that carries it.
    pub async fn begin(
        &self,
        pending_login: Option<String>,
        force: bool,
        browser_binding: String,
        now: UnixTime,
    ) -> Result<LoginStart, SamlError> {
        let idp = self.idp_metadata(now).await?;
        // The token alphabet (base64url) keeps the ID a valid XML name after the leading `_`.
        let request_id = format!("_{}", crate::tokens::random_token());
        let relay_state = crate::tokens::random_token();
        let xml =
            request::authn_request_xml(&request_id, &self.entity_id, &self.acs_url, idp.sso_redirect_url.as_str(), force, now)?;
        // Signed whenever the SP metadata says so, and whenever the IdP asks.
        let keys = self.sp_keys.ring().await.map_err(|err| SamlError::SpKeys(err.to_string()))?;
        let signer = (self.settings.sign_requests || idp.want_authn_requests_signed).then_some(&keys.signer);
        let redirect_url = request::redirect_url(&idp.sso_redirect_url, &xml, &relay_state, signer)?;
        Ok(LoginStart {
            redirect_url,
            relay_state,
            pending: PendingSamlLogin {
                connector_id: self.id.clone(),
                request_id,
                pending_login,
                fresh_since: force.then_some(now),
                browser_binding,
                test: false,
            },
        })
    }

    /// Verifies a posted `SAMLResponse` answering `pending` (or unsolicited, when `None`). The
    /// verification runs on the blocking pool, a bounded number at once, and is abandoned
    /// after `VERIFY_DEADLINE`; with every slot taken for `VERIFY_QUEUE_WAIT` it is `Busy`.
    pub async fn finish(
        &self,
        saml_response: String,
        pending: Option<&PendingSamlLogin>,
        now: UnixTime,
    ) -> Result<(UpstreamIdentity, VerifiedAssertion), SamlError> {
        let idp = self.idp_metadata(now).await?;
        let idp_certificates = idp.certificates.clone();
        let keys = self.sp_keys.ring().await.map_err(|err| SamlError::SpKeys(err.to_string()))?;
        let sp_entity_id = self.entity_id.clone();
        let acs_url = self.acs_url.clone();
        let in_response_to = pending.map(|p| p.request_id.clone());
        let (allow_idp_initiated, allow_sha1, clock_skew_secs) =
            (self.settings.allow_idp_initiated, self.settings.allow_sha1, self.settings.clock_skew_secs);
        let verification = self.verifier.run(move || {
            let expect = Expectations {
                sp_entity_id: &sp_entity_id,
                acs_url: &acs_url,
                idp_entity_id: &idp.entity_id,
                idp_keys: &idp.signing_keys,
                in_response_to: in_response_to.as_deref(),
                allow_idp_initiated,
                allow_sha1,
                clock_skew_secs,
                decryption_keys: &keys.decryption_keys,
                deadline: Deadline::after(VERIFY_DEADLINE),
            };
            response::verify_response(&saml_response, &expect, now)
        });
        let tried: Vec<String> = idp_certificates.iter().map(|c| c.sha256_thumbprint.clone()).collect();
        let verified = match verification.await {
            Ok(Err(SamlError::Signature(reason))) => return Err(SamlError::SignatureTried { element: None, reason, tried }),
            Ok(Err(SamlError::SignatureIn { element, reason })) => {
                return Err(SamlError::SignatureTried { element: Some(element), reason, tried });
            }
            Ok(outcome) => outcome?,
            Err(PoolError::Busy) => return Err(SamlError::Busy),
            Err(PoolError::Interrupted) => return Err(SamlError::TooCostly("its verification did not complete")),
        };
        if let Some(fresh_since) = pending.and_then(|p| p.fresh_since)
            && verified.authn_instant.is_none_or(|at| at + self.settings.clock_skew_secs < fresh_since)
        {
            return Err(SamlError::NotFresh);
        }
        let identity = self.identity(&verified)?;
        Ok((identity, verified))
    }

    fn identity(&self, verified: &VerifiedAssertion) -> Result<UpstreamIdentity, SamlError> {
        let identity = identity_from_assertion(&self.id, &self.settings, verified)?;
        let claims = &self.settings.claims;
        let present = |name: &str| {
            name == "NameID" || verified.attributes.iter().any(|a| a.name == name || a.friendly_name.as_deref() == Some(name))
        };
        self.missing_claims.note(
            &self.id,
            &[
                ("email", &claims.email, present(&claims.email)),
                ("name", &claims.name, present(&claims.name)),
                ("groups", &claims.groups, present(&claims.groups)),
            ],
            || {
                let names = verified.attributes.iter().flat_map(|a| std::iter::once(&a.name).chain(a.friendly_name.as_ref()));
                names.cloned().collect()
            },
        );
        Ok(identity)
    }
}

/// Reads and checks an IdP's metadata from wherever the connector says it is.
pub async fn load_idp_metadata(source: &MetadataSource, http: &reqwest::Client, now: UnixTime) -> Result<IdpMetadata, SamlError> {
    let text = match source {
        MetadataSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|err| SamlError::MetadataUnavailable(format!("{}: {err}", path.display())))?,
        MetadataSource::Url(url) => fetch_metadata(http, url).await?,
        MetadataSource::Xml(xml) => xml.clone(),
    };
    tokio::task::spawn_blocking(move || metadata::parse_idp_metadata(&text, now))
        .await
        .map_err(|_| SamlError::MetadataUnavailable("reading the metadata was interrupted".into()))?
}

/// The client a connector fetches its IdP's metadata with: no redirects to plain http from https.
pub fn metadata_client(settings: &SamlConnectorSettings) -> Result<reqwest::Client, SamlError> {
    let https_only = matches!(&settings.metadata, MetadataSource::Url(url) if url.starts_with("https://"));
    http::client(settings.timeout_secs, https_only).map_err(|err| SamlError::MetadataUnavailable(err.to_string()))
}

async fn fetch_metadata(http: &reqwest::Client, url: &str) -> Result<String, SamlError> {
    let unavailable = |what: String| SamlError::MetadataUnavailable(what);
    let mut response = http.get(url).send().await.map_err(|err| unavailable(http::transport_reason(&err)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status().as_u16())));
    }
    let body = http::read_capped(&mut response, MAX_METADATA_BYTES).await.map_err(|err| unavailable(err.to_string()))?;
    String::from_utf8(body).map_err(|_| SamlError::Metadata("the metadata is not UTF-8"))
}

/// Maps a verified assertion onto the shared identity shape through the configured names.
pub fn identity_from_assertion(
    connector_id: &str,
    settings: &SamlConnectorSettings,
    verified: &VerifiedAssertion,
) -> Result<UpstreamIdentity, SamlError> {
    let claims = &settings.claims;
    let values = |name: &str| -> Vec<String> {
        if name == "NameID" {
            return vec![verified.name_id.clone()];
        }
        verified
            .attributes
            .iter()
            .find(|a| a.name == name)
            .or_else(|| verified.attributes.iter().find(|a| a.friendly_name.as_deref() == Some(name)))
            .map(|a| a.values.iter().filter(|v| !v.is_empty()).cloned().collect())
            .unwrap_or_default()
    };
    let first = |name: &str| values(name).into_iter().next();
    // Cut, two long subjects (or emails) could become one; refused instead.
    let bounded = |value: Option<String>, what: &'static str| match value {
        Some(v) if v.chars().count() > MAX_VALUE_CHARS => Err(SamlError::Attributes(what)),
        other => Ok(other),
    };

    if claims.subject == "NameID" && verified.name_id_format.as_deref() == Some(TRANSIENT) {
        return Err(SamlError::Attributes("the IdP sends transient NameIDs; set claims.subject to a stable attribute"));
    }
    let subject = bounded(first(&claims.subject), "the subject is longer than 256 characters")?
        .ok_or(SamlError::Attributes("the subject attribute is missing"))?;
    let email = bounded(first(&claims.email), "the email is longer than 256 characters")?;
    let username = match claims.username.as_deref() {
        Some(name) => bounded(first(name), "the username is longer than 256 characters")?,
        None => None,
    };
    let username = username.or_else(|| email.clone()).unwrap_or_else(|| subject.clone());
    // A group name cut short could name another group; an over-long one is dropped.
    let mut groups: Vec<String> = values(&claims.groups).into_iter().filter(|g| g.chars().count() <= MAX_VALUE_CHARS).collect();
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(g.clone()));
    groups.truncate(MAX_GROUPS);
    Ok(UpstreamIdentity {
        connector_id: connector_id.to_owned(),
        subject,
        username,
        email_verified: email.is_some() && settings.trust_email,
        email,
        name: first(&claims.name).map(|n| n.chars().take(MAX_VALUE_CHARS).collect()),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SamlClaimMapping;
    use response::Attribute;

    fn settings() -> SamlConnectorSettings {
        SamlConnectorSettings {
            metadata: MetadataSource::File("idp.xml".into()),
            allow_idp_initiated: false,
            allow_sha1: false,
            sign_requests: true,
            claims: SamlClaimMapping {
                subject: "NameID".into(),
                username: None,
                email: "mail".into(),
                name: "displayName".into(),
                groups: "groups".into(),
            },
            trust_email: false,
            timeout_secs: 10,
            clock_skew_secs: 60,
        }
    }

    fn assertion(name_id: &str, attributes: &[(&str, &[&str])]) -> VerifiedAssertion {
        VerifiedAssertion {
            assertion_id: "_a".into(),
            name_id: name_id.into(),
            name_id_format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
            attributes: attributes
                .iter()
                .map(|(name, values)| Attribute {
                    name: (*name).into(),
                    friendly_name: None,
                    values: values.iter().map(|v| (*v).into()).collect(),
                })
                .collect(),
            authn_instant: None,
            replay_until: 0,
        }
    }

    #[test]
    fn over_long_identity_values_are_refused_not_cut() {
        let long = "a".repeat(257);
        let err = identity_from_assertion("c", &settings(), &assertion(&long, &[])).unwrap_err();
        assert_eq!(err.to_string(), "the verified attributes are not usable: the subject is longer than 256 characters");
        let long_email = format!("{}@victim.example", "x".repeat(250));
        let err = identity_from_assertion("c", &settings(), &assertion("alice", &[("mail", &[&long_email])])).unwrap_err();
        assert!(err.to_string().contains("email is longer"), "{err}");
        // 256 characters is still fine; over-long and repeated groups are dropped, not cut.
        let ok =
            identity_from_assertion("c", &settings(), &assertion(&"b".repeat(256), &[("groups", &["eng", &long, "eng", "ops"])]))
                .unwrap();
        assert_eq!(ok.groups, ["eng", "ops"]);
        assert_eq!(ok.username, "b".repeat(256));
    }

    #[test]
    fn transient_nameids_need_a_subject_attribute() {
        let mut transient = assertion("_random", &[("uid", &["alice"])]);
        transient.name_id_format = Some(TRANSIENT.into());
        assert!(identity_from_assertion("c", &settings(), &transient).is_err());
        let mut by_uid = settings();
        by_uid.claims.subject = "uid".into();
        assert_eq!(identity_from_assertion("c", &by_uid, &transient).unwrap().subject, "alice");
    }
}
