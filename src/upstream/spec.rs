//! A connector's stored form: its specification as JSON (the configuration's field names)
//! with the upstream client secret taken out and sealed with the key-encryption key. The
//! file's writer (sync), the admin core and every node's registry go through here.

use crate::clock::UnixTime;
use crate::config::{ConfigError, ConnectorConfig, ConnectorSpec, SpecOrigin, validate_connector_spec};
use crate::secret::{Secret, constant_time_eq};
use crate::store::ConnectorRecord;
use crate::tokens::KeyEncryptionKey;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("connector {0}: its secret cannot be sealed or opened (wrong key-encryption key?)")]
    Sealing(String),
    #[error("connector {0}: the stored specification is unreadable")]
    Unreadable(String),
    #[error("connector {0}: {1}")]
    Invalid(String, ConfigError),
}

fn seal_context(id: &str) -> String {
    format!("connector:{id}")
}

/// The record for a validated connector. The secret (from the file, its file or the API) is
/// sealed; the document keeps neither it nor the path it was read from.
pub fn encode(
    connector: &ConnectorConfig,
    managed_by_config: bool,
    kek: &KeyEncryptionKey,
    now: UnixTime,
) -> Result<ConnectorRecord, SpecError> {
    let secret = match &connector.kind {
        crate::config::ConnectorKind::Oidc(settings) => settings.client_secret.clone(),
        _ => None,
    };
    let sealed_secret = secret
        .map(|secret| kek.seal(secret.expose().as_bytes(), &seal_context(&connector.id)))
        .transpose()
        .map_err(|_| SpecError::Sealing(connector.id.clone()))?;
    let spec = ConnectorSpec { client_secret: None, client_secret_file: None, ..connector.spec.clone() };
    let settings = serde_json::to_string(&spec).map_err(|_| SpecError::Unreadable(connector.id.clone()))?;
    Ok(ConnectorRecord {
        id: connector.id.clone(),
        kind: connector.kind.type_name().to_owned(),
        name: connector.name.clone(),
        email_domains: connector.email_domains.clone(),
        settings,
        managed_by_config,
        created_at: now,
        updated_at: now,
        version: 1,
        disabled: false,
        sealed_secret,
    })
}

/// The stored specification as the document holds it: without its secret.
pub fn document(record: &ConnectorRecord) -> Result<ConnectorSpec, SpecError> {
    serde_json::from_str(&record.settings).map_err(|_| SpecError::Unreadable(record.id.clone()))
}

/// The stored specification with its secret opened again.
pub fn spec_of(record: &ConnectorRecord, kek: &KeyEncryptionKey) -> Result<ConnectorSpec, SpecError> {
    let mut spec = document(record)?;
    spec.client_secret = secret_of(record, kek)?;
    Ok(spec)
}

pub fn secret_of(record: &ConnectorRecord, kek: &KeyEncryptionKey) -> Result<Option<Secret<String>>, SpecError> {
    let Some(sealed) = &record.sealed_secret else { return Ok(None) };
    let plain = kek.open(sealed, &seal_context(&record.id)).map_err(|_| SpecError::Sealing(record.id.clone()))?;
    String::from_utf8(plain).map(|s| Some(Secret::new(s))).map_err(|_| SpecError::Sealing(record.id.clone()))
}

/// The live connector a record describes, validated again as its origin allows: a record the
/// file wrote may name files on this machine, one the API wrote may not.
pub fn decode(record: &ConnectorRecord, kek: &KeyEncryptionKey, issuer_is_https: bool) -> Result<ConnectorConfig, SpecError> {
    let spec = spec_of(record, kek)?;
    let origin = if record.managed_by_config { SpecOrigin::File } else { SpecOrigin::Api };
    validate_connector_spec(&|field: &str| field.to_owned(), spec, origin, issuer_is_https)
        .map_err(|err| SpecError::Invalid(record.id.clone(), err))
}

/// Whether `stored` already says what `fresh` says, the secret included (sealing is
/// randomized, so the secrets are compared opened, in constant time).
pub fn same(stored: &ConnectorRecord, fresh: &ConnectorRecord, kek: &KeyEncryptionKey) -> bool {
    let same_secret = match (secret_of(stored, kek), secret_of(fresh, kek)) {
        (Ok(None), Ok(None)) => true,
        (Ok(Some(a)), Ok(Some(b))) => constant_time_eq(a.expose().as_bytes(), b.expose().as_bytes()),
        _ => false,
    };
    same_secret
        && stored.kind == fresh.kind
        && stored.name == fresh.name
        && stored.email_domains == fresh.email_domains
        && stored.settings == fresh.settings
        && stored.managed_by_config == fresh.managed_by_config
        && stored.disabled == fresh.disabled
}

/// A local connector's users, as the file declared them; `None` for other kinds.
pub fn local_users(record: &ConnectorRecord) -> Option<Vec<crate::config::LocalUser>> {
    let spec = document(record).ok()?;
    (spec.kind == "local").then(|| spec.users.into_iter().map(crate::config::LocalUser::from).collect())
}
