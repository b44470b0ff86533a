//! `compare --capacity`: each endpoint alone, closed loop, in interleaved rounds (A B C A B C),
//! against services `compare` started once. Owns the plan, the runs and their results; the
//! arithmetic is in [`summary`], the rendering in `report::capacity`.

pub mod cpu;
pub mod summary;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::progress::{Progress, ProgressMode};
use crate::loadtest::load::stats::EndpointStats;
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{self, LoadConfig, LoadError, LoadModel};
use cpu::{CpuPerRequest, Processes};
use summary::{Medians, Ratio, RoundFigures, ScheduledRun, ratios, schedule};

/// The endpoints a capacity run measures when `--endpoints` is not given: REST, shared memory
/// and the gateway's cached body (the ceiling both are measured against).
pub const DEFAULT_ENDPOINTS: [Endpoint; 3] = [Endpoint::Api, Endpoint::Shm, Endpoint::Cached];

/// The endpoints measured when `--endpoints` is not given: [`DEFAULT_ENDPOINTS`], and under
/// `--cache` (where users-service names its kept bodies object versions) the published path
/// beside them, measured on its own, never mixed into shared memory's figures.
pub fn default_endpoints(cache: bool) -> Vec<Endpoint> {
    let mut endpoints = DEFAULT_ENDPOINTS.to_vec();
    if cache {
        endpoints.push(Endpoint::Published);
    }
    endpoints
}

/// Users start this fast in a capacity run: 50 users are all sending within 50 ms, so a round
/// measures the endpoint at its full load instead of a ramp (the seed's 10/s would spend 5 s of
/// each round ramping up).
pub const CAPACITY_SPAWN_RATE: f64 = 1_000.0;

/// The capacity mode's options, beside `compare`'s profile (whose `--users`, `--endpoints`,
/// `--timeout`, `--count` and `--seed` it uses; open loop, think time, spawn rate and a single
/// `--duration` do not apply and are refused).
#[derive(clap::Args, Clone, Debug)]
pub struct CapacityArgs {
    /// Capacity mode: run each endpoint alone (not mixed), closed loop (no think time), for
    /// `--rounds` interleaved rounds (api shm cached api shm cached ...), and print the median
    /// req/s, p50 and p99 per endpoint with their ratios against REST and the cached ceiling.
    /// Endpoints default to api,shm,cached; weights in `--endpoints` are ignored.
    #[arg(
        long,
        conflicts_with_all = ["rate", "connections", "wait", "spawn_rate", "duration", "csv", "html"]
    )]
    pub capacity: bool,
    /// Capacity mode: rounds, each running every endpoint once.
    #[arg(long, default_value_t = 3, requires = "capacity", value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Capacity mode: how long each endpoint runs in each round.
    #[arg(long, default_value = "20s", requires = "capacity", value_parser = humantime::parse_duration)]
    pub round_duration: Duration,
}

/// How each run loads its one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum RoundLoad {
    /// This many users, no think time, all started at [`CAPACITY_SPAWN_RATE`]: what the
    /// endpoint serves at full load.
    Closed { users: u32 },
    /// A fixed request rate (wrk2 model): what latency the endpoint gives at that rate.
    Open(OpenLoopProfile),
}

impl RoundLoad {
    /// The load model of one run.
    fn model(self) -> LoadModel {
        match self {
            RoundLoad::Closed { users } => LoadModel::Users(UsersProfile {
                users,
                spawn_rate: CAPACITY_SPAWN_RATE,
                think: ThinkTime::NONE,
            }),
            RoundLoad::Open(profile) => LoadModel::OpenLoop(profile),
        }
    }

    /// Users to show in the progress display (none in open loop).
    fn progress_users(self) -> Option<u64> {
        match self {
            RoundLoad::Closed { users } => Some(u64::from(users)),
            RoundLoad::Open(_) => None,
        }
    }

