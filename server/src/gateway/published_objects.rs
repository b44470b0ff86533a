//! Answers the producer published as object versions (see "Version board" in
//! `shmbridge::layout`), kept by the gateway and served again with no message to the producer
//! while the producer's version board says they are current: one atomic load per request.
//!
//! An answer is kept only if it is a 200 to a `GET` and its producer named an object version on
//! the board of the attachment that carried it. It is served while the gateway's attachment is
//! open, has a board of the same epoch, and that board holds the version; otherwise it is
//! dropped and the request asks as any other. After a re-attach (a new producer, a new board)
//! nothing kept under the old board is current, so it is all dropped as it is met.
//!
//! `--stale-if-error` (in the spirit of RFC 5861): while the producer cannot be reached, an
//! answer current on the board *as the producer left it* (the gateway still maps it, and nobody
//! can write it any more) is served for that long after the first failure, marked
//! `x-transport: shm-stale` and counted in `published_stale_total`. An invalidation the producer
//! made before it died is on that board, so it is never served past its invalidation.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use shmbridge::BoardView;
use shmbridge::control::frame::ObjectVersion;

use crate::query_cache::{QueryCache, Weigh};

use super::proxied_response::Proxied;

/// Requests whose answers are kept at most; their bytes are bounded by [`QueryCache::MAX_BYTES`].
const MAX_KEPT: usize = 4096;

/// The object version an answer was published as, on the board of `board_epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedAs {
    pub board_epoch: u64,
    pub object: ObjectVersion,
}

#[derive(Clone)]
struct Kept {
    published: PublishedAs,
    proxied: Proxied,
}

impl Weigh for Kept {
    fn weight(&self) -> usize {
        self.proxied.weight()
    }
}

/// Kept published answers, by the request's bytes as sent on the channel.
pub struct PublishedObjects {
    kept: QueryCache<Kept, Vec<u8>>,
    /// `--stale-if-error`; zero: never serve a kept answer without a producer.
    stale_if_error: Duration,
    /// When requests began to find the producer unreachable, until one reaches it again.
    unreachable_since: Mutex<Option<Instant>>,
}

impl PublishedObjects {
    pub fn new(stale_if_error: Duration) -> Self {
        Self {
            kept: QueryCache::new(MAX_KEPT, QueryCache::<Kept, Vec<u8>>::MAX_BYTES),
            stale_if_error,
            unreachable_since: Mutex::new(None),
        }
    }

    /// The answer kept for `request`, if `board` says it is still current; a kept answer that
    /// is not is dropped.
    pub fn current(&self, request: &[u8], board: &BoardView) -> Option<Proxied> {
        let kept = self.lookup(request, board)?;
        metrics::counter!("published_hits_total").increment(1);
        Some(kept)
    }

    fn lookup(&self, request: &[u8], board: &BoardView) -> Option<Proxied> {
        let kept = self.kept.get(request.to_vec())?;
        let PublishedAs {
            board_epoch,
            object,
        } = kept.published;
        if board.is_current(board_epoch, object.key, object.version) {
            return Some(kept.proxied);
        }
        metrics::counter!("published_dropped_total").increment(1);
        self.kept.remove(request.to_vec());
        None
    }

    /// Keeps `proxied`, the answer to `request`, if it is a 200 published as an object
    /// version; the producer was reached.
    pub fn keep(&self, request: Vec<u8>, published: Option<PublishedAs>, proxied: &Proxied) {
        *self
            .unreachable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(published) = published
            && proxied.status == StatusCode::OK
        {
            let proxied = proxied.clone();
            self.kept.insert(request, Kept { published, proxied });
        }
    }

    /// The producer could not be reached for `request`: its kept answer if it is current on
    /// `board` (the board as the producer left it) and the producer has been unreachable for
    /// less than `--stale-if-error`.
    pub fn stale(&self, request: &[u8], board: &BoardView) -> Option<Proxied> {
        if self.stale_if_error.is_zero() {
            return None;
        }
        let since = *self
            .unreachable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
        if since.elapsed() > self.stale_if_error {
            return None;
        }
        let kept = self.lookup(request, board)?;
        metrics::counter!("published_stale_total").increment(1);
        Some(kept)
    }
}
