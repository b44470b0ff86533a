//! Command-line options shared by `load` and `compare`: the load profile (the seed's by
//! default) and where the report goes.

use std::path::PathBuf;
use std::time::Duration;

use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED};
use url::Url;

use crate::loadtest::load::counts::CountMix;
use crate::loadtest::load::endpoint::EndpointMix;
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::progress::ProgressMode;
use crate::loadtest::load::target::{RequestMix, UpstreamPath};
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::{LoadConfig, LoadError, LoadModel};
use crate::loadtest::report::seed::{SEED_SPAWN_RATE, SEED_USERS};

/// A named closed-loop profile: its users and spawn rate. Think time and duration stay the
/// seed's (`--wait`, `--duration`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The seed report's: 50 users, 10 started per second.
    #[default]
    Seed,
    /// 10× the seed's users: 500 users, 50 started per second (the seed's 5 s ramp), the
    /// seed's think time.
    #[value(name = "seed-10x")]
    Seed10x,
}

impl Profile {
    pub fn users(self) -> u32 {
        match self {
            Profile::Seed => SEED_USERS,
            Profile::Seed10x => 10 * SEED_USERS,
        }
    }

    pub fn spawn_rate(self) -> f64 {
        match self {
            Profile::Seed => SEED_SPAWN_RATE,
            Profile::Seed10x => 5.0 * SEED_SPAWN_RATE,
        }
    }
}

/// The load profile; every default is the seed report's.
#[derive(clap::Args, Clone, Debug)]
pub struct ProfileArgs {
    /// Named profile giving the users and spawn rate; `--users`/`--spawn-rate` set them
    /// directly instead.
    #[arg(long, value_enum, default_value_t, conflicts_with_all = ["users", "spawn_rate", "rate"])]
    pub profile: Profile,
    /// Simulated users (closed loop) [default: the profile's, the seed's 50]
    #[arg(long)]
    pub users: Option<u32>,
    /// Users started per second until all run [default: the profile's, the seed's 10]
    #[arg(long)]
    pub spawn_rate: Option<f64>,
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
    /// [default: api,shm; `compare --capacity`: api,shm,cached, and published under --cache]
    #[arg(long)]
    pub endpoints: Option<EndpointMix>,
    /// Per request; a request past it counts as a timeout failure.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Users per response (`count` query parameter); the default gives the seed's 256,873 bytes.
    /// A weighted mix, e.g. `708=9,12000=1`, has each request pick its count (with the run's
    /// random seed); at most 8 counts. `--capacity` takes one count.
    #[arg(long, default_value_t = CountMix::single(DEFAULT_COUNT))]
    pub count: CountMix,
    /// Dataset seed (`seed` query parameter).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// An upstream path and query to load instead of the users routes, e.g.
    /// `/blobs?size=1048576&pattern=random&seed=3`. Each endpoint asks the gateway for it its own
    /// way: api `/via-api<PATH>` (REST), shm `/via-shm<PATH>`, cached `/via-cached<PATH>` (the
    /// gateway's in-memory ceiling), auto `<PATH>` (the gateway's --transport); shm-http cannot
    /// carry it. Bodies of `/users?..` and `/blobs?..` are verified byte for byte, of any other
    /// path by their `x-payload-crc32` only. Repeat for a mix of equal weights (at most 8);
    /// `--capacity` takes one.
    #[arg(long = "path", value_name = "PATH", conflicts_with_all = ["count", "seed"])]
    pub paths: Vec<UpstreamPath>,
    /// Seed for think times, endpoint and request picks; random if not given (the report prints it).
    #[arg(long)]
    pub rng_seed: Option<u64>,
}

impl ProfileArgs {
    /// What each request asks for: `--path`s with equal weights, else the `--count` mix.
    pub fn requests(&self) -> Result<RequestMix, LoadError> {
        if self.paths.is_empty() {
            return Ok(RequestMix::users(&self.count));
        }
        let paths: Vec<(UpstreamPath, u32)> =
            self.paths.iter().map(|path| (path.clone(), 1)).collect();
        RequestMix::new(None, &paths).map_err(LoadError::InvalidProfile)
    }

    /// The run against the gateway at `target`; refuses what cannot run (a path repeated,
    /// a path with shm-http) before anything starts.
    pub fn load_config(&self, target: Url) -> Result<LoadConfig, LoadError> {
        let model = match self.rate {
            Some(rate) => LoadModel::OpenLoop(OpenLoopProfile {
                rate,
                connections: self.connections,
            }),
            None => LoadModel::Users(UsersProfile {
                users: self.users(),
                spawn_rate: self.spawn_rate(),
                think: self.wait,
            }),
        };
        let config = LoadConfig {
            target,
            model,
            duration: self.duration,
            mix: self.endpoints.clone().unwrap_or_default(),
            timeout: self.timeout,
            requests: self.requests()?,
            seed: self.seed,
            rng_seed: self.rng_seed.unwrap_or_else(rand::random),
        };
        config.validate()?;
        Ok(config)
    }

