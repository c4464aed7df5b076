use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use crate::store::group_sync::{GroupSync, SyncError, SyncFn};
use crate::store::{
    AuditEvent, GrantRecord, RefreshTokenRecord, Rotation, SingleUseKind, SqliteDurability, StoreError, StoreResult,
};

/// A statement list for `SqliteStore::run_on_writer`, its arguments owned.
type WriterQuery<O> = sqlx::query::QueryAs<'static, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'static>>;

/// `GrantStore::redeem_code` as one round trip to SQLite's thread. Every write is conditional on
/// the code being there unexpired, which holds still inside the transaction; the code is deleted
/// last, even when expired (an expired code stays spent).
const REDEEM_CODE: &str = "BEGIN IMMEDIATE; \
    INSERT INTO grants (id, client_id, user_id, session_id, code_hash, scope, audience, auth_time, amr_json, idp, \
    created_at, expires_at, revoked_at) SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
    WHERE EXISTS (SELECT 1 FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $16); \
    INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated_at) SELECT $17, $29, $18, $19, $30 \
    WHERE $17 IS NOT NULL AND EXISTS (SELECT 1 FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $16); \
    INSERT INTO audit_log (time, kind, outcome, actor, user_id, client_id, connector_id, ip, detail) \
    SELECT $20, $21, $22, $23, $24, $25, $26, $27, $28 \
    WHERE EXISTS (SELECT 1 FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $16); \
    SELECT COUNT(*) FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $16; \
    DELETE FROM single_use WHERE kind = $1 AND key = $2; \
    COMMIT;";

