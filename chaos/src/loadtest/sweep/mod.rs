//! `sweep`: REST, shared memory and the cached ceiling over a ladder of payload sizes. Starts
//! the services as `compare` does, finds for each size the `count` whose body is the largest
//! not above it ([`count_search`]), and runs capacity mode's interleaved rounds at that count,
//! closed loop and then open loop, measuring each service's peak RSS over the size's step
//! ([`rss`]). A size the dataset cannot reach and answers that are errors are reported, never a
//! reason to stop. The arithmetic is in [`summary`], the rendering in `report::sweep`.

pub mod count_search;
pub mod ladder;
pub mod rss;
pub mod summary;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shmbridge_server::dataset::{DEFAULT_SEED, users_json};

use crate::loadtest::capacity::{self, CapacityPlan, CapacityResult, DEFAULT_ENDPOINTS, RoundLoad};
use crate::loadtest::cli::OutputArgs;
use crate::loadtest::compare::{CompareError, ServiceArgs, Services};
use crate::loadtest::load::counts::CountMix;
use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::request::RequestContext;
use crate::loadtest::load::stats::Outcome;
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{LoadConfig, LoadError, LoadModel};
use crate::loadtest::output::{OutputError, write_sweep_report};
use crate::loadtest::report::machine::MachineInfo;
use crate::loadtest::report::sweep::SweepReport;
use count_search::{CountSearch, Fit, HttpProbe, ProbeError, Reach};
use ladder::{DEFAULT_LADDER, Ladder, Size};
use rss::{PeakMethod, PeakRss, PeakStep};

#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    /// Payload sizes: comma-separated sizes in binary units (1K = 1,024 bytes) or doubling
    /// ranges FROM..TO, e.g. `1K,64K,1M` or `1K..64M`.
    #[arg(long, default_value = DEFAULT_LADDER)]
    pub sizes: Ladder,
    /// Endpoints, each alone in its rounds; weights are ignored [default: api,shm,cached]
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
    /// Dataset seed (`seed` query parameter).
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

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Services(#[from] CompareError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("sweep writes no CSV (its rows are sizes, not Locust's); use --json")]
    CsvUnsupported,
}

/// What a sweep runs at every size.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPlan {
    pub ladder: Ladder,
    /// In the order each round runs them.
    pub endpoints: Vec<Endpoint>,
    /// The closed-loop model, then the open-loop one.
    pub loads: [RoundLoad; 2],
    pub rounds: u32,
    pub round_duration: Duration,
    pub timeout: Duration,
    pub seed: u64,
    pub rng_seed: u64,
    pub cache: bool,
}

impl SweepPlan {
    pub fn from_args(args: &SweepArgs) -> Self {
        SweepPlan {
            ladder: args.sizes.clone(),
            endpoints: args
                .endpoints
                .as_ref()
                .map_or_else(|| DEFAULT_ENDPOINTS.to_vec(), EndpointMix::endpoints),
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
        }
    }

    /// The capacity session of one load model at one size.
    fn session(&self, load: RoundLoad) -> CapacityPlan {
        CapacityPlan {
            endpoints: self.endpoints.clone(),
            load,
            rounds: self.rounds,
            round_duration: self.round_duration,
        }
    }

    /// What every run at `count` shares; each round sets its own model, endpoint and duration.
    fn base_config(&self, target: url::Url, count: u32) -> LoadConfig {
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
            counts: CountMix::single(count),
            seed: self.seed,
            rng_seed: self.rng_seed,
        }
    }
}

/// One size of the ladder and what became of it.
#[derive(Clone, Debug)]
pub struct SizeStep {
    pub target: Size,
    pub outcome: StepOutcome,
}

#[derive(Clone, Debug)]
pub enum StepOutcome {
    /// Measured at `fit`: one capacity session per load model, in the plan's order.
    Measured {
        fit: Fit,
        sessions: Vec<(RoundLoad, CapacityResult)>,
        /// Over the whole step, both models; `None` if it could not be read.
        peak_rss: Option<PeakRss>,
    },
    /// No count gives a body of this size.
    Unreachable(Reach),
    /// users-service did not say how large a count's body is.
    ProbeFailed(String),
}

