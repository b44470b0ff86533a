//! `sweep`: REST, shared memory and the cached ceiling over a ladder of exact body sizes, for
//! each data pattern. Starts the services as `compare` does and, for every (pattern, size) step,
//! asks users-service's `GET /blobs?size=N&pattern=P&seed=S` through the gateway's measuring
//! prefixes (`/via-api`, `/via-shm`, `/via-cached`), every body checked byte for byte against
//! the blob generator; runs capacity mode's interleaved rounds at that size, closed loop and then
//! open loop, measuring each service's peak RSS over the step ([`rss`]). Every response names the
//! transport that carried it (`x-transport`: for shared memory the tier, inline, slot or
//! sealed), which the report shows per size. A size above users-service's payload limit and
//! answers that are errors are reported, never a reason to stop. The arithmetic is in
//! [`summary`], the rendering in `report::sweep`.
//!
//! The first pattern is measured at every size of the ladder; the others only at the sizes also
//! listed in `--subset-sizes` (by default one in each tier: the full matrix of 17 sizes × 3
//! patterns would triple a sweep's 25 minutes).

pub mod ladder;
pub mod rss;
pub mod summary;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use shmbridge::ProducerOptions;
use shmbridge_server::blobs::{BlobPattern, BlobQuery};
use shmbridge_server::dataset::DEFAULT_SEED;

use crate::loadtest::capacity::{self, CapacityPlan, CapacityResult, RoundLoad};
use crate::loadtest::cli::OutputArgs;
use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::request::RequestContext;
use crate::loadtest::load::stats::Outcome;
use crate::loadtest::load::target::{RequestMix, Resource, UpstreamPath};
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{self, LoadConfig, LoadError, LoadModel};
use crate::loadtest::services::{ServiceArgs, Services, ServicesError};
use ladder::{DEFAULT_LADDER, Ladder, Size};
use rss::{PeakMethod, PeakRss, PeakStep};

/// The patterns a sweep measures unless told otherwise: all three, `random` first (so at every
/// size).
pub const DEFAULT_PATTERNS: &str = "random,zeros,text";

/// The sizes the patterns after the first are measured at by default: one in each tier of the
/// control channel (4 KiB inline in the answer, 256 KiB in a slot, 4 MiB in a sealed memfd).
pub const DEFAULT_SUBSET_SIZES: &str = "4K,256K,4M";

#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    /// Payload sizes: comma-separated sizes in binary units (1K = 1,024 bytes) or doubling
    /// ranges FROM..TO, e.g. `1K,64K,1M` or `1K..64M`. Each is the exact body size asked of
    /// `/blobs`.
    #[arg(long, default_value = DEFAULT_LADDER)]
    pub sizes: Ladder,
    /// Blob patterns (`random`, `zeros`, `text`), in report order: the first is measured at
    /// every size of `--sizes`, the others at the sizes also in `--subset-sizes`.
    #[arg(long, default_value = DEFAULT_PATTERNS)]
    pub patterns: Patterns,
    /// The sizes the patterns after the first are measured at (those of `--sizes` also listed
    /// here; by default one in each tier: inline, slot, sealed), or `all` for the full matrix.
    #[arg(long, default_value = DEFAULT_SUBSET_SIZES)]
    pub subset_sizes: SizeSubset,
    /// Endpoints, each alone in its rounds; weights are ignored; shm-http cannot carry /blobs
    /// [default: api,shm,cached, and published under --cache]
    #[arg(long)]
    pub endpoints: Option<EndpointMix>,
    /// Closed loop: simulated users with no think time. Fewer than the seed's 50 by default: at
    /// 64 MiB every user holds a body in flight in each process on its path.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Open loop: requests per second, the same at every size.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Open loop: requests in flight at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Rounds per size and load model, each running every endpoint once (api shm cached api ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// How long each endpoint runs in each round: `short` (2s), `standard` (5s) or a duration.
    #[arg(long, default_value = "standard")]
    pub duration: RoundDuration,
    /// Per request; a request past it counts as a timeout failure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Blob seed (`seed` query parameter of `/blobs`).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Seed for the open loop's endpoint picks; random if not given (the report prints it).
    #[arg(long)]
    pub rng_seed: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// How long each endpoint runs in each round of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundDuration(pub Duration);

impl FromStr for RoundDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = match text {
            "short" => Duration::from_secs(2),
            "standard" => Duration::from_secs(5),
            other => humantime::parse_duration(other).map_err(|error| {
                format!("{other:?} is neither short, standard nor a duration: {error}")
            })?,
        };
        if duration.is_zero() {
            return Err("a round must last longer than 0".into());
        }
        Ok(RoundDuration(duration))
    }
}

