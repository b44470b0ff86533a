//! The whole run, machine-readable: configuration, machine, per-endpoint summaries, failures,
//! corruption samples and the per-second timeline.

use serde::Serialize;

use super::RunReport;
use super::machine::MachineInfo;
use super::seed::{self, SeedFigures};
use crate::loadtest::load::LoadConfig;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::{EndpointStats, Failure, LatencySummary};
use crate::loadtest::load::verify::Corruption;

#[derive(Serialize)]
struct JsonReport<'a> {
    date: &'a str,
    environment: &'a str,
    machine: &'a MachineInfo,
    config: &'a LoadConfig,
    /// The body size when the run has one count; `null` for a mix (see `payload_sizes`).
    payload_bytes: Option<usize>,
    payload_sizes: Vec<PayloadSize>,
    elapsed_seconds: f64,
    endpoints: Vec<JsonEndpoint<'a>>,
    total: JsonEndpoint<'a>,
}

/// One count of the run's mix and its body.
#[derive(Serialize)]
struct PayloadSize {
    count: u32,
    weight: u32,
    bytes: usize,
}

#[derive(Serialize)]
struct JsonEndpoint<'a> {
    endpoint: Option<Endpoint>,
    path: &'a str,
    requests: u64,
    verified: u64,
    failed: u64,
    corrupt: u64,
    failure_percent: f64,
    body_bytes: u64,
    latency: LatencySummary,
    failures: Vec<JsonFailure<'a>>,
    corruption_samples: &'a [Corruption],
    timeline: Vec<JsonSecond>,
    seed: Option<&'static SeedFigures>,
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    #[serde(flatten)]
    failure: &'a Failure,
    occurrences: u64,
}

#[derive(Serialize)]
struct JsonSecond {
    second: usize,
    requests: u64,
    failed: u64,
    corrupt: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub fn render(report: &RunReport<'_>) -> serde_json::Result<String> {
    let elapsed = report.stats.elapsed;
    let total = report.stats.total();
    let json = JsonReport {
        date: &report.date,
        environment: &report.environment,
        machine: &report.machine,
        config: report.config,
        payload_bytes: match report.payload_bytes[..] {
            [bytes] => Some(bytes),
            _ => None,
        },
        payload_sizes: report
            .config
            .counts
            .weighted()
            .iter()
            .zip(&report.payload_bytes)
            .map(|(&(count, weight), &bytes)| PayloadSize {
                count,
                weight,
                bytes,
            })
            .collect(),
        elapsed_seconds: elapsed.as_secs_f64(),
        endpoints: report
            .stats
            .endpoints
            .iter()
            .map(|(&endpoint, stats)| {
                endpoint_json(Some(endpoint), endpoint.path(), stats, elapsed)
            })
            .collect(),
        total: endpoint_json(None, "Aggregated", &total, elapsed),
    };
    serde_json::to_string_pretty(&json)
}

fn endpoint_json<'a>(
    endpoint: Option<Endpoint>,
    path: &'a str,
    stats: &'a EndpointStats,
    elapsed: std::time::Duration,
) -> JsonEndpoint<'a> {
    let ms = |micros: u64| micros as f64 / 1000.0;
    JsonEndpoint {
        endpoint,
        path,
        requests: stats.requests,
        verified: stats.verified,
        failed: stats.failed(),
        corrupt: stats.corrupt,
        failure_percent: stats.failure_percent(),
        body_bytes: stats.body_bytes,
        latency: stats.summary(elapsed),
        failures: stats
            .failures
            .iter()
            .map(|(failure, &occurrences)| JsonFailure {
                failure,
                occurrences,
            })
            .collect(),
        corruption_samples: &stats.corruption_samples,
        timeline: stats
            .timeline
            .iter()
            .enumerate()
            .map(|(second, bucket)| JsonSecond {
                second,
                requests: bucket.requests,
                failed: bucket.failed,
                corrupt: bucket.corrupt,
                p50_ms: ms(bucket.latency.value_at_percentile(50.0)),
                p99_ms: ms(bucket.latency.value_at_percentile(99.0)),
                max_ms: ms(bucket.latency.max()),
            })
            .collect(),
        seed: endpoint.and_then(seed::seed_figures),
    }
}
