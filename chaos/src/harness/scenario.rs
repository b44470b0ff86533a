//! A chaos scenario as written in `chaos/scenarios/*.toml`: the load to drive, the fault to
//! inject and how often, the seed that fixes every random decision, a `[quick]` variant for
//! CI, and the expectations the run is judged by. Parsing is strict (`deny_unknown_fields`)
//! and every error names the file and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use shmbridge_server::dataset::{DEFAULT_COUNT, DEFAULT_SEED};
use url::Url;

use super::faults::FaultSpec;
use super::faults::spec::{duration, from_str, optional_from_str};
use crate::loadtest::load::counts::CountMix;
use crate::loadtest::load::endpoint::EndpointMix;
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::target::{RequestMix, UpstreamPath};
use crate::loadtest::load::users::{ThinkTime, UsersProfile};
use crate::loadtest::load::{LoadConfig, LoadModel};
use crate::process::go::GatewayKind;
use crate::process::python::UsersServiceKind;

/// The seed of a scenario file that names none.
pub const DEFAULT_SCENARIO_SEED: u64 = 1;
/// The recovery goal of a scenario that names none.
pub const DEFAULT_MAX_RECOVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Fixes the fault schedule and the request sequence; `--seed` overrides it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Which users-service runs: `"rust"` (the default, with fail points) or `"python"` (the
    /// Python users-service, which has none: fail-point faults cannot reach it).
    #[serde(default)]
    pub users_service: UsersServiceKind,
    /// Which gateway runs: `"rust"` (the default, with fail points) or `"go"` (the Go gateway,
    /// which has none and serves the `api` and `shm` endpoints only).
    #[serde(default)]
    pub gateway: GatewayKind,
    /// Flags the services get on top of the harness's own, at every start.
    #[serde(default)]
    pub services: ServicesSection,
    pub load: LoadSection,
    pub fault: FaultSpec,
    /// What `--quick` changes: a shorter run with fewer faults, for CI.
    #[serde(default)]
    pub quick: QuickSection,
    #[serde(default)]
    pub expect: Expectations,
}

/// `[services]`: flags for each service, e.g. `users_service = ["--cache"]`,
/// `gateway = ["--stale-if-error", "10s"]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    #[serde(default)]
    pub users_service: Vec<String>,
    #[serde(default)]
    pub gateway: Vec<String>,
}

/// The traffic a scenario drives: closed-loop `users` with a `wait`, or an open-loop `rate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    pub users: Option<u32>,
    /// Think time per user, e.g. `"20ms..100ms"` (closed loop only).
    #[serde(default, deserialize_with = "optional_from_str")]
    pub wait: Option<ThinkTime>,
    /// Requests per second (open loop); excludes `users` and `wait`.
    pub rate: Option<f64>,
    /// Open loop only: requests in flight at most.
    pub connections: Option<u32>,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// e.g. `"api,shm"` or `"api=1,shm=3"`.
    #[serde(default, deserialize_with = "from_str")]
    pub endpoints: EndpointMix,
    /// Per request, from the client's side; a request past it outlived its deadline.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The users per body: one count (`"708"`, the default) or a weighted mix drawn per request
    /// with the scenario's seed, e.g. `"708=19,12000=1"` (one request in twenty asks for a
    /// ~5.8 MB body, which travels as a sealed payload).
    #[serde(default = "default_counts", deserialize_with = "from_str")]
    pub counts: CountMix,
    /// Upstream paths drawn from the same pool as `counts`, each with its weight, e.g.
    /// `[{ path = "/blobs?size=3000&pattern=text&seed=1", weight = 3 }]`: asked through each
    /// endpoint's prefix (`/via-api`, `/via-shm`, ...), `/users` and `/blobs` bodies verified
    /// byte for byte.
    #[serde(default)]
    pub paths: Vec<WeightedPath>,
}

/// One entry of `[load] paths`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedPath {
    #[serde(deserialize_with = "from_str")]
    pub path: UpstreamPath,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl LoadSection {
    /// `counts` and `paths` in one pool.
    pub fn requests(&self) -> Result<RequestMix, String> {
        let paths: Vec<(UpstreamPath, u32)> = self
            .paths
            .iter()
            .map(|entry| (entry.path.clone(), entry.weight))
            .collect();
        RequestMix::new(Some(&self.counts), &paths)
    }
}

