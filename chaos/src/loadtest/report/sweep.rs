//! The report of `sweep`: how it was run, what each size became (its count, body and the
//! services' peak RSS), then per load model each endpoint's medians at each size, the ratios of
//! shared memory to REST and to the cached ceiling, and the crossover size; as Markdown, JSON,
//! and an HTML page of latency and throughput against size on log axes.

use std::fmt::Write as _;

use serde::Serialize;

use super::capacity::format_ratio;
use super::html::{self, ChartError, Series, endpoint_color, lighter};
use super::machine::MachineInfo;
use super::{format_ms, thousands};
use crate::loadtest::capacity::summary::{Ratio, schedule};
use crate::loadtest::capacity::{CapacityResult, RoundLoad};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::Failure;
use crate::loadtest::sweep::count_search::{Fit, Reach};
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

/// One load model at one measured size.
struct ModelAtSize<'a> {
    target: Size,
    fit: Fit,
    cells: Vec<Cell>,
    ratios: Vec<Ratio>,
    result: &'a CapacityResult,
}

impl SweepReport<'_> {
    /// The command that repeats this sweep.
    fn command(&self) -> String {
        let plan = self.plan;
        let endpoints: Vec<String> = plan.endpoints.iter().map(|e| e.to_string()).collect();
        let loads: Vec<String> = plan.loads.iter().map(|load| load.flags()).collect();
        format!(
            "cargo run --release -p shmbridge-chaos -- sweep --sizes {} --endpoints {} {} --rounds {} --duration {} --timeout {} --seed {} --rng-seed {}{}",
            plan.ladder,
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

    /// Each measured size's session under `load`, in ladder order.
    fn model(&self, load: RoundLoad) -> Vec<ModelAtSize<'_>> {
        self.result
            .steps
            .iter()
            .filter_map(|step| {
                let StepOutcome::Measured { fit, sessions, .. } = &step.outcome else {
                    return None;
                };
                let (_, result) = sessions.iter().find(|(l, _)| *l == load)?;
                Some(ModelAtSize {
                    target: step.target,
                    fit: *fit,
                    cells: cells(result, fit.bytes),
                    ratios: result.ratios(),
                    result,
                })
            })
            .collect()
    }
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
        let sizes = report.model(load);
        let _ = writeln!(
            out,
            "## {} (`{}`)\n",
            capitalized(load.name()),
            load.flags()
        );
        let _ = writeln!(out, "**Crossover**: {}\n", describe_crossover(&sizes));
        medians(&mut out, &sizes);
        ratios(&mut out, &sizes);
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
    let _ = writeln!(
        out,
        "- **Count per size**: the `count` whose body is the largest not above the size, from the `Content-Length` users-service answers for `GET /users` ({} probes in all); a size no accepted count reaches is reported unreachable, not measured",
        report.result.probes
    );
    let [first, then] = &plan.loads;
    let _ = writeln!(
        out,
        "- **Load at each size**: each endpoint alone, first {first}; then {then}"
    );
    let _ = writeln!(
        out,
        "- **Rounds**: {} of {} per endpoint, per size and load model, interleaved; run order: {}",
        plan.rounds,
        humantime::format_duration(plan.round_duration),
        order.join(" ")
    );
    let _ = writeln!(
        out,
        "- **Bodies**: {}",
        if plan.cache {
            "serialized once and cached by users-service (`--cache`), on every path"
        } else {
            "serialized per request, as in the seed (no `--cache`)"
        }
    );
    let _ = writeln!(
        out,
        "- **Peak RSS**: per size step (all rounds of both load models), {}",
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
    out.push_str("- **Body Verification**: every 200 body compared byte for byte with the expected payload and with `x-payload-crc32`\n");
    out.push_str("- **Figures**: medians across rounds, each column on its own; req/s counts every answer, MB/s only verified bodies (10^6 bytes/s); Errors: answers that were not a verified body, summed over rounds\n");
    out.push_str("- **Shared memory wins at a size** when every shm answer was a verified body and its p50 is not above REST's (or REST served none); the **crossover** is the first measured size from which it wins at every larger measured size\n");
    let _ = writeln!(out, "- **Command**: `{}`\n", report.command());
}

fn sizes(out: &mut String, report: &SweepReport<'_>) {
    out.push_str("## Sizes\n\n");
    out.push_str("| Size | Count | Body bytes | Peak RSS gateway (MiB) | Peak RSS users-service (MiB) | Note |\n");
    out.push_str("|-----:|------:|-----------:|-----------------------:|-----------------------------:|------|\n");
    for step in &report.result.steps {
        let _ = writeln!(out, "| {} | {} |", step.target, size_row(step));
    }
    out.push('\n');
}

fn size_row(step: &SizeStep) -> String {
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    match &step.outcome {
        StepOutcome::Measured { fit, peak_rss, .. } => {
            let (gateway, users_service) = peak_rss
                .map_or((NO_VALUE.into(), NO_VALUE.into()), |peak| {
                    (mib(peak.gateway_kib), mib(peak.users_service_kib))
                });
            format!(
                "{} | {} | {gateway} | {users_service} | ",
                thousands(u64::from(fit.count)),
                thousands(fit.bytes)
            )
        }
        StepOutcome::Unreachable(reach) => {
            format!("{NO_VALUE} | {NO_VALUE} | {NO_VALUE} | {NO_VALUE} | {reach}")
        }
        StepOutcome::ProbeFailed(reason) => format!(
            "{NO_VALUE} | {NO_VALUE} | {NO_VALUE} | {NO_VALUE} | probe failed: {}",
            reason.replace('|', "\\|")
        ),
    }
}

fn medians(out: &mut String, sizes: &[ModelAtSize<'_>]) {
    out.push_str(
        "| Size | Endpoint | p50 (ms) | p99 (ms) | req/s | MB/s | Requests | Errors | Corrupt |\n",
    );
    out.push_str(
        "|-----:|----------|---------:|---------:|------:|-----:|---------:|-------:|--------:|\n",
    );
    for size in sizes {
        for cell in &size.cells {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                size.target,
                cell.endpoint.label(),
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
    out.push_str("| Size | shm/REST p50 | shm/REST req/s | shm/ceiling p50 | shm/ceiling req/s | shm wins |\n");
    out.push_str("|-----:|-------------:|---------------:|----------------:|------------------:|----------|\n");
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
            "| {} | {} | {} | {} | {} | {wins} |",
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
        for size in report.model(load) {
            for rounds in &size.result.endpoints {
                for (failure, count) in &rounds.all.failures {
                    let _ = writeln!(
                        rows,
                        "| {} | {} | {} | {} | {} |",
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
                        "| {} | {} | {} | corrupt: {corruption} | |",
                        size.target,
                        load.flags(),
                        rounds.endpoint.label(),
                    );
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("## Errors by size and endpoint\n\n| Size | Load | Endpoint | Error | Occurrences |\n|-----:|------|----------|-------|------------:|\n");
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
    endpoints: &'a [Endpoint],
    loads: &'a [RoundLoad; 2],
    rounds: u32,
    round_duration_seconds: f64,
    timeout_seconds: f64,
    seed: u64,
    rng_seed: u64,
    probes: u32,
    peak_rss_method: Option<&'a PeakMethod>,
    steps: Vec<JsonStep<'a>>,
    crossovers: Vec<JsonCrossover>,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    target_bytes: Size,
    #[serde(flatten)]
    outcome: JsonOutcome<'a>,
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum JsonOutcome<'a> {
    Measured {
        count: u32,
        bytes: u64,
        peak_rss: Option<PeakRss>,
        models: Vec<JsonModel<'a>>,
    },
    Unreachable {
        reach: Reach,
    },
    ProbeFailed {
        reason: &'a str,
    },
}

#[derive(Serialize)]
struct JsonModel<'a> {
    load: RoundLoad,
    cells: Vec<Cell>,
    ratios: Vec<Ratio>,
    shm_wins: Option<bool>,
    failures: Vec<JsonFailure<'a>>,
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
    /// The size from which shm wins at every larger measured size; `null`: none.
    crossover_bytes: Option<Size>,
}

pub fn render_json(report: &SweepReport<'_>) -> serde_json::Result<String> {
    let plan = report.plan;
    let steps = report
        .result
        .steps
        .iter()
        .map(|step| JsonStep {
            target_bytes: step.target,
            outcome: match &step.outcome {
                StepOutcome::Measured {
                    fit,
                    sessions,
                    peak_rss,
                } => JsonOutcome::Measured {
                    count: fit.count,
                    bytes: fit.bytes,
                    peak_rss: *peak_rss,
                    models: sessions
                        .iter()
                        .map(|(load, result)| {
                            let cells = cells(result, fit.bytes);
                            JsonModel {
                                load: *load,
                                shm_wins: shm_wins(&cells),
                                cells,
                                ratios: result.ratios(),
                                failures: result
                                    .endpoints
                                    .iter()
                                    .flat_map(|rounds| {
                                        rounds.all.failures.iter().map(|(failure, &occurrences)| {
                                            JsonFailure {
                                                endpoint: rounds.endpoint,
                                                failure,
                                                occurrences,
                                            }
                                        })
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                },
                StepOutcome::Unreachable(reach) => JsonOutcome::Unreachable { reach: *reach },
                StepOutcome::ProbeFailed(reason) => JsonOutcome::ProbeFailed { reason },
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
        endpoints: &plan.endpoints,
        loads: &plan.loads,
        rounds: plan.rounds,
        round_duration_seconds: plan.round_duration.as_secs_f64(),
        timeout_seconds: plan.timeout.as_secs_f64(),
        seed: plan.seed,
        rng_seed: plan.rng_seed,
        probes: report.result.probes,
        peak_rss_method: report.result.peak_method.as_ref(),
        steps,
        crossovers: plan
            .loads
            .iter()
            .map(|&load| JsonCrossover {
                load,
                crossover_bytes: model_crossover(&report.model(load)),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&json)
}

/// The page: per load model, latency (p50 dark, p99 light) and throughput against size, both
/// axes logarithmic, then the Markdown report. Sizes where an endpoint served no verified body
/// are left out of its lines.
pub fn render_html(report: &SweepReport<'_>) -> Result<String, ChartError> {
    let size_label = |bytes: &f64| Size(bytes.round() as u64).to_string();
    let mut charts = Vec::new();
    for load in report.plan.loads {
        let sizes = report.model(load);
        let line = |endpoint: Endpoint, figure: fn(&Cell) -> f64| -> Vec<(f64, f64)> {
            sizes
                .iter()
                .filter_map(|size| {
                    // A cell of error answers only would chart the time of an error.
                    let cell = size
                        .cells
                        .iter()
                        .find(|cell| cell.endpoint == endpoint && !cell.served_nothing())?;
                    Some((size.fit.bytes as f64, figure(cell)))
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
        let model = format!("{} ({})", load.name(), load.flags());
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

    const CLOSED: RoundLoad = RoundLoad::Closed { users: 8 };
    const OPEN: RoundLoad = RoundLoad::Open(OpenLoopProfile {
        rate: 20.0,
        connections: 16,
    });

    fn plan() -> SweepPlan {
        SweepPlan {
            ladder: "1K,1M,4M".parse().unwrap(),
            endpoints: vec![Endpoint::Api, Endpoint::Shm, Endpoint::Cached],
            loads: [CLOSED, OPEN],
            rounds: 1,
            round_duration: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            seed: 28,
            rng_seed: 7,
            cache: true,
        }
    }

    /// One round per endpoint: (endpoint, p50 ms, requests in 2 s, failed with 507).
    fn session(figures: [(Endpoint, f64, u64, u64); 3]) -> CapacityResult {
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

    /// 1 KiB: shm slower than REST. 1 MiB: shm faster, clean. 4 MiB: above the cap.
    fn result() -> SweepResult {
        let measured =
            |bytes: u64, count: u32, api: f64, shm: f64, shm_failed: u64| StepOutcome::Measured {
                fit: Fit { count, bytes },
                sessions: [CLOSED, OPEN]
                    .into_iter()
                    .map(|load| {
                        let figures = [
                            (Endpoint::Api, api, 100, 0),
                            (Endpoint::Shm, shm, 200, shm_failed),
                            (Endpoint::Cached, shm / 2.0, 400, 0),
                        ];
                        (load, session(figures))
                    })
                    .collect(),
                peak_rss: Some(PeakRss {
                    gateway_kib: 2048,
                    users_service_kib: 3072,
                }),
            };
        SweepResult {
            steps: vec![
                SizeStep {
                    target: Size(1024),
                    outcome: measured(1_000, 2, 1.0, 2.0, 0),
                },
                SizeStep {
                    target: Size(1 << 20),
                    outcome: measured(1_048_000, 2_883, 8.0, 4.0, 0),
                },
                SizeStep {
                    target: Size(4 << 20),
                    outcome: StepOutcome::Unreachable(Reach::AboveCap {
                        largest: Some(Fit {
                            count: 10_000,
                            bytes: 3_633_046,
                        }),
                    }),
                },
            ],
            peak_method: Some(PeakMethod::HighWaterMark),
            probes: 23,
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
    fn markdown_shows_sizes_figures_ratios_crossover_and_unreachable_sizes() {
        let (plan, result) = (plan(), result());
        let text = render_markdown(&report(&plan, &result));
        for line in [
            "- **Sizes**: 1 KiB, 1 MiB, 4 MiB",
            "(23 probes in all)",
            "`VmHWM` from `/proc/PID/status` after the step, reset with `echo 5 > /proc/PID/clear_refs`",
            "`cargo run --release -p shmbridge-chaos -- sweep --sizes 1K,1M,4M --endpoints api,shm,cached --users 8 --rate 20 --connections 16 --rounds 1 --duration 2s --timeout 10s --seed 28 --rng-seed 7 --cache`",
            "| 1 KiB | 2 | 1,000 | 2.0 | 3.0 |  |",
            "| 4 MiB | — | — | — | — | unreachable: cap (the largest count users-service accepts, 10000, gives 3633046 bytes) |",
            "## Closed loop (`--users 8`)",
            "## Open loop (`--rate 20 --connections 16`)",
            "**Crossover**: **1 MiB** (shm wins there and at every larger measured size)",
            // 100 requests of 1,048,000 bytes in 2 s
            "| 1 MiB | REST API | 8.00 | 16.00 | 50.0 | 52.4 | 100 | 0 | 0 |",
            "| 1 MiB | Shared Memory | 4.00 | 8.00 | 100.0 | 105 | 200 | 0 | 0 |",
            // 200 bodies of 1,000 bytes in 2 s
            "| 1 KiB | Shared Memory | 2.00 | 4.00 | 100.0 | 0.100 | 200 | 0 | 0 |",
            "| 1 KiB | 2.00× | 2.00× | 2.00× | 0.50× | no |",
            "| 1 MiB | 0.50× | 2.00× | 2.00× | 0.50× | yes |",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
        assert_eq!(text.matches("**Crossover**").count(), 2);
        assert!(!text.contains("## Errors by size"), "{text}");
    }

    #[test]
    fn errors_are_counted_per_size_and_endpoint_and_lose_the_size() {
        let plan = plan();
        let mut result = result();
        result.steps[1].outcome = match result.steps[1].outcome.clone() {
            StepOutcome::Measured {
                fit,
                sessions,
                peak_rss,
            } => StepOutcome::Measured {
                fit,
                sessions: sessions
                    .into_iter()
                    .map(|(load, _)| {
                        let figures = [
                            (Endpoint::Api, 8.0, 100, 0),
                            (Endpoint::Shm, 0.5, 200, 200),
                            (Endpoint::Cached, 1.0, 400, 0),
                        ];
                        (load, session(figures))
                    })
                    .collect(),
                peak_rss,
            },
            other => other,
        };
        let text = render_markdown(&report(&plan, &result));
        for line in [
            "**Crossover**: **none** (shm does not win at the largest measured size)",
            "| 1 MiB | Shared Memory | 0.50 | 1.00 | 100.0 | 0.000 | 200 | 200 | 0 |",
            // fast 507s give no ratio
            "| 1 MiB | — | — | — | — | no (shm errors) |",
            "| 1 MiB | --users 8 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
            "| 1 MiB | --rate 20 --connections 16 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
    }

    #[test]
    fn json_and_html_carry_every_size() {
        let (plan, result) = (plan(), result());
        let report = report(&plan, &result);
        let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(json["mode"], "sweep");
        assert_eq!(json["sizes"], serde_json::json!([1024, 1 << 20, 4 << 20]));
        assert_eq!(json["peak_rss_method"]["method"], "high_water_mark");
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps[1]["outcome"], "measured");
        assert_eq!(steps[1]["count"], 2_883);
        assert_eq!(steps[1]["peak_rss"]["gateway_kib"], 2048);
        assert_eq!(steps[1]["models"][0]["shm_wins"], true);
        assert_eq!(steps[1]["models"][0]["cells"][1]["endpoint"], "shm");
        assert_eq!(steps[2]["outcome"], "unreachable");
        assert_eq!(steps[2]["reach"]["reach"], "above_cap");
        assert_eq!(json["crossovers"][0]["crossover_bytes"], 1 << 20);
        let html = render_html(&report).unwrap();
        // latency, MB/s and req/s for each of the two load models
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(
            html.contains("\n1 MiB\n") && html.contains("Payload-size sweep"),
            "{html}"
        );
    }
}
