//! A small bounded map from a users query (or any other key: the gateway keys forwarded bodies
//! by path and query) to something derived from it (a generated dataset, a serialized body),
//! shared by concurrent handlers, evicting the least recently used entry when full.
//!
//! Bounded twice: at most [`QueryCache::MAX_ENTRIES`] queries and [`QueryCache::MAX_BYTES`]
//! of values (as [`Weigh`] counts them). When an insert goes over either bound, the least
//! recently used entries go, one at a time, until it fits; the rest stay. (The cache used to be
//! emptied when full, so a client cycling through seeds made every client regenerate its body
//! on every request.) A value heavier than the whole byte bound is returned but not kept.
//!
//! Single flight: while one caller makes a key's value, the others asking for that key wait for
//! it (blocking: call it off the async workers) and then find it, so a burst on a cold key
//! makes its value once instead of once per request.
//!
//! LRU is not scan-resistant: a client that asks for more than `MAX_ENTRIES` new queries
//! between two requests for a hot one still pushes the hot one out. It only ever costs a
//! regeneration, never a wrong body.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::dataset::User;
use crate::payload::{BodySummary, Payload};
use crate::query::UsersQuery;
use crate::turns::Turns;

/// The memory a cached value holds, in bytes (close enough to bound the cache, not exact).
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Payload {
    fn weight(&self) -> usize {
        self.bytes.len()
    }
}

impl Weigh for BodySummary {
    fn weight(&self) -> usize {
        std::mem::size_of::<BodySummary>()
    }
}

impl Weigh for Arc<[User]> {
    fn weight(&self) -> usize {
        self.iter().map(User::memory_bytes).sum()
    }
}

/// Values computed once per key (a [`UsersQuery`] unless told otherwise) and then cloned out
/// (keep `V` cheap to clone: `Arc`, `Bytes`).
#[derive(Debug)]
pub struct QueryCache<V, K = UsersQuery> {
    state: Mutex<Entries<K, V>>,
    /// One lock per key being made, held by the caller making it.
    filling: Turns<K, Mutex<()>>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Sum of the weights in `map`.
    bytes: usize,
    /// Ticks once per use; an entry's `last_used` orders it for eviction.
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    weight: usize,
    last_used: u64,
}

impl<V, K> Default for QueryCache<V, K> {
    /// [`QueryCache::MAX_ENTRIES`] entries, [`QueryCache::MAX_BYTES`] bytes.
    fn default() -> Self {
        QueryCache::new(Self::MAX_ENTRIES, Self::MAX_BYTES)
    }
}

