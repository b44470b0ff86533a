//! The whole run, machine-readable: configuration, machine, per-endpoint summaries, failures,
//! corruption samples and the per-second timeline.

use serde::Serialize;

use std::collections::BTreeMap;

use shmbridge_server::transport_header::Transport;

use super::RunReport;
use super::machine::Provenance;
use super::seed::{self, SeedFigures};
use crate::loadtest::load::LoadConfig;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::{EndpointStats, Failure, LatencySummary};
use crate::loadtest::load::target::{Resource, UpstreamPath};
use crate::loadtest::load::verify::Corruption;

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    provenance: &'a Provenance,
    config: &'a LoadConfig,
    /// The body size when the run has one resource (and it is known); `null` for a mix (see
    /// `payload_sizes`).
    payload_bytes: Option<usize>,
    payload_sizes: Vec<PayloadSize<'a>>,
    elapsed_seconds: f64,
    endpoints: Vec<JsonEndpoint<'a>>,
    total: JsonEndpoint<'a>,
}

/// One resource of the run's mix and its body: a `count` or a `path`; `bytes` is `null` for a
/// path checked by checksum only.
#[derive(Serialize)]
struct PayloadSize<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a UpstreamPath>,
    weight: u32,
    bytes: Option<usize>,
}

#[derive(Serialize)]
struct JsonEndpoint<'a> {
    endpoint: Option<Endpoint>,
    path: String,
    requests: u64,
    verified: u64,
    failed: u64,
    corrupt: u64,
    failure_percent: f64,
    body_bytes: u64,
    latency: LatencySummary,
    failures: Vec<JsonFailure<'a>>,
    corruption_samples: &'a [Corruption],
    /// 200 responses by `x-transport`.
    transports: BTreeMap<String, u64>,
    timeline: Vec<JsonSecond>,
    seed: Option<&'static SeedFigures>,
}

/// A failure class and how often it happened, as every JSON report lists them.
#[derive(Serialize)]
pub(super) struct JsonFailure<'a> {
    #[serde(flatten)]
    failure: &'a Failure,
    occurrences: u64,
}

/// `failures` as every JSON report lists them.
pub(super) fn json_failures(failures: &BTreeMap<Failure, u64>) -> Vec<JsonFailure<'_>> {
    failures
        .iter()
        .map(|(failure, &occurrences)| JsonFailure {
            failure,
            occurrences,
        })
        .collect()
}

/// 200 responses by `x-transport`, keyed by the header's value.
pub(super) fn json_transports(transports: &BTreeMap<Transport, u64>) -> BTreeMap<String, u64> {
    transports
        .iter()
        .map(|(transport, &count)| (transport.to_string(), count))
        .collect()
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
        provenance: &report.provenance,
        config: report.config,
        payload_bytes: match report.payload_bytes[..] {
            [bytes] => bytes,
            _ => None,
        },
        payload_sizes: report
            .config
            .requests
            .weighted()
            .iter()
            .zip(&report.payload_bytes)
            .map(|((resource, weight), &bytes)| PayloadSize {
                count: match resource {
                    Resource::Users(count) => Some(*count),
                    Resource::Path(_) => None,
                },
                path: match resource {
                    Resource::Path(path) => Some(path),
                    Resource::Users(_) => None,
                },
                weight: *weight,
                bytes,
            })
            .collect(),
        elapsed_seconds: elapsed.as_secs_f64(),
        endpoints: report
            .stats
            .endpoints
            .iter()
            .map(|(&endpoint, stats)| {
                endpoint_json(
                    Some(endpoint),
                    report.config.route(endpoint),
                    stats,
                    elapsed,
                )
            })
            .collect(),
        total: endpoint_json(None, "Aggregated".to_owned(), &total, elapsed),
    };
    serde_json::to_string_pretty(&json)
}

fn endpoint_json<'a>(
    endpoint: Option<Endpoint>,
    path: String,
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
        failures: json_failures(&stats.failures),
        corruption_samples: &stats.corruption_samples,
        transports: json_transports(&stats.transports),
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
