//! The shared sink every user or scheduled request reports to: full statistics under a lock,
//! plus lock-free live counters that the progress display polls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::progress::{LiveSnapshot, Progress};
use super::request::Completed;
use super::stats::{EndpointStats, Outcome, RunStats};
use super::target::Resource;

pub struct Recorder {
    started: Instant,
    stats: Mutex<BTreeMap<Endpoint, EndpointStats>>,
    live: LiveCounters,
    progress: Progress,
    observer: Option<Arc<dyn RequestObserver>>,
}

/// Sees every request as it completes, for callers that need more than the totals (the chaos
/// harness times recovery after each fault from these). Called on the request's task: keep
/// it short and non-blocking.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, request: &RequestRecord<'_>);
}

/// One completed request.
pub struct RequestRecord<'a> {
    pub endpoint: Endpoint,
    /// What it asked for.
    pub resource: &'a Resource,
    /// When the request was sent (closed loop) or scheduled (open loop).
    pub due: Instant,
    pub latency: Duration,
    pub outcome: &'a Outcome,
}

/// Running totals for the progress display.
#[derive(Default)]
pub struct LiveCounters {
    pub requests: AtomicU64,
    pub failed: AtomicU64,
    pub corrupt: AtomicU64,
    pub active_users: AtomicU64,
}

impl Recorder {
    pub fn new(
        started: Instant,
        endpoints: &[Endpoint],
        progress: Progress,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Self {
        Recorder {
            started,
            stats: Mutex::new(
                endpoints
                    .iter()
                    .map(|&endpoint| (endpoint, EndpointStats::default()))
                    .collect(),
            ),
            live: LiveCounters::default(),
            progress,
            observer,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn live(&self) -> &LiveCounters {
        &self.live
    }

    /// Records a request for `resource` that was due at `due` (its send time, or its scheduled
    /// time in open loop) and finished now.
    pub fn record(
        &self,
        endpoint: Endpoint,
        resource: &Resource,
        due: Instant,
        completed: &Completed,
    ) {
        let latency = due.elapsed();
        let started_after = due.saturating_duration_since(self.started);
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        match &completed.outcome {
            Outcome::Verified => {}
            Outcome::Failed(_) => {
                self.live.failed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Corrupt(corruption) => {
                self.live.corrupt.fetch_add(1, Ordering::Relaxed);
                self.progress.note(&format!(
                    "CORRUPT {endpoint} {resource}{} at {:.3}s: {corruption}",
                    completed
                        .transport
                        .map_or_else(String::new, |transport| format!(" ({transport})")),
                    started_after.as_secs_f64()
                ));
            }
        }
        if let Some(observer) = &self.observer {
            observer.observe(&RequestRecord {
                endpoint,
                resource,
                due,
                latency,
                outcome: &completed.outcome,
            });
        }
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let endpoint_stats = stats.entry(endpoint).or_default();
        endpoint_stats.record(
            started_after,
            latency,
            completed.body_bytes,
            &completed.outcome,
        );
        endpoint_stats.count_transport(completed.transport);
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            elapsed: self.started.elapsed(),
            requests: self.live.requests.load(Ordering::Relaxed),
            failed: self.live.failed.load(Ordering::Relaxed),
            corrupt: self.live.corrupt.load(Ordering::Relaxed),
            active_users: self.live.active_users.load(Ordering::Relaxed),
        }
    }

    /// The final statistics, with the elapsed time up to now.
    pub fn finish(self) -> RunStats {
        RunStats {
            endpoints: self
                .stats
                .into_inner()
                .unwrap_or_else(|poison| poison.into_inner()),
            elapsed: self.started.elapsed(),
        }
    }
}