/// `[quick]`: overrides for `--quick`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickSection {
    #[serde(default, deserialize_with = "optional_duration")]
    pub duration: Option<Duration>,
    pub count: Option<u32>,
}

/// `[expect]`: what the run must show besides the invariants that always hold (no corrupt
/// body, no request past its deadline, no unexpected death, no leaked slot).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Longest time from a faulted process being back to the first verified answer.
    #[serde(
        default = "default_max_recovery",
        deserialize_with = "duration",
        serialize_with = "crate::loadtest::load::serialize_seconds"
    )]
    pub max_recovery: Duration,
    /// Longest latency any request may have (a pile-up shows here).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_latency: Option<Duration>,
    /// Most requests that may end in a clean failure (an HTTP error...); by default any
    /// number may, as long as each is clean.
    #[serde(default)]
    pub max_failures: Option<u64>,
    /// Sealed payload memfds the services may still map or hold at the end: 0 (the default)
    /// unless a scenario runs them with caches that keep bodies (users-service `--cache`, the
    /// gateway's published objects), whose count it then states.
    #[serde(default)]
    pub max_payload_memfds: u32,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            max_recovery: DEFAULT_MAX_RECOVERY,
            max_latency: None,
            max_failures: None,
            max_payload_memfds: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scenario {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("scenario {path}: field `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
    #[error("cannot list the scenarios in {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no scenario files (*.toml) in {0}")]
    Empty(PathBuf),
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(path, &text)
    }

    /// Parses `text` as the contents of `path` (named in errors) and checks every value.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        scenario
            .validate()
            .map_err(|(field, reason)| ScenarioError::Invalid {
                path: path.to_owned(),
                field,
                reason,
            })?;
        Ok(scenario)
    }

    /// Applies `[quick]`: a shorter run and fewer faults.
    pub fn quick(mut self) -> Scenario {
        if let Some(duration) = self.quick.duration {
            self.load.duration = duration;
        }
        if let Some(count) = self.quick.count {
            *self.fault.count_mut() = count;
        }
        self
    }

    /// The load engine's configuration against the gateway at `target`.
    pub fn load_config(&self, target: Url, seed: u64) -> LoadConfig {
        let model = match self.load.rate {
            Some(rate) => LoadModel::OpenLoop(OpenLoopProfile {
                rate,
                connections: self.load.connections.unwrap_or(DEFAULT_CONNECTIONS),
            }),
            None => LoadModel::Users(UsersProfile {
                users: self.load.users.unwrap_or(DEFAULT_USERS),
                // All users start within the first 100 ms: the faults, not the ramp, are tested.
                spawn_rate: f64::from(self.load.users.unwrap_or(DEFAULT_USERS)) * 10.0,
                think: self.load.wait.unwrap_or(ThinkTime::NONE),
            }),
        };
        LoadConfig {
            target,
            model,
            duration: self.load.duration,
            mix: self.load.endpoints.clone(),
            timeout: self.load.timeout,
            requests: self
                .load
                .requests()
                .expect("checked when the scenario was parsed"),
            seed: DEFAULT_SEED,
            rng_seed: seed,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let load = &self.load;
        if load.rate.is_some() && (load.users.is_some() || load.wait.is_some()) {
            return Err((
                "load.rate",
                "an open-loop rate excludes `users` and `wait`".into(),
            ));
        }
        if load.rate.is_none() && load.connections.is_some() {
            return Err((
                "load.connections",
                "only an open-loop `rate` uses it".into(),
            ));
        }
        if load
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(("load.rate", "must be a positive number".into()));
        }
        if load.users == Some(0) || load.connections == Some(0) {
            return Err(("load.users", "must be at least 1".into()));
        }
        if load.duration.is_zero() || self.quick.duration.is_some_and(|d| d.is_zero()) {
            return Err(("load.duration", "must be above 0".into()));
        }
        if load.timeout.is_zero() {
            return Err(("load.timeout", "must be above 0".into()));
        }
        let requests = load.requests().map_err(|reason| ("load.paths", reason))?;
        let endpoints = load.endpoints.endpoints();
        crate::loadtest::load::check_routes(&endpoints, &requests)
            .map_err(|error| ("load.paths", error.to_string()))?;
        crate::loadtest::services::check_gateway_serves(self.gateway, &endpoints)
            .map_err(|error| ("gateway", error.to_string()))?;
        self.fault.validate()
    }
}

