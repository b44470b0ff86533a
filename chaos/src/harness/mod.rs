//! `run`: the chaos harness. Reads scenario files, builds the services with fault points in a
//! cargo invocation and target directory of their own ([`failpoint_build`]: no
//! other build may contain fault points), runs each scenario (services started and supervised
//! here, load driven through the load engine, faults injected from the seeded
//! schedule), prints a Markdown table per scenario and a summary across them, optionally
//! writes everything as JSON, and reports whether every invariant held.

pub mod detections;
pub mod failpoint_build;
pub mod faults;
pub mod invariants;
pub mod leaks;
pub mod memory;
pub mod report;
pub mod scenario;
pub mod scenario_run;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::time::Duration;

use failpoint_build::{FailpointBinaries, FailpointBuildError};

use crate::loadtest::load::progress::ProgressMode;
use crate::process::go::{self, GatewayKind, GoError};
use crate::process::python::{self, PythonError, UsersServiceKind};
use crate::process::supervisor::ServicePrograms;
use scenario::{Scenario, ScenarioError, scenario_files};
use scenario_run::{RunOptions, ScenarioResult, run_scenario};

/// Where `run --all` looks for scenarios unless `--scenarios` says otherwise.
pub const DEFAULT_SCENARIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Scenario files to run, in order.
    #[arg(value_name = "SCENARIO.toml", required_unless_present = "all")]
    pub files: Vec<PathBuf>,
    /// Run every scenario file (*.toml) of the scenarios directory, by name.
    #[arg(long, conflicts_with = "files")]
    pub all: bool,
    /// The scenarios directory for --all.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SCENARIO_DIR)]
    pub scenarios: PathBuf,
    /// Each scenario's [quick] variant: shorter, fewer faults (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Replaces every scenario's seed (the fault schedule and the request sequence).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write everything measured as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Progress display on stderr (fault events are listed unless quiet).
    #[arg(long, value_enum, default_value_t)]
    pub progress: ProgressMode,
    /// How long each service may take to start and report ready.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// How long building the fail-point services may take (from scratch it compiles the
    /// services' whole dependency tree once; afterwards it only checks they are up to date).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub build_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot find this program's own executable to start the services: {0}")]
    OwnExecutable(std::io::Error),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("cannot write {path}: {source}")]
    Json {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the JSON report: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Build(#[from] FailpointBuildError),
    #[error("the fail-point build task failed: {0}")]
    BuildTask(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Go(#[from] GoError),
}

/// Runs the scenarios; `Ok(true)` when every invariant of every scenario held.
pub async fn run(args: &RunArgs) -> Result<bool, RunError> {
    let files = if args.all {
        scenario_files(&args.scenarios)?
    } else {
        args.files.clone()
    };
    // Every file is read and checked before the first service starts.
    let scenarios = files
        .iter()
        .map(|file| {
            let scenario = Scenario::load(file)?;
            Ok((
                shown_path(file),
                if args.quick {
                    scenario.quick()
                } else {
                    scenario
                },
            ))
        })
        .collect::<Result<Vec<_>, ScenarioError>>()?;
    let program = std::env::current_exe().map_err(RunError::OwnExecutable)?;
    let binaries = build_failpoint_services(&program, args.build_timeout).await?;
    let python_users_service = if scenarios
        .iter()
        .any(|(_, scenario)| scenario.users_service == UsersServiceKind::Python)
    {
        Some(python::users_service().await?)
    } else {
        None
    };
    let go_gateway = if scenarios
        .iter()
        .any(|(_, scenario)| scenario.gateway == GatewayKind::Go)
    {
        Some(go::gateway().await?)
    } else {
        None
    };
    let options = RunOptions {
        services: ServicePrograms::failpoint_build(&binaries),
        python_users_service,
        go_gateway,
        program,
        startup_timeout: args.startup_timeout,
        progress: args.progress,
        quick: args.quick,
    };
    let mut results: Vec<ScenarioResult> = Vec::new();
    for (file, scenario) in &scenarios {
        let seed = args.seed.unwrap_or(scenario.seed);
        eprintln!(
            "scenario {}: seed {seed}, {} load, {} {} faults planned\n  replay: {}",
            scenario.name,
            humantime::format_duration(scenario.load.duration),
            scenario.fault.count(),
            scenario.fault.kind(),
            scenario_run::replay_command(file, seed, args.quick)
        );
        let result = run_scenario(file, scenario, seed, &options).await;
        eprintln!(
            "scenario {}: {} in {:.1}s",
            result.name,
            if result.passed() { "PASS" } else { "FAIL" },
            result.elapsed.as_secs_f64()
        );
        println!("{}", report::scenario_markdown(&result));
        results.push(result);
    }
    println!("{}", report::summary_markdown(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::JsonReport::new(&results))?;
        std::fs::write(path, json).map_err(|source| RunError::Json {
            path: path.clone(),
            source,
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(results.iter().all(ScenarioResult::passed))
}

/// Builds (or finds up to date) the services with fault points, in the profile this harness was
/// built with, into `<target>/chaos-services` beside the harness's own target directory.
pub async fn build_failpoint_services(
    harness: &Path,
    timeout: Duration,
) -> Result<FailpointBinaries, RunError> {
    let target_dir = failpoint_build::target_dir_beside(harness);
    eprintln!(
        "building users-service and gateway with fault points into {} (a separate cargo build; \
         the first one takes a few minutes)",
        target_dir.display()
    );
    let release = !cfg!(debug_assertions);
    let binaries = tokio::task::spawn_blocking(move || {
        failpoint_build::build(&target_dir, release, timeout, true)
    })
    .await??;
    Ok(binaries)
}

/// `file` relative to the working directory when it lies below it, so replay lines are
/// short and work from the repository root.
fn shown_path(file: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(cwd).ok().map(Path::to_owned))
        .unwrap_or_else(|| file.to_owned())
}
