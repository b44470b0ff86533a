//! Measurements of a load run: per-endpoint HDR latency histograms at microsecond resolution,
//! outcome counts, failures by class, one-second timeline buckets for charts, and the summary
//! arithmetic (percentiles, averages, rates) every report format shares.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::endpoint::Endpoint;
use super::verify::Corruption;
use shmbridge_server::transport_header::Transport;

/// Latencies are recorded in microseconds, from 1 µs to one hour, with 3 significant digits
/// (values below 2,048 µs are exact; above, the error is under 0.1%).
const LATENCY_MAX_MICROS: u64 = 3_600_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Why a request did not produce a verified body, grouped like Locust's failures table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The server answered with a status other than 200.
    Status(u16),
    /// No complete answer before the request's deadline.
    Timeout,
    /// The connection could not be made or broke before the response head arrived.
    Connection,
    /// The response head arrived but the body could not be read or its headers were unusable.
    Body,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::Status(code) => write!(f, "HTTP {code}"),
            FailureClass::Timeout => f.write_str("timeout"),
            FailureClass::Connection => f.write_str("connection error"),
            FailureClass::Body => f.write_str("body error"),
        }
    }
}

/// One failure: its class plus a short, low-cardinality detail (no ports, slots or offsets),
/// so identical failures collapse into one row with an occurrence count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Failure {
    pub class: FailureClass,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.class)
        } else {
            write!(f, "{}: {}", self.class, self.detail)
        }
    }
}

/// What became of one request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// 200 with exactly the expected bytes and a matching `x-payload-crc32`.
    Verified,
    /// 200 whose bytes or checksum header differ from what the producer publishes.
    Corrupt(Box<Corruption>),
    Failed(Failure),
}

/// How many corrupt bodies a run describes in full; the count itself is always exact.
const CORRUPTION_SAMPLES_KEPT: usize = 20;

/// All counts for one endpoint (or the aggregate of several).
#[derive(Clone, Debug)]
pub struct EndpointStats {
    /// Latency of every request, failed or not (as Locust counts them), in microseconds.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub verified: u64,
    pub corrupt: u64,
    pub failures: BTreeMap<Failure, u64>,
    /// Body bytes received over all requests, for Locust's "Average Content Size".
    pub body_bytes: u64,
    pub corruption_samples: Vec<Corruption>,
    /// One bucket per second since the run started, by the request's start time.
    pub timeline: Vec<TimelineBucket>,
    /// 200 responses (verified, corrupt, or with an unusable checksum header) by the transport
    /// the gateway said carried the body (`x-transport`: which path, and which shm tier).
    pub transports: BTreeMap<Transport, u64>,
}

#[derive(Clone, Debug)]
pub struct TimelineBucket {
    pub requests: u64,
    pub failed: u64,
    pub corrupt: u64,
    pub latency: Histogram<u64>,
}

impl TimelineBucket {
    fn new() -> Self {
        TimelineBucket {
            requests: 0,
            failed: 0,
            corrupt: 0,
            latency: new_latency_histogram(),
        }
    }
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats {
            latency: new_latency_histogram(),
            requests: 0,
            verified: 0,
            corrupt: 0,
            failures: BTreeMap::new(),
            body_bytes: 0,
            corruption_samples: Vec::new(),
            timeline: Vec::new(),
            transports: BTreeMap::new(),
        }
    }
}