impl<V, K> QueryCache<V, K> {
    /// Queries kept: benchmarks use one, so they never reach it.
    pub const MAX_ENTRIES: usize = 16;
    /// Bytes of values kept: one 64 MiB body (the largest step of a payload-size sweep, served
    /// cached by users-service `--cache` and by the gateway's cached ceiling) fits beside
    /// ~96 MiB of others, and so does one body of `MAX_COUNT` users (~91 MiB); two such bodies
    /// do not, so a client cycling through seeds at the cap holds at most one.
    pub const MAX_BYTES: usize = 160 << 20;

    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        QueryCache {
            state: Mutex::new(Entries {
                map: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            filling: Turns::default(),
            max_entries,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        // Every change keeps `map` and `bytes` consistent before anything can panic, so the
        // state is valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: Clone + Weigh, K: Eq + Hash + Clone> QueryCache<V, K> {
    /// The value for `query` if cached, marking it used.
    pub fn get(&self, query: impl Borrow<K>) -> Option<V> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(query.borrow())?;
        entry.last_used = now;
        Some(entry.value.clone())
    }

    /// The value for `query`, computing it with `make` if absent (once for concurrent callers).
    pub fn get_or_insert_with(&self, query: K, make: impl FnOnce() -> V) -> V {
        let made = self.try_get_or_insert_with(query, || Ok::<V, Infallible>(make()));
        made.unwrap_or_else(|never| match never {})
    }

    /// The value for `query`, computing it with `make` if absent; `make`'s error is returned
    /// and nothing kept (a caller waiting meanwhile then tries `make` itself). A caller making a
    /// key's value holds that key's turn, outside the cache's lock, so `make` may take long
    /// while every other key is served; it must not ask this cache for the same key.
    pub fn try_get_or_insert_with<E>(
        &self,
        query: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(value) = self.get(&query) {
            return Ok(value);
        }
        let turn = self.filling.take(&query);
        let _making = turn.lock().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = self.get(&query) {
            return Ok(value);
        }
        let value = make()?;
        self.insert(query.clone(), value.clone());
        Ok(value)
    }

    /// Number of queries cached now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of values cached now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Drops `query`'s value, if kept.
    pub fn remove(&self, query: impl Borrow<K>) {
        let mut entries = self.lock();
        if let Some(removed) = entries.map.remove(query.borrow()) {
            entries.bytes -= removed.weight;
        }
    }

    /// Keeps `value` for `query`, replacing any, then evicts the least recently used until
    /// both bounds hold; a value above the byte bound alone is not kept.
    pub fn insert(&self, query: K, value: V) {
        let weight = value.weight();
        if weight > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut entries = self.lock();
        entries.clock += 1;
        let entry = Entry {
            value,
            weight,
            last_used: entries.clock,
        };
        if let Some(replaced) = entries.map.insert(query.clone(), entry) {
            entries.bytes -= replaced.weight;
        }
        entries.bytes += weight;
        while entries.map.len() > self.max_entries || entries.bytes > self.max_bytes {
            // The entry just inserted is the most recently used and fits alone, so another
            // one is always found first.
            let Some(oldest) = entries
                .map
                .iter()
                .filter(|(key, _)| **key != query)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(evicted) = entries.map.remove(&oldest) {
                entries.bytes -= evicted.weight;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that weighs its own number of bytes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Weighs(usize);

    impl Weigh for Weighs {
        fn weight(&self) -> usize {
            self.0
        }
    }

    fn query(seed: u64) -> UsersQuery {
        UsersQuery { count: 1, seed }
    }

    /// Eight threads asking for one cold key at once: one makes it while the others wait, and
    /// all get it; a failed make keeps nothing and the next caller makes it.
    #[test]
    fn concurrent_callers_of_a_cold_key_make_it_once() {
        let cache = QueryCache::<Weighs>::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let started = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    started.wait();
                    let value = cache.get_or_insert_with(query(1), || {
                        made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Weighs(3)
                    });
                    assert_eq!(value, Weighs(3));
                });
            }
        });
        assert_eq!(made.into_inner(), 1);
        assert!(cache.filling.is_empty(), "every turn was given back");

        let failed = cache.try_get_or_insert_with(query(2), || Err::<Weighs, _>("no room"));
        assert_eq!(failed, Err("no room"));
        assert_eq!(cache.get(query(2)), None);
        assert_eq!(
            cache.try_get_or_insert_with(query(2), || Ok::<_, ()>(Weighs(4))),
            Ok(Weighs(4))
        );
        assert!(cache.filling.is_empty());
    }

    #[test]
    fn computes_once_per_query() {
        let cache = QueryCache::default();
        assert_eq!(cache.get_or_insert_with(query(2), || Weighs(7)), Weighs(7));
        assert_eq!(
            cache.get_or_insert_with(query(2), || unreachable!("cached")),
            Weighs(7)
        );
    }

