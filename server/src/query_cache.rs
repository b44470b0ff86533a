//! A small bounded map from a users query to something derived from it (a generated dataset,
//! a serialized body), shared by concurrent handlers.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::query::UsersQuery;

/// Values computed once per query and then cloned out (keep `V` cheap to clone: `Arc`, `Bytes`).
///
/// Bounded to [`QueryCache::MAX_ENTRIES`] queries; when full it is emptied, which keeps it
/// simple and its memory bounded (at most 16 x the `MAX_COUNT` dataset, ~100 MB, in the worst
/// case; benchmarks use one query, so they never hit the bound).
#[derive(Debug)]
pub struct QueryCache<V> {
    entries: Mutex<HashMap<UsersQuery, V>>,
}

impl<V> Default for QueryCache<V> {
    fn default() -> Self {
        QueryCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> QueryCache<V> {
    pub const MAX_ENTRIES: usize = 16;

    /// The value for `query`, computing it with `make` if absent.
    pub fn get_or_insert_with(&self, query: UsersQuery, make: impl FnOnce() -> V) -> V {
        if let Some(value) = self.lock().get(&query) {
            return value.clone();
        }
        // Compute outside the lock: two first requests may both do it, and that is harmless.
        let value = make();
        let mut entries = self.lock();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(query, value.clone());
        value
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<UsersQuery, V>> {
        // Every insert is a single call, so the map is valid even if a holder panicked.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_per_query_and_stays_bounded() {
        let cache = QueryCache::default();
        let query = UsersQuery { count: 4, seed: 2 };
        assert_eq!(cache.get_or_insert_with(query, || 7), 7);
        assert_eq!(
            cache.get_or_insert_with(query, || unreachable!("cached")),
            7
        );
        for seed in 0..(QueryCache::<u32>::MAX_ENTRIES as u64 * 2) {
            cache.get_or_insert_with(UsersQuery { count: 1, seed }, || 0);
        }
        assert!(cache.lock().len() <= QueryCache::<u32>::MAX_ENTRIES);
    }
}
