//! One scenario from start to verdict: start both services (armed if the first fault needs
//! it, with the flags its fault class gives them), drive the load with an observer while the
//! fault schedule runs beside it, keep a fault-free tail so the last fault's recovery is seen,
//! then wait for both services to be healthy, read each one's peak RSS (for a class that runs
//! them under memory budgets), the leaked slots, sealed bytes and payload memfds, stop the
//! services and judge the counts, the requests a fault made itself among them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shmbridge_server::dataset::users_json;
use tokio::time::Instant;

use super::detections::{self, Detection};
use super::faults::FaultSpec;
use super::faults::class::{FaultContext, Injected};
use super::faults::error::{FaultError, InjectError};
use super::invariants::{Invariants, RecoverySummary, SuccessLog, recovery_time};
use super::leaks::{self, PayloadMemfds, SealedBytesSource};
use super::memory::{MemoryChecks, PeakRss, PressureRound};
use super::scenario::{Expectations, Scenario};
use super::schedule::{self, PlannedFault};
use crate::inspect::SlotRow;
use crate::loadtest::load::progress::{Progress, ProgressMode};
use crate::loadtest::load::verify::BodyChecker;
use crate::loadtest::load::{self, LoadConfig, LoadError};
use crate::process::go::GatewayKind;
use crate::process::python::UsersServiceKind;
use crate::process::role::Role;
use crate::process::service::ServiceProgram;
use crate::process::supervisor::{ServicePrograms, Supervisor, SupervisorError, UnexpectedDeath};

/// The end of every load run with no fault in it: the last fault's recovery must show
/// before the load stops.
pub const FAULT_FREE_TAIL: Duration = Duration::from_secs(3);
/// How long a service that died unexpectedly, or a pause or slow-producer fault's service,
/// stays down before a restart when the scenario names no restart delay.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Fault(#[from] FaultError),
}

/// How the harness runs every scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This binary, re-executed for helper processes.
    pub program: PathBuf,
    /// The services every scenario runs: the harness's fail-point build.
    pub services: ServicePrograms,
    /// The Python users-service, for scenarios that ask for it (prepared only if one does).
    pub python_users_service: Option<ServiceProgram>,
    /// The Go gateway, for scenarios that ask for it (prepared only if one does).
    pub go_gateway: Option<ServiceProgram>,
    pub startup_timeout: Duration,
    pub progress: ProgressMode,
    pub quick: bool,
}

/// One fault as carried out.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub index: usize,
    pub planned: PlannedFault,
    /// Seconds since the load started when the fault began.
    pub at_seconds: f64,
    /// Seconds since the load started when the faulted service was back.
    pub back_at_seconds: Option<f64>,
    pub recovery_seconds: Option<f64>,
    pub note: Option<String>,
    /// The invariant this fault showed violated, if any.
    pub violation: Option<String>,
    /// What a round of memory pressure measured.
    pub pressure: Option<PressureRound>,
    #[serde(skip)]
    back: Option<Instant>,
}

/// Everything one scenario measured, and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub seed: u64,
    pub quick: bool,
    /// The command line that replays this run.
    pub replay: String,
    pub load: Option<LoadConfig>,
    pub fault: FaultSpec,
    pub expect: Expectations,
    pub faults: Vec<FaultRecord>,
    pub invariants: Option<Invariants>,
    pub unexpected_deaths: Vec<UnexpectedDeath>,
    /// The slots still held at the end, as the segment's slot table showed them.
    pub leaked: Vec<SlotRow>,
    /// Where the leaked sealed bytes were read.
    pub sealed_bytes_source: Option<SealedBytesSource>,
    /// Sealed publications users-service reported for its last life (`None`: not reported).
    pub sealed_publications: Option<u64>,
    /// Each service's sealed payload memfds at the end (mapped, open).
    pub payload_memfds: Vec<PayloadMemfds>,
    /// What the services' own counters caught (since each one's last start).
    pub detections: Vec<Detection>,
    /// Services whose counters could not be read.
    pub detection_errors: Vec<String>,
    /// Violated invariants and expectations.
    pub violations: Vec<String>,
    /// The harness itself failed (e.g. a service would not restart); the scenario fails.
    pub error: Option<String>,
    /// Why the scenario did not run on this machine (e.g. it needs root); not a failure.
    pub skipped: Option<String>,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub elapsed: Duration,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.violations.is_empty()
    }
}

