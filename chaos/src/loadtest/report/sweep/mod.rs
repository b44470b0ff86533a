//! The report of `sweep`: how it was run, what each (pattern, size) step became (which
//! transport and shm tier carried its bodies, the services' peak RSS), then per load model each
//! endpoint's medians at each step, the ratios of shared memory to REST and to the cached
//! ceiling, and the crossover size of each pattern; as Markdown, JSON, and an HTML page of
//! latency and throughput against size on log axes (the first pattern's, which covers the whole
//! ladder).

use std::collections::BTreeMap;

use shmbridge_server::blobs::BlobPattern;
use shmbridge_server::transport_header::Transport;

use super::machine::Provenance;
use super::transports_text;
use crate::loadtest::capacity::summary::Ratio;
use crate::loadtest::capacity::{CapacityResult, RoundLoad};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::sweep::ladder::Size;
use crate::loadtest::sweep::summary::{Cell, cells, crossover, shm_wins};
use crate::loadtest::sweep::{SizeStep, StepOutcome, SweepPlan, SweepResult};

mod chart;
mod json;
mod markdown;
#[cfg(test)]
mod tests;

pub use chart::render_html;
pub use json::render_json;
pub use markdown::render_markdown;

/// Shown where there is no figure.
const NO_VALUE: &str = "—";

/// Everything a sweep report shows.
pub struct SweepReport<'a> {
    pub plan: &'a SweepPlan,
    pub result: &'a SweepResult,
    pub provenance: Provenance,
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
