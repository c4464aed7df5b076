//! Group commit: one `fsync` makes every transaction committed before it durable, so writers
//! that commit while a sync is running share the next one instead of paying one each.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    /// Set by `durable_before_answer` for the length of a request: its writes wait for a sync
    /// once, when its answer is ready, rather than each before the next step.
    static ANSWER_WAITS: RefCell<Option<Pending>>;
}

/// The last commit a request made, and the syncs that cover it.
struct Pending {
    group: Arc<GroupSync>,
    ticket: u64,
}

/// Runs `work` (a request) so that the writes it commits need not each wait for their sync:
/// the sync starts at once, and the answer waits for the one that covers its last commit. The
/// error, if that sync fails, must replace the answer, since its writes may be lost. Writes in
/// tasks that `work` spawns wait as usual.
pub async fn durable_before_answer<F: Future>(work: F) -> (F::Output, std::io::Result<()>) {
    ANSWER_WAITS
        .scope(RefCell::new(None), async move {
            let answer = work.await;
            let pending = ANSWER_WAITS.with(|pending| pending.borrow_mut().take());
            let durable = match pending {
                Some(Pending { group, ticket }) => group.wait_for(ticket).await,
                None => Ok(()),
            };
            (answer, durable)
        })
        .await
}

/// What makes the committed writes durable (for SQLite: an `fsync` of the WAL file). It blocks,
/// so it runs on the blocking pool.
pub(super) type SyncFn = Arc<dyn Fn() -> Result<(), SyncError> + Send + Sync>;

#[derive(Debug)]
pub(super) enum SyncError {
    /// The sync could not start (the file could not be opened, say): nothing is known lost, and
    /// the next writer tries again.
    NotStarted(std::io::Error),
    /// The `fsync` itself failed. Linux may then mark the unwritten pages clean, so a later sync
    /// can succeed without the data (as PostgreSQL learned in 2018): no write is acknowledged
    /// again until the process restarts and SQLite recovers from what is on disk.
    DataMayBeLost(std::io::Error),
}

pub(super) struct GroupSync {
    sync: SyncFn,
    /// Tickets handed out, each after its writer's commit returned.
    committed: AtomicU64,
    /// The highest ticket known durable. Every sync that ends announces itself here, so all
    /// the writers it covered go on at once, and the others try for the next one.
    synced: tokio::sync::watch::Sender<u64>,
    /// Held by the one sync running; writers that commit meanwhile share the next.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Set for good by a failed `fsync`.
    failure: Arc<std::sync::OnceLock<String>>,
    #[cfg(test)]
    syncs: Arc<AtomicU64>,
}

impl GroupSync {
    pub(super) fn new(sync: SyncFn) -> Self {
        Self {
            sync,
            committed: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(0),
            running: Arc::default(),
            failure: Arc::default(),
            #[cfg(test)]
            syncs: Arc::default(),
        }
    }

    /// Why writes stopped, once an `fsync` failed.
    pub(super) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Returns once a sync that started after the caller's commit has completed. Call it after
    /// every commit and before telling anyone the write happened. The sync and its bookkeeping
    /// run in a task of their own, so a caller that goes away cannot lose a failure. Inside
    /// `durable_before_answer`, returns at once: a sync is started, and the answer waits.
    pub(super) async fn after_commit(self: &Arc<Self>) -> std::io::Result<()> {
        if let Some(failure) = self.failure() {
            return Err(std::io::Error::other(format!("writes stopped: {failure}")));
        }
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let deferred = ANSWER_WAITS.try_with(|pending| {
            *pending.borrow_mut() = Some(Pending { group: Arc::clone(self), ticket });
        });
        if deferred.is_ok() {
            if let Ok(running) = Arc::clone(&self.running).try_lock_owned() {
                let group = Arc::clone(self);
                // Its outcome reaches the answer through `synced` and `failure`.
                tokio::spawn(async move { group.run_sync(running).await });
            }
            return Ok(());
        }
        self.wait_for(ticket).await
    }

    /// Returns once a sync that started after `ticket` was taken has completed.
    async fn wait_for(&self, ticket: u64) -> std::io::Result<()> {
        let stopped = |failure: &str| std::io::Error::other(format!("writes stopped: {failure}"));
        let mut synced = self.synced.subscribe();
        loop {
            // A commit that a good sync covered is on disk, whatever failed after it.
            if *synced.borrow_and_update() >= ticket {
                return Ok(());
            }
            if let Some(failure) = self.failure() {
                return Err(stopped(failure));
            }
            let Ok(running) = Arc::clone(&self.running).try_lock_owned() else {
                // A sync is running, perhaps one that started before this commit: after it
                // ends, this writer is covered or tries for the next one.
                synced.changed().await.map_err(std::io::Error::other)?;
                continue;
            };
            // The sync that held the lock may have ended since the look above.
            if *synced.borrow_and_update() >= ticket {
                return Ok(());
            }
            return self.run_sync(running).await;
        }
    }

