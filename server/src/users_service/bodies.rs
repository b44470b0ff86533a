//! The users bodies users-service serves: generated per (count, seed) once, serialized per request
//! or, under `--cache`, once. Both paths, and the control channel, take their bodies from here.

use std::sync::Arc;

use bytes::Bytes;

use crate::dataset::{User, users};
use crate::payload::{Payload, serialize_body};
use crate::query::UsersQuery;
use crate::query_cache::QueryCache;

pub struct Bodies {
    datasets: QueryCache<Arc<[User]>>,
    serialized: Option<QueryCache<Payload>>,
}

impl Bodies {
    /// `cache`: keep serialized bodies (`--cache`), not just the generated users.
    pub fn new(cache: bool) -> Self {
        Self {
            datasets: QueryCache::default(),
            serialized: cache.then(QueryCache::default),
        }
    }

    /// The body for `query` with its crc32: serialized now, or taken from the cache.
    pub fn payload(&self, query: UsersQuery) -> Payload {
        let serialize = || Payload::serialize(&self.users(query));
        match &self.serialized {
            Some(bodies) => bodies.get_or_insert_with(query, serialize),
            None => serialize(),
        }
    }

    /// The body alone, for shared memory: the cached payload's bytes under `--cache`, otherwise
    /// serialized now without a checksum (the slot's write guard computes it).
    pub fn body(&self, query: UsersQuery) -> Bytes {
        match &self.serialized {
            Some(bodies) => {
                bodies
                    .get_or_insert_with(query, || Payload::serialize(&self.users(query)))
                    .bytes
            }
            None => serialize_body(&self.users(query)),
        }
    }

    fn users(&self, query: UsersQuery) -> Arc<[User]> {
        self.datasets
            .get_or_insert_with(query, || users(query.count, query.seed).into())
    }
}