/// The command line that replays `file` with `seed`.
pub fn replay_command(file: &Path, seed: u64, quick: bool) -> String {
    format!(
        "cargo run --release -p shmbridge-chaos -- run {} --seed {seed}{}",
        file.display(),
        if quick { " --quick" } else { "" }
    )
}

/// Runs `scenario` (read from `file`) with `seed`; a harness failure becomes the result's
/// `error`, never a lost report.
pub async fn run_scenario(
    file: &Path,
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
) -> ScenarioResult {
    let started = Instant::now();
    let mut result = ScenarioResult {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        file: file.to_owned(),
        seed,
        quick: options.quick,
        replay: replay_command(file, seed, options.quick),
        load: None,
        fault: scenario.fault.clone(),
        expect: scenario.expect.clone(),
        faults: Vec::new(),
        invariants: None,
        unexpected_deaths: Vec::new(),
        leaked: Vec::new(),
        sealed_bytes_source: None,
        sealed_publications: None,
        payload_memfds: Vec::new(),
        detections: Vec::new(),
        detection_errors: Vec::new(),
        violations: Vec::new(),
        error: None,
        skipped: scenario.fault.unavailable(),
        elapsed: Duration::ZERO,
    };
    if result.skipped.is_some() {
        return result;
    }
    if let Err(error) = run_checked(scenario, seed, options, &mut result).await {
        result.error = Some(error.to_string());
    }
    if let Some(invariants) = &result.invariants {
        result.violations = invariants.violations(&scenario.expect);
    }
    result.elapsed = started.elapsed();
    result
}

