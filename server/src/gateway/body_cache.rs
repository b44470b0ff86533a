//! The cache behind `/via-cached/*`, the ceiling any transport can reach for an upstream path:
//! the upstream's verified 200 answer for a path and query, kept after the first request and
//! then served from memory (a reference-count increment), never asked for again. Bounded like
//! every cache here ([`QueryCache`]: 16 entries, 160 MiB, least recently used first); never
//! invalidated, which is what a ceiling for benchmarks wants and nothing else should.
//!
//! Single flight: while one request fetches a key, the others for it wait (within their
//! deadline) and then find it cached, so a burst on a cold key asks the upstream once.

use axum::http::StatusCode;
use tokio::time::Instant;

use crate::api_error::ApiError;
use crate::query_cache::QueryCache;
use crate::turns::Turns;

use super::answer::Answer;
use super::proxied_response::Proxied;

/// Verified 200 answers by `/path?query`, and the fetches in progress.
#[derive(Default)]
pub struct BodyCache {
    entries: QueryCache<Proxied, String>,
    /// One lock per key being fetched, held by the request fetching it.
    filling: Turns<String, tokio::sync::Mutex<()>>,
}

/// Where an answer came from.
pub enum Cached {
    /// From the cache.
    Hit(Proxied),
    /// From the upstream, just now (and kept if it was a 200).
    Fetched(Answer),
}

impl BodyCache {
    /// The answer kept for `key`, or `fetch`'s, which is kept if it is a 200. Waits for another
    /// request's fetch of the same key until `ends` at most.
    pub async fn get_or_fetch<Fut>(
        &self,
        key: &str,
        ends: Instant,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Cached, ApiError>
    where
        Fut: Future<Output = Result<Answer, ApiError>>,
    {
        if let Some(hit) = self.entries.get(key.to_owned()) {
            return Ok(Cached::Hit(hit));
        }
        let key = key.to_owned();
        let turn = self.filling.take(&key);
        let waited = std::time::Instant::now();
        let Ok(_fetching) = tokio::time::timeout_at(ends, turn.lock().lock()).await else {
            return Err(ApiError::UpstreamDeadline {
                deadline: waited.elapsed(),
            });
        };
        if let Some(hit) = self.entries.get(&key) {
            return Ok(Cached::Hit(hit));
        }
        let answer = fetch().await?;
        if answer.proxied.status == StatusCode::OK {
            let kept = answer.proxied.clone();
            self.entries.get_or_insert_with(key, || kept);
        }
        Ok(Cached::Fetched(answer))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::http::HeaderMap;
    use bytes::Bytes;

    use super::*;
    use crate::memory_budget::{BudgetKind, MemoryBudget};
    use crate::transport_header::Transport;

    fn answer(status: StatusCode, body: &'static [u8]) -> Answer {
        Answer {
            proxied: Proxied {
                status,
                headers: HeaderMap::new(),
                body: Bytes::from_static(body),
                crc32: crc32fast::hash(body),
            },
            transport: Transport::ShmInline,
            stages: Default::default(),
            reservation: MemoryBudget::new(BudgetKind::GatewayMemory, 1 << 20)
                .reserve(body.len() as u64)
                .unwrap(),
            published: None,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_burst_on_a_cold_key_fetches_once_and_only_a_200_is_kept() {
        let cache = BodyCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(answer(StatusCode::OK, b"body"))
        };
        let burst = (0..8).map(|_| cache.get_or_fetch("/a?x=1", soon(), fetch));
        let answers = futures_join_all(burst).await;
        assert_eq!(fetches.load(Ordering::Relaxed), 1);
        let hits = answers
            .iter()
            .filter(|answer| matches!(answer, Ok(Cached::Hit(_))))
            .count();
        assert_eq!(hits, 7);
        assert!(cache.filling.is_empty(), "the fetch lock was removed");

        let refused = || async { Ok(answer(StatusCode::NOT_FOUND, b"no")) };
        for _ in 0..2 {
            let fetched = cache.get_or_fetch("/missing", soon(), refused).await;
            assert!(matches!(fetched, Ok(Cached::Fetched(_))));
        }
    }

    /// `join_all` without the futures crate: polls every future on this task.
    async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                if output.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(value) => *output = Some(value),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().map(Option::unwrap).collect()
    }
}
