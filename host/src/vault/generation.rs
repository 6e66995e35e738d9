//! The credentials generation as the request path sees it: read from SQLite at most once per
//! [`CROSS_PROCESS_STALENESS`], and re-read at once after any write made through this process's
//! vault.
//!
//! Reading the generation row costs a SQLite read transaction (file-lock system calls and a
//! mutex) — about 6% of the gateway's CPU when done on every request. Changes made by this
//! process (the admin API, the connect flow, credential health updates) invalidate the memo the
//! moment they commit, so they are seen by the very next request; changes made by another
//! process (the `sluice` CLI, a second gateway on the same file) are seen within
//! [`CROSS_PROCESS_STALENESS`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a change made by another process can go unseen.
pub const CROSS_PROCESS_STALENESS: Duration = Duration::from_millis(10);

/// The last generation read and when; see the module docs.
#[derive(Debug, Default)]
pub(super) struct GenerationMemo {
    /// Writes committed through this process's vault so far.
    local_writes: AtomicU64,
    last_read: Mutex<Option<Reading>>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    generation: i64,
    at: Instant,
    /// `local_writes` when the read started: a later local write makes the reading stale.
    local_writes: u64,
}

impl GenerationMemo {
    /// The generation, from memory while fresh, else from `read`.
    pub(super) fn current<E>(&self, read: impl FnOnce() -> Result<i64, E>) -> Result<i64, E> {
        let local_writes = self.local_writes.load(Ordering::Acquire);
        if let Some(reading) = *self.lock()
            && reading.local_writes == local_writes
            && reading.at.elapsed() < CROSS_PROCESS_STALENESS
        {
            return Ok(reading.generation);
        }
        let at = Instant::now();
        let generation = read()?;
        let mut last = self.lock();
        // Keep the newest reading when two requests read at once.
        if last.is_none_or(|previous| previous.at <= at) {
            *last = Some(Reading {
                generation,
                at,
                local_writes,
            });
        }
        Ok(generation)
    }

    /// A write through this process's vault committed: the next request reads again.
    pub(super) fn local_write_committed(&self) {
        self.local_writes.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Reading>> {
        // Only plain data is behind the lock, so a poisoned one is still consistent.
        self.last_read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn read_counting(reads: &Cell<u32>, value: i64) -> impl FnOnce() -> Result<i64, ()> + '_ {
        move || {
            reads.set(reads.get() + 1);
            Ok(value)
        }
    }

    #[test]
    fn a_fresh_reading_is_reused_until_it_ages() {
        let memo = GenerationMemo::default();
        let reads = Cell::new(0);
        assert_eq!(memo.current(read_counting(&reads, 1)), Ok(1));
        assert_eq!(
            memo.current(read_counting(&reads, 2)),
            Ok(1),
            "fresh: not read again"
        );
        assert_eq!(reads.get(), 1);
        std::thread::sleep(CROSS_PROCESS_STALENESS + Duration::from_millis(2));
        assert_eq!(memo.current(read_counting(&reads, 2)), Ok(2), "aged: read again");
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_local_write_forces_the_next_read() {
        let memo = GenerationMemo::default();
        let reads = Cell::new(0);
        assert_eq!(memo.current(read_counting(&reads, 1)), Ok(1));
        memo.local_write_committed();
        assert_eq!(memo.current(read_counting(&reads, 5)), Ok(5));
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_reading_that_raced_a_local_write_is_not_trusted() {
        let memo = GenerationMemo::default();
        // The write commits while the read is under way: what it returned may predate it.
        assert_eq!(
            memo.current(|| {
                memo.local_write_committed();
                Ok::<_, ()>(1)
            }),
            Ok(1)
        );
        let reads = Cell::new(0);
        assert_eq!(memo.current(read_counting(&reads, 2)), Ok(2));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_failed_read_is_reported_and_not_remembered() {
        let memo = GenerationMemo::default();
        assert_eq!(memo.current(|| Err::<i64, _>("locked")), Err("locked"));
        let reads = Cell::new(0);
        assert_eq!(memo.current(read_counting(&reads, 3)), Ok(3));
        assert_eq!(reads.get(), 1);
    }
}
