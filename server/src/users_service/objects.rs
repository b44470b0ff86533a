//! Which object a request target names on users-service's version board: a kept body is the
//! same object for every request of its target, so the target alone is its key, and
//! `POST /shm/invalidate` names targets.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The object key of `target` (`/blobs?size=…`, exactly as a gateway sends it). Keys live only
/// as long as the process and its board, so any hash this build computes the same way will do.
pub(super) fn object_key(target: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    target.hash(&mut hasher);
    hasher.finish()
}
