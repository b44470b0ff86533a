//! The users bodies users-service serves: generated per (count, seed) once, serialized per request
//! or, under `--cache`, once. Both paths, and the control channel, take their bodies from here,
//! whole ([`Bodies::payload`], [`Bodies::body`]) or written into any `io::Write`
//! ([`Bodies::write_body`], for bodies too large to hold).

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;

use crate::dataset::{
    User, users, users_json, users_json_capacity, write_json_array, write_users_json,
};
use crate::payload::{BodySummary, Checksummed, Payload, serialize_body};
use crate::query::UsersQuery;
use crate::query_cache::QueryCache;

/// Queries of more users than this are large: their users are generated as they are serialized
/// and never kept, so no request holds a whole large dataset (10,000 users, the old cap, weigh
/// 4.7 MB as a dataset; 262,144 would weigh ~124 MB), and without `--cache` their REST body is
/// streamed ([`Bodies::streams`]). Smaller queries keep today's measured path unchanged.
pub const MAX_KEPT_USERS: u32 = 10_000;

/// Bytes of generated datasets kept (the pre-issue-14 bound: the serialized-body bound grew to
/// hold 64 MiB bodies, datasets did not need to). Public for the chaos harness, which counts it
/// in what users-service's memory may reach.
pub const DATASETS_MAX_BYTES: usize = 32 << 20;

/// (length, crc32) pairs kept for streamed bodies: 16 bytes each, so a sweep over many sizes
/// and seeds pays the extra pass that finds them once per query.
const SUMMARIES_MAX_ENTRIES: usize = 256;

pub struct Bodies {
    datasets: QueryCache<Arc<[User]>>,
    serialized: Option<QueryCache<Payload>>,
    summaries: QueryCache<BodySummary>,
}

impl Bodies {
    /// `cache`: keep serialized bodies (`--cache`), not just the generated users.
    pub fn new(cache: bool) -> Self {
        let max_entries = QueryCache::<Arc<[User]>>::MAX_ENTRIES;
        Self {
            datasets: QueryCache::new(max_entries, DATASETS_MAX_BYTES),
            serialized: cache.then(QueryCache::default),
            summaries: QueryCache::new(SUMMARIES_MAX_ENTRIES, usize::MAX),
        }
    }

    /// Whether serialized bodies are kept (`--cache`).
    pub fn is_caching(&self) -> bool {
        self.serialized.is_some()
    }

    /// Bytes `query`'s body costs to make now, for the making budget: none for a body kept
    /// under `--cache`, otherwise the bound on its length ([`users_json_capacity`]), known
    /// from the query before any work, and twice that where the body is made twice: streamed
    /// with its headers (`with_summary`) while its summary is not yet known
    /// ([`Bodies::summary`]).
    pub fn making_bytes(&self, query: UsersQuery, with_summary: bool) -> u64 {
        let kept = self
            .serialized
            .as_ref()
            .is_some_and(|bodies| bodies.get(query).is_some());
        if kept {
            return 0;
        }
        let passes = if with_summary && self.summaries.get(query).is_none() {
            2
        } else {
            1
        };
        passes * users_json_capacity(query.count) as u64
    }

    /// Whether `query`'s REST body is streamed rather than held whole: a large query
    /// ([`MAX_KEPT_USERS`]) without `--cache` (a cached body is already whole).
    pub fn streams(&self, query: UsersQuery) -> bool {
        self.serialized.is_none() && is_large(query)
    }

    /// The body for `query` with its crc32: serialized now, or taken from the cache.
    pub fn payload(&self, query: UsersQuery) -> Payload {
        let serialize = || Payload::from_bytes(self.serialize(query));
        match &self.serialized {
            Some(bodies) => bodies.get_or_insert_with(query, serialize),
            None => serialize(),
        }
    }

    /// The body alone, for shared memory: the cached payload's bytes under `--cache`, otherwise
    /// serialized now without a checksum (the slot's write guard computes it).
    pub fn body(&self, query: UsersQuery) -> Bytes {
        match &self.serialized {
            Some(_) => self.payload(query).bytes,
            None => self.serialize(query),
        }
    }

    /// Writes the body for `query` into `out` and returns its length: the cached bytes under
    /// `--cache`, otherwise serialized now, a large query's users generated one at a time, so
    /// memory stays bounded whatever the count. Stops at `out`'s first error and returns it.
    pub fn write_body(&self, query: UsersQuery, out: &mut impl Write) -> io::Result<u64> {
        match &self.serialized {
            Some(_) => {
                let body = self.payload(query).bytes;
                out.write_all(&body)?;
                Ok(body.len() as u64)
            }
            None if is_large(query) => write_users_json(query.count, query.seed, out),
            None => write_json_array(self.users(query).iter(), out),
        }
    }

    /// The length and crc32 of `query`'s body, for headers sent before a streamed body: kept
    /// per query, found the first time by writing the body into a sink (a pass as costly as
    /// serializing it, memory bounded the same way).
    pub fn summary(&self, query: UsersQuery) -> BodySummary {
        self.summaries.get_or_insert_with(query, || {
            let mut sink = Checksummed::new(io::sink());
            self.write_body(query, &mut sink)
                .expect("writing into a sink cannot fail");
            sink.summary()
        })
    }

    fn serialize(&self, query: UsersQuery) -> Bytes {
        if is_large(query) {
            users_json(query.count, query.seed).into()
        } else {
            serialize_body(&self.users(query))
        }
    }

    fn users(&self, query: UsersQuery) -> Arc<[User]> {
        debug_assert!(!is_large(query), "large datasets are never held whole");
        self.datasets
            .get_or_insert_with(query, || users(query.count, query.seed).into())
    }
}

fn is_large(query: UsersQuery) -> bool {
    query.count > MAX_KEPT_USERS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way out of `Bodies` gives the same bytes, on both sides of the large threshold and
    /// with and without `--cache`.
    #[test]
    fn every_form_of_a_body_is_the_dataset() {
        for cache in [false, true] {
            let bodies = Bodies::new(cache);
            for count in [0, 3, MAX_KEPT_USERS, MAX_KEPT_USERS + 1] {
                let query = UsersQuery { count, seed: 6 };
                let expected = users_json(count, 6);
                let mut written = Vec::new();
                let len = bodies.write_body(query, &mut written).unwrap();
                assert_eq!(written, expected, "{count} users, cache {cache}");
                assert_eq!(len, expected.len() as u64);
                assert_eq!(bodies.body(query), expected);
                let payload = bodies.payload(query);
                assert_eq!(payload, Payload::from_bytes(expected.clone().into()));
                let summary = BodySummary {
                    len,
                    crc32: payload.crc32,
                };
                assert_eq!(bodies.summary(query), summary);
            }
        }
    }

    /// A large query's users are generated as they are written, never kept as a dataset; a
    /// small query's are kept, as before.
    #[test]
    fn large_datasets_are_never_held_whole() {
        let bodies = Bodies::new(false);
        let large = UsersQuery {
            count: MAX_KEPT_USERS + 1,
            seed: 1,
        };
        assert!(bodies.streams(large));
        bodies.write_body(large, &mut io::sink()).unwrap();
        bodies.body(large);
        bodies.payload(large);
        bodies.summary(large);
        assert!(bodies.datasets.is_empty());
        let small = UsersQuery {
            count: MAX_KEPT_USERS,
            seed: 1,
        };
        assert!(!bodies.streams(small));
        bodies.write_body(small, &mut io::sink()).unwrap();
        assert_eq!(bodies.datasets.len(), 1);
        assert!(
            !Bodies::new(true).streams(large),
            "a cached body is whole anyway"
        );
    }
}
