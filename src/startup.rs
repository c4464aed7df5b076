//! Builds the application from a validated configuration and serves it.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tower_sessions_sqlx_store::{PostgresStore as PgSessions, SqliteStore as SqliteSessions};

use crate::admin::sync::{self, SyncError};
use crate::clock::SharedClock;
use crate::config::{Config, KeyEncryptionKeySource, SigningAlg, decode_key_encryption_key};
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::provider::client_auth::ClientAuthGuard;
use crate::store::{PostgresStore, SqliteDurability, SqliteStore, Store, StoreError};
use crate::throttle::WindowCounter;
use crate::tokens::{KeyEncryptionKey, KeyManager, SecretHasher, TokenError};
use crate::upstream::SamlShared;
use crate::upstream::saml::SpKeys;
use crate::web::sessions::SessionBackend;
use crate::web::{self, AppState, Services};
use crate::work::BlockingPool;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("session store: {0}")]
    Sessions(#[source] sqlx::Error),
    #[error("key-encryption key: {0}")]
    KeyEncryptionKey(String),
    #[error("signing keys: {0}")]
    Keys(#[from] TokenError),
    #[error("configuration sync: {0}")]
    Sync(#[from] SyncError),
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("upstream connector: {0}")]
    Upstream(#[from] crate::upstream::UpstreamSetupError),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
}

/// How long an argon2 check waits for a free slot before the request is answered 503.
const HASHING_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Bounds the per-address counters of sign-in starts held in memory.
const MAX_TRACKED_NETWORKS: usize = 100_000;

/// Connects to the configured database and brings its schema up to date.
pub async fn open_database(
    url: &str,
    sqlite_synchronous: SqliteDurability,
) -> Result<(Arc<dyn Store>, SessionBackend), StartupError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, sqlite_synchronous).await?;
        store.migrate().await?;
        let sessions = SessionBackend::Sqlite(SqliteSessions::new(store.pool().clone()), store.clone());
        sessions.migrate().await.map_err(StartupError::Sessions)?;
        Ok((Arc::new(store), sessions))
    } else {
        let store = PostgresStore::connect(url).await?;
        store.migrate().await?;
        let sessions = SessionBackend::Postgres(PgSessions::new(store.pool().clone()));
        sessions.migrate().await.map_err(StartupError::Sessions)?;
        Ok((Arc::new(store), sessions))
    }
}

pub fn load_key_encryption_key(source: &KeyEncryptionKeySource) -> Result<KeyEncryptionKey, StartupError> {
    match source {
        KeyEncryptionKeySource::Inline(bytes) => Ok(KeyEncryptionKey::new(*bytes.expose())),
        KeyEncryptionKeySource::File { path, generate_if_missing } => {
            if !path.exists() && *generate_if_missing {
                return generate_key_file(path);
            }
            let text = std::fs::read_to_string(path)
                .map_err(|err| StartupError::KeyEncryptionKey(format!("cannot read {}: {err}", path.display())))?;
            decode_key_encryption_key("key_encryption_key_file", &text)
                .map(KeyEncryptionKey::new)
                .map_err(|err| StartupError::KeyEncryptionKey(err.to_string()))
        }
    }
}

/// Development only (plain-http issuer): creates a key file readable by this user alone.
fn generate_key_file(path: &Path) -> Result<KeyEncryptionKey, StartupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |err: std::io::Error| StartupError::KeyEncryptionKey(format!("cannot create {}: {err}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let kek = KeyEncryptionKey::generate();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(fail)?;
    file.write_all(kek.to_base64().as_bytes()).map_err(fail)?;
    tracing::warn!(path = %path.display(), "generated a development key-encryption key; set key_encryption_key in production");
    Ok(kek)
}

/// The signing algorithms in use: ES256 always, plus whatever a stored client asks for (the
/// file's and the console's alike).
pub fn signing_algs(clients: &[crate::store::ClientRecord]) -> HashSet<SigningAlg> {
    let mut algs: HashSet<SigningAlg> = clients.iter().filter_map(|c| SigningAlg::parse(&c.signing_alg)).collect();
    algs.insert(SigningAlg::ES256);
    algs
}

pub struct App {
    pub state: AppState,
    sessions: SessionBackend,
    router: Router,
    http: reqwest::Client,
    /// Bound at build time when `metrics_listen` is set, so its address is known before serving.
    metrics_listener: Option<TcpListener>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("issuer", &self.state.config.issuer).finish_non_exhaustive()
    }
}

