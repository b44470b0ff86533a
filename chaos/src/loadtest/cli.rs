//! Command-line options shared by `load` and `compare`: the load profile (the seed's by
//! default) and where the report goes.

use std::path::PathBuf;
use std::time::Duration;

use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT};
use url::Url;

use crate::loadtest::load::endpoint::EndpointMix;
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::progress::ProgressMode;
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::{LoadConfig, LoadModel};

/// The load profile; every default is the seed report's.
#[derive(clap::Args, Clone, Debug)]
pub struct ProfileArgs {
    /// Simulated users (closed loop).
    #[arg(long, default_value_t = 50)]
    pub users: u32,
    /// Users started per second until all run.
    #[arg(long, default_value_t = 10.0)]
    pub spawn_rate: f64,
    /// Length of the run (e.g. 2m, 20s); requests in flight at the end may finish.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Think time per user between requests: `1s..3s` (uniform), `500ms`, or `0` for
    /// closed-loop capacity. The default gives the seed's ~2 s per-user cycle.
    #[arg(long, default_value = "1s..3s")]
    pub wait: ThinkTime,
    /// Open loop instead of users: this many requests per second, latency measured from each
    /// request's scheduled time (wrk2 model).
    #[arg(long, conflicts_with_all = ["users", "spawn_rate", "wait"])]
    pub rate: Option<f64>,
    /// Open loop only: requests in flight at most.
    #[arg(long, default_value_t = 50, requires = "rate")]
    pub connections: u32,
    /// Endpoints and weights, e.g. `api,shm` (50/50), `api=3,shm=1`, `api,shm,cached`
    /// [default: api,shm; `compare --capacity`: api,shm,cached]
    #[arg(long)]
    pub endpoints: Option<EndpointMix>,
    /// Per request; a request past it counts as a timeout failure.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Users per response (`count` query parameter); the default gives the seed's 256,873 bytes.
    #[arg(long, default_value_t = DEFAULT_COUNT, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub count: u32,
    /// Dataset seed (`seed` query parameter).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Seed for think times and endpoint picks; random if not given (the report prints it).
    #[arg(long)]
    pub rng_seed: Option<u64>,
}

impl ProfileArgs {
    pub fn load_config(&self, target: Url) -> LoadConfig {
        let model = match self.rate {
            Some(rate) => LoadModel::OpenLoop(OpenLoopProfile {
                rate,
                connections: self.connections,
            }),
            None => LoadModel::Users(UsersProfile {
                users: self.users,
                spawn_rate: self.spawn_rate,
                think: self.wait,
            }),
        };
        LoadConfig {
            target,
            model,
            duration: self.duration,
            mix: self.endpoints.clone().unwrap_or_default(),
            timeout: self.timeout,
            count: self.count,
            seed: self.seed,
            rng_seed: self.rng_seed.unwrap_or_else(rand::random),
        }
    }

    /// Users to show in the progress display (none in open loop).
    pub fn progress_users(&self) -> Option<u64> {
        self.rate.is_none().then_some(u64::from(self.users))
    }
}

/// Where the report goes besides the Markdown on stdout.
#[derive(clap::Args, Clone, Debug)]
pub struct OutputArgs {
    /// Also write Locust's CSV layout to PREFIX_stats.csv and PREFIX_failures.csv.
    #[arg(long, value_name = "PREFIX")]
    pub csv: Option<PathBuf>,
    /// Also write everything measured as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Progress display on stderr: a bar on a terminal, periodic lines otherwise.
    #[arg(long, value_enum, default_value_t)]
    pub progress: ProgressMode,
}
