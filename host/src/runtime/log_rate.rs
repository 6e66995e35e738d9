//! How much one connector may write to the gateway's log over time, across its calls.
//!
//! Each call has a line budget of its own, but a connector that fills it on every call, with
//! calls coming in quickly, would still write tens of megabytes a second to the operator's log
//! (and disk). A token bucket per loaded connector bounds that: lines past it are dropped, and
//! the next line written says how many were.

use std::sync::Mutex;
use std::time::Instant;

/// Bytes of log lines per second one connector may write, sustained.
pub(crate) const BYTES_PER_SECOND: f64 = (256 << 10) as f64;
/// Bytes it may write at once after a quiet spell.
const BURST_BYTES: f64 = (1 << 20) as f64;

/// The bucket of one loaded connector.
#[derive(Debug)]
pub(crate) struct LogRate {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be written now.
    available: f64,
    /// When `available` was last brought up to date.
    at: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
}

/// Whether a line may be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Write it; this many lines were dropped since the last one written.
    Write { dropped_before: u64 },
    /// Drop it.
    Drop,
}

impl Default for LogRate {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                available: BURST_BYTES,
                at: Instant::now(),
                dropped: 0,
            }),
        }
    }
}

impl LogRate {
    /// Whether a line of `bytes` may be written now.
    pub(crate) fn admit(&self, bytes: usize) -> Admission {
        self.admit_at(bytes, Instant::now())
    }

    fn admit_at(&self, bytes: usize, now: Instant) -> Admission {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * BYTES_PER_SECOND;
        bucket.available = (bucket.available + refill).min(BURST_BYTES);
        bucket.at = now;
        let cost = bytes as f64;
        if cost > bucket.available {
            bucket.dropped += 1;
            return Admission::Drop;
        }
        bucket.available -= cost;
        Admission::Write {
            dropped_before: std::mem::take(&mut bucket.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_a_flood_is_cut_and_the_next_line_says_how_much_was() {
        let rate = LogRate::default();
        let start = Instant::now();
        let line = 2 << 10;
        let burst = (BURST_BYTES as usize) / line;
        for _ in 0..burst {
            assert_eq!(rate.admit_at(line, start), Admission::Write { dropped_before: 0 });
        }
        for _ in 0..10 {
            assert_eq!(rate.admit_at(line, start), Admission::Drop);
        }
        // A second later there is room for a second's worth again.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            rate.admit_at(line, later),
            Admission::Write { dropped_before: 10 }
        );
        let per_second = (BYTES_PER_SECOND as usize) / line;
        for _ in 1..per_second {
            assert_eq!(rate.admit_at(line, later), Admission::Write { dropped_before: 0 });
        }
        assert_eq!(rate.admit_at(line, later), Admission::Drop);
    }
}