    /// Simulated users: `--users`, else the profile's.
    pub fn users(&self) -> u32 {
        self.users.unwrap_or(self.profile.users())
    }

    /// Users started per second: `--spawn-rate`, else the profile's.
    pub fn spawn_rate(&self) -> f64 {
        self.spawn_rate.unwrap_or(self.profile.spawn_rate())
    }

    /// Users to show in the progress display (none in open loop).
    pub fn progress_users(&self) -> Option<u64> {
        self.rate.is_none().then_some(u64::from(self.users()))
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        profile: ProfileArgs,
    }

    fn parse(args: &[&str]) -> Result<ProfileArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("compare").chain(args.iter().copied()))
            .map(|command| command.profile)
    }

    fn users_of(profile: &ProfileArgs) -> UsersProfile {
        match profile
            .load_config("http://127.0.0.1:1".parse().unwrap())
            .unwrap()
            .model
        {
            LoadModel::Users(users) => users,
            other => panic!("expected closed-loop users, got {other:?}"),
        }
    }

    #[test]
    fn the_default_profile_is_the_seeds() {
        let profile = parse(&[]).unwrap();
        let users = users_of(&profile);
        assert_eq!((users.users, users.spawn_rate), (50, 10.0));
        assert_eq!(users.think, ThinkTime::SEED);
        assert_eq!(profile.duration, Duration::from_secs(120));
    }

    #[test]
    fn seed_10x_has_ten_times_the_users_and_the_seeds_think_time_and_duration() {
        let profile = parse(&["--profile", "seed-10x"]).unwrap();
        let users = users_of(&profile);
        assert_eq!((users.users, users.spawn_rate), (500, 50.0));
        assert_eq!(users.think, ThinkTime::SEED);
        assert_eq!(profile.duration, Duration::from_secs(120));
        assert_eq!(profile.progress_users(), Some(500));
    }

    #[test]
    fn a_path_replaces_the_users_counts_and_is_checked_before_the_run() {
        let target: Url = "http://127.0.0.1:1".parse().unwrap();
        let default = parse(&[]).unwrap().load_config(target.clone()).unwrap();
        assert_eq!(
            default.requests,
            RequestMix::users(&CountMix::single(DEFAULT_COUNT))
        );
        let blob = "/blobs?size=1048576&pattern=random&seed=3";
        let config = parse(&["--path", blob, "--endpoints", "api,shm,cached,auto"])
            .unwrap()
            .load_config(target.clone())
            .unwrap();
        assert_eq!(config.requests, RequestMix::path(blob.parse().unwrap()));
        let two = parse(&["--path", blob, "--path", "/users?count=3&seed=7"])
            .unwrap()
            .load_config(target.clone())
            .unwrap();
        assert_eq!(two.requests.paths().len(), 2);
        for refused in [
            &["--path", blob, "--path", blob][..],
            &["--path", blob, "--endpoints", "api,shm-http"],
        ] {
            let error = parse(refused)
                .unwrap()
                .load_config(target.clone())
                .unwrap_err();
            assert!(
                matches!(
                    error,
                    LoadError::InvalidProfile(_) | LoadError::Uncarried { .. }
                ),
                "{refused:?}: {error}"
            );
        }
        for conflicting in [
            &["--path", blob, "--count", "3"][..],
            &["--path", blob, "--seed", "3"],
        ] {
            let error = parse(conflicting).expect_err("a conflict is refused");
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{conflicting:?}"
            );
        }
        let error = parse(&["--path", "/blobs?size=x"]).expect_err("a bad query is refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn explicit_users_override_the_default_profile_but_not_a_named_one() {
        let profile = parse(&["--users", "7", "--spawn-rate", "2"]).unwrap();
        let users = users_of(&profile);
        assert_eq!((users.users, users.spawn_rate), (7, 2.0));
        assert!(parse(&["--rate", "100"]).unwrap().rate.is_some());
        for conflicting in [
            &["--profile", "seed-10x", "--users", "7"][..],
            &["--profile", "seed-10x", "--spawn-rate", "2"],
            &["--profile", "seed-10x", "--rate", "100"],
        ] {
            let error = parse(conflicting).expect_err("a conflict is refused");
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{conflicting:?}"
            );
        }
    }
}