impl fmt::Display for RoundDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The blob patterns of a sweep, in order, each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patterns(pub Vec<BlobPattern>);

impl FromStr for Patterns {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut patterns = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let pattern: BlobPattern = item.parse().map_err(|error| format!("{error}"))?;
            if patterns.contains(&pattern) {
                return Err(format!("pattern {pattern} listed twice"));
            }
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Err("no patterns listed".into());
        }
        Ok(Patterns(patterns))
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|pattern| pattern.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// The sizes the patterns after the first are measured at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeSubset {
    /// Every size of the ladder.
    All,
    /// The ladder's sizes that are also these.
    Sizes(Ladder),
}

impl SizeSubset {
    fn contains(&self, size: Size) -> bool {
        match self {
            SizeSubset::All => true,
            SizeSubset::Sizes(ladder) => ladder.sizes().contains(&size),
        }
    }
}

impl FromStr for SizeSubset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "all" => Ok(SizeSubset::All),
            sizes => sizes
                .parse()
                .map(SizeSubset::Sizes)
                .map_err(|error: ladder::LadderError| error.to_string()),
        }
    }
}

impl fmt::Display for SizeSubset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSubset::All => f.write_str("all"),
            SizeSubset::Sizes(ladder) => fmt::Display::fmt(ladder, f),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("sweep writes no CSV (its rows are sizes, not Locust's); use --json")]
    CsvUnsupported,
}

/// What a sweep runs at every step.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPlan {
    pub ladder: Ladder,
    /// The first at every size, the others at the sizes of `subset`.
    pub patterns: Vec<BlobPattern>,
    pub subset: SizeSubset,
    /// In the order each round runs them.
    pub endpoints: Vec<Endpoint>,
    /// The closed-loop model, then the open-loop one.
    pub loads: [RoundLoad; 2],
    pub rounds: u32,
    pub round_duration: Duration,
    pub timeout: Duration,
    /// The blob seed.
    pub seed: u64,
    pub rng_seed: u64,
    pub cache: bool,
    /// The largest body users-service serves (its default `--max-payload`): larger sizes are
    /// reported, not measured.
    pub max_payload: u64,
}

impl SweepPlan {
    pub fn from_args(args: &SweepArgs) -> Self {
        SweepPlan {
            ladder: args.sizes.clone(),
            patterns: args.patterns.0.clone(),
            subset: args.subset_sizes.clone(),
            endpoints: args.endpoints.as_ref().map_or_else(
                || capacity::default_endpoints(args.services.cache),
                EndpointMix::endpoints,
            ),
            loads: [
                RoundLoad::Closed { users: args.users },
                RoundLoad::Open(OpenLoopProfile {
                    rate: args.rate,
                    connections: args.connections,
                }),
            ],
            rounds: args.rounds,
            round_duration: args.duration.0,
            timeout: args.timeout,
            seed: args.seed,
            rng_seed: args.rng_seed.unwrap_or_else(rand::random),
            cache: args.services.cache,
            max_payload: ProducerOptions::default().max_payload as u64,
        }
    }

    /// Every (pattern, size) to measure, pattern by pattern in the plan's order, each pattern's
    /// sizes ascending.
    pub fn steps(&self) -> Vec<(BlobPattern, Size)> {
        self.patterns
            .iter()
            .enumerate()
            .flat_map(|(index, &pattern)| {
                self.ladder
                    .sizes()
                    .iter()
                    .filter(move |&&size| index == 0 || self.subset.contains(size))
                    .map(move |&size| (pattern, size))
            })
            .collect()
    }

    /// The blob of one step.
    pub fn blob(&self, pattern: BlobPattern, size: Size) -> BlobQuery {
        BlobQuery {
            size: size.bytes(),
            pattern,
            seed: self.seed,
        }
    }

    /// The capacity session of one load model at one step.
    fn session(&self, load: RoundLoad) -> CapacityPlan {
        CapacityPlan {
            endpoints: self.endpoints.clone(),
            load,
            rounds: self.rounds,
            round_duration: self.round_duration,
        }
    }

    /// What every run of the blob `path` shares; each round sets its own model, endpoint and
    /// duration.
    fn base_config(&self, target: url::Url, path: UpstreamPath) -> LoadConfig {
        LoadConfig {
            target,
            model: LoadModel::Users(UsersProfile {
                users: 1,
                spawn_rate: 1.0,
                think: ThinkTime::NONE,
            }),
            duration: self.round_duration,
            mix: EndpointMix::only(Endpoint::Api),
            timeout: self.timeout,
            requests: RequestMix::path(path),
            seed: self.seed,
            rng_seed: self.rng_seed,
        }
    }
}