    /// One sync, covering every ticket taken before it starts.
    async fn run_sync(&self, running: tokio::sync::OwnedMutexGuard<()>) -> std::io::Result<()> {
        let covered = self.committed.load(Ordering::SeqCst);
        let (sync, failure, synced) = (Arc::clone(&self.sync), Arc::clone(&self.failure), self.synced.clone());
        #[cfg(test)]
        let syncs = Arc::clone(&self.syncs);
        let run = tokio::spawn(async move {
            let outcome = match tokio::task::spawn_blocking(move || sync()).await {
                Ok(Ok(())) => {
                    #[cfg(test)]
                    syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Err(SyncError::NotStarted(err))) => Err(err),
                Ok(Err(SyncError::DataMayBeLost(err))) => {
                    tracing::error!(
                        error = %err,
                        "the database's write-ahead log could not be synced to disk: this node answers not ready and refuses \
                         every write until it restarts"
                    );
                    let _ = failure.set(format!("a sync of the write-ahead log failed: {err}"));
                    Err(err)
                }
                Err(join) => Err(std::io::Error::other(join)),
            };
            // Released before the announcement: a writer it wakes that is not covered must find
            // the lock free, or it would wait for an announcement that may never come.
            drop(running);
            // Announced whatever the outcome, so that the writers waiting look again.
            synced.send_modify(|durable| {
                if outcome.is_ok() {
                    *durable = (*durable).max(covered);
                }
            });
            outcome
        });
        run.await.map_err(std::io::Error::other)?
    }

    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fake sync that takes `pause` and then marks durable the commits (counted by the test
    /// in `commits`) that existed when it started.
    fn recording_sync(pause: Duration) -> (Arc<AtomicU64>, Arc<AtomicU64>, SyncFn) {
        let commits = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let sync: SyncFn = {
            let (commits, durable) = (Arc::clone(&commits), Arc::clone(&durable));
            Arc::new(move || {
                let seen = commits.load(Ordering::SeqCst);
                std::thread::sleep(pause);
                durable.fetch_max(seen, Ordering::SeqCst);
                Ok(())
            })
        };
        (commits, durable, sync)
    }

    /// Each writer "commits" (raises `commits`), then waits; the fake sync records how many
    /// commits existed when it started. A writer may only return after a sync that saw its commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_writer_returns_after_a_sync_that_started_after_its_commit() {
        let (commits, durable, sync) = recording_sync(Duration::from_millis(5));
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
    async fn a_failed_fsync_stops_every_later_write_and_a_sync_that_did_not_start_does_not() {
        let outcome = Arc::new(std::sync::Mutex::new(vec![
            Ok(()),
            Err(SyncError::DataMayBeLost(std::io::Error::other("disk gone"))),
            Err(SyncError::NotStarted(std::io::Error::other("too many open files"))),
        ]));
        let sync: SyncFn = {
            let outcome = Arc::clone(&outcome);
            Arc::new(move || outcome.lock().unwrap().pop().unwrap_or(Ok(())))
        };
        let group = Arc::new(GroupSync::new(sync));
        assert!(group.after_commit().await.is_err(), "could not start");
        assert!(group.failure().is_none());
        let lost = group.after_commit().await.unwrap_err().to_string();
        assert!(lost.contains("disk gone"), "{lost}");
        let later = group.after_commit().await.unwrap_err().to_string();
        assert!(later.contains("writes stopped") && later.contains("disk gone"), "{later}");
        assert!(group.failure().is_some());
        assert_eq!(group.syncs(), 0, "the sync that would succeed never runs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inside_a_request_commits_go_on_and_the_answer_waits_for_the_sync_of_the_last() {
        let (commits, durable, sync) = recording_sync(Duration::from_millis(20));
        let group = Arc::new(GroupSync::new(sync));
        let (last, synced) = durable_before_answer(async {
            for _ in 0..3 {
                commits.fetch_add(1, Ordering::SeqCst);
                group.after_commit().await.unwrap();
            }
            assert!(durable.load(Ordering::SeqCst) < 3, "a commit inside a request does not wait for its sync");
            commits.load(Ordering::SeqCst)
        })
        .await;
        synced.unwrap();
        assert!(durable.load(Ordering::SeqCst) >= last, "the answer waited for a sync covering its last commit");

        // Outside a request, each commit waits.
        commits.fetch_add(1, Ordering::SeqCst);
        group.after_commit().await.unwrap();
        assert_eq!(durable.load(Ordering::SeqCst), 4);

        let failing = Arc::new(GroupSync::new(Arc::new(|| Err(SyncError::DataMayBeLost(std::io::Error::other("disk gone"))))));
        let ((), synced) = durable_before_answer(async { failing.after_commit().await.unwrap() }).await;
        assert!(synced.unwrap_err().to_string().contains("disk gone"), "a failed sync replaces the answer");
        assert!(failing.after_commit().await.is_err(), "and stops later writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_whose_commit_a_good_sync_covered_stands_after_a_later_sync_fails() {
        let outcome =
            Arc::new(std::sync::Mutex::new(vec![Err(SyncError::DataMayBeLost(std::io::Error::other("disk gone"))), Ok(())]));
        let sync: SyncFn = {
            let outcome = Arc::clone(&outcome);
            Arc::new(move || outcome.lock().unwrap().pop().unwrap_or(Ok(())))
        };
        let group = Arc::new(GroupSync::new(sync));
        let ((), synced) = durable_before_answer(async {
            group.after_commit().await.unwrap();
            while group.syncs() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Another request, outside this one, commits and its sync fails.
            let other = Arc::clone(&group);
            assert!(tokio::spawn(async move { other.after_commit().await }).await.unwrap().is_err());
        })
        .await;
        assert!(synced.is_ok(), "this request's write was on disk before the failure");
        assert!(group.after_commit().await.is_err(), "later writes stop");
    }
}