    /// `closed loop` or `open loop`.
    pub fn name(self) -> &'static str {
        match self {
            RoundLoad::Closed { .. } => "closed loop",
            RoundLoad::Open(_) => "open loop",
        }
    }

    /// The command-line flags that ask for this load.
    pub fn flags(self) -> String {
        match self {
            RoundLoad::Closed { users } => format!("--users {users}"),
            RoundLoad::Open(profile) => {
                format!(
                    "--rate {} --connections {}",
                    profile.rate, profile.connections
                )
            }
        }
    }
}

/// For the reports' "how it was run".
impl fmt::Display for RoundLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RoundLoad::Closed { users } => write!(
                f,
                "closed loop: {users} users, no think time (each user sends its next request as soon as its last one is answered), all started within {:.0} ms",
                f64::from(users) * 1000.0 / CAPACITY_SPAWN_RATE
            ),
            RoundLoad::Open(profile) => write!(
                f,
                "open loop: {} requests/second, at most {} in flight, latency measured from each request's scheduled send time",
                profile.rate, profile.connections
            ),
        }
    }
}

/// What a capacity session runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityPlan {
    /// In the order each round runs them (and the reports list them).
    pub endpoints: Vec<Endpoint>,
    pub load: RoundLoad,
    pub rounds: u32,
    pub round_duration: Duration,
}

impl CapacityPlan {
    /// The runs in session order.
    pub fn schedule(&self) -> Vec<ScheduledRun> {
        schedule(&self.endpoints, self.rounds)
    }

    /// The load of one run: `base`'s target, request parameters and timeout, with this plan's
    /// load, against `endpoint` alone, for one round's duration.
    pub fn round_config(&self, base: &LoadConfig, endpoint: Endpoint) -> LoadConfig {
        LoadConfig {
            model: self.load.model(),
            duration: self.round_duration,
            mix: EndpointMix::only(endpoint),
            ..base.clone()
        }
    }
}

/// One endpoint's rounds, and all its requests folded together (for failures and corrupt
/// samples).
#[derive(Clone, Debug)]
pub struct EndpointRounds {
    pub endpoint: Endpoint,
    pub rounds: Vec<RoundFigures>,
    pub all: EndpointStats,
}

/// Everything a capacity session measured, endpoints in plan order.
#[derive(Clone, Debug)]
pub struct CapacityResult {
    pub endpoints: Vec<EndpointRounds>,
}

impl CapacityResult {
    fn new(endpoints: &[Endpoint]) -> Self {
        CapacityResult {
            endpoints: endpoints
                .iter()
                .map(|&endpoint| EndpointRounds {
                    endpoint,
                    rounds: Vec::new(),
                    all: EndpointStats::default(),
                })
                .collect(),
        }
    }

    /// Adds run number `run` (1-based) of the session.
    fn record(
        &mut self,
        scheduled: ScheduledRun,
        run: u32,
        stats: &EndpointStats,
        elapsed: Duration,
        cpu: Option<CpuPerRequest>,
    ) {
        let rounds = self
            .endpoints
            .iter_mut()
            .find(|rounds| rounds.endpoint == scheduled.endpoint)
            .expect("every scheduled endpoint has its place in the result");
        rounds
            .rounds
            .push(RoundFigures::of(scheduled.round, run, stats, elapsed, cpu));
        rounds.all.merge(stats);
    }

    /// Each endpoint's medians across its rounds (endpoints that ran no round are left out).
    pub fn medians(&self) -> Vec<(Endpoint, Medians)> {
        self.endpoints
            .iter()
            .filter_map(|rounds| Some((rounds.endpoint, Medians::of(&rounds.rounds)?)))
            .collect()
    }

    pub fn ratios(&self) -> Vec<Ratio> {
        ratios(&self.medians())
    }

    pub fn corrupt(&self) -> u64 {
        self.endpoints.iter().map(|rounds| rounds.all.corrupt).sum()
    }
}