impl EndpointStats {
    /// Counts one request that started `started_after` into the run and took `latency`.
    pub fn record(
        &mut self,
        started_after: Duration,
        latency: Duration,
        body_bytes: u64,
        outcome: &Outcome,
    ) {
        let micros = duration_to_micros(latency);
        self.latency.saturating_record(micros);
        self.requests += 1;
        self.body_bytes += body_bytes;
        let second = started_after.as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, TimelineBucket::new);
        }
        let bucket = &mut self.timeline[second];
        bucket.requests += 1;
        bucket.latency.saturating_record(micros);
        match outcome {
            Outcome::Verified => self.verified += 1,
            Outcome::Corrupt(corruption) => {
                self.corrupt += 1;
                bucket.corrupt += 1;
                if self.corruption_samples.len() < CORRUPTION_SAMPLES_KEPT {
                    self.corruption_samples.push((**corruption).clone());
                }
            }
            Outcome::Failed(failure) => {
                *self.failures.entry(failure.clone()).or_default() += 1;
                bucket.failed += 1;
            }
        }
    }

    /// Counts the transport of a 200 response that named one.
    pub fn count_transport(&mut self, transport: Option<Transport>) {
        if let Some(transport) = transport {
            *self.transports.entry(transport).or_default() += 1;
        }
    }

    /// Folds `other` into `self`, second by second.
    pub fn merge(&mut self, other: &EndpointStats) {
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds always merge");
        self.requests += other.requests;
        self.verified += other.verified;
        self.corrupt += other.corrupt;
        self.body_bytes += other.body_bytes;
        for (failure, count) in &other.failures {
            *self.failures.entry(failure.clone()).or_default() += count;
        }
        for (transport, count) in &other.transports {
            *self.transports.entry(*transport).or_default() += count;
        }
        let room = CORRUPTION_SAMPLES_KEPT.saturating_sub(self.corruption_samples.len());
        self.corruption_samples
            .extend(other.corruption_samples.iter().take(room).cloned());
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize_with(other.timeline.len(), TimelineBucket::new);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.requests += theirs.requests;
            mine.failed += theirs.failed;
            mine.corrupt += theirs.corrupt;
            mine.latency
                .add(&theirs.latency)
                .expect("histograms with equal bounds always merge");
        }
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Failed requests as a percentage of all requests (0 when there were none).
    pub fn failure_percent(&self) -> f64 {
        percent(self.failed(), self.requests)
    }

    pub fn summary(&self, elapsed: Duration) -> LatencySummary {
        LatencySummary::of(&self.latency, self.requests, self.failed(), elapsed)
    }
}

/// The figures every report prints for one row, in milliseconds and per second.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    pub requests: u64,
    pub requests_per_second: f64,
    pub failures_per_second: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// (percentile in percent, latency in ms), for `REPORTED_PERCENTILES`.
    pub percentiles_ms: Vec<(f64, f64)>,
}

/// The percentiles every report format prints: Locust's CSV columns, which include the seed
/// report's 50/75/90/95/99 and our extra 99.9.
pub const REPORTED_PERCENTILES: [f64; 11] = [
    50.0, 66.0, 75.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.9, 99.99, 100.0,
];

impl LatencySummary {
    pub fn of(
        latency: &Histogram<u64>,
        requests: u64,
        failed: u64,
        elapsed: Duration,
    ) -> LatencySummary {
        let empty = latency.is_empty();
        let ms = |micros: u64| if empty { 0.0 } else { micros as f64 / 1000.0 };
        LatencySummary {
            requests,
            requests_per_second: per_second(requests, elapsed),
            failures_per_second: per_second(failed, elapsed),
            mean_ms: if empty { 0.0 } else { latency.mean() / 1000.0 },
            min_ms: ms(latency.min()),
            max_ms: ms(latency.max()),
            percentiles_ms: REPORTED_PERCENTILES
                .iter()
                .map(|&p| (p, ms(latency.value_at_percentile(p))))
                .collect(),
        }
    }

    /// The latency at `percentile` (one of `REPORTED_PERCENTILES`), in ms.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        self.percentiles_ms
            .iter()
            .find(|(p, _)| *p == percentile)
            .map(|(_, ms)| *ms)
            .unwrap_or_else(|| panic!("{percentile} is not one of REPORTED_PERCENTILES"))
    }

    pub fn median_ms(&self) -> f64 {
        self.percentile_ms(50.0)
    }
}

/// Everything one load run measured.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub endpoints: BTreeMap<Endpoint, EndpointStats>,
    /// From the first request's start to the last request's end.
    pub elapsed: Duration,
}

impl RunStats {
    /// All endpoints folded into one, Locust's "Aggregated" row.
    pub fn total(&self) -> EndpointStats {
        let mut total = EndpointStats::default();
        for stats in self.endpoints.values() {
            total.merge(stats);
        }
        total
    }

    pub fn corrupt(&self) -> u64 {
        self.endpoints.values().map(|stats| stats.corrupt).sum()
    }
}

