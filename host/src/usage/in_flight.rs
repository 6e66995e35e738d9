//! Calls in flight per key, for keys with a cap on them.
//!
//! The per-connector cap (`--max-in-flight-per-connector`) protects the gateway; this one
//! protects keys from each other: without it, one key's burst of slow calls (a runaway agent,
//! a retry storm) takes every slot of the connectors it shares with other keys, and they are
//! all answered `connector_busy`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many calls each key has in flight (keys with none are not in the map).
#[derive(Debug, Default)]
pub struct KeysInFlight {
    counts: Mutex<HashMap<i64, u32>>,
}

/// One call's place among its key's calls in flight, given back when dropped.
#[derive(Debug)]
pub struct InFlightCall {
    keys: Arc<KeysInFlight>,
    key_id: i64,
}

impl KeysInFlight {
    fn counts(&self) -> MutexGuard<'_, HashMap<i64, u32>> {
        // The map is whole between statements, so a panic elsewhere leaves it usable.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Count a call by `key_id` if it has fewer than `limit` in flight; `None` when it has
    /// that many already.
    pub fn enter(self: &Arc<Self>, key_id: i64, limit: u32) -> Option<InFlightCall> {
        let mut counts = self.counts();
        let count = counts.entry(key_id).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(InFlightCall {
            keys: self.clone(),
            key_id,
        })
    }

    /// Calls `key_id` has in flight.
    pub fn of(&self, key_id: i64) -> u32 {
        self.counts().get(&key_id).copied().unwrap_or(0)
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        let mut counts = self.keys.counts();
        if let Some(count) = counts.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_limit_and_ended_calls_free_their_place() {
        let keys = Arc::new(KeysInFlight::default());
        let first = keys.enter(1, 2).expect("first");
        let second = keys.enter(1, 2).expect("second");
        assert!(keys.enter(1, 2).is_none(), "a third call over the limit of 2");
        assert!(keys.enter(2, 2).is_some(), "another key has places of its own");
        drop(first);
        let third = keys.enter(1, 2).expect("a place came free");
        assert_eq!(keys.of(1), 2);
        drop((second, third));
        assert_eq!(keys.of(1), 0);
        assert!(
            keys.counts().is_empty(),
            "keys with nothing in flight leave the map"
        );
    }
}