/// Runs `plan` against `base.target`: every run verifies every body, as `compare` does. With
/// `processes`, each run also measures the CPU time every process spent per request.
pub async fn run(
    plan: &CapacityPlan,
    base: &LoadConfig,
    checker: &Arc<BodyChecker>,
    progress: ProgressMode,
    processes: Option<Processes>,
) -> Result<CapacityResult, LoadError> {
    let mut result = CapacityResult::new(&plan.endpoints);
    let runs = plan.schedule();
    for (index, scheduled) in runs.iter().enumerate() {
        let run = index as u32 + 1;
        eprintln!(
            "run {run}/{}: round {}/{}, {} alone for {}",
            runs.len(),
            scheduled.round,
            plan.rounds,
            scheduled.endpoint,
            humantime::format_duration(plan.round_duration)
        );
        let config = plan.round_config(base, scheduled.endpoint);
        let progress = Progress::new(progress, config.duration, plan.load.progress_users());
        let before = processes.and_then(|processes| processes.snapshot());
        let stats = load::run(&config, checker.clone(), progress).await?;
        let after = processes.and_then(|processes| processes.snapshot());
        let endpoint_stats = stats
            .endpoints
            .get(&scheduled.endpoint)
            .cloned()
            .unwrap_or_default();
        let cpu = before
            .zip(after)
            .and_then(|(before, after)| before.per_request(&after, endpoint_stats.requests));
        result.record(*scheduled, run, &endpoint_stats, stats.elapsed, cpu);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::stats::Outcome;
    use crate::loadtest::report::fixture;

    #[test]
    fn a_round_is_one_endpoint_closed_loop() {
        let base = fixture::config();
        let config = fixture::capacity_plan().round_config(&base, Endpoint::Shm);
        assert_eq!(config.mix.endpoints(), [Endpoint::Shm]);
        assert_eq!(config.duration, Duration::from_secs(20));
        let LoadModel::Users(users) = config.model else {
            panic!("a capacity round is closed loop: {:?}", config.model);
        };
        assert_eq!(users.users, 50);
        assert_eq!(users.think, ThinkTime::NONE);
        assert_eq!(users.spawn_rate, CAPACITY_SPAWN_RATE);
        assert_eq!(
            (config.target, config.requests, config.seed, config.timeout),
            (base.target, base.requests, base.seed, base.timeout)
        );
    }

    #[test]
    fn an_open_loop_round_keeps_its_rate_and_connections() {
        let open = OpenLoopProfile {
            rate: 40.0,
            connections: 8,
        };
        let plan = CapacityPlan {
            load: RoundLoad::Open(open),
            ..fixture::capacity_plan()
        };
        let config = plan.round_config(&fixture::config(), Endpoint::Cached);
        assert_eq!(config.model, LoadModel::OpenLoop(open));
        assert_eq!(config.mix.endpoints(), [Endpoint::Cached]);
        assert_eq!(plan.load.flags(), "--rate 40 --connections 8");
        assert!(
            plan.load
                .to_string()
                .starts_with("open loop: 40 requests/second, at most 8")
        );
    }

    #[test]
    fn results_keep_rounds_per_endpoint_and_sum_corrupt() {
        let plan = fixture::capacity_plan();
        let mut result = CapacityResult::new(&plan.endpoints);
        for (index, scheduled) in plan.schedule().into_iter().enumerate() {
            let mut stats = EndpointStats::default();
            stats.record(
                Duration::ZERO,
                // below 2 ms, where the histogram is exact
                Duration::from_micros(100 * (1 + index as u64)),
                1,
                &Outcome::Verified,
            );
            result.record(
                scheduled,
                index as u32 + 1,
                &stats,
                Duration::from_secs(1),
                None,
            );
        }
        let shm = &result.endpoints[1];
        assert_eq!(shm.endpoint, Endpoint::Shm);
        let runs: Vec<(u32, u32)> = shm.rounds.iter().map(|r| (r.round, r.run)).collect();
        assert_eq!(runs, [(1, 2), (2, 5)]);
        assert_eq!(shm.all.requests, 2);
        // shm's p50 was 0.2 ms then 0.5 ms: the median of two is their mean.
        let medians = result.medians();
        assert_eq!(medians[1].0, Endpoint::Shm);
        assert_eq!(medians[1].1.p50_ms, 0.35);
        assert_eq!(result.ratios().len(), 3);
        assert_eq!(result.corrupt(), 0);
    }
}