async fn run_checked(
    scenario: &Scenario,
    seed: u64,
    options: &RunOptions,
    result: &mut ScenarioResult,
) -> Result<(), HarnessError> {
    let plan = schedule::plan(&scenario.fault, seed);
    let restart_delay = scenario
        .fault
        .restart_delay()
        .unwrap_or(DEFAULT_RESTART_DELAY);
    // A scenario that plants stale segment files runs users-service with a segment file in
    // a directory of its own, removed with everything in it when the scenario ends.
    let segment_dir = if scenario.fault.needs_segment_file() {
        Some(
            tempfile::Builder::new()
                .prefix("shmbridge-chaos-segment-")
                .tempdir()
                .map_err(|error| InjectError::io("create the segment directory", error))
                .map_err(FaultError::from)?,
        )
    } else {
        None
    };
    let segment_path = segment_dir.as_ref().map(|dir| dir.path().join("segment"));
    let service_args = |role| {
        let mut args = scenario.fault.service_args(role);
        args.extend_from_slice(match role {
            Role::UsersService => &scenario.services.users_service,
            Role::Gateway => &scenario.services.gateway,
        });
        if role == Role::UsersService
            && let Some(path) = &segment_path
        {
            args.extend(["--shm-path".to_owned(), path.display().to_string()]);
        }
        args
    };
    let first_arming = plan
        .first()
        .and_then(|fault| fault.action.arming_in_advance());
    let mut services = options.services.clone();
    if scenario.users_service == UsersServiceKind::Python {
        services.users_service = options
            .python_users_service
            .clone()
            .expect("prepared for every run with a Python scenario");
    }
    if scenario.gateway == GatewayKind::Go {
        services.gateway = options
            .go_gateway
            .clone()
            .expect("prepared for every run with a Go scenario");
    }
    let mut supervisor = Supervisor::start(
        options.program.clone(),
        services,
        options.startup_timeout,
        restart_delay,
        service_args,
        |role| {
            first_arming
                .clone()
                .filter(|(armed, _)| *armed == role)
                .map(|(_, failpoints)| failpoints)
        },
    )
    .await?;
    let config = scenario.load_config(supervisor.gateway_url(), seed);
    result.load = Some(config.clone());
    let checker = Arc::new(BodyChecker::new(users_json));
    let successes = Arc::new(SuccessLog::default());
    let users = match config.model {
        load::LoadModel::Users(users) => Some(u64::from(users.users)),
        load::LoadModel::OpenLoop(_) => None,
    };
    let progress = Progress::new(options.progress, config.duration, users);
    let verbose = options.progress != ProgressMode::Quiet;

    let load_started = Instant::now();
    let end = load_started + config.duration;
    let schedule = FaultSchedule {
        plan: &plan,
        restart_delay,
        load_started,
        stop_injecting: end
            .checked_sub(FAULT_FREE_TAIL)
            .unwrap_or(load_started)
            .max(load_started),
        end,
        segment_path,
        checker: Arc::clone(&checker),
        progress: verbose.then(|| progress.clone()),
    };
    let (stats, faults) = tokio::join!(
        load::run_observed(&config, checker, progress, Some(successes.clone())),
        schedule.run(&mut supervisor),
    );
    let stats = stats?;
    let mut faults = faults?;

    supervisor.wait_healthy().await?;
    // Before anything else: the whole run's peaks, while both processes still run.
    let peaks: Vec<PeakRss> = scenario
        .fault
        .memory_limits()
        .into_iter()
        .map(|(role, limit)| match supervisor.pid(role) {
            Ok(pid) => PeakRss::read(role, pid, limit),
            Err(error) => PeakRss {
                service: role,
                limit,
                peak: None,
                error: Some(error.to_string()),
            },
        })
        .collect();
    let leaks = leaks::check(&supervisor).await;
    (result.detections, result.detection_errors) = detections::read(&supervisor).await;
    let unexpected = supervisor.shutdown().await?;

    let paths: Vec<_> = config.mix.endpoints();
    let completions = successes.sorted();
    let mut recoveries = Vec::new();
    let mut invariants = Invariants::from_stats(&stats, scenario.fault.count());
    let rounds: Vec<&PressureRound> = faults
        .iter()
        .filter_map(|record| record.pressure.as_ref())
        .collect();
    for round in &rounds {
        invariants.count_clients(&round.answers);
    }
    if !peaks.is_empty() {
        invariants.memory = Some(MemoryChecks::new(peaks, &stats.total().failures, rounds));
    }
    for record in &mut faults {
        if record.back.is_some() {
            *invariants
                .faults
                .entry(record.planned.action.label())
                .or_default() += 1;
        }
        if let Some(violation) = &record.violation {
            invariants
                .fault_violations
                .push(format!("fault {}: {violation}", record.index + 1));
        }
        if let Some(back) = record.back {
            let faulted: Vec<_> = paths
                .iter()
                .copied()
                .filter(|&path| record.planned.action.affects(path))
                .collect();
            let recovery = recovery_time(back, &faulted, &completions);
            record.recovery_seconds = recovery.map(|time| time.as_secs_f64());
            recoveries.push(recovery);
        }
    }
    invariants.recovery = RecoverySummary::of(&recoveries);
    match leaks {
        Ok(leaks) => {
            invariants.leaked_slots = Some(u32::try_from(leaks.held.len()).unwrap_or(u32::MAX));
            invariants.leaked_bytes = Some(leaks.sealed_bytes);
            result.leaked = leaks.held;
            result.sealed_bytes_source = Some(leaks.sealed_bytes_source);
            result.sealed_publications = leaks.sealed_publications;
            match leaks.payload_memfds {
                Ok(memfds) => {
                    invariants.leftover_payload_memfds =
                        Some(memfds.iter().map(PayloadMemfds::total).sum());
                    result.payload_memfds = memfds;
                }
                Err(error) => invariants.payload_memfd_error = Some(error),
            }
        }
        Err(error) => {
            let error = error.to_string();
            invariants.payload_memfd_error = Some(format!("the leak check stopped: {error}"));
            invariants.leak_check_error = Some(error);
        }
    }
    invariants.unexpected_deaths = unexpected.len();
    result.faults = faults;
    result.unexpected_deaths = unexpected;
    result.invariants = Some(invariants);
    Ok(())
}

