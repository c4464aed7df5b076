use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};

use crate::store::group_sync::{GroupSync, SyncError, SyncFn};
use crate::store::readers::{ReadConnection, ReadConnections};
use crate::store::write_batch::{Arg, BatchedWrite, Writer};
use crate::store::{
    AuditEvent, GrantRecord, NewSingleUse, RefreshTokenRecord, Rotation, SingleUseKind, SqliteDurability, SsoSession, StoreError,
    StoreResult,
};

/// `GrantStore::redeem_code`, batched (`write_batch`): spends the code if it is there unexpired,
/// then writes the grant, its audit row and (`REDEEM_CODE_WITH_REFRESH`) its first refresh
/// token. A code that was not there leaves the grant's id NULL (`changes()` of the delete), which
/// its `NOT NULL` refuses: the whole write rolls back (`code_not_live`). Single-row inserts need
/// no statement journal and no second look at the code, which `INSERT … SELECT … WHERE EXISTS`
/// took for each row.
macro_rules! redeem_code {
    ($refresh_token:literal) => {
        concat!(
            "DELETE FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $16; \
            INSERT INTO grants (id, client_id, user_id, session_id, code_hash, scope, audience, auth_time, amr_json, \
            idp, created_at, expires_at, revoked_at) \
            VALUES (CASE changes() WHEN 1 THEN $3 END, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15); \
            INSERT INTO audit_log (time, kind, outcome, actor, user_id, client_id, connector_id, ip, detail) \
            VALUES ($17, $18, $19, $20, $21, $22, $23, $24, $25); ",
            $refresh_token,
            "SELECT changes();"
        )
    };
}
const REDEEM_CODE: &str = redeem_code!("");
const REDEEM_CODE_WITH_REFRESH: &str = redeem_code!(
    "INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated_at) VALUES ($26, $27, $28, $29, $30); "
);

/// `GrantStore::rotate_refresh_token`, batched: the new token is stored only if this write spent
/// the old one (`changes()` of the update, read by the insert); the `changes()` selected at the
/// end is the insert's own count, beside when the old token was rotated.
const ROTATE_REFRESH_TOKEN: &str = "\
    UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND grant_id = $3 AND rotated_at IS NULL \
    AND expires_at > $2; \
    INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated_at) \
    SELECT $4, $3, $5, $6, $7 WHERE changes() = 1; \
    SELECT changes(), (SELECT rotated_at FROM refresh_tokens WHERE token_hash = $1 AND grant_id = $3);";

/// `SingleUseStore::put_single_use`, batched. A key taken already fails the batch, which then
/// runs again one write at a time, so that only this write fails.
const PUT_SINGLE_USE: &str = "INSERT INTO single_use (kind, key, payload, expires_at) VALUES ($1, $2, $3, $4); SELECT changes();";

/// `SingleUseStore::take_single_use`, batched: the value as it was, then gone.
const TAKE_SINGLE_USE: &str = "SELECT (SELECT payload FROM single_use WHERE kind = $1 AND key = $2), \
    (SELECT expires_at FROM single_use WHERE kind = $1 AND key = $2); \
    DELETE FROM single_use WHERE kind = $1 AND key = $2;";

/// `SingleUseStore::take_single_use_leaving_mark`, batched: the answer is the take's
/// `changes()`, which the mark's insert reads too; an expired record is deleted afterwards
/// without counting, so that it stays spent whatever the clock does.
const TAKE_SINGLE_USE_LEAVING_MARK: &str = "\
    DELETE FROM single_use WHERE kind = $1 AND key = $2 AND expires_at > $3; SELECT changes(); \
    INSERT INTO single_use (kind, key, payload, expires_at) SELECT $4, $2, '', $5 WHERE changes() = 1 \
    ON CONFLICT DO NOTHING; \
    DELETE FROM single_use WHERE kind = $1 AND key = $2;";

/// `SingleUseStore::put_single_use_pair`, batched: a taken key fails the batch (as
/// `PUT_SINGLE_USE` does) and rolls back both.
const PUT_SINGLE_USE_PAIR: &str = "INSERT INTO single_use (kind, key, payload, expires_at) VALUES ($1, $2, $3, $4); \
    INSERT INTO single_use (kind, key, payload, expires_at) VALUES ($5, $6, $7, $8); SELECT changes();";

/// `SingleUseStore::put_single_use_discarding`, batched.
const PUT_SINGLE_USE_DISCARDING: &str = "DELETE FROM single_use WHERE kind = $5 AND key = $6; \
    INSERT INTO single_use (kind, key, payload, expires_at) VALUES ($1, $2, $3, $4); SELECT changes();";

