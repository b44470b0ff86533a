//! users-service's bodies as sealed payloads (`shmbridge::SealedPayload`, a memfd the kernel
//! keeps immutable): written straight into the memfd, a large query's users generated as they
//! are written, so no such body is ever held whole in this process; under `--cache` kept
//! sealed, so every publication of the query, whatever its size above the inline threshold,
//! hands out the same immutable payload and copies nothing. Under `--cache` `/blobs` bodies are
//! kept the same way ([`KeptBlob`]), and REST serves the very same pages from a read-only
//! mapping of the payload, so a kept blob is in memory once for both paths.

use std::io::{self, Write};
use std::os::fd::AsFd;

use bytes::Bytes;
use shmbridge::{SealedBytes, SealedError, SealedPayload, SealedWriter};

use crate::blobs::{self, BlobQuery};
use crate::failpoints;
use crate::query::UsersQuery;
use crate::query_cache::{QueryCache, Weigh};

use super::bodies::Bodies;

impl Weigh for SealedPayload {
    fn weight(&self) -> usize {
        usize::try_from(self.len()).unwrap_or(usize::MAX)
    }
}

/// Why no sealed payload was made for a query.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The body is longer than `--max-payload`: writing it stopped there.
    #[error("the body is larger than the shared-memory limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The memfd could not be made, written or sealed (no memory, too many descriptors).
    #[error(transparent)]
    Sealed(#[from] SealedError),
    #[error("writing the body into its payload failed: {0}")]
    Write(io::Error),
}

/// A `/blobs` body kept under `--cache`: its sealed payload, handed over the channel, and a
/// read-only mapping of the same pages, served over REST.
#[derive(Clone)]
pub struct KeptBlob {
    pub payload: SealedPayload,
    pub bytes: Bytes,
}

impl Weigh for KeptBlob {
    fn weight(&self) -> usize {
        self.payload.weight()
    }
}

/// Makes and, under `--cache`, keeps the sealed payloads of bodies.
pub struct SealedBodies {
    /// `Some` under `--cache`: payloads kept within the serialized bodies' byte bound.
    cached: Option<QueryCache<SealedPayload>>,
    /// `Some` under `--cache`: `/blobs` bodies kept within the same bound, of their own.
    blobs: Option<QueryCache<KeptBlob, BlobQuery>>,
    /// `--max-payload`.
    max_payload: u64,
}

impl SealedBodies {
    pub fn new(cache: bool, max_payload: u64) -> Self {
        Self {
            cached: cache.then(QueryCache::default),
            blobs: cache.then(QueryCache::default),
            max_payload,
        }
    }

    /// The sealed payload for `query`: kept under `--cache`, otherwise written now.
    pub fn payload(&self, bodies: &Bodies, query: UsersQuery) -> Result<SealedPayload, SealError> {
        match &self.cached {
            Some(cached) => match cached.get(query) {
                Some(payload) => Ok(payload),
                None => {
                    let payload = self.write(bodies, query)?;
                    Ok(cached.get_or_insert_with(query, || payload))
                }
            },
            None => self.write(bodies, query),
        }
    }

    /// The blob `query` names, kept: `None` unless under `--cache`. Made on a miss (once for
    /// concurrent callers; blocking: call it off the async workers).
    pub fn kept_blob(&self, query: BlobQuery) -> Result<Option<KeptBlob>, SealError> {
        let Some(kept) = &self.blobs else {
            return Ok(None);
        };
        kept.try_get_or_insert_with(query, || {
            let mut writer = SealedWriter::new()?;
            blobs::write_blob(&query, &mut writer).map_err(SealError::Write)?;
            let payload = writer.finish()?;
            let fd = payload
                .as_fd()
                .try_clone_to_owned()
                .map_err(SealError::Write)?;
            // Checks the seals and the crc32 once, as a consumer would, and maps the pages.
            let mapped = SealedBytes::verify(fd, payload.len(), payload.crc())?;
            Ok(KeptBlob {
                payload,
                bytes: Bytes::from_owner(mapped),
            })
        })
        .map(Some)
    }

    /// The blob `query` names if it is kept now: serving it makes nothing and blocks on nothing.
    pub fn kept_blob_hit(&self, query: BlobQuery) -> Option<KeptBlob> {
        self.blobs.as_ref()?.get(query)
    }

    fn write(&self, bodies: &Bodies, query: UsersQuery) -> Result<SealedPayload, SealError> {
        let mut out = Capped {
            inner: SealedWriter::new()?,
            left: self.max_payload,
        };
        bodies
            .write_body(query, &mut out)
            .map_err(|error| match error.kind() {
                io::ErrorKind::FileTooLarge => SealError::TooLarge {
                    limit: self.max_payload,
                },
                _ => SealError::Write(error),
            })?;
        // A crash here leaves a written, unsealed memfd that nobody else holds: the kernel frees
        // it with the process.
        failpoints::hit(failpoints::MID_COPY);
        Ok(out.inner.finish()?)
    }
}

/// A writer that refuses, with `FileTooLarge`, the first write that would take it past `left`
/// bytes, so an oversized body stops at the limit instead of being written whole.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        let written = self.inner.write(buf)?;
        self.left -= written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::users_json;
    use std::os::fd::{AsFd, AsRawFd};

    fn query(count: u32, seed: u64) -> UsersQuery {
        UsersQuery::new(count, seed).unwrap()
    }

    #[test]
    fn a_payload_holds_the_exact_body_and_its_crc() {
        let bodies = Bodies::new(false);
        for count in [3_000, 12_000] {
            let payload = SealedBodies::new(false, 64 << 20)
                .payload(&bodies, query(count, 9))
                .unwrap();
            let expected = users_json(count, 9);
            assert_eq!(payload.len(), expected.len() as u64);
            assert_eq!(payload.crc(), crc32fast::hash(&expected));
        }
    }

    #[test]
    fn a_body_above_the_limit_stops_there_with_the_limit() {
        let bodies = Bodies::new(false);
        let limit = 1 << 20;
        for count in [3_000, 12_000] {
            match SealedBodies::new(false, limit).payload(&bodies, query(count, 1)) {
                Err(SealError::TooLarge { limit: said }) => assert_eq!(said, limit),
                other => panic!("{count} users: {other:?}"),
            }
        }
        let exact = users_json(3_000, 1).len() as u64;
        assert!(
            SealedBodies::new(false, exact)
                .payload(&bodies, query(3_000, 1))
                .is_ok(),
            "a body of exactly the limit is published"
        );
    }

    #[test]
    fn under_cache_every_publication_shares_one_payload() {
        let bodies = Bodies::new(true);
        let sealed = SealedBodies::new(true, 64 << 20);
        let first = sealed.payload(&bodies, query(3_000, 2)).unwrap();
        let second = sealed.payload(&bodies, query(3_000, 2)).unwrap();
        let memfd = |payload: &SealedPayload| payload.as_fd().as_raw_fd();
        assert_eq!(
            memfd(&first),
            memfd(&second),
            "the cached payload is handed out again"
        );
        let uncached = SealedBodies::new(false, 64 << 20);
        let third = uncached.payload(&bodies, query(3_000, 2)).unwrap();
        assert_ne!(memfd(&first), memfd(&third));
    }
}