/// Every `*.toml` in `dir`, sorted by file name.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let list_error = |source| ScenarioError::List {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ScenarioError::Empty(dir.to_owned()));
    }
    files.sort();
    Ok(files)
}

const DEFAULT_USERS: u32 = 20;
const DEFAULT_CONNECTIONS: u32 = 50;

fn default_seed() -> u64 {
    DEFAULT_SCENARIO_SEED
}

fn default_counts() -> CountMix {
    CountMix::single(DEFAULT_COUNT)
}

fn default_weight() -> u32 {
    1
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_recovery() -> Duration {
    DEFAULT_MAX_RECOVERY
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::endpoint::Endpoint;

    const GOOD: &str = r#"
name = "pause"
description = "stop and continue"
seed = 7

[load]
users = 4
wait = "10ms..50ms"
duration = "20s"
endpoints = "api,shm"
counts = "708=9,12000=1"
paths = [
    { path = "/blobs?size=3000&pattern=text&seed=1", weight = 2 },
    { path = "/blobs?size=3000000&pattern=random&seed=9" },
]

[fault.pause]
count = 10
interval = "500ms..1s"
pause = "50ms..3s"

[quick]
duration = "5s"
count = 2

[expect]
max_recovery = "1500ms"
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("scenarios/test.toml"), text)
    }

    #[test]
    fn parses_a_complete_scenario() {
        let scenario = parse(GOOD).unwrap();
        assert_eq!(scenario.name, "pause");
        assert_eq!(scenario.seed, 7);
        assert_eq!(scenario.load.duration, Duration::from_secs(20));
        assert_eq!(scenario.load.timeout, Duration::from_secs(5));
        assert_eq!(scenario.load.counts.weighted(), &[(708, 9), (12_000, 1)]);
        let config = scenario.load_config("http://127.0.0.1:1".parse().unwrap(), 7);
        assert_eq!(config.requests.counts(), Some(scenario.load.counts.clone()));
        let paths: Vec<(String, u32)> = config
            .requests
            .paths()
            .into_iter()
            .map(|(path, weight)| (path.to_string(), weight))
            .collect();
        assert_eq!(
            paths,
            [
                ("/blobs?size=3000&pattern=text&seed=1".to_owned(), 2),
                ("/blobs?size=3000000&pattern=random&seed=9".to_owned(), 1)
            ]
        );
        let FaultSpec::Pause(pause) = &scenario.fault else {
            panic!("expected a pause fault, got {:?}", scenario.fault);
        };
        assert_eq!(pause.pause.min, Duration::from_millis(50));
        assert_eq!(pause.pause.max, Duration::from_secs(3));
        assert_eq!(pause.users_service_share, 0.5);
        assert_eq!(scenario.expect.max_recovery, Duration::from_millis(1500));
        let quick = scenario.quick();
        assert_eq!(quick.load.duration, Duration::from_secs(5));
        assert_eq!(quick.fault.count(), 2);
    }

    #[test]
    fn unknown_fields_are_refused_with_file_and_field() {
        for (from, to, field) in [
            ("seed = 7", "sed = 7", "sed"),
            ("users = 4", "userz = 4", "userz"),
            (
                "pause = \"50ms..3s\"",
                "pause = \"50ms..3s\"\npaws = 1",
                "paws",
            ),
            ("count = 2", "count = 2\nduraton = \"1s\"", "duraton"),
        ] {
            let text = GOOD.replacen(from, to, 1);
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains("scenarios/test.toml"), "{error}");
            assert!(error.contains(field), "{error}");
            assert!(error.contains("unknown field"), "{error}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_field() {
        let error = parse(&GOOD.replace("\"20s\"", "\"twenty\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("scenarios/test.toml"), "{error}");
        assert!(error.contains("duration"), "{error}");
        assert!(error.contains("twenty"), "{error}");
        let error = parse(&GOOD.replace("\"50ms..3s\"", "\"3s..50ms\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("pause"), "{error}");
        let error = parse(&GOOD.replace("\"20s\"", "\"0s\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("load.duration"), "{error}");
    }

    #[test]
    fn counts_default_to_the_seeds_and_a_bad_mix_names_the_field() {
        let scenario = parse(&GOOD.replace("counts = \"708=9,12000=1\"\n", "")).unwrap();
        assert_eq!(scenario.load.counts, CountMix::single(DEFAULT_COUNT));
        let error = parse(&GOOD.replace("12000=1", "12000=x"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("counts"), "{error}");
        assert!(error.contains("\"x\""), "{error}");
    }

    #[test]
    fn a_bad_path_names_the_field() {
        for (from, to, reason) in [
            ("size=3000&", "size=x&", "size"),
            ("seed=9\" }", "seed=9\", wieght = 2 }", "wieght"),
            ("size=3000&", "size=3000&", ""),
        ] {
            let text = GOOD.replacen(from, to, 1);
            match parse(&text) {
                Ok(_) if reason.is_empty() => {}
                Ok(_) => panic!("{to:?} accepted"),
                Err(error) => {
                    let error = error.to_string();
                    assert!(error.contains("paths") || error.contains(reason), "{error}");
                    assert!(error.contains(reason), "{error}");
                }
            }
        }
        let twice = GOOD.replace(
            "seed=9\" }",
            "seed=9\" },\n    { path = \"/blobs?size=3000000&pattern=random&seed=9\" }",
        );
        let error = parse(&twice).unwrap_err().to_string();
        assert!(
            error.contains("load.paths") && error.contains("twice"),
            "{error}"
        );
        let via_http = GOOD.replace("endpoints = \"api,shm\"", "endpoints = \"api,shm-http\"");
        let error = parse(&via_http).unwrap_err().to_string();
        assert!(
            error.contains("load.paths") && error.contains("shm-http"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_fault_kind_is_refused() {
        let error = parse(&GOOD.replace("[fault.pause]", "[fault.meteor]"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("meteor"), "{error}");
    }

    #[test]
    fn rate_and_users_exclude_each_other() {
        let error = parse(&GOOD.replace("users = 4", "users = 4\nrate = 100.0"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("load.rate"), "{error}");
    }

    /// The load of a Rust scenario also asks for `/blobs` bodies, one in each tier of the
    /// control channel at users-service's defaults: inline (at most the inline threshold), a
    /// slot (above the largest inline body, within a 512 KiB slot), sealed (above a slot).
    fn assert_blobs_in_every_tier(scenario: &Scenario) {
        use crate::loadtest::load::verify::Expected;
        use shmbridge::control::DEFAULT_INLINE_THRESHOLD;
        use shmbridge::control::frame::MAX_INLINE_LEN;
        const SLOT_SIZE: u64 = 512 << 10;

        let requests = scenario.load.requests().unwrap();
        let sizes: Vec<u64> = requests
            .paths()
            .iter()
            .filter_map(|(path, weight)| match path.expected() {
                Expected::Blob(query) if *weight > 0 => Some(query.size),
                _ => None,
            })
            .collect();
        let name = &scenario.name;
        assert!(
            sizes
                .iter()
                .any(|&size| size <= DEFAULT_INLINE_THRESHOLD as u64),
            "{name}: no inline blob in {sizes:?}"
        );
        assert!(
            sizes
                .iter()
                .any(|&size| size > MAX_INLINE_LEN as u64 && size <= SLOT_SIZE),
            "{name}: no slot blob in {sizes:?}"
        );
        assert!(
            sizes.iter().any(|&size| size > SLOT_SIZE),
            "{name}: no sealed blob in {sizes:?}"
        );
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for path in scenario_files(&dir).unwrap() {
            let scenario = Scenario::load(&path).unwrap();
            assert_eq!(
                Some(scenario.name.as_str()),
                path.file_stem().and_then(|stem| stem.to_str()),
                "{} names itself differently",
                path.display()
            );
            let kind = scenario.fault.kind();
            // A scenario of the published path alone says so.
            let published = scenario.load.endpoints.endpoints() == [Endpoint::Published];
            let expected = match (scenario.users_service, scenario.gateway) {
                (UsersServiceKind::Rust, GatewayKind::Rust) if published => {
                    format!("{kind}-published")
                }
                (UsersServiceKind::Rust, GatewayKind::Rust) => kind.to_owned(),
                (UsersServiceKind::Python, GatewayKind::Rust) => format!("{kind}-python"),
                (UsersServiceKind::Rust, GatewayKind::Go) => format!("{kind}-go"),
                (UsersServiceKind::Python, GatewayKind::Go) => format!("{kind}-go-python"),
            };
            assert_eq!(scenario.name, expected);
            if scenario.users_service == UsersServiceKind::Rust {
                assert_blobs_in_every_tier(&scenario);
            }
        }
    }
}