/// Everything a sweep measured.
#[derive(Clone, Debug)]
pub struct SweepResult {
    pub steps: Vec<SizeStep>,
    /// How the peaks were measured; `None` without the services' process ids.
    pub peak_method: Option<PeakMethod>,
    /// users-service probes made to find the counts.
    pub probes: u32,
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
                _ => None,
            })
            .sum()
    }
}

/// Runs the whole sweep and returns the number of corrupt bodies seen.
pub async fn run(args: &SweepArgs) -> Result<u64, SweepError> {
    if args.output.csv.is_some() {
        return Err(SweepError::CsvUnsupported);
    }
    let plan = SweepPlan::from_args(args);
    let http_signal = plan.endpoints.contains(&Endpoint::ShmHttp);
    let services = Services::start(&args.services, http_signal, "sweep").await?;
    let result = measure(&plan, &services, args).await;
    let environment = services.describe();
    services.stop().await?;
    let result = result?;
    let report = SweepReport {
        plan: &plan,
        result: &result,
        machine: MachineInfo::detect(),
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        environment,
    };
    write_sweep_report(&report, &args.output)?;
    Ok(result.corrupt())
}

async fn measure(
    plan: &SweepPlan,
    services: &Services,
    args: &SweepArgs,
) -> Result<SweepResult, SweepError> {
    let processes = services.processes();
    let peak_method = processes.map(PeakMethod::detect);
    let probe = HttpProbe::new(&services.users_service.base_url(), plan.seed, plan.timeout)?;
    let checker = Arc::new(BodyChecker::new(users_json));
    let mut search = CountSearch::default();
    let mut steps = Vec::new();
    for (index, &target) in plan.ladder.sizes().iter().enumerate() {
        let position = format!(
            "size {}/{} ({target})",
            index + 1,
            plan.ladder.sizes().len()
        );
        let reach = search
            .find(target.bytes(), async |count| probe.probe(count).await)
            .await;
        let fit = match reach {
            Ok(Reach::Reached(fit)) => fit,
            Ok(unreachable) => {
                eprintln!("{position}: {unreachable}");
                steps.push(SizeStep {
                    target,
                    outcome: StepOutcome::Unreachable(unreachable),
                });
                continue;
            }
            Err(error) => {
                eprintln!("{position}: {error}");
                steps.push(SizeStep {
                    target,
                    outcome: StepOutcome::ProbeFailed(error.to_string()),
                });
                continue;
            }
        };
        eprintln!("{position}: count {} = {} bytes", fit.count, fit.bytes);
        let base = plan.base_config(services.gateway.base_url(), fit.count);
        warm_up(plan, &base, fit.count, &checker, &position).await?;
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
            target,
            outcome: StepOutcome::Measured {
                fit,
                sessions,
                peak_rss,
            },
        });
    }
    Ok(SweepResult {
        steps,
        peak_method,
        probes: search.probes(),
    })
}

/// One unmeasured request per endpoint before a size's rounds, so every path has made and
/// cached its body (users-service's serialized and sealed bodies, the gateway's cached one):
/// the rounds then measure moving a body, and the ceiling is not timed generating its own.
async fn warm_up(
    plan: &SweepPlan,
    base: &LoadConfig,
    count: u32,
    checker: &Arc<BodyChecker>,
    position: &str,
) -> Result<(), SweepError> {
    let context = RequestContext::new(
        &base.target,
        &plan.endpoints,
        &[count],
        base.seed,
        1,
        Arc::clone(checker),
    )
    .map_err(LoadError::from)?;
    for &endpoint in &plan.endpoints {
        let deadline = tokio::time::Instant::now() + plan.timeout;
        let completed = context.execute(endpoint, count, deadline).await;
        if !matches!(completed.outcome, Outcome::Verified) {
            eprintln!(
                "{position}: warm-up request to {endpoint} gave no verified body: {:?}",
                completed.outcome
            );
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
}
