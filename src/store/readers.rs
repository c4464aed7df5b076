//! SQLite's read connections, kept apart from sqlx's pool. The pool tests a connection when it
//! lends it and again when it takes it back, each test a round trip to the connection's worker
//! thread, and takes it back in a task of its own: three thread hand-offs around a read that
//! needs one. A local file does not go stale the way a network connection can, so these
//! connections are lent as they are.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore, SemaphorePermit};

use crate::store::{StoreError, StoreResult};

pub(super) struct ReadConnections {
    connections: Vec<Arc<Mutex<SqliteConnection>>>,
    /// One permit per connection: a reader waits here, first come, first served.
    available: Semaphore,
}

/// A connection lent for one read (or a few in a row); it goes back when this is dropped. A
/// read cancelled half-way leaves it fit to lend again: its worker thread runs commands in
/// order, and finishes (or drops) the cancelled one before the next borrower's.
pub(super) struct ReadConnection<'a> {
    connection: OwnedMutexGuard<SqliteConnection>,
    /// Released after the connection (fields drop in order), so whoever holds a permit finds
    /// one connection unlocked.
    _permit: SemaphorePermit<'a>,
}

impl ReadConnections {
    /// Opens `count` connections that refuse to write (`query_only`): a write here would wait
    /// for SQLite's write lock holding one of these few connections, and every read behind it.
    pub(super) async fn open(options: &SqliteConnectOptions, count: usize) -> StoreResult<Self> {
        let options = options.clone().pragma("query_only", "ON");
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            connections.push(Arc::new(Mutex::new(SqliteConnection::connect_with(&options).await?)));
        }
        Ok(Self { connections, available: Semaphore::new(count) })
    }

    pub(super) async fn get(&self) -> StoreResult<ReadConnection<'_>> {
        let permit = self.available.acquire().await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        let connection = self.connections.iter().find_map(|connection| Arc::clone(connection).try_lock_owned().ok());
        // One permit per connection, each connection locked only under a permit: a permit
        // always finds one free, and reaching here without is a bug in this module.
        let connection = connection.ok_or_else(|| {
            StoreError::Database(sqlx::Error::Protocol("a read permit found every read connection lent".to_owned()))
        })?;
        Ok(ReadConnection { connection, _permit: permit })
    }
}

impl std::ops::Deref for ReadConnection<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for ReadConnection<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.connection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_waits_while_every_connection_is_lent() {
        let options = SqliteConnectOptions::new().in_memory(true);
        let readers = ReadConnections::open(&options, 1).await.unwrap();
        let mut first = readers.get().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *first).await.unwrap();
        let waiting = readers.get();
        tokio::pin!(waiting);
        assert!(futures_util::poll!(&mut waiting).is_pending(), "the only connection is lent");
        drop(first);
        let mut second = waiting.await.unwrap();
        let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *second).await.unwrap();
        assert_eq!(one, 1);
    }

    #[tokio::test]
    async fn a_read_connection_refuses_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new().filename(dir.path().join("db")).create_if_missing(true);
        let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&mut writer).await.unwrap();
        let readers = ReadConnections::open(&options, 1).await.unwrap();
        let mut reader = readers.get().await.unwrap();
        assert!(sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *reader).await.is_err());
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut *reader).await.unwrap();
        assert_eq!(count, 0);
    }
}