/// The browser sessions' records, in the table and encoding of `tower-sessions-sqlx-store`
/// (which still reads them), batched: a new record, a changed one, a deleted one.
const CREATE_BROWSER_SESSION: &str =
    "INSERT OR ABORT INTO tower_sessions (id, data, expiry_date) VALUES ($1, $2, $3); SELECT changes();";
const SAVE_BROWSER_SESSION: &str = "INSERT INTO tower_sessions (id, data, expiry_date) VALUES ($1, $2, $3) \
    ON CONFLICT (id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date; SELECT changes();";
const DELETE_BROWSER_SESSION: &str = "DELETE FROM tower_sessions WHERE id = $1; SELECT changes();";

/// `SsoSessionStore::create_sso_session`, batched.
const CREATE_SSO_SESSION: &str = "INSERT INTO sso_sessions \
    (id, user_id, connector_id, auth_time, last_seen_at, expires_at, revoked_at, ip, user_agent) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9); SELECT changes();";

/// `SsoSessionStore::start_sso_session`, batched. A user who is gone fails the session's
/// foreign key, which rolls the whole write back. Without a record to take, `$20` and `$21` are
/// NULL and match nothing.
const START_SSO_SESSION: &str = "\
    UPDATE identity_links SET last_login_at = $4 WHERE connector_id = $3 AND subject = $10 AND user_id = $2; \
    UPDATE users SET last_login_at = $4 WHERE id = $2; \
    INSERT INTO sso_sessions (id, user_id, connector_id, auth_time, last_seen_at, expires_at, revoked_at, ip, user_agent) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9); \
    INSERT INTO audit_log (time, kind, outcome, actor, user_id, client_id, connector_id, ip, detail) \
    VALUES ($11, $12, $13, $14, $15, $16, $17, $18, $19); \
    SELECT (SELECT payload FROM single_use WHERE kind = $20 AND key = $21 AND expires_at > $4); \
    DELETE FROM single_use WHERE kind = $20 AND key = $21;";

/// `AuditStore::record_audit`, batched.
const APPEND_AUDIT: &str = "INSERT INTO audit_log (time, kind, outcome, actor, user_id, client_id, connector_id, ip, detail) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9); SELECT changes();";

fn single_use_arguments(record: &NewSingleUse<'_>) -> Vec<Arg> {
    vec![
        Arg::Text(Some(record.kind.as_str().to_owned())),
        Arg::Text(Some(record.key.to_owned())),
        Arg::Text(Some(record.payload.to_owned())),
        Arg::Int(Some(record.expires_at)),
    ]
}

fn sso_session_arguments(session: &SsoSession) -> Vec<Arg> {
    vec![
        Arg::Text(Some(session.id.clone())),
        Arg::Text(Some(session.user_id.clone())),
        Arg::Text(Some(session.connector_id.clone())),
        Arg::Int(Some(session.auth_time)),
        Arg::Int(Some(session.last_seen_at)),
        Arg::Int(Some(session.expires_at)),
        Arg::Int(session.revoked_at),
        Arg::Text(session.ip.clone()),
        Arg::Text(session.user_agent.clone()),
    ]
}

fn audit_arguments(event: &AuditEvent) -> Vec<Arg> {
    let optional = |value: &Option<String>| Arg::Text(value.clone());
    vec![
        Arg::Int(Some(event.time)),
        Arg::Text(Some(event.kind.clone())),
        Arg::Text(Some(event.outcome.as_str().to_owned())),
        optional(&event.actor),
        optional(&event.user_id),
        optional(&event.client_id),
        optional(&event.connector_id),
        optional(&event.ip),
        optional(&event.detail),
    ]
}

/// Whether a redemption (`REDEEM_CODE`) failed because its code was not there to spend.
fn code_not_live(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::Database(db))
        if db.kind() == sqlx::error::ErrorKind::NotNullViolation && db.message().ends_with("grants.id"))
}