/// One (pattern, size) step and what became of it.
#[derive(Clone, Debug)]
pub struct SizeStep {
    pub pattern: BlobPattern,
    pub target: Size,
    pub outcome: StepOutcome,
}

#[derive(Clone, Debug)]
pub enum StepOutcome {
    /// Measured: one capacity session per load model, in the plan's order.
    Measured {
        sessions: Vec<(RoundLoad, CapacityResult)>,
        /// Over the whole step, both models; `None` if it could not be read.
        peak_rss: Option<PeakRss>,
    },
    /// The size is above users-service's payload limit (`limit` bytes): not asked.
    AboveLimit { limit: u64 },
}

/// Everything a sweep measured.
#[derive(Clone, Debug)]
pub struct SweepResult {
    pub steps: Vec<SizeStep>,
    /// How the peaks were measured; `None` without the services' process ids.
    pub peak_method: Option<PeakMethod>,
}

impl SweepResult {
    pub fn corrupt(&self) -> u64 {
        self.steps
            .iter()
            .filter_map(|step| match &step.outcome {
                StepOutcome::Measured { sessions, .. } => Some(
                    sessions
                        .iter()
                        .map(|(_, result)| result.corrupt())
                        .sum::<u64>(),
                ),
                StepOutcome::AboveLimit { .. } => None,
            })
            .sum()
    }
}

/// A finished sweep, with the services already stopped.
pub struct SweepRun {
    pub plan: SweepPlan,
    pub result: SweepResult,
    /// Where the services ran, for the report.
    pub environment: String,
}

/// Runs the whole sweep and returns what it measured; the caller writes the report.
pub async fn run(args: &SweepArgs) -> Result<SweepRun, SweepError> {
    if args.output.csv.is_some() {
        return Err(SweepError::CsvUnsupported);
    }
    let plan = SweepPlan::from_args(args);
    // Refused before any service starts: an endpoint with no route for a path (shm-http).
    let any_blob = UpstreamPath::blob(plan.blob(plan.patterns[0], plan.ladder.sizes()[0]));
    load::check_routes(&plan.endpoints, &RequestMix::path(any_blob))?;
    args.services.check_endpoints(&plan.endpoints)?;
    let services = Services::start(&args.services, false, args.timeout, "sweep").await?;
    let result = measure(&plan, &services, args).await;
    let environment = services.describe();
    services.stop().await?;
    Ok(SweepRun {
        plan,
        result: result?,
        environment,
    })
}

async fn measure(
    plan: &SweepPlan,
    services: &Services,
    args: &SweepArgs,
) -> Result<SweepResult, SweepError> {
    let processes = services.processes();
    let peak_method = processes.map(PeakMethod::detect);
    let mut steps = Vec::new();
    let planned = plan.steps();
    for (index, &(pattern, target)) in planned.iter().enumerate() {
        let position = format!("step {}/{} ({pattern}, {target})", index + 1, planned.len());
        if target.bytes() > plan.max_payload {
            eprintln!(
                "{position}: above users-service's payload limit of {} bytes, not measured",
                plan.max_payload
            );
            steps.push(SizeStep {
                pattern,
                target,
                outcome: StepOutcome::AboveLimit {
                    limit: plan.max_payload,
                },
            });
            continue;
        }
        let path = UpstreamPath::blob(plan.blob(pattern, target));
        eprintln!("{position}: {path}");
        let base = plan.base_config(services.gateway.base_url(), path);
        // A checker per step: it holds the step's expected body (up to 64 MiB) only while the
        // step runs.
        let checker = Arc::new(BodyChecker::new(shmbridge_server::dataset::users_json));
        warm_up(plan, &base, &checker, &position).await?;
        let peak = processes
            .zip(peak_method.as_ref())
            .map(|(processes, method)| PeakStep::start(method, processes));
        let mut sessions = Vec::new();
        for load in plan.loads {
            eprintln!("{position}: {load}");
            let session = plan.session(load);
            let result =
                capacity::run(&session, &base, &checker, args.output.progress, processes).await?;
            sessions.push((load, result));
        }
        let peak_rss = match peak {
            Some(step) => step.finish().await,
            None => None,
        };
        steps.push(SizeStep {
            pattern,
            target,
            outcome: StepOutcome::Measured { sessions, peak_rss },
        });
    }
    Ok(SweepResult { steps, peak_method })
}