pub fn duration_to_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(class: FailureClass) -> Outcome {
        Outcome::Failed(Failure {
            class,
            detail: String::new(),
        })
    }

    /// 1 ms .. 100 ms in 1 ms steps: every percentile and the mean can be worked out by hand.
    fn hundred_requests_one_to_hundred_ms() -> EndpointStats {
        let mut stats = EndpointStats::default();
        for ms in 1..=100u64 {
            let outcome = if ms % 25 == 0 {
                failure(FailureClass::Status(503))
            } else {
                Outcome::Verified
            };
            stats.record(
                Duration::from_millis(ms * 30),
                Duration::from_millis(ms),
                1_000,
                &outcome,
            );
        }
        stats
    }

    #[test]
    fn percentiles_match_hand_computed_values() {
        // 1..=100 ms: the p-th percentile is the smallest value with at least p% at or below it,
        // i.e. p ms. HDR buckets at 3 significant digits hold 1 µs steps up to 2,047 µs, then
        // wider ones, so 1 ms..100 ms are recorded within 0.1%.
        let summary = hundred_requests_one_to_hundred_ms().summary(Duration::from_secs(10));
        for (percentile, expected_ms) in [(50.0, 50.0), (75.0, 75.0), (90.0, 90.0), (99.0, 99.0)] {
            let got = summary.percentile_ms(percentile);
            assert!(
                (got - expected_ms).abs() <= expected_ms * 0.001,
                "p{percentile}: got {got} ms, expected {expected_ms} ms"
            );
        }
        assert!((summary.percentile_ms(100.0) - 100.0).abs() <= 0.1);
        assert!((summary.max_ms - 100.0).abs() <= 0.1);
        assert!((summary.min_ms - 1.0).abs() < f64::EPSILON);
        // mean of 1..=100 is 50.5
        assert!(
            (summary.mean_ms - 50.5).abs() <= 0.05,
            "mean {}",
            summary.mean_ms
        );
    }

    #[test]
    fn exact_below_two_milliseconds() {
        let mut stats = EndpointStats::default();
        for micros in [100, 200, 300, 400, 1_900] {
            stats.record(
                Duration::ZERO,
                Duration::from_micros(micros),
                0,
                &Outcome::Verified,
            );
        }
        let summary = stats.summary(Duration::from_secs(1));
        assert_eq!(summary.median_ms(), 0.3);
        assert_eq!(summary.percentile_ms(80.0), 0.4);
        assert_eq!(summary.percentile_ms(90.0), 1.9);
        assert_eq!(summary.mean_ms, 0.58);
    }

    #[test]
    fn rates_and_failure_percentages() {
        let stats = hundred_requests_one_to_hundred_ms();
        assert_eq!(stats.requests, 100);
        assert_eq!(stats.failed(), 4);
        assert_eq!(stats.verified, 96);
        assert_eq!(stats.failure_percent(), 4.0);
        let summary = stats.summary(Duration::from_secs(8));
        assert_eq!(summary.requests_per_second, 12.5);
        assert_eq!(summary.failures_per_second, 0.5);
        assert_eq!(per_second(3, Duration::ZERO), 0.0);
        assert_eq!(percent(0, 0), 0.0);
    }

    #[test]
    fn timeline_buckets_by_start_second() {
        let stats = hundred_requests_one_to_hundred_ms();
        // request k starts at 30k ms, so second s holds the k with 30k in [1000s, 1000s+1000)
        assert_eq!(stats.timeline.len(), 4);
        assert_eq!(stats.timeline[0].requests, 33); // k = 1..=33
        assert_eq!(stats.timeline[1].requests, 33); // k = 34..=66
        assert_eq!(stats.timeline[2].requests, 33); // k = 67..=99
        assert_eq!(stats.timeline[3].requests, 1); // k = 100
        assert_eq!(stats.timeline[0].failed, 1); // k = 25
        assert_eq!(stats.timeline[3].failed, 1); // k = 100
    }

    #[test]
    fn merging_adds_counts_histograms_and_timelines() {
        let mut run = RunStats {
            elapsed: Duration::from_secs(4),
            ..RunStats::default()
        };
        run.endpoints
            .insert(Endpoint::Api, hundred_requests_one_to_hundred_ms());
        let mut shm = EndpointStats::default();
        shm.record(
            Duration::from_secs(5),
            Duration::from_millis(200),
            10,
            &failure(FailureClass::Timeout),
        );
        run.endpoints.insert(Endpoint::Shm, shm);
        let total = run.total();
        assert_eq!(total.requests, 101);
        assert_eq!(total.failed(), 5);
        assert_eq!(total.body_bytes, 100_010);
        assert_eq!(total.timeline.len(), 6);
        assert_eq!(total.timeline[5].failed, 1);
        let summary = total.summary(run.elapsed);
        assert!((summary.max_ms - 200.0).abs() <= 0.2);
        assert_eq!(summary.requests_per_second, 25.25);
    }

    #[test]
    fn empty_stats_summarise_to_zero() {
        let summary = EndpointStats::default().summary(Duration::from_secs(1));
        assert_eq!(summary.mean_ms, 0.0);
        assert_eq!(summary.max_ms, 0.0);
        assert_eq!(summary.median_ms(), 0.0);
    }
}
