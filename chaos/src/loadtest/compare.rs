//! `compare`, the main job: start users-service and gateway as children of this binary on
//! ephemeral ports, run the seed's load profile against both endpoints (or, with `--capacity`,
//! each endpoint alone in interleaved closed-loop rounds), stop the children, and print the
//! report beside the seed's figures. The services are this binary's own service
//! code, built like `cargo build`'s and with no fail points, so what is measured is what users
//! run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmbridge_server::dataset::users_json;
use tokio::time::Instant;

use crate::loadtest::capacity::cpu::Processes;
use crate::loadtest::capacity::{self, CapacityArgs, CapacityPlan, DEFAULT_ENDPOINTS, RoundLoad};
use crate::loadtest::cli::{OutputArgs, ProfileArgs};
use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
use crate::loadtest::load::progress::Progress;
use crate::loadtest::load::stats::Outcome;
use crate::loadtest::load::target::RequestMix;
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{self, LoadError};
use crate::loadtest::output::{OutputError, write_capacity_report, write_report};
use crate::loadtest::report::capacity::CapacityReport;
use crate::loadtest::report::{RunReport, payload_sizes};
use crate::process::python::{self, PythonError, UsersServiceKind};
use crate::process::service::{STOP_GRACE, ServiceError, ServiceProcess, ServiceProgram, Stopped};

/// The hidden subcommands that turn this binary into each service.
pub const SERVE_USERS_SERVICE: &str = "serve-users-service";
pub const SERVE_GATEWAY: &str = "serve-gateway";

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

/// How `compare` (and `sweep`) start the services they measure.
#[derive(clap::Args, Clone, Debug)]
pub struct ServiceArgs {
    /// How long each service may take to announce its address and report ready.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// Start users-service with `--cache`: both paths serve bytes serialized once instead of per
    /// request (the seed serialized per request), so the run compares the transports alone.
    #[arg(long)]
    pub cache: bool,
    /// Which users-service to measure behind our gateway: this program's Rust one, or the
    /// seed's kind, a Python service (`transport/python/examples/users_service.py`, built into
    /// `target/python-venv` first: needs python3 with venv and pip).
    #[arg(long, value_enum, default_value_t = UsersServiceKind::Rust)]
    pub users_service: UsersServiceKind,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot find this program's own executable to start the services: {0}")]
    OwnExecutable(std::io::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("--capacity measures one payload size; {0} mixes several (run them one by one)")]
    MixedCapacity(RequestMix),
    #[error("the services are up but {path} does not serve the payload correctly: {reason}")]
    Preflight { path: String, reason: String },
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Runs the whole comparison (mixed, or each endpoint alone with `--capacity`) and returns the
/// number of corrupt bodies seen.
pub async fn run(args: &CompareArgs) -> Result<u64, CompareError> {
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
    if args.capacity.capacity && requests.only().is_none() {
        return Err(CompareError::MixedCapacity(requests));
    }
    let services =
        Services::start(&args.services, http_signal, args.profile.timeout, "compare").await?;
    let checker = Arc::new(BodyChecker::new(users_json));
    if args.capacity.capacity {
        run_capacity(args, services, &checker).await
    } else {
        run_mixed(args, services, &checker).await
    }
}

/// The seed's way: one run, every request picking its endpoint from the mix.
async fn run_mixed(
    args: &CompareArgs,
    services: Services,
    checker: &Arc<BodyChecker>,
) -> Result<u64, CompareError> {
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

    let report = RunReport::new(
        &config,
        &stats,
        payload_sizes(&config, checker),
        environment,
    );
    write_report(&report, &args.output)?;
    Ok(stats.corrupt())
}

/// `--capacity`: every endpoint alone, closed loop, in interleaved rounds, against the same
/// two service processes throughout.
async fn run_capacity(
    args: &CompareArgs,
    services: Services,
    checker: &Arc<BodyChecker>,
) -> Result<u64, CompareError> {
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

    let payload_bytes = payload_sizes(&base, checker).first().copied().flatten();
    let report = CapacityReport::new(
        &plan,
        &base,
        &result,
        payload_bytes,
        args.services.cache,
        environment,
    );
    write_capacity_report(&report, &args.output)?;
    Ok(result.corrupt())
}

/// The endpoints `--capacity` measures, in report order: `--endpoints` without weights, or
/// REST, shared memory and the ceiling.
fn capacity_endpoints(args: &CompareArgs) -> Vec<Endpoint> {
    args.profile
        .endpoints
        .as_ref()
        .map_or_else(|| DEFAULT_ENDPOINTS.to_vec(), EndpointMix::endpoints)
}

/// users-service and the gateway in front of it, children of this process on loopback ports.
pub(crate) struct Services {
    pub(crate) users_service: ServiceProcess,
    pub(crate) gateway: ServiceProcess,
    kind: UsersServiceKind,
    /// The subcommand that started them (`compare`, `sweep`), for the report.
    started_by: &'static str,
}

impl Services {
    /// Starts both for the subcommand `started_by`; `http_signal` also turns on the
    /// HTTP-signalled shared-memory path on both. `request_timeout` is the run's own bound on a
    /// request, given to the gateway as its `--deadline`, so that a slow answer is the run's
    /// timeout and not, earlier, the gateway's default 2 s deadline as a 503.
    pub(crate) async fn start(
        args: &ServiceArgs,
        http_signal: bool,
        request_timeout: Duration,
        started_by: &'static str,
    ) -> Result<Services, CompareError> {
        let program = std::env::current_exe().map_err(CompareError::OwnExecutable)?;
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let service = |subcommand: &'static str, extra: &[&str]| {
            ServiceProgram::Subcommand {
                program: program.clone(),
                subcommand,
            }
            .command(listen, extra)
        };

