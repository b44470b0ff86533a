//! The report of `sweep`: how it was run, what each (pattern, size) step became (which
//! transport and shm tier carried its bodies, the services' peak RSS), then per load model each
//! endpoint's medians at each step, the ratios of shared memory to REST and to the cached
//! ceiling, and the crossover size of each pattern; as Markdown, JSON, and an HTML page of
//! latency and throughput against size on log axes (the first pattern's, which covers the whole
//! ladder).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use shmbridge_server::blobs::BlobPattern;
use shmbridge_server::transport_header::Transport;

use super::capacity::format_ratio;
use super::html::{self, ChartError, Series, endpoint_color, lighter};
use super::machine::MachineInfo;
use super::{format_ms, thousands, transports_text};
use crate::loadtest::capacity::summary::{Ratio, schedule};
use crate::loadtest::capacity::{CapacityResult, RoundLoad};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::Failure;
use crate::loadtest::load::target::UpstreamPath;
use crate::loadtest::sweep::ladder::Size;
use crate::loadtest::sweep::rss::{PeakMethod, PeakRss};
use crate::loadtest::sweep::summary::{Cell, cells, crossover, shm_over, shm_wins};
use crate::loadtest::sweep::{SizeStep, StepOutcome, SweepPlan, SweepResult};

/// Shown where there is no figure.
const NO_VALUE: &str = "—";

/// Everything a sweep report shows.
pub struct SweepReport<'a> {
    pub plan: &'a SweepPlan,
    pub result: &'a SweepResult,
    pub machine: MachineInfo,
    /// When the sweep ended, RFC 3339 UTC.
    pub date: String,
    /// Where the services ran.
    pub environment: String,
}

/// One load model at one measured step.
struct ModelAtSize<'a> {
    pattern: BlobPattern,
    target: Size,
    cells: Vec<Cell>,
    ratios: Vec<Ratio>,
    result: &'a CapacityResult,
}

impl ModelAtSize<'_> {
    /// The `x-transport` values `endpoint`'s 200 responses named, over all rounds.
    fn transports(&self, endpoint: Endpoint) -> String {
        self.result
            .endpoints
            .iter()
            .find(|rounds| rounds.endpoint == endpoint)
            .map_or_else(
                || NO_VALUE.to_owned(),
                |rounds| transports_text(&rounds.all.transports),
            )
    }
}

impl SweepReport<'_> {
    /// The command that repeats this sweep.
    fn command(&self) -> String {
        let plan = self.plan;
        let endpoints: Vec<String> = plan.endpoints.iter().map(|e| e.to_string()).collect();
        let patterns: Vec<&str> = plan.patterns.iter().map(|p| p.as_str()).collect();
        let loads: Vec<String> = plan.loads.iter().map(|load| load.flags()).collect();
        format!(
            "cargo run --release -p shmbridge-chaos -- sweep --sizes {} --patterns {} --subset-sizes {} --endpoints {} {} --rounds {} --duration {} --timeout {} --seed {} --rng-seed {}{}",
            plan.ladder,
            patterns.join(","),
            plan.subset,
            endpoints.join(","),
            loads.join(" "),
            plan.rounds,
            humantime::format_duration(plan.round_duration),
            humantime::format_duration(plan.timeout),
            plan.seed,
            plan.rng_seed,
            if plan.cache { " --cache" } else { "" }
        )
    }

    /// Each measured step of `pattern` under `load`, in ladder order.
    fn model(&self, load: RoundLoad, pattern: BlobPattern) -> Vec<ModelAtSize<'_>> {
        self.result
            .steps
            .iter()
            .filter(|step| step.pattern == pattern)
            .filter_map(|step| {
                let StepOutcome::Measured { sessions, .. } = &step.outcome else {
                    return None;
                };
                let (_, result) = sessions.iter().find(|(l, _)| *l == load)?;
                Some(ModelAtSize {
                    pattern,
                    target: step.target,
                    cells: cells(result, step.target.bytes()),
                    ratios: result.ratios(),
                    result,
                })
            })
            .collect()
    }
}

