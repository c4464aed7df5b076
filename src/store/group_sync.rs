//! Group commit: one `fsync` makes every transaction committed before it durable, so writers
//! that commit while a sync is running share the next one instead of paying one each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What makes the committed writes durable (for SQLite: an `fsync` of the WAL file). It blocks,
/// so it runs on the blocking pool.
pub(super) type SyncFn = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

pub(super) struct GroupSync {
    sync: SyncFn,
    /// Tickets handed out, each after its writer's commit returned.
    committed: AtomicU64,
    /// The highest ticket known durable, or the sync failure that stopped all writes. The lock
    /// also makes syncs take turns, so writers that arrive during one sync share the next.
    synced: tokio::sync::Mutex<Result<u64, String>>,
    #[cfg(test)]
    syncs: AtomicU64,
}

impl GroupSync {
    pub(super) fn new(sync: SyncFn) -> Self {
        Self {
            sync,
            committed: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(Ok(0)),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
        }
    }

    /// Returns once a sync that started after the caller's commit has completed. Call it after
    /// every commit and before telling anyone the write happened.
    ///
    /// A failed sync fails this and every later call: after a failed `fsync` Linux may mark the
    /// unwritten pages clean, so a later sync can succeed without the data (as PostgreSQL
    /// learned); the process has to restart and let SQLite recover from what is on disk.
    pub(super) async fn after_commit(&self) -> std::io::Result<()> {
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        match &*synced {
            Err(failure) => return Err(std::io::Error::other(failure.clone())),
            Ok(durable) if *durable >= ticket => return Ok(()),
            Ok(_) => {}
        }
        // Every ticket up to `covered` was taken after its commit, so before this sync starts.
        let covered = self.committed.load(Ordering::SeqCst);
        let sync = Arc::clone(&self.sync);
        let outcome = tokio::task::spawn_blocking(move || sync()).await.map_err(std::io::Error::other).and_then(|done| done);
        match outcome {
            Ok(()) => {
                #[cfg(test)]
                self.syncs.fetch_add(1, Ordering::Relaxed);
                *synced = Ok(covered);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, "the database's write-ahead log could not be synced to disk: every write fails until Gatehouse restarts");
                *synced = Err(format!("an earlier sync of the write-ahead log failed: {err}"));
                Err(err)
            }
        }
    }

    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    /// Each writer "commits" (raises `commits`), then waits; the fake sync records how many
    /// commits existed when it started. A writer may only return after a sync that saw its commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_writer_returns_after_a_sync_that_started_after_its_commit() {
        let commits = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let sync: SyncFn = {
            let (commits, durable) = (Arc::clone(&commits), Arc::clone(&durable));
            Arc::new(move || {
                let seen = commits.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                durable.fetch_max(seen, Ordering::SeqCst);
                Ok(())
            })
        };
        let group = Arc::new(GroupSync::new(sync));
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let (group, commits, durable) = (Arc::clone(&group), Arc::clone(&commits), Arc::clone(&durable));
                tokio::spawn(async move {
                    let mine = commits.fetch_add(1, Ordering::SeqCst) + 1;
                    group.after_commit().await.unwrap();
                    assert!(durable.load(Ordering::SeqCst) >= mine, "commit {mine} acknowledged before a sync covered it");
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let syncs = group.syncs();
        assert!((1..64).contains(&syncs), "64 writers took {syncs} syncs; they should share them");
    }

    #[tokio::test]
    async fn after_a_failed_sync_every_write_fails_even_if_a_later_sync_would_succeed() {
        let fail = Arc::new(AtomicBool::new(true));
        let sync: SyncFn = {
            let fail = Arc::clone(&fail);
            Arc::new(move || if fail.load(Ordering::SeqCst) { Err(std::io::Error::other("disk gone")) } else { Ok(()) })
        };
        let group = GroupSync::new(sync);
        assert!(group.after_commit().await.is_err());
        fail.store(false, Ordering::SeqCst);
        let later = group.after_commit().await.unwrap_err().to_string();
        assert!(later.contains("an earlier sync") && later.contains("disk gone"), "{later}");
        assert_eq!(group.syncs(), 0);
    }
}