/// `GrantStore::rotate_refresh_token` as one round trip: the new token is stored only if this
/// transaction spent the old one (`changes()` of the update, read by the insert); the `changes()`
/// selected at the end is the insert's own count.
const ROTATE_REFRESH_TOKEN: &str = "BEGIN IMMEDIATE; \
    UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND grant_id = $3 AND rotated_at IS NULL \
    AND expires_at > $2; \
    INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated_at) \
    SELECT $4, $3, $5, $6, $7 WHERE changes() = 1; \
    SELECT changes(), (SELECT rotated_at FROM refresh_tokens WHERE token_hash = $1 AND grant_id = $3); \
    COMMIT;";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The embedded database: one file, shared by the connections of one process.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer at a time. Transactions here take turns on this lock rather than
    /// in SQLite's busy handler, which sleeps in steps of up to 100 ms while another
    /// connection's transaction is open (the long tail of concurrent refreshes and redemptions).
    /// The connection also serves the hottest writes, each one statement list that begins and
    /// commits its own transaction: one trip to SQLite's thread instead of one per statement.
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    options: SqliteConnectOptions,
    /// With `SqliteDurability::Full`: SQLite commits without syncing (`synchronous=NORMAL`),
    /// and each write waits for a shared sync of the WAL before it returns, so a write is on
    /// disk before anyone is told of it, as with `synchronous=FULL` (which syncs once per
    /// transaction while holding the write lock). Unlike there, other connections can read a
    /// commit before its sync; answers resting on another request's write call `durable` too.
    wal_sync: Option<Arc<GroupSync>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("group_sync", &self.wal_sync.is_some()).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating when missing) the database file named by a `sqlite:` URL.
    pub async fn connect(url: &str, durability: SqliteDurability) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let file = options.get_filename().to_path_buf();
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options.clone()).await?;
        let writer = Arc::new(tokio::sync::Mutex::new(SqliteConnection::connect_with(&options).await?));
        // sqlx renames an in-memory database, so the URL tells.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let wal_sync = if durability == SqliteDurability::Full && !in_memory {
            // SQLite puts the WAL beside the file a symbolic link points to.
            let file = std::fs::canonicalize(&file).map_err(sqlx::Error::Io)?;
            Some(Arc::new(GroupSync::new(wal_syncer(&file))))
        } else {
            None
        };
        Ok(Self { pool, writer, options, wal_sync })
    }

    /// Held for the length of a write transaction.
    async fn one_writer(&self) -> StoreResult<Option<tokio::sync::MutexGuard<'_, SqliteConnection>>> {
        self.writes_allowed()?;
        Ok(Some(self.writer.lock().await))
    }

    /// Refuses once a sync of the WAL failed (see `GroupSync`): writes, and readiness.
    fn writes_allowed(&self) -> StoreResult<()> {
        match self.wal_sync.as_ref().and_then(|group| group.failure()) {
            Some(failure) => {
                Err(StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!("writes stopped: {failure}")))))
            }
            None => Ok(()),
        }
    }

    /// Runs a statement list that begins and commits its own transaction on the writer
    /// connection, in a task of its own: a request that goes away half-way cannot leave the
    /// transaction open and SQLite's write lock held. After a failure part-way the transaction
    /// is rolled back, and the connection replaced if even that fails.
    async fn run_on_writer<O>(&self, statements: WriterQuery<O>) -> StoreResult<Vec<O>>
    where
        O: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + 'static,
    {
        self.writes_allowed()?;
        let writer = Arc::clone(&self.writer);
        let options = self.options.clone();
        let run = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut connection = writer.lock_owned().await;
            let result = statements.fetch_all(&mut *connection).await;
            if result.is_err() && sqlx::query("ROLLBACK").execute(&mut *connection).await.is_err() {
                match SqliteConnection::connect_with(&options).await {
                    Ok(fresh) => *connection = fresh,
                    Err(err) => tracing::error!(error = %err, "cannot reopen the SQLite writer connection"),
                }
            }
            result
        }));
        let finished = run.await.map_err(|err| {
            tracing::error!(error = %err, "a write on the SQLite writer connection did not finish");
            StoreError::Database(sqlx::Error::WorkerCrashed)
        })?;
        Ok(finished?)
    }

    /// `GrantStore::redeem_code`; the checks and writes of `REDEEM_CODE`.
    async fn spend_code(
        &self,
        code_hash: &str,
        grant: &GrantRecord,
        refresh_token: Option<(&str, &RefreshTokenRecord)>,
        granted: &AuditEvent,
        now: i64,
    ) -> StoreResult<bool> {
        let (refresh_hash, refresh) = refresh_token.unzip();
        let statements = sqlx::query_as(REDEEM_CODE)
            .bind(SingleUseKind::AuthorizationCode.as_str())
            .bind(code_hash.to_owned())
            .bind(grant.id.clone())
            .bind(grant.client_id.clone())
            .bind(grant.user_id.clone())
            .bind(grant.session_id.clone())
            .bind(grant.code_hash.clone())
            .bind(grant.scope.clone())
            .bind(grant.audience.clone())
            .bind(grant.auth_time)
            .bind(super::sql::to_json(&grant.amr))
            .bind(grant.idp.clone())
            .bind(grant.created_at)
            .bind(grant.expires_at)
            .bind(grant.revoked_at)
            .bind(now)
            .bind(refresh_hash.map(str::to_owned))
            .bind(refresh.map(|r| r.issued_at))
            .bind(refresh.map(|r| r.expires_at))
            .bind(granted.time)
            .bind(granted.kind.clone())
            .bind(granted.outcome.as_str())
            .bind(granted.actor.clone())
            .bind(granted.user_id.clone())
            .bind(granted.client_id.clone())
            .bind(granted.connector_id.clone())
            .bind(granted.ip.clone())
            .bind(granted.detail.clone())
            .bind(refresh.map(|r| r.grant_id.clone()))
            .bind(refresh.and_then(|r| r.rotated_at));
        let rows: Vec<(i64,)> = self.run_on_writer(statements).await?;
        self.durable().await?;
        Ok(rows.first().is_some_and(|(granted,)| *granted == 1))
    }

    /// `GrantStore::rotate_refresh_token`; the checks and writes of `ROTATE_REFRESH_TOKEN`.
    async fn spend_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshTokenRecord,
        now: i64,
    ) -> StoreResult<Rotation> {
        let statements = sqlx::query_as(ROTATE_REFRESH_TOKEN)
            .bind(old_hash.to_owned())
            .bind(now)
            .bind(new.grant_id.clone())
            .bind(new_hash.to_owned())
            .bind(new.issued_at)
            .bind(new.expires_at)
            .bind(new.rotated_at);
        let rows: Vec<(i64, Option<i64>)> = self.run_on_writer(statements).await?;
        // Also when another request rotated it: its rotation may not be on disk yet, and this
        // answer (a reuse, or the grace period's successor) is only as good as that write.
        self.durable().await?;
        Ok(match rows.first() {
            Some((1, _)) => Rotation::Rotated,
            Some((_, Some(_))) => Rotation::AlreadyRotated,
            _ => Rotation::NotFound,
        })
    }

    /// Called after every write that committed, before its result is returned, and before an
    /// answer that rests on another request's write.
    pub(super) async fn durable(&self) -> StoreResult<()> {
        match &self.wal_sync {
            Some(group) => group.after_commit().await.map_err(|err| StoreError::Database(sqlx::Error::Io(err))),
            None => Ok(()),
        }
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Syncs the WAL file `<database>-wal` through one descriptor kept open (so an earlier write-back
/// error is reported to it), opened again if SQLite replaced the file; the directory is synced
/// whenever the file is new. The store's writer connection keeps the WAL in place, so a missing
/// one is an error, not nothing to do.
fn wal_syncer(database: &Path) -> SyncFn {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let directory = database.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let open_wal = std::sync::Mutex::new(None::<(u64, std::fs::File)>);
    Arc::new(move || {
        use std::os::unix::fs::MetadataExt;
        let not_started = SyncError::NotStarted;
        let current = std::fs::metadata(&wal)
            .map_err(|err| {
                not_started(std::io::Error::new(err.kind(), format!("the SQLite WAL {} is missing: {err}", wal.display())))
            })?
            .ino();
        let mut open_wal = open_wal.lock().map_err(|_| not_started(std::io::Error::other("WAL sync state poisoned")))?;
        if open_wal.as_ref().is_none_or(|(inode, _)| *inode != current) {
            let file = std::fs::File::open(&wal).map_err(not_started)?;
            let inode = file.metadata().map_err(not_started)?.ino();
            let directory = std::fs::File::open(&directory).map_err(not_started)?;
            directory.sync_all().map_err(SyncError::DataMayBeLost)?;
            *open_wal = Some((inode, file));
        }
        match open_wal.as_ref() {
            Some((_, file)) => file.sync_data().map_err(SyncError::DataMayBeLost),
            None => Err(not_started(std::io::Error::other("the SQLite WAL is not open"))),
        }
    })
}

super::sql::impl_sql_store!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SingleUseKind, SingleUseStore};

    #[tokio::test]
    async fn with_full_durability_every_write_waits_for_a_wal_sync() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/durable.db", dir.path().display());
        let store = SqliteStore::connect(&url, SqliteDurability::Full).await.unwrap();
        store.migrate().await.unwrap();
        let group = store.wal_sync.clone().unwrap();
        let before = group.syncs();
        store.put_single_use(SingleUseKind::AuthorizationCode, "k", "v", i64::MAX).await.unwrap();
        assert_eq!(group.syncs(), before + 1);
        assert!(dir.path().join("durable.db-wal").exists(), "the synced file is SQLite's WAL");

        let relaxed = SqliteStore::connect(&format!("sqlite://{}/relaxed.db", dir.path().display()), SqliteDurability::Normal)
            .await
            .unwrap();
        assert!(relaxed.wal_sync.is_none());
    }
}
