//! Per-key call limits: a daily quota (resets at UTC midnight), a per-minute rate limit, and
//! a cap on calls in flight ([`in_flight`]).
//!
//! Counters live in memory behind one mutex, so check-and-count is atomic: N concurrent calls
//! against a quota of Q let exactly min(N, Q) through. The daily count is seeded from the
//! request log the first time a key is seen, so a restart does not reset it.

pub mod in_flight;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const DAY_SECONDS: i64 = 86_400;
const MINUTE_SECONDS: i64 = 60;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The daily quota is used up; retry after this many seconds.
    DailyQuota {
        /// Seconds until UTC midnight.
        retry_after: i64,
    },
    /// The per-minute limit is used up.
    RateLimited {
        /// The limit.
        limit: u32,
        /// Seconds until the window resets.
        retry_after: i64,
    },
}

/// Rate-limit facts to report in `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Calls allowed per minute.
    pub limit: u32,
    /// Calls left in this minute.
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_after: i64,
}

#[derive(Debug, Default)]
struct KeyUsage {
    day: i64,
    day_count: u64,
    minute: i64,
    minute_count: u32,
}

/// The limits one key is under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Calls per UTC day.
    pub daily_quota: Option<u32>,
    /// Calls per minute.
    pub per_minute: Option<u32>,
}

/// In-memory usage counters of every key.
#[derive(Debug, Default)]
pub struct UsageTracker {
    keys: Mutex<HashMap<i64, KeyUsage>>,
    /// Calls each key has in flight.
    pub in_flight: Arc<in_flight::KeysInFlight>,
}

impl UsageTracker {
    /// Whether `key_id` has been counted by this process already.
    pub fn is_tracked(&self, key_id: i64) -> bool {
        match self.keys.lock() {
            Ok(keys) => keys.contains_key(&key_id),
            Err(poisoned) => poisoned.into_inner().contains_key(&key_id),
        }
    }

    /// Count one call by `key_id` at `now` (Unix seconds) if its limits allow it.
    /// `seed_today` gives today's count from durable storage for a key not seen yet.
    pub fn admit(
        &self,
        key_id: i64,
        limits: Limits,
        now: i64,
        seed_today: impl FnOnce() -> u64,
    ) -> Result<Option<Window>, Refusal> {
        if limits.daily_quota.is_none() && limits.per_minute.is_none() {
            return Ok(None);
        }
        let day = now.div_euclid(DAY_SECONDS);
        let minute = now.div_euclid(MINUTE_SECONDS);
        let mut keys = match self.keys.lock() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        let usage = keys.entry(key_id).or_insert_with(|| KeyUsage {
            day,
            day_count: if limits.daily_quota.is_some() {
                seed_today()
            } else {
                0
            },
            minute,
            minute_count: 0,
        });
        if usage.day != day {
            usage.day = day;
            usage.day_count = 0;
        }
        if usage.minute != minute {
            usage.minute = minute;
            usage.minute_count = 0;
        }
        if let Some(quota) = limits.daily_quota
            && usage.day_count >= u64::from(quota)
        {
            return Err(Refusal::DailyQuota {
                retry_after: (day + 1) * DAY_SECONDS - now,
            });
        }
        let reset_after = (minute + 1) * MINUTE_SECONDS - now;
        if let Some(limit) = limits.per_minute
            && usage.minute_count >= limit
        {
            return Err(Refusal::RateLimited {
                limit,
                retry_after: reset_after,
            });
        }
        usage.day_count += 1;
        usage.minute_count += 1;
        Ok(limits.per_minute.map(|limit| Window {
            limit,
            remaining: limit.saturating_sub(usage.minute_count),
            reset_after,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 20_000 * DAY_SECONDS + 12 * 3600;

    #[test]
    fn daily_quota_is_exact_and_resets_at_midnight() {
        let tracker = UsageTracker::default();
        let limits = Limits {
            daily_quota: Some(3),
            per_minute: None,
        };
        for i in 0..3 {
            assert!(tracker.admit(1, limits, NOON + i, || 0).is_ok());
        }
        match tracker.admit(1, limits, NOON + 10, || 0) {
            Err(Refusal::DailyQuota { retry_after }) => assert_eq!(retry_after, 12 * 3600 - 10),
            other => panic!("expected the daily quota, got {other:?}"),
        }
        assert!(
            tracker.admit(1, limits, NOON + 12 * 3600, || 0).is_ok(),
            "a new UTC day"
        );
        assert!(
            tracker.admit(2, limits, NOON, || 0).is_ok(),
            "keys are counted separately"
        );
    }

    #[test]
    fn seed_counts_calls_made_before_a_restart() {
        let tracker = UsageTracker::default();
        let limits = Limits {
            daily_quota: Some(5),
            per_minute: None,
        };
        assert!(tracker.admit(1, limits, NOON, || 4).is_ok());
        assert!(tracker.admit(1, limits, NOON, || 0).is_err());
    }

    #[test]
    fn per_minute_window_reports_remaining_and_resets() {
        let tracker = UsageTracker::default();
        let limits = Limits {
            daily_quota: None,
            per_minute: Some(2),
        };
        let first = tracker.admit(1, limits, NOON, || 0).expect("ok").expect("window");
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert!(tracker.admit(1, limits, NOON + 1, || 0).is_ok());
        assert!(matches!(
            tracker.admit(1, limits, NOON + 2, || 0),
            Err(Refusal::RateLimited {
                limit: 2,
                retry_after: 58
            })
        ));
        assert!(tracker.admit(1, limits, NOON + 60, || 0).is_ok());
    }
}
