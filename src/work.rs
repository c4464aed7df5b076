//! CPU-heavy work on untrusted input (XML signature verification, argon2) runs here: on the
//! blocking thread pool, a bounded number at a time, so a flood of hostile requests occupies a
//! fixed share of the machine while health checks, token requests and pages keep answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// A point in monotonic time after which cooperative work gives up. It measures how long work
/// may take, not what time it is, so it does not come from the injected `Clock`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now().checked_add(budget))
    }

    /// No limit: for tools and tests that verify trusted input.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn passed(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every slot stayed taken for the whole wait: the caller should answer 503.
    #[error("the server is busy with other work of this kind")]
    Busy,
    /// The work panicked or the runtime is shutting down.
    #[error("the work did not complete")]
    Interrupted,
}

/// Runs closures on the blocking pool, at most `slots` at a time. A caller waits at most
/// `wait` for a slot; the slot is held until the closure returns, even when the caller has
/// stopped waiting, so the bound holds for work that overruns.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    slots: Arc<Semaphore>,
    wait: Duration,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl BlockingPool {
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            wait,
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// One slot per core: this kind of work cannot use more than the machine has.
    pub fn per_core(wait: Duration) -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from), wait)
    }

    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Interrupted)?;
        let (running, peak) = (self.running.clone(), self.peak.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let done = work();
            running.fetch_sub(1, Ordering::SeqCst);
            done
        })
        .await
        .map_err(|_| PoolError::Interrupted)
    }

    /// The most closures that ever ran at once: at most `slots`, whatever the load.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_answers_busy_after_the_wait() {
        let pool = BlockingPool::new(1, Duration::from_millis(50));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || held.recv().is_ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.run(|| 1).await, Err(PoolError::Busy));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(true));
        assert_eq!(pool.run(|| 2).await, Ok(2));
        assert_eq!(pool.peak(), 1);
    }

    #[test]
    fn deadlines_pass() {
        assert!(!Deadline::none().passed());
        assert!(Deadline::after(Duration::ZERO).passed());
        assert!(!Deadline::after(Duration::from_secs(60)).passed());
    }
}
