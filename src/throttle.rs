//! Counting in this node's memory, in fixed windows: failed client authentications and sign-in
//! starts per address. These guard the node's own CPU and database against floods, so each node
//! counting its own share is the point; nothing here is written to the database.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixTime;

/// Events per key in fixed windows of `window_secs`. At most `max_keys` keys are held; when
/// full, keys of past windows are dropped first, then new keys go uncounted (the per-client
/// counters, whose keys are bounded by the registered clients, still hold).
#[derive(Debug)]
pub struct WindowCounter {
    window_secs: i64,
    max_keys: usize,
    counts: Mutex<HashMap<String, (UnixTime, u32)>>,
}

impl WindowCounter {
    pub fn new(window_secs: i64, max_keys: usize) -> Self {
        Self { window_secs: window_secs.max(1), max_keys, counts: Mutex::new(HashMap::new()) }
    }

    fn window_start(&self, now: UnixTime) -> UnixTime {
        now - now.rem_euclid(self.window_secs)
    }

    /// Seconds until the current window ends: a `Retry-After` for whoever is over a limit.
    pub fn retry_after(&self, now: UnixTime) -> i64 {
        self.window_start(now) + self.window_secs - now
    }

    /// The count of `key` in the current window.
    pub fn count(&self, key: &str, now: UnixTime) -> u32 {
        let start = self.window_start(now);
        self.counts
            .lock()
            .ok()
            .and_then(|counts| counts.get(key).filter(|(window, _)| *window == start).map(|(_, count)| *count))
            .unwrap_or(0)
    }

    /// Counts one event for `key` and returns the count in the current window.
    pub fn hit(&self, key: &str, now: UnixTime) -> u32 {
        let start = self.window_start(now);
        let Ok(mut counts) = self.counts.lock() else { return 0 };
        if !counts.contains_key(key) && counts.len() >= self.max_keys {
            counts.retain(|_, (window, _)| *window == start);
            if counts.len() >= self.max_keys {
                return 0;
            }
        }
        let entry = counts.entry(key.to_owned()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }

    /// Forgets `key` (a client that authenticated after all).
    pub fn clear(&self, key: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reset_with_each_window() {
        let counter = WindowCounter::new(60, 100);
        assert_eq!(counter.hit("a", 120), 1);
        assert_eq!(counter.hit("a", 179), 2);
        assert_eq!(counter.count("a", 179), 2);
        assert_eq!(counter.retry_after(179), 1);
        assert_eq!(counter.count("a", 180), 0);
        assert_eq!(counter.hit("a", 180), 1);
        counter.clear("a");
        assert_eq!(counter.count("a", 180), 0);
    }

    #[test]
    fn a_full_table_drops_past_windows_then_stops_counting_new_keys() {
        let counter = WindowCounter::new(60, 2);
        counter.hit("old", 0);
        counter.hit("b", 60);
        assert_eq!(counter.hit("c", 60), 1, "the past window's key makes room");
        assert_eq!(counter.hit("d", 60), 0, "no room: not counted");
        assert_eq!(counter.hit("b", 60), 2, "known keys are still counted");
    }
}