        let mut users_flags = Vec::new();
        if args.cache {
            users_flags.push("--cache");
        }
        if http_signal {
            users_flags.push("--http-signal");
        }
        let users_command = match args.users_service {
            UsersServiceKind::Rust => service(SERVE_USERS_SERVICE, &users_flags),
            UsersServiceKind::Python => {
                python::users_service().await?.command(listen, &users_flags)
            }
        };
        let mut users_service =
            ServiceProcess::start("users-service", users_command, args.startup_timeout).await?;
        users_service.wait_ready(args.startup_timeout).await?;
        let upstream = users_service.base_url().to_string();
        let deadline = humantime::format_duration(request_timeout).to_string();
        let mut gateway_flags = vec!["--upstream", upstream.as_str(), "--deadline", &deadline];
        if http_signal {
            gateway_flags.push("--http-signal");
        }
        let mut gateway = ServiceProcess::start(
            "gateway",
            service(SERVE_GATEWAY, &gateway_flags),
            args.startup_timeout,
        )
        .await?;
        gateway.wait_ready(args.startup_timeout).await?;
        eprintln!(
            "users-service on {}, gateway on {}",
            users_service.address(),
            gateway.address()
        );
        Ok(Services {
            users_service,
            gateway,
            kind: args.users_service,
            started_by,
        })
    }

    /// Both process ids, while both children run.
    pub(crate) fn processes(&self) -> Option<Processes> {
        self.gateway
            .pid()
            .zip(self.users_service.pid())
            .map(|(gateway, users_service)| Processes {
                gateway,
                users_service,
            })
    }

    /// Where the services ran, for the report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "users-service{} ({}) and gateway ({}) started by `{}` as child processes on loopback, load generated from the same machine",
            match self.kind {
                UsersServiceKind::Rust => "",
                UsersServiceKind::Python => {
                    " in Python (transport/python/examples/users_service.py)"
                }
            },
            self.users_service.address(),
            self.gateway.address(),
            self.started_by,
        )
    }

    /// SIGTERM to each, gateway first; a service that exits badly or must be killed is a
    /// warning, not an error: the measurements are already taken.
    pub(crate) async fn stop(self) -> Result<(), CompareError> {
        for service in [self.gateway, self.users_service] {
            let name = service.name();
            match service.stop().await? {
                Stopped::Drained(status) if status.success() => {}
                Stopped::Drained(status) => {
                    eprintln!("warning: {name} exited with {status} after SIGTERM")
                }
                Stopped::Killed => eprintln!(
                    "warning: {name} did not exit within {:?} of SIGTERM and was killed",
                    STOP_GRACE
                ),
            }
        }
        Ok(())
    }
}

/// One verified request per endpoint before the clock starts, so a misconfigured service
/// fails fast with its reason instead of filling a two-minute report with errors.
async fn preflight(
    config: &load::LoadConfig,
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
