//! The sweep report as JSON: the plan, every step with its outcome, per load model each
//! endpoint's figures and ratios, and the crossover sizes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{SweepReport, model_crossover, shm_transports};
use crate::loadtest::capacity::summary::Ratio;
use crate::loadtest::capacity::{CapacityResult, RoundLoad};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::target::UpstreamPath;
use crate::loadtest::report::json::{JsonFailure, json_failures, json_transports};
use crate::loadtest::report::machine::Provenance;
use crate::loadtest::sweep::StepOutcome;
use crate::loadtest::sweep::ladder::Size;
use crate::loadtest::sweep::rss::{PeakMethod, PeakRss};
use crate::loadtest::sweep::summary::{Cell, cells, shm_wins};

#[derive(Serialize)]
struct JsonSweep<'a> {
    mode: &'static str,
    #[serde(flatten)]
    provenance: &'a Provenance,
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
    failures: Vec<JsonEndpointFailure<'a>>,
}

#[derive(Serialize)]
struct JsonTransports {
    endpoint: Endpoint,
    transports: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonEndpointFailure<'a> {
    endpoint: Endpoint,
    #[serde(flatten)]
    failure: JsonFailure<'a>,
}

#[derive(Serialize)]
struct JsonCrossover {
    load: RoundLoad,
    pattern: &'static str,
    /// The size from which shm wins at every larger measured size; `null`: none.
    crossover_bytes: Option<Size>,
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
                transports: json_transports(&rounds.all.transports),
            })
            .collect(),
        ratios: result.ratios(),
        failures: result
            .endpoints
            .iter()
            .flat_map(|rounds| {
                json_failures(&rounds.all.failures)
                    .into_iter()
                    .map(|failure| JsonEndpointFailure {
                        endpoint: rounds.endpoint,
                        failure,
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
                    shm_transports: json_transports(&shm_transports(step)),
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
        provenance: &report.provenance,
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
