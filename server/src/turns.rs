//! Single flight for the caches: one lock per key, held by the caller making that key's value
//! while the others asking for it wait, created on first use and removed when the last caller
//! lets go (also when the maker fails, panics or is cancelled). The lock is the caller's choice:
//! a blocking mutex where callers run off the async workers (`QueryCache`), an async one where
//! they wait with a deadline on them (the gateway's `BodyCache`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The locks of the keys being made now.
#[derive(Debug)]
pub struct Turns<K, L> {
    locks: Mutex<HashMap<K, Arc<L>>>,
}

impl<K, L> Default for Turns<K, L> {
    fn default() -> Self {
        Turns {
            locks: Mutex::default(),
        }
    }
}

/// One caller's share of a key's lock.
pub struct Turn<'a, K: Eq + Hash, L> {
    turns: &'a Turns<K, L>,
    key: K,
    lock: Arc<L>,
}

impl<K: Eq + Hash + Clone, L: Default> Turns<K, L> {
    /// A share of `key`'s lock (lock it to take the turn).
    pub fn take(&self, key: &K) -> Turn<'_, K, L> {
        let lock = Arc::clone(self.locks().entry(key.clone()).or_default());
        Turn {
            turns: self,
            key: key.clone(),
            lock,
        }
    }
}

impl<K, L> Turns<K, L> {
    /// Keys with a share out now.
    pub fn len(&self) -> usize {
        self.locks().len()
    }

    /// Whether no key has a share out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn locks(&self) -> MutexGuard<'_, HashMap<K, Arc<L>>> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Eq + Hash, L> Turn<'_, K, L> {
    /// The key's lock.
    pub fn lock(&self) -> &L {
        &self.lock
    }
}

impl<K: Eq + Hash, L> Drop for Turn<'_, K, L> {
    fn drop(&mut self) {
        let mut locks = self.turns.locks();
        // Shares are taken under the same mutex, so two (the map's and this one) means no other
        // caller holds or waits for this lock.
        let last = locks
            .get(&self.key)
            .is_some_and(|lock| Arc::ptr_eq(lock, &self.lock) && Arc::strong_count(lock) == 2);
        if last {
            locks.remove(&self.key);
        }
    }
}
