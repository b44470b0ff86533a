//! The `shmbridge-chaos` command: `compare` (the main job), `sweep`, `load`, `run` (the chaos
//! scenarios), and the hidden subcommands that make this same binary run users-service or the
//! gateway as the children of `compare` (without fault points; `run` starts a separate
//! fail-point build of the services instead).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use shmbridge_chaos::harness::faults::pid_reuse::{HoldSlotArgs, hold_slot};
use shmbridge_chaos::harness::faults::rogue::{RogueHogArgs, rogue_hog};
use shmbridge_chaos::harness::{self, RunArgs, RunError};
use shmbridge_chaos::inspect::{self, InspectArgs, SegmentSnapshot};
use shmbridge_chaos::loadtest::cli::{OutputArgs, ProfileArgs};
use shmbridge_chaos::loadtest::compare::{self, CompareArgs, CompareError};
use shmbridge_chaos::loadtest::load::progress::Progress;
use shmbridge_chaos::loadtest::load::verify::BodyChecker;
use shmbridge_chaos::loadtest::load::{self, LoadError, check_target};
use shmbridge_chaos::loadtest::output::{OutputError, write_comparison, write_report, write_sweep};
use shmbridge_chaos::loadtest::report::{RunReport, payload_sizes};
use shmbridge_chaos::loadtest::services::{SERVE_GATEWAY, SERVE_USERS_SERVICE};
use shmbridge_chaos::loadtest::sweep::{self, SweepArgs, SweepError};
use shmbridge_server::dataset::users_json;
use shmbridge_server::{gateway, users_service};
use url::Url;

/// Exit status when the run completed but at least one body was corrupt (1 is an error, 2 a
/// usage error from clap).
const EXIT_CORRUPT: u8 = 3;
/// Exit status when a chaos scenario violated an invariant.
const EXIT_VIOLATED: u8 = 4;
/// Exit status after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "shmbridge-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: start users-service and gateway on ephemeral ports, run the seed's load
    /// test (50 users, 10/s, 2 minutes) against both endpoints and print the report beside the
    /// seed's figures. Exits 3 if any body was corrupt.
    Compare(CompareArgs),
    /// Payload-size sweep: start the services as `compare` does and measure REST, shared memory
    /// and the cached ceiling over a ladder of body sizes (1 KiB to 64 MiB by default), each
    /// endpoint alone in interleaved rounds, closed loop and open loop; print per size the
    /// medians, ratios, each service's peak RSS and the crossover size. Exits 3 if any body was
    /// corrupt.
    Sweep(SweepArgs),
    /// Load a running gateway and print the report. Exits 3 if any body was corrupt.
    Load(LoadArgs),
    /// Run chaos scenarios: start the services, load them while injecting the scenario's
    /// faults, and check the invariants (no corrupt body, no request past its deadline, no
    /// unexpected death, no leaked slot, recovery in time). Exits 4 if any was violated.
    Run(RunArgs),
    /// Attach to a live segment and print its header and the state, generation, holder, lease
    /// and length of every slot that is not free.
    Inspect(InspectArgs),
    #[command(name = "hold-slot", hide = true)]
    HoldSlot(HoldSlotArgs),
    #[command(name = "rogue-hog", hide = true)]
    RogueHog(RogueHogArgs),
    #[command(name = SERVE_USERS_SERVICE, hide = true)]
    ServeUsersService(users_service::Args),
    #[command(name = SERVE_GATEWAY, hide = true)]
    ServeGateway(gateway::Args),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The gateway's base URL; loopback only unless --allow-remote.
    #[arg(long)]
    target: Url,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::ServeUsersService(args) => serve(users_service::run(args)).await,
            Command::ServeGateway(args) => serve(gateway::run(args)).await,
            Command::Compare(args) => until_interrupted(compare_command(args)).await,
            Command::Sweep(args) => until_interrupted(sweep_command(args)).await,
            Command::Load(args) => until_interrupted(load_command(args)).await,
            Command::Run(args) => until_interrupted(run_command(args)).await,
            Command::Inspect(args) => inspect_command(args).await,
            Command::HoldSlot(args) => serve(hold_slot(args)).await,
            Command::RogueHog(args) => serve(rogue_hog(args)).await,
        }
    })
}

/// Runs a service as `compare`'s child. The parent-death signal makes the kernel send SIGTERM
/// if `compare` dies without stopping us (e.g. SIGKILL), so no service outlives it.
async fn serve(service: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    if let Err(error) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        eprintln!("warning: cannot set the parent-death signal: {error}");
    }
    match service.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why `compare`, `sweep` or `load` failed: the run, or writing its report.
#[derive(Debug, thiserror::Error)]
enum MeasureError {
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Runs `job`, or stops at Ctrl-C/SIGTERM: dropping the job's future drops its service
/// guards, which stop the children.
async fn until_interrupted<E: std::fmt::Display>(
    job: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    let interrupted = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { terminate.as_mut()?.recv().await } => {}
        }
    };
    tokio::select! {
        result = job => result.unwrap_or_else(|error| {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }),
        () = interrupted => {
            eprintln!("interrupted: services stopped, no report");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}

/// Success, or `EXIT_CORRUPT` when the run saw corrupt bodies.
fn corrupt_exit(corrupt: u64) -> ExitCode {
    if corrupt == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {corrupt} corrupt bodies (200 responses with wrong bytes)");
        ExitCode::from(EXIT_CORRUPT)
    }
}

async fn run_command(args: RunArgs) -> Result<ExitCode, RunError> {
    if harness::run(&args).await? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: invariants violated (see the tables above)");
        Ok(ExitCode::from(EXIT_VIOLATED))
    }
}

async fn compare_command(args: CompareArgs) -> Result<ExitCode, MeasureError> {
    let comparison = compare::run(&args).await?;
    write_comparison(&comparison, &args.output)?;
    Ok(corrupt_exit(comparison.corrupt()))
}

async fn sweep_command(args: SweepArgs) -> Result<ExitCode, MeasureError> {
    let sweep = sweep::run(&args).await?;
    write_sweep(&sweep, &args.output)?;
    Ok(corrupt_exit(sweep.result.corrupt()))
}

async fn load_command(args: LoadArgs) -> Result<ExitCode, MeasureError> {
    check_target(&args.target, args.allow_remote)?;
    let config = args.profile.load_config(args.target.clone())?;
    let checker = Arc::new(BodyChecker::new(users_json));
    let progress = Progress::new(
        args.output.progress,
        config.duration,
        args.profile.progress_users(),
    );
    let stats = load::run(&config, checker.clone(), progress).await?;
    let environment = format!("gateway at {} (started separately)", args.target);
    let report = RunReport::new(
        &config,
        &stats,
        payload_sizes(&config, &checker),
        environment,
    );
    write_report(&report, &args.output)?;
    Ok(corrupt_exit(stats.corrupt()))
}

async fn inspect_command(args: InspectArgs) -> ExitCode {
    let segment = match inspect::attach(&args).await {
        Ok(segment) => segment,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let snapshot = SegmentSnapshot::take(&segment);
    if args.json {
        match serde_json::to_string_pretty(&snapshot) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("error: cannot encode the snapshot: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", snapshot.to_markdown(args.all));
    }
    ExitCode::SUCCESS
}