/// Reads run on SQLite's side of the connection's thread; more of them than cores only take
/// turns, and a few let a slow read (an administrator's search) not hold up the others.
const READ_CONNECTIONS: usize = 4;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The embedded database: one file, shared by the connections of one process.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The reads (`reader`), on connections of their own.
    readers: Arc<ReadConnections>,
    /// SQLite has one writer at a time. Transactions here take turns on this lock rather than
    /// in SQLite's busy handler, which sleeps in steps of up to 100 ms while another
    /// connection's transaction is open (the long tail of concurrent refreshes and redemptions).
    /// The connection also serves the hottest writes, batched (`write_batch`).
    writer: Arc<Writer>,
    redeem_code: Arc<BatchedWrite>,
    redeem_code_with_refresh: Arc<BatchedWrite>,
    rotate_refresh_token: Arc<BatchedWrite>,
    put_single_use: Arc<BatchedWrite>,
    take_single_use: Arc<BatchedWrite>,
    take_single_use_leaving_mark: Arc<BatchedWrite>,
    put_single_use_pair: Arc<BatchedWrite>,
    put_single_use_discarding: Arc<BatchedWrite>,
    append_audit: Arc<BatchedWrite>,
    create_sso_session: Arc<BatchedWrite>,
    start_sso_session: Arc<BatchedWrite>,
    create_browser_session: Arc<BatchedWrite>,
    save_browser_session: Arc<BatchedWrite>,
    delete_browser_session: Arc<BatchedWrite>,
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
        let connection = Arc::new(tokio::sync::Mutex::new(SqliteConnection::connect_with(&options).await?));
        let readers = Arc::new(ReadConnections::open(&options, READ_CONNECTIONS).await?);
        // sqlx renames an in-memory database, so the URL tells.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let wal_sync = if durability == SqliteDurability::Full && !in_memory {
            // SQLite puts the WAL beside the file a symbolic link points to.
            let file = std::fs::canonicalize(&file).map_err(sqlx::Error::Io)?;
            Some(Arc::new(GroupSync::new(wal_syncer(&file))))
        } else {
            None
        };
        Ok(Self {
            pool,
            readers,
            writer: Arc::new(Writer { connection, options }),
            redeem_code: BatchedWrite::new(REDEEM_CODE),
            redeem_code_with_refresh: BatchedWrite::new(REDEEM_CODE_WITH_REFRESH),
            rotate_refresh_token: BatchedWrite::new(ROTATE_REFRESH_TOKEN),
            put_single_use: BatchedWrite::new(PUT_SINGLE_USE),
            take_single_use: BatchedWrite::new(TAKE_SINGLE_USE),
            take_single_use_leaving_mark: BatchedWrite::new(TAKE_SINGLE_USE_LEAVING_MARK),
            put_single_use_pair: BatchedWrite::new(PUT_SINGLE_USE_PAIR),
            put_single_use_discarding: BatchedWrite::new(PUT_SINGLE_USE_DISCARDING),
            append_audit: BatchedWrite::new(APPEND_AUDIT),
            create_sso_session: BatchedWrite::new(CREATE_SSO_SESSION),
            start_sso_session: BatchedWrite::new(START_SSO_SESSION),
            create_browser_session: BatchedWrite::new(CREATE_BROWSER_SESSION),
            save_browser_session: BatchedWrite::new(SAVE_BROWSER_SESSION),
            delete_browser_session: BatchedWrite::new(DELETE_BROWSER_SESSION),
            wal_sync,
        })
    }

    /// The session id in an authorization code's payload (`c.payload`), for `peek_code`.
    const CODE_SESSION_ID: &str = "json_extract(c.payload, '$.session_id')";

    /// `GrantStore::latest_user_grants`: each application's newest live grant of `$1`, found
    /// by id through the partial index.
    const LATEST_USER_GRANTS: &str = "SELECT g.client_id, g.scope, g.created_at, \
        (SELECT MAX(r.issued_at) FROM refresh_tokens r WHERE r.grant_id = g.id) \
        FROM clients c JOIN grants g ON g.id = ( \
          SELECT l.id FROM grants l \
          WHERE l.user_id = $1 AND l.client_id = c.client_id AND l.revoked_at IS NULL AND l.expires_at > $2 \
          ORDER BY l.created_at DESC, l.id DESC LIMIT 1) \
        ORDER BY c.client_id";

    /// A connection for the reads of `impl_sql_store`; it refuses writes.
    async fn reader(&self) -> StoreResult<ReadConnection<'_>> {
        self.readers.get().await
    }

    /// Held for the length of a write transaction.
    async fn one_writer(&self) -> StoreResult<Option<tokio::sync::MutexGuard<'_, SqliteConnection>>> {
        self.writes_allowed()?;
        Ok(Some(self.writer.connection.lock().await))
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

    /// `GrantStore::redeem_code`; the checks and writes of `REDEEM_CODE`.
    async fn spend_code(
        &self,
        code_hash: &str,
        grant: &GrantRecord,
        refresh_token: Option<(&str, &RefreshTokenRecord)>,
        granted: &AuditEvent,
        now: i64,
    ) -> StoreResult<bool> {
        self.writes_allowed()?;
        let text = |value: &str| Arg::Text(Some(value.to_owned()));
        let optional = |value: Option<&str>| Arg::Text(value.map(str::to_owned));
        let mut arguments = vec![
            text(SingleUseKind::AuthorizationCode.as_str()),
            text(code_hash),
            text(&grant.id),
            text(&grant.client_id),
            text(&grant.user_id),
            optional(grant.session_id.as_deref()),
            optional(grant.code_hash.as_deref()),
            text(&grant.scope),
            text(&grant.audience),
            Arg::Int(Some(grant.auth_time)),
            Arg::Text(Some(super::sql::to_json(&grant.amr))),
            text(&grant.idp),
            Arg::Int(Some(grant.created_at)),
            Arg::Int(Some(grant.expires_at)),
            Arg::Int(grant.revoked_at),
            Arg::Int(Some(now)),
            Arg::Int(Some(granted.time)),
            text(&granted.kind),
            text(granted.outcome.as_str()),
            optional(granted.actor.as_deref()),
            optional(granted.user_id.as_deref()),
            optional(granted.client_id.as_deref()),
            optional(granted.connector_id.as_deref()),
            optional(granted.ip.as_deref()),
            optional(granted.detail.as_deref()),
        ];
        let write = match refresh_token {
            Some((hash, refresh)) => {
                arguments.extend([
                    text(hash),
                    text(&refresh.grant_id),
                    Arg::Int(Some(refresh.issued_at)),
                    Arg::Int(Some(refresh.expires_at)),
                    Arg::Int(refresh.rotated_at),
                ]);
                &self.redeem_code_with_refresh
            }
            None => &self.redeem_code,
        };
        match write.run(&self.writer, arguments).await {
            Ok(answer) => {
                self.durable().await?;
                Ok(answer.try_get::<i64, _>(0)? == 1)
            }
            Err(err) if code_not_live(&err) => {
                // Spent, never issued, or expired: an expired code is deleted now, so that it
                // stays spent whatever the clock does.
                self.spend_single_use(SingleUseKind::AuthorizationCode, code_hash).await?;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// `GrantStore::rotate_refresh_token`; the checks and writes of `ROTATE_REFRESH_TOKEN`.
    async fn spend_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshTokenRecord,
        now: i64,
    ) -> StoreResult<Rotation> {
        self.writes_allowed()?;
        let arguments = vec![
            Arg::Text(Some(old_hash.to_owned())),
            Arg::Int(Some(now)),
            Arg::Text(Some(new.grant_id.clone())),
            Arg::Text(Some(new_hash.to_owned())),
            Arg::Int(Some(new.issued_at)),
            Arg::Int(Some(new.expires_at)),
            Arg::Int(new.rotated_at),
        ];
        let answer = self.rotate_refresh_token.run(&self.writer, arguments).await?;
        // Also when another request rotated it: its rotation may not be on disk yet, and this
        // answer (a reuse, or the grace period's successor) is only as good as that write.
        self.durable().await?;
        Ok(match (answer.try_get::<i64, _>(0)?, answer.try_get::<Option<i64>, _>(1)?) {
            (1, _) => Rotation::Rotated,
            (_, Some(_)) => Rotation::AlreadyRotated,
            _ => Rotation::NotFound,
        })
    }

    /// `SingleUseStore::put_single_use`.
    async fn store_single_use(&self, kind: SingleUseKind, key: &str, payload: &str, expires_at: i64) -> StoreResult<()> {
        self.writes_allowed()?;
        let arguments = vec![
            Arg::Text(Some(kind.as_str().to_owned())),
            Arg::Text(Some(key.to_owned())),
            Arg::Text(Some(payload.to_owned())),
            Arg::Int(Some(expires_at)),
        ];
        self.put_single_use.run(&self.writer, arguments).await?;
        self.durable().await
    }

    /// `SingleUseStore::take_single_use`: the payload and expiry the key had, if any.
    async fn spend_single_use(&self, kind: SingleUseKind, key: &str) -> StoreResult<Option<(String, i64)>> {
        self.writes_allowed()?;
        let arguments = vec![Arg::Text(Some(kind.as_str().to_owned())), Arg::Text(Some(key.to_owned()))];
        let answer = self.take_single_use.run(&self.writer, arguments).await?;
        self.durable().await?;
        Ok(answer.try_get::<Option<String>, _>(0)?.zip(answer.try_get::<Option<i64>, _>(1)?))
    }

    /// `SingleUseStore::take_single_use_leaving_mark`.
    async fn spend_single_use_leaving_mark(
        &self,
        kind: SingleUseKind,
        key: &str,
        now: i64,
        mark: SingleUseKind,
        mark_until: i64,
    ) -> StoreResult<bool> {
        self.writes_allowed()?;
        let arguments = vec![
            Arg::Text(Some(kind.as_str().to_owned())),
            Arg::Text(Some(key.to_owned())),
            Arg::Int(Some(now)),
            Arg::Text(Some(mark.as_str().to_owned())),
            Arg::Int(Some(mark_until)),
        ];
        let answer = self.take_single_use_leaving_mark.run(&self.writer, arguments).await?;
        self.durable().await?;
        Ok(answer.try_get::<i64, _>(0)? == 1)
    }

    /// `SingleUseStore::put_single_use_pair`.
    async fn store_single_use_pair(&self, first: &NewSingleUse<'_>, second: &NewSingleUse<'_>) -> StoreResult<()> {
        self.writes_allowed()?;
        let mut arguments = single_use_arguments(first);
        arguments.extend(single_use_arguments(second));
        self.put_single_use_pair.run(&self.writer, arguments).await?;
        self.durable().await
    }

    /// `SingleUseStore::put_single_use_discarding`.
    async fn store_single_use_discarding(&self, record: &NewSingleUse<'_>, discarded: (SingleUseKind, &str)) -> StoreResult<()> {
        self.writes_allowed()?;
        let mut arguments = single_use_arguments(record);
        arguments.extend([Arg::Text(Some(discarded.0.as_str().to_owned())), Arg::Text(Some(discarded.1.to_owned()))]);
        self.put_single_use_discarding.run(&self.writer, arguments).await?;
        self.durable().await
    }

    /// `AuditStore::record_audit`'s row.
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.writes_allowed()?;
        self.append_audit.run(&self.writer, audit_arguments(event)).await?;
        self.durable().await
    }

    /// `SsoSessionStore::create_sso_session`.
    async fn insert_sso_session(&self, session: &SsoSession) -> StoreResult<()> {
        self.writes_allowed()?;
        self.create_sso_session.run(&self.writer, sso_session_arguments(session)).await?;
        self.durable().await
    }

    /// `SsoSessionStore::start_sso_session`.
    async fn insert_signed_in_session(
        &self,
        session: &SsoSession,
        subject: &str,
        signed_in: &AuditEvent,
        taking: Option<(SingleUseKind, &str)>,
    ) -> StoreResult<Option<String>> {
        self.writes_allowed()?;
        let mut arguments = sso_session_arguments(session);
        arguments.push(Arg::Text(Some(subject.to_owned())));
        arguments.extend(audit_arguments(signed_in));
        arguments.extend([
            Arg::Text(taking.map(|(kind, _)| kind.as_str().to_owned())),
            Arg::Text(taking.map(|(_, key)| key.to_owned())),
        ]);
        let answer = match self.start_sso_session.run(&self.writer, arguments).await {
            // The session's foreign key: the user is gone, as PostgreSQL's count of users tells.
            Err(StoreError::Database(sqlx::Error::Database(db))) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
                return Err(StoreError::NotFound);
            }
            answer => answer?,
        };
        self.durable().await?;
        Ok(answer.try_get::<Option<String>, _>(0)?)
    }

    /// Writes a browser session's record (`tower_sessions::session::Record`, as
    /// `tower-sessions-sqlx-store` encodes it) through the batched writer rather than as one
    /// more connection competing for SQLite's write lock. With `only_if_new`, fails with
    /// `AlreadyExists` when the id is taken. Not waited on for a sync (see the README: a power
    /// loss can sign people out).
    pub async fn write_browser_session(
        &self,
        id: String,
        data: Vec<u8>,
        expiry: time::OffsetDateTime,
        only_if_new: bool,
    ) -> StoreResult<()> {
        self.writes_allowed()?;
        let write = if only_if_new { &self.create_browser_session } else { &self.save_browser_session };
        write.run(&self.writer, vec![Arg::Text(Some(id)), Arg::Blob(data), Arg::Time(expiry)]).await?;
        Ok(())
    }

    pub async fn delete_browser_session(&self, id: String) -> StoreResult<()> {
        self.writes_allowed()?;
        self.delete_browser_session.run(&self.writer, vec![Arg::Text(Some(id))]).await?;
        Ok(())
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