/// Opens the database, applies migrations, syncs the configured clients and connectors, and
/// makes sure signing keys exist.
pub async fn build(config: Config, clock: SharedClock) -> Result<App, StartupError> {
    let kek = load_key_encryption_key(&config.key_encryption_key)?;
    let secrets = SecretHasher::new(&kek);
    let forms = Arc::new(web::csrf::FormTokens::new(&kek, &config));
    let (store, sessions) = open_database(config.database_url.expose(), config.sqlite_synchronous).await?;
    let report = sync::sync(store.as_ref(), &config, &secrets, &kek, clock.now()).await?;
    for entry in report.changed.iter().chain(&report.removed) {
        tracing::info!(entry = %entry, "configuration synced");
    }
    let sp_keys = Arc::new(SpKeys::new(store.clone(), kek.clone(), clock.clone(), config.tokens.key_cache_secs));
    let saml = SamlShared {
        sp_keys,
        verifier: BlockingPool::per_core(crate::upstream::saml::VERIFY_QUEUE_WAIT),
        sp_metadata_validity_secs: config.saml.sp_metadata_validity_secs,
    };
    let keys = Arc::new(KeyManager::new(store.clone(), kek.clone(), clock.clone(), config.tokens.clone()));
    for kid in keys.ensure_active(&signing_algs(&store.list_clients().await?)).await? {
        tracing::info!(kid = %kid, "generated signing key");
    }
    let config = Arc::new(config);
    // argon2 costs 19 MiB and tens of milliseconds per check: one per core at a time, and a
    // check that waits longer than this for its turn is answered 503.
    let hashing = BlockingPool::per_core(HASHING_QUEUE_WAIT);
    let provider = Arc::new(Provider {
        config: config.clone(),
        store: store.clone(),
        keys: keys.clone(),
        secrets,
        clock: clock.clone(),
        backchannel: Arc::new(tokio::sync::Notify::new()),
        clients: crate::provider::ClientCache::default(),
        revoked: crate::provider::RevokedAccessTokens::default(),
        hashing: hashing.clone(),
        client_auth: ClientAuthGuard::new(&config.client_auth),
    });
    let http = crate::provider::backchannel::http_client().map_err(StartupError::HttpClient)?;
    let metrics = Arc::new(Metrics::default());
    let upstreams = Arc::new(crate::upstream::Upstreams::new(store.clone(), kek, &config.issuer, saml, &metrics));
    // A connector the file declares must work from the start; one added in the console that
    // cannot be built is reported and skipped, as it would be on any later refresh.
    if let Some(failure) = upstreams.refresh().await?.into_iter().find(|f| f.managed_by_config) {
        return Err(failure.error.into());
    }
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|err| StartupError::Listen(address, err))?),
        None => None,
    };
    let starts = Arc::new(WindowCounter::new(60, MAX_TRACKED_NETWORKS));
    let admin = Arc::new(crate::admin::Admin::new(provider.clone(), upstreams.clone()));
    let state =
        AppState::new(Services { config, store, keys, clock, metrics, provider, upstreams, hashing, forms, starts, admin });
    let router = web::router(state.clone(), sessions.clone());
    Ok(App { state, sessions, router, http, metrics_listener })
}

impl App {
    /// Where `/metrics` is served when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests in flight finish.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let cleanup = tokio::spawn(cleanup_loop(self.state.clone(), self.sessions.clone()));
        let connector_checks = tokio::spawn(connector_check_loop(self.state.clone()));
        let backchannel = tokio::spawn(crate::provider::backchannel::run(self.state.provider.clone(), self.http.clone()));
        let metrics = self.metrics_listener.map(|metrics_listener| {
            let router = web::metrics_router(self.state.clone());
            tokio::spawn(async move { axum::serve(metrics_listener, router).await })
        });
        let service = self.router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
        cleanup.abort();
        connector_checks.abort();
        backchannel.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        served
    }
}

/// Deletes expired single-use records, sessions and retired keys, on every node; the deletes
/// are idempotent, so nodes need not coordinate.
async fn cleanup_loop(state: AppState, sessions: SessionBackend) {
    let mut interval = tokio::time::interval(Duration::from_secs(state.config.cleanup_interval_secs));
    loop {
        interval.tick().await;
        let now = state.clock.now();
        match state.store.delete_expired(now, state.keys.retired_key_cutoff(now)).await {
            Ok(report) => tracing::debug!(?report, "expired rows deleted"),
            Err(err) => tracing::warn!(error = %err, "cleanup of expired rows failed"),
        }
        if let Err(err) = sessions.delete_expired().await {
            tracing::warn!(error = %err, "cleanup of expired cookie sessions failed");
        }
    }
}

/// Checks the connectors against their IdPs at start-up and every
/// `connector_check_interval_secs` after.
async fn connector_check_loop(state: AppState) {
    if state.config.connector_check_interval_secs == 0 {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs(state.config.connector_check_interval_secs));
    // A round slowed by unreachable IdPs is not made up for with rounds back to back.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        state.upstreams.check_all(state.clock.now()).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