    /// The old cache emptied itself when full: one query too many and the hot one was gone.
    #[test]
    fn a_full_cache_evicts_the_least_recently_used_entry_only() {
        let cache = QueryCache::<Weighs>::default();
        let full = QueryCache::<Weighs>::MAX_ENTRIES as u64;
        for seed in 0..full {
            cache.get_or_insert_with(query(seed), || Weighs(1));
        }
        // Seed 0 is used again, so seed 1 is now the least recently used.
        cache.get_or_insert_with(query(0), || unreachable!("cached"));
        cache.get_or_insert_with(query(full), || Weighs(1));
        assert_eq!(cache.len(), QueryCache::<Weighs>::MAX_ENTRIES);
        assert_eq!(cache.get(query(1)), None, "the least recently used went");
        for seed in (0..=full).filter(|&seed| seed != 1) {
            assert_eq!(cache.get(query(seed)), Some(Weighs(1)), "seed {seed}");
        }
    }

    #[test]
    fn a_client_cycling_seeds_does_not_evict_a_query_in_steady_use() {
        let cache = QueryCache::<Weighs>::default();
        let hot = query(u64::MAX);
        let mut hot_made = 0;
        for seed in 0..1_000 {
            cache.get_or_insert_with(hot, || {
                hot_made += 1;
                Weighs(1)
            });
            cache.get_or_insert_with(query(seed), || Weighs(1));
        }
        assert_eq!(hot_made, 1);
        assert_eq!(cache.len(), QueryCache::<Weighs>::MAX_ENTRIES);
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_until_the_new_value_fits() {
        let cache = QueryCache::new(10, 100);
        cache.get_or_insert_with(query(1), || Weighs(40));
        cache.get_or_insert_with(query(2), || Weighs(40));
        cache.get_or_insert_with(query(3), || Weighs(10));
        cache.get(query(1));
        // 90 + 50 > 100: query 2 (least recently used) goes, 100 bytes remain.
        cache.get_or_insert_with(query(4), || Weighs(50));
        assert_eq!(cache.get(query(2)), None);
        assert_eq!(cache.bytes(), 100);
        assert_eq!(cache.len(), 3);
        // 100 bytes alone still fits; everything else goes.
        cache.get_or_insert_with(query(5), || Weighs(100));
        assert_eq!(cache.bytes(), 100);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_value_heavier_than_the_whole_bound_is_returned_but_not_kept() {
        let cache = QueryCache::new(10, 100);
        cache.get_or_insert_with(query(1), || Weighs(10));
        assert_eq!(
            cache.get_or_insert_with(query(2), || Weighs(101)),
            Weighs(101)
        );
        assert_eq!(cache.get(query(2)), None);
        assert_eq!(
            cache.get(query(1)),
            Some(Weighs(10)),
            "nothing was evicted for it"
        );
    }

    /// The sizes issue 14 needs: a 64 MiB body stays cached beside a body of `MAX_COUNT`
    /// users; a second body at the cap pushes the older one out rather than growing the cache.
    #[test]
    fn the_default_bound_keeps_a_64_mib_body_and_one_body_at_the_cap() {
        let cap_body = Weighs(95_663_254);
        let cache = QueryCache::<Weighs>::default();
        cache.get_or_insert_with(query(1), || Weighs(64 << 20));
        cache.get_or_insert_with(query(2), || cap_body);
        assert_eq!(cache.get(query(1)), Some(Weighs(64 << 20)));
        assert_eq!(cache.get(query(2)), Some(cap_body));
        cache.get_or_insert_with(query(3), || cap_body);
        assert_eq!(cache.get(query(2)), None, "the older body at the cap went");
        assert_eq!(cache.get(query(3)), Some(cap_body));
        assert_eq!(
            cache.bytes(),
            cap_body.0,
            "two at the cap do not fit beside anything"
        );
    }

    /// The byte bound is only as good as the weights: a dataset must weigh about what its
    /// records hold, which is of the order of its JSON.
    #[test]
    fn a_dataset_weighs_about_its_serialized_size() {
        let users: Arc<[User]> = crate::dataset::users(100, 1).into();
        let json = crate::payload::serialize_body(&users).len();
        let weight = users.weight();
        assert!((json / 2..json * 3).contains(&weight), "{weight} vs {json}");
    }
}
