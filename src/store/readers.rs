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
    pub(super) async fn open(options: &SqliteConnectOptions, count: usize) -> StoreResult<Self> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            connections.push(Arc::new(Mutex::new(SqliteConnection::connect_with(options).await?)));
        }
        Ok(Self { connections, available: Semaphore::new(count) })
    }

    pub(super) async fn get(&self) -> StoreResult<ReadConnection<'_>> {
        let permit = self.available.acquire().await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        let connection = self.connections.iter().find_map(|connection| Arc::clone(connection).try_lock_owned().ok());
        let connection = connection.ok_or(StoreError::Database(sqlx::Error::PoolTimedOut))?;
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
    async fn a_reader_waits_for_a_connection_and_gets_the_one_given_back() {
        let options = SqliteConnectOptions::new().in_memory(true);
        let readers = ReadConnections::open(&options, 1).await.unwrap();
        let mut first = readers.get().await.unwrap();
        sqlx::query("CREATE TEMP TABLE marker (x)").execute(&mut *first).await.unwrap();
        let waiting = readers.get();
        tokio::pin!(waiting);
        assert!(futures_util::poll!(&mut waiting).is_pending(), "the only connection is lent");
        drop(first);
        let mut second = waiting.await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM marker").fetch_one(&mut *second).await.unwrap();
        assert_eq!(count, 0);
    }
}