/// One unmeasured request per endpoint before a step's rounds, so every path has made and
/// kept what it keeps (the gateway's cached body for the ceiling): the rounds then measure
/// moving a body, and the ceiling is not timed making its own.
async fn warm_up(
    plan: &SweepPlan,
    base: &LoadConfig,
    checker: &Arc<BodyChecker>,
    position: &str,
) -> Result<(), SweepError> {
    let resources: Vec<Resource> = base.requests.resources();
    let context = RequestContext::new(
        &base.target,
        &plan.endpoints,
        &resources,
        base.seed,
        1,
        Arc::clone(checker),
    )
    .map_err(LoadError::from)?;
    for &endpoint in &plan.endpoints {
        for resource in &resources {
            let deadline = tokio::time::Instant::now() + plan.timeout;
            let completed = context.execute(endpoint, resource, deadline).await;
            if !matches!(completed.outcome, Outcome::Verified) {
                eprintln!(
                    "{position}: warm-up request to {endpoint} gave no verified body: {:?}",
                    completed.outcome
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_durations_are_named_or_given() {
        let parse = |text: &str| text.parse::<RoundDuration>().map(|d| d.0);
        assert_eq!(parse("short"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("standard"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("750ms"), Ok(Duration::from_millis(750)));
        assert!(parse("0s").is_err());
        assert!(parse("long").is_err());
    }

    #[test]
    fn patterns_are_listed_once_each_in_order() {
        let patterns: Patterns = DEFAULT_PATTERNS.parse().unwrap();
        assert_eq!(patterns.0, BlobPattern::ALL);
        assert_eq!(patterns.to_string(), DEFAULT_PATTERNS);
        assert_eq!(
            "text, random".parse::<Patterns>().unwrap().0,
            [BlobPattern::Text, BlobPattern::Random]
        );
        for bad in ["", "random,random", "noise"] {
            assert!(bad.parse::<Patterns>().is_err(), "{bad:?} accepted");
        }
    }

    fn plan(ladder: &str, patterns: &str, subset: &str) -> SweepPlan {
        SweepPlan {
            ladder: ladder.parse().unwrap(),
            patterns: patterns.parse::<Patterns>().unwrap().0,
            subset: subset.parse().unwrap(),
            endpoints: capacity::DEFAULT_ENDPOINTS.to_vec(),
            loads: [
                RoundLoad::Closed { users: 8 },
                RoundLoad::Open(OpenLoopProfile {
                    rate: 20.0,
                    connections: 16,
                }),
            ],
            rounds: 3,
            round_duration: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            seed: 28,
            rng_seed: 1,
            cache: false,
            max_payload: 64 << 20,
        }
    }

    #[test]
    fn the_first_pattern_runs_the_ladder_and_the_others_its_subset() {
        let default = plan(DEFAULT_LADDER, DEFAULT_PATTERNS, DEFAULT_SUBSET_SIZES);
        let steps = default.steps();
        // 17 sizes of random, then 4 KiB, 256 KiB and 4 MiB of zeros and of text.
        assert_eq!(steps.len(), 17 + 3 + 3);
        assert!(
            steps[..17]
                .iter()
                .all(|(pattern, _)| *pattern == BlobPattern::Random)
        );
        let zeros: Vec<u64> = steps[17..20].iter().map(|(_, size)| size.bytes()).collect();
        assert_eq!(zeros, [4 << 10, 256 << 10, 4 << 20]);
        assert_eq!(steps[20].0, BlobPattern::Text);

        let all = plan("1K,1M", "zeros,text", "all").steps();
        assert_eq!(
            all,
            [
                (BlobPattern::Zeros, Size(1024)),
                (BlobPattern::Zeros, Size(1 << 20)),
                (BlobPattern::Text, Size(1024)),
                (BlobPattern::Text, Size(1 << 20)),
            ]
        );
        // A subset size not on the ladder is not measured.
        assert_eq!(plan("1K", "random,text", "4K").steps().len(), 1);
        assert_eq!("all".parse::<SizeSubset>().unwrap().to_string(), "all");
        assert!("4Q".parse::<SizeSubset>().is_err());
    }

    #[test]
    fn a_step_asks_for_its_exact_blob() {
        let plan = plan("1K", "text", "all");
        let config = plan.base_config(
            "http://127.0.0.1:1".parse().unwrap(),
            UpstreamPath::blob(plan.blob(BlobPattern::Text, Size(1500))),
        );
        assert_eq!(
            config.route(Endpoint::Shm),
            "/via-shm/blobs?size=1500&pattern=text&seed=28"
        );
        assert_eq!(
            config.route(Endpoint::Cached),
            "/via-cached/blobs?size=1500&pattern=text&seed=28"
        );
    }
}