/// The fault schedule of one run, carried out beside the load.
struct FaultSchedule<'a> {
    plan: &'a [PlannedFault],
    restart_delay: Duration,
    load_started: Instant,
    /// No fault starts, or is still waiting for its fail point, after this instant.
    stop_injecting: Instant,
    /// The load's end: the services are watched until then.
    end: Instant,
    segment_path: Option<PathBuf>,
    checker: Arc<BodyChecker>,
    progress: Option<Progress>,
}

impl FaultSchedule<'_> {
    async fn run(self, supervisor: &mut Supervisor) -> Result<Vec<FaultRecord>, FaultError> {
        let mut records = Vec::new();
        for (index, fault) in self.plan.iter().enumerate() {
            // A fail-point crash comes when the armed process reaches it: no quiet time first.
            if fault.action.arming_in_advance().is_none() {
                if Instant::now() + fault.after > self.stop_injecting {
                    break;
                }
                supervisor.watch(fault.after, None).await?;
            } else if Instant::now() >= self.stop_injecting {
                break;
            }
            let role = fault.action.role();
            let next_arming = self
                .plan
                .get(index + 1)
                .and_then(|next| next.action.arming_in_advance())
                .filter(|(next_role, _)| *next_role == role)
                .map(|(_, failpoints)| failpoints);
            let at = self.load_started.elapsed();
            let mut context = FaultContext {
                supervisor,
                restart_delay: self.restart_delay,
                next_arming,
                stop_injecting: self.stop_injecting,
                hold: fault.after,
                segment_path: self.segment_path.clone(),
                checker: Arc::clone(&self.checker),
            };
            let injected = match fault.action.inject(&mut context).await {
                Ok(injected) => injected,
                // The services run but the segment cannot be reached: that is what the
                // fault left behind, a finding for the report, not a harness failure.
                Err(FaultError::Inject(error)) => Injected {
                    back: None,
                    note: Some("not injected: the segment could not be reached".to_owned()),
                    violation: Some(format!("the segment is unreachable: {error}")),
                    pressure: None,
                },
                Err(error) => return Err(error),
            };
            let seconds_since_start =
                |instant: Instant| instant.duration_since(self.load_started).as_secs_f64();
            if let Some(progress) = &self.progress {
                progress.note(&format!(
                    "[{:>6.2}s] fault {}: {}{}",
                    at.as_secs_f64(),
                    index + 1,
                    fault.action.label(),
                    injected
                        .note
                        .as_deref()
                        .map(|note| format!(" ({note})"))
                        .unwrap_or_default()
                ));
            }
            records.push(FaultRecord {
                index,
                planned: fault.clone(),
                at_seconds: at.as_secs_f64(),
                back_at_seconds: injected.back.map(seconds_since_start),
                recovery_seconds: None,
                note: injected.note,
                violation: injected.violation,
                pressure: injected.pressure,
                back: injected.back,
            });
        }
        // A process still armed for a fault that did not fit must not crash in the tail.
        let unplayed = self.plan.get(records.len());
        if let Some((role, _)) = unplayed.and_then(|fault| fault.action.arming_in_advance())
            && supervisor.is_armed(role)
        {
            supervisor.stop(role).await?;
            supervisor.launch(role, None).await?;
        }
        supervisor
            .watch(self.end.saturating_duration_since(Instant::now()), None)
            .await?;
        Ok(records)
    }
}
