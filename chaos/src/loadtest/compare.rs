//! `compare`, the main job: start users-service and gateway as children of this binary on
//! ephemeral ports, run the seed's load profile against both endpoints (or, with `--capacity`,
//! each endpoint alone in interleaved closed-loop rounds), stop the children, and print the
//! measurements for `output` to report beside the seed's figures. The services are this
//! binary's own service code, built like `cargo build`'s and with no fail points, so what is
//! measured is what users run.

use std::sync::Arc;

use shmbridge_server::dataset::users_json;
use tokio::time::Instant;

use crate::loadtest::capacity::{self, CapacityArgs, CapacityPlan, CapacityResult, RoundLoad};
use crate::loadtest::cli::{OutputArgs, ProfileArgs};
use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
use crate::loadtest::load::progress::Progress;
use crate::loadtest::load::stats::{Outcome, RunStats};
use crate::loadtest::load::target::RequestMix;
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{self, LoadConfig, LoadError};
use crate::loadtest::report::payload_sizes;
use crate::loadtest::services::{ServiceArgs, Services, ServicesError};

#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub capacity: CapacityArgs,
    #[command(flatten)]
    pub services: ServiceArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("--capacity measures one payload size; {0} mixes several (run them one by one)")]
    MixedCapacity(RequestMix),
    #[error("the services are up but {path} does not serve the payload correctly: {reason}")]
    Preflight { path: String, reason: String },
}

/// What a comparison measured, with the services already stopped.
pub enum Comparison {
    Mixed(MixedRun),
    Capacity(CapacitySession),
}

impl Comparison {
    /// The corrupt bodies seen.
    pub fn corrupt(&self) -> u64 {
        match self {
            Comparison::Mixed(run) => run.stats.corrupt(),
            Comparison::Capacity(session) => session.result.corrupt(),
        }
    }
}

/// The seed's way: one run, every request picking its endpoint from the mix.
pub struct MixedRun {
    pub config: LoadConfig,
    pub stats: RunStats,
    /// Size of the expected body of each resource of the mix, in the mix's order.
    pub payload_bytes: Vec<Option<usize>>,
    /// Where the services ran, for the report.
    pub environment: String,
}

/// `--capacity`: every endpoint alone, closed loop, in interleaved rounds.
pub struct CapacitySession {
    pub plan: CapacityPlan,
    /// What every run shared.
    pub base: LoadConfig,
    pub result: CapacityResult,
    /// Size of the expected body of the session's one resource.
    pub payload_bytes: Option<usize>,
    /// Whether users-service ran with `--cache`.
    pub cache: bool,
    /// Where the services ran, for the report.
    pub environment: String,
}

/// Runs the whole comparison (mixed, or each endpoint alone with `--capacity`) and returns what
/// it measured; the caller writes the report.
pub async fn run(args: &CompareArgs) -> Result<Comparison, CompareError> {
    // The HTTP-signalled path is off unless measured.
    let http_signal = args
        .profile
        .endpoints
        .as_ref()
        .is_some_and(|mix| mix.endpoints().contains(&Endpoint::ShmHttp));
    // The profile is checked before any service starts: a path listed twice, a path shm-http
    // cannot carry, a mix where capacity measures one body.
    let requests = args.profile.requests()?;
    let endpoints = if args.capacity.capacity {
        capacity_endpoints(args)
    } else {
        args.profile
            .endpoints
            .clone()
            .unwrap_or_default()
            .endpoints()
    };
    load::check_routes(&endpoints, &requests)?;
    args.services.check_endpoints(&endpoints)?;
    if args.capacity.capacity && requests.only().is_none() {
        return Err(CompareError::MixedCapacity(requests));
    }
    let services =
        Services::start(&args.services, http_signal, args.profile.timeout, "compare").await?;
    let checker = Arc::new(BodyChecker::new(users_json));
    if args.capacity.capacity {
        run_capacity(args, services, &checker)
            .await
            .map(Comparison::Capacity)
    } else {
        run_mixed(args, services, &checker)
            .await
            .map(Comparison::Mixed)
    }
}

/// One mixed run against the services, then stops them.
async fn run_mixed(
    args: &CompareArgs,
    services: Services,
    checker: &Arc<BodyChecker>,
) -> Result<MixedRun, CompareError> {
    let config = args.profile.load_config(services.gateway.base_url())?;
    preflight(&config, &config.mix.endpoints(), checker).await?;
    let progress = Progress::new(
        args.output.progress,
        config.duration,
        args.profile.progress_users(),
    );
    let stats = load::run(&config, checker.clone(), progress).await?;
    let environment = format!(
        "{}; bodies {}",
        services.describe(),
        if args.services.cache {
            "serialized once and cached (--cache), on both paths"
        } else {
            "serialized per request, as in the seed"
        }
    );
    services.stop().await?;

    Ok(MixedRun {
        payload_bytes: payload_sizes(&config, checker),
        config,
        stats,
        environment,
    })
}

/// A `--capacity` session against the same two service processes throughout, then stops them.
async fn run_capacity(
    args: &CompareArgs,
    services: Services,
    checker: &Arc<BodyChecker>,
) -> Result<CapacitySession, CompareError> {
    let plan = CapacityPlan {
        endpoints: capacity_endpoints(args),
        load: RoundLoad::Closed {
            users: args.profile.users(),
        },
        rounds: args.capacity.rounds,
        round_duration: args.capacity.round_duration,
    };
    let base = args.profile.load_config(services.gateway.base_url())?;
    preflight(&base, &plan.endpoints, checker).await?;
    let result = capacity::run(
        &plan,
        &base,
        checker,
        args.output.progress,
        services.processes(),
    )
    .await?;
    let environment = services.describe();
    services.stop().await?;

    Ok(CapacitySession {
        payload_bytes: payload_sizes(&base, checker).first().copied().flatten(),
        plan,
        base,
        result,
        cache: args.services.cache,
        environment,
    })
}

/// The endpoints `--capacity` measures, in report order: `--endpoints` without weights, or
/// REST, shared memory and the ceiling (and, under `--cache`, the published path).
fn capacity_endpoints(args: &CompareArgs) -> Vec<Endpoint> {
    args.profile.endpoints.as_ref().map_or_else(
        || capacity::default_endpoints(args.services.cache),
        EndpointMix::endpoints,
    )
}

/// One verified request per endpoint before the clock starts, so a misconfigured service
/// fails fast with its reason instead of filling a two-minute report with errors.
async fn preflight(
    config: &LoadConfig,
    endpoints: &[Endpoint],
    checker: &Arc<BodyChecker>,
) -> Result<(), CompareError> {
    let resources = config.requests.resources();
    let context = load::request::RequestContext::new(
        &config.target,
        endpoints,
        &resources,
        config.seed,
        1,
        checker.clone(),
    )
    .map_err(LoadError::from)?;
    for &endpoint in endpoints {
        for resource in &resources {
            let completed = context
                .execute(endpoint, resource, Instant::now() + config.timeout)
                .await;
            let reason = match completed.outcome {
                Outcome::Verified => continue,
                Outcome::Failed(failure) => failure.to_string(),
                Outcome::Corrupt(corruption) => format!("corrupt body: {corruption}"),
            };
            return Err(CompareError::Preflight {
                path: resource
                    .route(endpoint, config.seed)
                    .unwrap_or_else(|| endpoint.path().to_owned()),
                reason,
            });
        }
    }
    Ok(())
}