/// The transports shared memory's 200 responses named over a whole step, both load models.
fn shm_transports(step: &SizeStep) -> BTreeMap<Transport, u64> {
    let mut transports = BTreeMap::new();
    if let StepOutcome::Measured { sessions, .. } = &step.outcome {
        for (_, result) in sessions {
            for rounds in result
                .endpoints
                .iter()
                .filter(|rounds| rounds.endpoint == Endpoint::Shm)
            {
                for (transport, count) in &rounds.all.transports {
                    *transports.entry(*transport).or_default() += count;
                }
            }
        }
    }
    transports
}

/// Where shared memory starts to win under one model, over the sizes where both ran.
fn model_crossover(sizes: &[ModelAtSize<'_>]) -> Option<Size> {
    let wins: Vec<(Size, bool)> = sizes
        .iter()
        .filter_map(|size| Some((size.target, shm_wins(&size.cells)?)))
        .collect();
    crossover(&wins)
}

fn describe_crossover(sizes: &[ModelAtSize<'_>]) -> String {
    let compared = sizes
        .iter()
        .filter(|size| shm_wins(&size.cells).is_some())
        .count();
    if compared == 0 {
        return "not computed (shm and REST were not both measured)".to_owned();
    }
    match model_crossover(sizes) {
        Some(size) => format!("**{size}** (shm wins there and at every larger measured size)"),
        None => "**none** (shm does not win at the largest measured size)".to_owned(),
    }
}

pub fn render_markdown(report: &SweepReport<'_>) -> String {
    let mut out =
        String::from("# Payload-size sweep: REST, shared memory and the cached ceiling\n\n");
    how_it_was_run(&mut out, report);
    sizes(&mut out, report);
    for load in report.plan.loads {
        let _ = writeln!(
            out,
            "## {} (`{}`)\n",
            capitalized(load.name()),
            load.flags()
        );
        for &pattern in &report.plan.patterns {
            let _ = writeln!(
                out,
                "**Crossover, {pattern}**: {}\n",
                describe_crossover(&report.model(load, pattern))
            );
        }
        let models: Vec<ModelAtSize<'_>> = report
            .plan
            .patterns
            .iter()
            .flat_map(|&pattern| report.model(load, pattern))
            .collect();
        medians(&mut out, &models);
        ratios(&mut out, &models);
    }
    failures(&mut out, report);
    out
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn how_it_was_run(out: &mut String, report: &SweepReport<'_>) {
    let plan = report.plan;
    let sizes: Vec<String> = plan.ladder.sizes().iter().map(Size::to_string).collect();
    let order: Vec<String> = schedule(&plan.endpoints, plan.rounds)
        .iter()
        .map(|run| run.endpoint.to_string())
        .collect();
    out.push_str("## How it was run\n\n");
    let _ = writeln!(out, "- **Sizes**: {}", sizes.join(", "));
    let patterns: Vec<&str> = plan.patterns.iter().map(|p| p.as_str()).collect();
    let _ = writeln!(
        out,
        "- **Patterns**: {}; {} at every size{}",
        patterns.join(", "),
        patterns[0],
        match (&plan.subset, &patterns[1..]) {
            (_, []) => String::new(),
            (crate::loadtest::sweep::SizeSubset::All, others) => {
                format!(", {} at every size too", others.join(", "))
            }
            (crate::loadtest::sweep::SizeSubset::Sizes(subset), others) => format!(
                ", {} at the sizes also in `--subset-sizes {subset}`",
                others.join(", ")
            ),
        }
    );
    let _ = writeln!(
        out,
        "- **Bodies**: exactly the size asked, `GET /blobs?size=N&pattern=P&seed={}` of users-service through the gateway's prefixes: REST `/via-api/blobs?…`, shared memory `/via-shm/blobs?…`, the ceiling `/via-cached/blobs?…`{}; generated per request by users-service (`--cache` keeps only `/users` bodies{}); sizes above its payload limit ({} bytes) are reported, not measured",
        plan.seed,
        if plan.endpoints.contains(&Endpoint::Auto) {
            ", the gateway's `--transport` `/blobs?…`"
        } else {
            ""
        },
        if plan.cache { ", and was on" } else { "" },
        thousands(plan.max_payload)
    );
    let [first, then] = &plan.loads;
    let _ = writeln!(
        out,
        "- **Load at each step**: each endpoint alone, first {first}; then {then}"
    );
    let _ = writeln!(
        out,
        "- **Rounds**: {} of {} per endpoint, per step and load model, interleaved; run order: {}",
        plan.rounds,
        humantime::format_duration(plan.round_duration),
        order.join(" ")
    );
    let _ = writeln!(
        out,
        "- **Peak RSS**: per step (all rounds of both load models), {}",
        report.result.peak_method.as_ref().map_or_else(
            || "not measured (no process ids)".to_owned(),
            PeakMethod::describe
        )
    );
    let _ = writeln!(
        out,
        "- **Request Timeout**: {}",
        humantime::format_duration(plan.timeout)
    );
    let _ = writeln!(out, "- **Test Environment**: {}", report.environment);
    let _ = writeln!(out, "- **Machine**: {}", report.machine.describe());
    let _ = writeln!(out, "- **Test Date**: {}", report.date);
    out.push_str("- **Body Verification**: every 200 body compared byte for byte with the blob generator's bytes (`shmbridge_server::blobs::blob_bytes`) and with `x-payload-crc32`\n");
    out.push_str("- **Transport**: what the gateway's `x-transport` named for the 200 responses: `api` for REST, and for shared memory the tier that carried the body (`shm-inline` in the answer, `shm-slot` in a slot of the segment, `shm-sealed` in a sealed memfd; `api-fallback` when shared memory could not serve it); with counts when several did\n");
    out.push_str("- **Figures**: medians across rounds, each column on its own; req/s counts every answer, MB/s only verified bodies (10^6 bytes/s); Errors: answers that were not a verified body, summed over rounds\n");
    out.push_str("- **Shared memory wins at a size** when every shm answer was a verified body and its p50 is not above REST's (or REST served none); the **crossover** of a pattern is the first measured size from which it wins at every larger measured size\n");
    let _ = writeln!(out, "- **Command**: `{}`\n", report.command());
}

fn sizes(out: &mut String, report: &SweepReport<'_>) {
    out.push_str("## Sizes\n\n");
    out.push_str("| Pattern | Size | Body bytes | Shared memory carried by (`x-transport`) | Peak RSS gateway (MiB) | Peak RSS users-service (MiB) | Note |\n");
    out.push_str("|---------|-----:|-----------:|------------------------------------------|-----------------------:|-----------------------------:|------|\n");
    for step in &report.result.steps {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            step.pattern,
            step.target,
            size_row(step)
        );
    }
    out.push('\n');
}

fn size_row(step: &SizeStep) -> String {
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    match &step.outcome {
        StepOutcome::Measured { peak_rss, .. } => {
            let (gateway, users_service) = peak_rss
                .map_or((NO_VALUE.into(), NO_VALUE.into()), |peak| {
                    (mib(peak.gateway_kib), mib(peak.users_service_kib))
                });
            format!(
                "{} | {} | {gateway} | {users_service} | ",
                thousands(step.target.bytes()),
                transports_text(&shm_transports(step)),
            )
        }
        StepOutcome::AboveLimit { limit } => format!(
            "{NO_VALUE} | {NO_VALUE} | {NO_VALUE} | {NO_VALUE} | above users-service's payload limit ({} bytes): not measured",
            thousands(*limit)
        ),
    }
}

fn medians(out: &mut String, sizes: &[ModelAtSize<'_>]) {
    out.push_str(
        "| Pattern | Size | Endpoint | Transport | p50 (ms) | p99 (ms) | req/s | MB/s | Requests | Errors | Corrupt |\n",
    );
    out.push_str(
        "|---------|-----:|----------|-----------|---------:|---------:|------:|-----:|---------:|-------:|--------:|\n",
    );
    for size in sizes {
        for cell in &size.cells {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                size.pattern,
                size.target,
                cell.endpoint.label(),
                size.transports(cell.endpoint),
                format_ms(cell.p50_ms),
                format_ms(cell.p99_ms),
                cell.requests_per_second,
                format_throughput(cell.megabytes_per_second),
                thousands(cell.requests),
                thousands(cell.failed),
                thousands(cell.corrupt),
            );
        }
    }
    out.push('\n');
}

fn ratios(out: &mut String, sizes: &[ModelAtSize<'_>]) {
    out.push_str("Ratios of the medians: below 1 in p50, faster; above 1 in req/s, more served. — where either side served no verified body (its figures time error answers).\n\n");
    out.push_str("| Pattern | Size | shm/REST p50 | shm/REST req/s | shm/ceiling p50 | shm/ceiling req/s | shm wins |\n");
    out.push_str("|---------|-----:|-------------:|---------------:|----------------:|------------------:|----------|\n");
    for size in sizes {
        let served = |endpoint| {
            size.cells
                .iter()
                .any(|cell| cell.endpoint == endpoint && !cell.served_nothing())
        };
        let against = |denominator| {
            shm_over(&size.ratios, denominator)
                .filter(|_| served(Endpoint::Shm) && served(denominator))
        };
        let (api, cached) = (against(Endpoint::Api), against(Endpoint::Cached));
        let shm_errors = size
            .cells
            .iter()
            .any(|cell| cell.endpoint == Endpoint::Shm && !cell.clean());
        let wins = match shm_wins(&size.cells) {
            None => NO_VALUE,
            Some(true) => "yes",
            Some(false) if shm_errors => "no (shm errors)",
            Some(false) => "no",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {wins} |",
            size.pattern,
            size.target,
            format_ratio(api.and_then(|r| r.p50)),
            format_ratio(api.and_then(|r| r.requests_per_second)),
            format_ratio(cached.and_then(|r| r.p50)),
            format_ratio(cached.and_then(|r| r.requests_per_second)),
        );
    }
    out.push('\n');
}

/// Throughput with three significant figures down to 0.001: small bodies at a low rate move
/// well under 1 MB/s.
fn format_throughput(value: f64) -> String {
    match value {
        value if value >= 100.0 => format!("{value:.0}"),
        value if value >= 10.0 => format!("{value:.1}"),
        value if value >= 1.0 => format!("{value:.2}"),
        value => format!("{value:.3}"),
    }
}

fn failures(out: &mut String, report: &SweepReport<'_>) {
    let mut rows = String::new();
    for load in report.plan.loads {
        for &pattern in &report.plan.patterns {
            for size in report.model(load, pattern) {
                for rounds in &size.result.endpoints {
                    for (failure, count) in &rounds.all.failures {
                        let _ = writeln!(
                            rows,
                            "| {pattern} | {} | {} | {} | {} | {} |",
                            size.target,
                            load.flags(),
                            rounds.endpoint.label(),
                            failure.to_string().replace('|', "\\|"),
                            thousands(*count)
                        );
                    }
                    for corruption in &rounds.all.corruption_samples {
                        let _ = writeln!(
                            rows,
                            "| {pattern} | {} | {} | {} | corrupt: {corruption} | |",
                            size.target,
                            load.flags(),
                            rounds.endpoint.label(),
                        );
                    }
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("## Errors by step and endpoint\n\n| Pattern | Size | Load | Endpoint | Error | Occurrences |\n|---------|-----:|------|----------|-------|------------:|\n");
    out.push_str(&rows);
    out.push('\n');
}

#[derive(Serialize)]
struct JsonSweep<'a> {
    mode: &'static str,
    date: &'a str,
    environment: &'a str,
    machine: &'a MachineInfo,
    command: String,
    cache: bool,
    sizes: Vec<Size>,
    patterns: Vec<&'static str>,
    /// `"all"` or the sizes in `--sizes` form.
    subset_sizes: String,
    endpoints: &'a [Endpoint],
    loads: &'a [RoundLoad; 2],
    rounds: u32,
    round_duration_seconds: f64,
    timeout_seconds: f64,
    seed: u64,
    rng_seed: u64,
    max_payload_bytes: u64,
    peak_rss_method: Option<&'a PeakMethod>,
    steps: Vec<JsonStep<'a>>,
    crossovers: Vec<JsonCrossover>,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    pattern: &'static str,
    target_bytes: Size,
    #[serde(flatten)]
    outcome: JsonOutcome<'a>,
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum JsonOutcome<'a> {
    Measured {
        /// Exactly `target_bytes`: every 200 body was checked to be that blob.
        bytes: u64,
        path: String,
        /// What shared memory's 200 responses were carried by, both load models.
        shm_transports: BTreeMap<String, u64>,
        peak_rss: Option<PeakRss>,
        models: Vec<JsonModel<'a>>,
    },
    AboveLimit {
        limit_bytes: u64,
    },
}

#[derive(Serialize)]
struct JsonModel<'a> {
    load: RoundLoad,
    cells: Vec<Cell>,
    /// Each endpoint's 200 responses by `x-transport`, over its rounds.
    transports: Vec<JsonTransports>,
    ratios: Vec<Ratio>,
    shm_wins: Option<bool>,
    failures: Vec<JsonFailure<'a>>,
}

#[derive(Serialize)]
struct JsonTransports {
    endpoint: Endpoint,
    transports: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    endpoint: Endpoint,
    #[serde(flatten)]
    failure: &'a Failure,
    occurrences: u64,
}

#[derive(Serialize)]
struct JsonCrossover {
    load: RoundLoad,
    pattern: &'static str,
    /// The size from which shm wins at every larger measured size; `null`: none.
    crossover_bytes: Option<Size>,
}

fn named(transports: &BTreeMap<Transport, u64>) -> BTreeMap<String, u64> {
    transports
        .iter()
        .map(|(transport, &count)| (transport.to_string(), count))
        .collect()
}

fn json_model<'a>(load: RoundLoad, result: &'a CapacityResult, bytes: u64) -> JsonModel<'a> {
    let cells = cells(result, bytes);
    JsonModel {
        load,
        shm_wins: shm_wins(&cells),
        cells,
        transports: result
            .endpoints
            .iter()
            .map(|rounds| JsonTransports {
                endpoint: rounds.endpoint,
                transports: named(&rounds.all.transports),
            })
            .collect(),
        ratios: result.ratios(),
        failures: result
            .endpoints
            .iter()
            .flat_map(|rounds| {
                rounds
                    .all
                    .failures
                    .iter()
                    .map(|(failure, &occurrences)| JsonFailure {
                        endpoint: rounds.endpoint,
                        failure,
                        occurrences,
                    })
            })
            .collect(),
    }
}

pub fn render_json(report: &SweepReport<'_>) -> serde_json::Result<String> {
    let plan = report.plan;
    let steps = report
        .result
        .steps
        .iter()
        .map(|step| JsonStep {
            pattern: step.pattern.as_str(),
            target_bytes: step.target,
            outcome: match &step.outcome {
                StepOutcome::Measured { sessions, peak_rss } => JsonOutcome::Measured {
                    bytes: step.target.bytes(),
                    path: UpstreamPath::blob(plan.blob(step.pattern, step.target)).to_string(),
                    shm_transports: named(&shm_transports(step)),
                    peak_rss: *peak_rss,
                    models: sessions
                        .iter()
                        .map(|(load, result)| json_model(*load, result, step.target.bytes()))
                        .collect(),
                },
                StepOutcome::AboveLimit { limit } => JsonOutcome::AboveLimit {
                    limit_bytes: *limit,
                },
            },
        })
        .collect();
    let json = JsonSweep {
        mode: "sweep",
        date: &report.date,
        environment: &report.environment,
        machine: &report.machine,
        command: report.command(),
        cache: plan.cache,
        sizes: plan.ladder.sizes().to_vec(),
        patterns: plan.patterns.iter().map(|p| p.as_str()).collect(),
        subset_sizes: plan.subset.to_string(),
        endpoints: &plan.endpoints,
        loads: &plan.loads,
        rounds: plan.rounds,
        round_duration_seconds: plan.round_duration.as_secs_f64(),
        timeout_seconds: plan.timeout.as_secs_f64(),
        seed: plan.seed,
        rng_seed: plan.rng_seed,
        max_payload_bytes: plan.max_payload,
        peak_rss_method: report.result.peak_method.as_ref(),
        steps,
        crossovers: plan
            .loads
            .iter()
            .flat_map(|&load| {
                plan.patterns.iter().map(move |&pattern| JsonCrossover {
                    load,
                    pattern: pattern.as_str(),
                    crossover_bytes: model_crossover(&report.model(load, pattern)),
                })
            })
            .collect(),
    };
    serde_json::to_string_pretty(&json)
}

/// The page: per load model, latency (p50 dark, p99 light) and throughput against size for the
/// first pattern (the one measured at every size), both axes logarithmic, then the Markdown
/// report with every pattern. Sizes where an endpoint served no verified body are left out of
/// its lines.
pub fn render_html(report: &SweepReport<'_>) -> Result<String, ChartError> {
    let size_label = |bytes: &f64| Size(bytes.round() as u64).to_string();
    let pattern = report.plan.patterns[0];
    let mut charts = Vec::new();
    for load in report.plan.loads {
        let sizes = report.model(load, pattern);
        let line = |endpoint: Endpoint, figure: fn(&Cell) -> f64| -> Vec<(f64, f64)> {
            sizes
                .iter()
                .filter_map(|size| {
                    // A cell of error answers only would chart the time of an error.
                    let cell = size
                        .cells
                        .iter()
                        .find(|cell| cell.endpoint == endpoint && !cell.served_nothing())?;
                    Some((size.target.bytes() as f64, figure(cell)))
                })
                .collect()
        };
        let mut latency: Vec<Series> = Vec::new();
        let mut throughput: Vec<Series> = Vec::new();
        let mut rate: Vec<Series> = Vec::new();
        for &endpoint in &report.plan.endpoints {
            let color = endpoint_color(endpoint);
            latency.push((
                format!("{} p50", endpoint.label()),
                color,
                line(endpoint, |c| c.p50_ms),
            ));
            latency.push((
                format!("{} p99", endpoint.label()),
                lighter(color),
                line(endpoint, |c| c.p99_ms),
            ));
            throughput.push((
                endpoint.label().to_owned(),
                color,
                line(endpoint, |c| c.megabytes_per_second),
            ));
            rate.push((
                endpoint.label().to_owned(),
                color,
                line(endpoint, |c| c.requests_per_second),
            ));
        }
        let model = format!("{} ({}), {pattern} bodies", load.name(), load.flags());
        for (chart, caption, y, series) in [
            (
                "sweep latency",
                "Latency against body size (p50 dark, p99 light)",
                "latency (ms)",
                &latency,
            ),
            (
                "sweep throughput",
                "Verified throughput against body size",
                "MB/s",
                &throughput,
            ),
            (
                "sweep rate",
                "Requests per second against body size",
                "requests/s",
                &rate,
            ),
        ] {
            charts.push(html::log_log_chart(
                chart,
                &format!("{caption}, {model}"),
                "body size",
                y,
                series,
                &size_label,
            )?);
        }
    }
    Ok(html::page(
        "shmbridge payload-size sweep",
        &charts,
        &render_markdown(report),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::loadtest::capacity::EndpointRounds;
    use crate::loadtest::capacity::summary::RoundFigures;
    use crate::loadtest::load::open_loop::OpenLoopProfile;
    use crate::loadtest::load::stats::{EndpointStats, FailureClass, Outcome};
    use crate::loadtest::sweep::SizeSubset;

    const CLOSED: RoundLoad = RoundLoad::Closed { users: 8 };
    const OPEN: RoundLoad = RoundLoad::Open(OpenLoopProfile {
        rate: 20.0,
        connections: 16,
    });

    fn plan() -> SweepPlan {
        SweepPlan {
            ladder: "1K,1M,128M".parse().unwrap(),
            patterns: vec![BlobPattern::Random, BlobPattern::Zeros],
            subset: SizeSubset::Sizes("1M".parse().unwrap()),
            endpoints: vec![Endpoint::Api, Endpoint::Shm, Endpoint::Cached],
            loads: [CLOSED, OPEN],
            rounds: 1,
            round_duration: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            seed: 28,
            rng_seed: 7,
            cache: true,
            max_payload: 64 << 20,
        }
    }

    /// One round per endpoint: (endpoint, p50 ms, requests in 2 s, failed with 507); every 200
    /// response named `transport` for shm, `api` for REST, `cached` for the ceiling.
    fn session(figures: [(Endpoint, f64, u64, u64); 3], transport: Transport) -> CapacityResult {
        CapacityResult {
            endpoints: figures
                .into_iter()
                .map(|(endpoint, p50_ms, requests, failed)| {
                    let mut all = EndpointStats::default();
                    for index in 0..requests {
                        let outcome = if index < failed {
                            Outcome::Failed(Failure {
                                class: FailureClass::Status(507),
                                detail: "Insufficient Storage".into(),
                            })
                        } else {
                            all.count_transport(Some(match endpoint {
                                Endpoint::Shm => transport,
                                Endpoint::Cached => Transport::Cached,
                                _ => Transport::Api,
                            }));
                            Outcome::Verified
                        };
                        all.record(Duration::ZERO, Duration::from_millis(1), 0, &outcome);
                    }
                    EndpointRounds {
                        endpoint,
                        rounds: vec![RoundFigures {
                            round: 1,
                            run: 1,
                            requests,
                            elapsed_seconds: 2.0,
                            requests_per_second: requests as f64 / 2.0,
                            p50_ms,
                            p99_ms: p50_ms * 2.0,
                            failed,
                            corrupt: 0,
                            cpu: None,
                        }],
                        all,
                    }
                })
                .collect(),
        }
    }

    fn measured(api: f64, shm: f64, shm_failed: u64, transport: Transport) -> StepOutcome {
        StepOutcome::Measured {
            sessions: [CLOSED, OPEN]
                .into_iter()
                .map(|load| {
                    let figures = [
                        (Endpoint::Api, api, 100, 0),
                        (Endpoint::Shm, shm, 200, shm_failed),
                        (Endpoint::Cached, shm / 2.0, 400, 0),
                    ];
                    (load, session(figures, transport))
                })
                .collect(),
            peak_rss: Some(PeakRss {
                gateway_kib: 2048,
                users_service_kib: 3072,
            }),
        }
    }

    /// random 1 KiB: shm slower than REST, inline. random 1 MiB: shm faster, clean, sealed.
    /// random 128 MiB: above the limit. zeros 1 MiB: shm faster, sealed.
    fn result() -> SweepResult {
        let step = |pattern, target, outcome| SizeStep {
            pattern,
            target,
            outcome,
        };
        SweepResult {
            steps: vec![
                step(
                    BlobPattern::Random,
                    Size(1024),
                    measured(1.0, 2.0, 0, Transport::ShmInline),
                ),
                step(
                    BlobPattern::Random,
                    Size(1 << 20),
                    measured(8.0, 4.0, 0, Transport::ShmSealed),
                ),
                step(
                    BlobPattern::Random,
                    Size(128 << 20),
                    StepOutcome::AboveLimit { limit: 64 << 20 },
                ),
                step(
                    BlobPattern::Zeros,
                    Size(1 << 20),
                    measured(8.0, 10.0, 0, Transport::ShmSealed),
                ),
            ],
            peak_method: Some(PeakMethod::HighWaterMark),
        }
    }

    fn report<'a>(plan: &'a SweepPlan, result: &'a SweepResult) -> SweepReport<'a> {
        SweepReport {
            plan,
            result,
            machine: MachineInfo::detect(),
            date: "2026-12-02T00:00:00Z".into(),
            environment: "test".into(),
        }
    }

    #[test]
    fn markdown_shows_steps_tiers_figures_ratios_crossovers_and_unmeasured_sizes() {
        let (plan, result) = (plan(), result());
        let text = render_markdown(&report(&plan, &result));
        for line in [
            "- **Sizes**: 1 KiB, 1 MiB, 128 MiB",
            "- **Patterns**: random, zeros; random at every size, zeros at the sizes also in `--subset-sizes 1M`",
            "`GET /blobs?size=N&pattern=P&seed=28`",
            "`VmHWM` from `/proc/PID/status` after the step, reset with `echo 5 > /proc/PID/clear_refs`",
            "`cargo run --release -p shmbridge-chaos -- sweep --sizes 1K,1M,128M --patterns random,zeros --subset-sizes 1M --endpoints api,shm,cached --users 8 --rate 20 --connections 16 --rounds 1 --duration 2s --timeout 10s --seed 28 --rng-seed 7 --cache`",
            "| random | 1 KiB | 1,024 | shm-inline | 2.0 | 3.0 |  |",
            "| random | 1 MiB | 1,048,576 | shm-sealed | 2.0 | 3.0 |  |",
            "| random | 128 MiB | — | — | — | — | above users-service's payload limit (67,108,864 bytes): not measured |",
            "| zeros | 1 MiB | 1,048,576 | shm-sealed |",
            "## Closed loop (`--users 8`)",
            "## Open loop (`--rate 20 --connections 16`)",
            "**Crossover, random**: **1 MiB** (shm wins there and at every larger measured size)",
            "**Crossover, zeros**: **none** (shm does not win at the largest measured size)",
            // 100 requests of 1,048,576 bytes in 2 s
            "| random | 1 MiB | REST API | api | 8.00 | 16.00 | 50.0 | 52.4 | 100 | 0 | 0 |",
            "| random | 1 MiB | Shared Memory | shm-sealed | 4.00 | 8.00 | 100.0 | 105 | 200 | 0 | 0 |",
            "| random | 1 KiB | Cached (ceiling) | cached |",
            // 200 bodies of 1,024 bytes in 2 s
            "| random | 1 KiB | Shared Memory | shm-inline | 2.00 | 4.00 | 100.0 | 0.102 | 200 | 0 | 0 |",
            "| random | 1 KiB | 2.00× | 2.00× | 2.00× | 0.50× | no |",
            "| random | 1 MiB | 0.50× | 2.00× | 2.00× | 0.50× | yes |",
            "| zeros | 1 MiB | 1.25× | 2.00× | 2.00× | 0.50× | no |",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
        assert_eq!(text.matches("**Crossover, random**").count(), 2);
        assert_eq!(text.matches("**Crossover, zeros**").count(), 2);
        assert!(!text.contains("## Errors by step"), "{text}");
    }

    #[test]
    fn errors_are_counted_per_step_and_endpoint_and_lose_the_size() {
        let plan = plan();
        let mut result = result();
        result.steps[1].outcome = measured(8.0, 0.5, 200, Transport::ShmSealed);
        let text = render_markdown(&report(&plan, &result));
        for line in [
            "**Crossover, random**: **none** (shm does not win at the largest measured size)",
            "| random | 1 MiB | Shared Memory | — | 0.50 | 1.00 | 100.0 | 0.000 | 200 | 200 | 0 |",
            // fast 507s give no ratio
            "| random | 1 MiB | — | — | — | — | no (shm errors) |",
            "| random | 1 MiB | --users 8 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
            "| random | 1 MiB | --rate 20 --connections 16 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
    }

    #[test]
    fn json_and_html_carry_every_step() {
        let (plan, result) = (plan(), result());
        let report = report(&plan, &result);
        let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(json["mode"], "sweep");
        assert_eq!(json["sizes"], serde_json::json!([1024, 1 << 20, 128 << 20]));
        assert_eq!(json["patterns"], serde_json::json!(["random", "zeros"]));
        assert_eq!(json["subset_sizes"], "1M");
        assert_eq!(json["peak_rss_method"]["method"], "high_water_mark");
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[1]["outcome"], "measured");
        assert_eq!(steps[1]["pattern"], "random");
        assert_eq!(steps[1]["bytes"], 1 << 20);
        assert_eq!(
            steps[1]["path"],
            "/blobs?size=1048576&pattern=random&seed=28"
        );
        assert_eq!(
            steps[1]["shm_transports"],
            serde_json::json!({"shm-sealed": 400})
        );
        assert_eq!(steps[1]["peak_rss"]["gateway_kib"], 2048);
        assert_eq!(steps[1]["models"][0]["shm_wins"], true);
        assert_eq!(steps[1]["models"][0]["cells"][1]["endpoint"], "shm");
        assert_eq!(
            steps[1]["models"][0]["transports"][1],
            serde_json::json!({"endpoint": "shm", "transports": {"shm-sealed": 200}})
        );
        assert_eq!(steps[2]["outcome"], "above_limit");
        assert_eq!(steps[2]["limit_bytes"], 64 << 20);
        assert_eq!(steps[3]["pattern"], "zeros");
        let crossovers = json["crossovers"].as_array().unwrap();
        assert_eq!(crossovers.len(), 4);
        assert_eq!(crossovers[0]["pattern"], "random");
        assert_eq!(crossovers[0]["crossover_bytes"], 1 << 20);
        assert_eq!(crossovers[1]["crossover_bytes"], serde_json::Value::Null);
        let html = render_html(&report).unwrap();
        // latency, MB/s and req/s for each of the two load models, of the first pattern
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(
            html.contains("\n1 MiB\n") && html.contains("Payload-size sweep"),
            "{html}"
        );
    }
}
