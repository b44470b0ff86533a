//! Memory-pressure faults (`memory-pressure`): rounds of the largest bodies asked for at once on
//! every endpoint, slow readers, and a hog peer holding its share of users-service's sealed
//! bytes, while the scenario's small load goes on; the services run under the budgets this
//! class's table gives them ([`Budgets`]), and the run is judged by the checks of
//! [`crate::harness::memory`]: each service's peak RSS within those budgets, its caches' bounds
//! and a fixed overhead, every answer not a 200 a clean refusal, and in every round a large body
//! served to the gateway while the hog held its share.
//!
//! A round ([`round`]): the slow readers start one after another and trickle ([`slow_reader`]);
//! meanwhile the hog takes its share ([`share`]); then at once the burst and the prober
//! ([`clients`]) while the hog holds; the hog lets go; then, if no large body reached the
//! gateway during the hold, quiet holds with the prober alone until one does.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};
use shmbridge::SegmentConfig;
use shmbridge_server::dataset::DEFAULT_SEED;
use shmbridge_server::payload::Payload;
use shmbridge_server::query_cache::QueryCache;
use shmbridge_server::users_service::DATASETS_MAX_BYTES;

use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::FaultError;
use super::spec::{DurationRange, from_str, optional_from_str};
use crate::harness::memory::{GATEWAY_OVERHEAD, MemoryLimit, USERS_SERVICE_OVERHEAD};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::target::{Resource, UpstreamPath};
use crate::loadtest::load::verify::Expected;
use crate::loadtest::sweep::ladder::Size;
use crate::process::role::Role;

mod clients;
mod round;
mod share;
mod slow_reader;

/// Where the dataset seeds of a group's own-seed clients start: far from the load's
/// ([`DEFAULT_SEED`]), so none of their bodies is one the load's requests put in a cache.
const OWN_SEEDS: u64 = 1000;

/// `[fault.memory-pressure]`: rounds of pressure on the services' memory.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPressureSpec {
    /// Rounds, each one a fault.
    pub count: u32,
    /// Quiet time before each round.
    pub interval: DurationRange,
    /// What both services run with, and their memory is judged by.
    pub budgets: Budgets,
    /// A round's burst: every client of every group sends its request at once.
    pub burst: Vec<ClientGroup>,
    /// A round's slow readers, started one after another before the burst.
    pub slow_readers: Vec<ClientGroup>,
    /// How long the slow readers read slowly, together, once the last has begun (drawn per
    /// round), before they read the rest at full speed: the hog takes its share meanwhile, and
    /// the burst comes as they finish.
    pub slow: DurationRange,
    /// What the hog asks users-service for, until refused: a `/blobs` body above a slot, so
    /// that what it holds is sealed payloads.
    #[serde(deserialize_with = "from_str")]
    pub hog: UpstreamPath,
    /// How long the hog holds its share while the burst runs (drawn per round). Keep it
    /// well below users-service's ready TTL (5 s): its reaper then takes the publications back.
    pub hold: DurationRange,
    /// The large body (a `/blobs` body above a slot) the prober asks the gateway for over
    /// shared memory while the hog holds its share.
    #[serde(deserialize_with = "from_str")]
    pub probe: UpstreamPath,
}

/// The budgets and bounds the services run with, as flags; sizes such as `"256MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// The gateway's `--memory-budget`.
    #[serde(deserialize_with = "from_str")]
    pub gateway: Size,
    /// The gateway's `--keep-verified-bytes`: verified sealed payloads kept mapped (`"0"`:
    /// none).
    #[serde(deserialize_with = "size_or_zero")]
    pub keep_verified: u64,
    /// users-service's `--making-budget`.
    #[serde(deserialize_with = "from_str")]
    pub making: Size,
    /// users-service's `--max-payload`.
    #[serde(deserialize_with = "from_str")]
    pub max_payload: Size,
    /// users-service's `--max-sealed-bytes`.
    #[serde(deserialize_with = "from_str")]
    pub sealed: Size,
    /// users-service's `--max-sealed-bytes-per-peer`: the share the hog holds.
    #[serde(deserialize_with = "from_str")]
    pub sealed_share: Size,
}

/// One kind of client of a round: `clients` of them, each asking `endpoint` for `users` users
/// (the seed's routes: `/api/users-via-api`, `/api/users-via-shm`, `/api/users-cached`) or for
/// `path` (through the endpoint's prefix).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientGroup {
    #[serde(deserialize_with = "from_str")]
    pub endpoint: Endpoint,
    pub users: Option<u32>,
    #[serde(default, deserialize_with = "optional_from_str")]
    pub path: Option<UpstreamPath>,
    #[serde(default = "one")]
    pub clients: u32,
    /// Users only: each client asks with a dataset seed of its own, the same in every round, so
    /// that a burst on the cached route makes that many bodies at once instead of one.
    #[serde(default)]
    pub own_seeds: bool,
}

fn one() -> u32 {
    1
}

/// Reads a size (`"160MiB"`, see [`Size`]) or `"0"`.
fn size_or_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim() == "0" {
        return Ok(0);
    }
    text.parse::<Size>()
        .map(Size::bytes)
        .map_err(serde::de::Error::custom)
}

impl ClientGroup {
    /// What client `index` of the group asks for, and the dataset seed a users count asks with.
    fn request(&self, index: u32) -> (Resource, u64) {
        match (&self.users, &self.path) {
            (Some(count), _) if self.own_seeds => {
                (Resource::Users(*count), OWN_SEEDS + u64::from(index))
            }
            (Some(count), _) => (Resource::Users(*count), DEFAULT_SEED),
            (None, Some(path)) => (Resource::Path(path.clone()), DEFAULT_SEED),
            (None, None) => unreachable!("checked when the scenario was parsed"),
        }
    }

    /// Every request of the group with its seed.
    fn requests(&self) -> impl Iterator<Item = (Resource, u64)> + '_ {
        (0..self.clients).map(|index| self.request(index))
    }

    fn validate(&self, field: &'static str) -> Result<(), (&'static str, String)> {
        let invalid = |reason: String| Err((field, reason));
        match (&self.users, &self.path) {
            (Some(_), Some(_)) | (None, None) => {
                return invalid("give either `users` or `path`".into());
            }
            (None, Some(_)) if self.own_seeds => {
                return invalid("`own_seeds` is for `users` only".into());
            }
            _ => {}
        }
        if self.clients == 0 {
            return invalid("`clients` must be at least 1".into());
        }
        let (resource, _) = self.request(0);
        if resource.route(self.endpoint, DEFAULT_SEED).is_none() {
            return invalid(format!("{} cannot carry {resource}", self.endpoint));
        }
        Ok(())
    }
}

/// The size of a `/blobs` path's body if it is above a slot of users-service's segment (which
/// runs with its default geometry here): a body that travels sealed.
fn sealed_blob_size(path: &UpstreamPath) -> Option<u64> {
    match path.expected() {
        Expected::Blob(query) if query.size > u64::from(SegmentConfig::default().slot_size) => {
            Some(query.size)
        }
        _ => None,
    }
}

/// One round, as drawn.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "memory-pressure")]
pub struct Pressure {
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub slow: Duration,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub hold: Duration,
    /// The scenario's table: what every round asks for (not repeated in each planned fault).
    #[serde(skip)]
    pub spec: Arc<MemoryPressureSpec>,
}

impl FaultClass for MemoryPressureSpec {
    const NAME: &'static str = "memory-pressure";
    type Action = Pressure;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.burst.is_empty() {
            return Err(("fault.burst", "must list at least one group".into()));
        }
        for group in &self.burst {
            group.validate("fault.burst")?;
        }
        for group in &self.slow_readers {
            group.validate("fault.slow_readers")?;
        }
        let Some(hog_body) = sealed_blob_size(&self.hog) else {
            return Err((
                "fault.hog",
                format!("{} is not a /blobs body above a slot", self.hog),
            ));
        };
        let share = self.budgets.sealed_share.bytes();
        if hog_body > share.min(self.budgets.max_payload.bytes()) {
            return Err((
                "fault.hog",
                format!(
                    "its body ({hog_body} bytes) must fit the share ({share} bytes) and the payload limit"
                ),
            ));
        }
        if sealed_blob_size(&self.probe).is_none() {
            return Err((
                "fault.probe",
                format!("{} is not a /blobs body above a slot", self.probe),
            ));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, Pressure) {
        let slow = self.slow.sample(rng);
        let hold = self.hold.sample(rng);
        (
            self.interval,
            Pressure {
                slow,
                hold,
                spec: Arc::new(self.clone()),
            },
        )
    }

    fn service_args(&self, role: Role) -> Vec<String> {
        let budgets = &self.budgets;
        let flags = match role {
            Role::Gateway => vec![
                ("--memory-budget", budgets.gateway.bytes()),
                ("--keep-verified-bytes", budgets.keep_verified),
            ],
            Role::UsersService => vec![
                ("--making-budget", budgets.making.bytes()),
                ("--max-payload", budgets.max_payload.bytes()),
                ("--max-sealed-bytes", budgets.sealed.bytes()),
                ("--max-sealed-bytes-per-peer", budgets.sealed_share.bytes()),
            ],
        };
        flags
            .into_iter()
            .flat_map(|(flag, bytes)| [flag.to_owned(), bytes.to_string()])
            .collect()
    }

    /// The gateway: its memory budget, plus its caches (the verified payloads it keeps mapped,
    /// and the two caches of the cached routes, `/api/users-cached` and `/via-cached/*`, each
    /// bounded by [`QueryCache::MAX_BYTES`]). users-service: its making budget, plus its cache
    /// of generated datasets ([`DATASETS_MAX_BYTES`]); it runs without `--cache`, so it keeps no
    /// bodies, and its sealed payloads are memfds it writes but never maps. Each with its fixed
    /// overhead.
    fn memory_limits(&self) -> Vec<(Role, MemoryLimit)> {
        let route_cache = QueryCache::<Payload>::MAX_BYTES as u64;
        vec![
            (
                Role::Gateway,
                MemoryLimit {
                    budget: self.budgets.gateway.bytes(),
                    caches: self.budgets.keep_verified + 2 * route_cache,
                    overhead: GATEWAY_OVERHEAD,
                },
            ),
            (
                Role::UsersService,
                MemoryLimit {
                    budget: self.budgets.making.bytes(),
                    caches: DATASETS_MAX_BYTES as u64,
                    overhead: USERS_SERVICE_OVERHEAD,
                },
            ),
        ]
    }
}

impl Fault for Pressure {
    /// The gateway: every route passes through it, and it is its memory the burst is after.
    fn role(&self) -> Role {
        Role::Gateway
    }

    fn label(&self) -> String {
        "memory pressure round".to_owned()
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        round::run(self, context).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::faults::FaultSpec;
    use crate::harness::schedule::plan;

    const TABLE: &str = r#"
count = 3
interval = "1s..2s"
slow = "1s..2s"
hold = "1500ms..2500ms"
hog = "/blobs?size=62914560&pattern=zeros&seed=1"
probe = "/blobs?size=50331648&pattern=random&seed=7"
burst = [
    { endpoint = "shm", users = 170000, clients = 4 },
    { endpoint = "cached", users = 170000, clients = 3, own_seeds = true },
    { endpoint = "api", path = "/blobs?size=67108864&pattern=random&seed=5" },
]
slow_readers = [{ endpoint = "api", users = 170000, clients = 2 }]

[budgets]
gateway = "256MiB"
keep_verified = "0"
making = "384MiB"
max_payload = "64MiB"
sealed = "256MiB"
sealed_share = "128MiB"
"#;

    fn parse(text: &str) -> Result<MemoryPressureSpec, String> {
        let spec: MemoryPressureSpec = toml::from_str(text).map_err(|error| error.to_string())?;
        spec.validate()
            .map_err(|(field, reason)| format!("{field}: {reason}"))?;
        Ok(spec)
    }

    #[test]
    fn the_budgets_become_flags_and_limits() {
        let spec = parse(TABLE).unwrap();
        assert_eq!(
            spec.service_args(Role::Gateway),
            ["--memory-budget", "268435456", "--keep-verified-bytes", "0"]
        );
        assert_eq!(
            spec.service_args(Role::UsersService),
            [
                "--making-budget",
                "402653184",
                "--max-payload",
                "67108864",
                "--max-sealed-bytes",
                "268435456",
                "--max-sealed-bytes-per-peer",
                "134217728"
            ]
        );
        let limits = spec.memory_limits();
        assert_eq!(limits[0].0, Role::Gateway);
        assert_eq!(limits[0].1.budget, 256 << 20);
        assert_eq!(limits[0].1.caches, (2 * 160) << 20);
        let keeping =
            parse(&TABLE.replace("keep_verified = \"0\"", "keep_verified = \"160MiB\"")).unwrap();
        assert_eq!(keeping.memory_limits()[0].1.caches, (160 + 2 * 160) << 20);
        assert_eq!(keeping.service_args(Role::Gateway)[3], "167772160");
        assert_eq!(limits[1].0, Role::UsersService);
        assert_eq!(limits[1].1.budget, 384 << 20);
        assert_eq!(limits[1].1.caches, 32 << 20);
    }

    #[test]
    fn groups_ask_with_the_loads_seed_or_their_own() {
        let spec = parse(TABLE).unwrap();
        let shm: Vec<_> = spec.burst[0].requests().collect();
        assert_eq!(shm, vec![(Resource::Users(170_000), DEFAULT_SEED); 4]);
        let cached: Vec<u64> = spec.burst[1].requests().map(|(_, seed)| seed).collect();
        assert_eq!(cached, [OWN_SEEDS, OWN_SEEDS + 1, OWN_SEEDS + 2]);
        let (blob, _) = spec.burst[2].request(0);
        assert_eq!(
            blob.route(Endpoint::Api, DEFAULT_SEED).unwrap(),
            "/via-api/blobs?size=67108864&pattern=random&seed=5"
        );
    }

    #[test]
    fn a_table_that_cannot_work_is_refused_with_its_field() {
        for (from, to, expected) in [
            (
                "users = 170000, clients = 4",
                "clients = 4",
                "fault.burst: give either",
            ),
            (
                "path = \"/blobs?size=67108864&pattern=random&seed=5\"",
                "path = \"/blobs?size=1&seed=5\", own_seeds = true",
                "fault.burst: `own_seeds` is for `users` only",
            ),
            (
                "clients = 2 }",
                "clients = 0 }",
                "fault.slow_readers: `clients`",
            ),
            ("size=62914560", "size=4096", "fault.hog: /blobs?size=4096"),
            ("size=62914560", "size=200000000", "fault.hog: its body"),
            ("size=50331648", "size=3000", "fault.probe"),
            ("gateway = \"256MiB\"", "gateway = \"lots\"", "not a size"),
            ("gateway = \"256MiB\"", "gateway = \"0\"", "is 0 bytes"),
            (
                "keep_verified = \"0\"",
                "keep_verified = \"none\"",
                "not a size",
            ),
            (
                "slow = \"1s..2s\"",
                "slow = \"2s..1s\"",
                "minimum above its maximum",
            ),
        ] {
            let text = TABLE.replacen(from, to, 1);
            assert_ne!(text, TABLE, "{from} not in the table");
            let error = parse(&text).unwrap_err();
            assert!(error.contains(expected), "{to}: {error}");
        }
        let shm_http = TABLE.replacen(
            "endpoint = \"api\", path",
            "endpoint = \"shm-http\", path",
            1,
        );
        assert!(
            parse(&shm_http)
                .unwrap_err()
                .contains("shm-http cannot carry")
        );
    }

    #[test]
    fn rounds_draw_their_durations_within_range_and_carry_the_table() {
        let spec = parse(TABLE).unwrap();
        let rounds = plan(&FaultSpec::MemoryPressure(spec.clone()), 4);
        assert_eq!(rounds.len(), 3);
        for round in rounds {
            let crate::harness::faults::FaultAction::MemoryPressure(pressure) = round.action else {
                panic!("unexpected action {:?}", round.action);
            };
            assert!((spec.slow.min..=spec.slow.max).contains(&pressure.slow));
            assert!((spec.hold.min..=spec.hold.max).contains(&pressure.hold));
            assert_eq!(*pressure.spec, spec);
            assert_eq!(
                serde_json::to_value(&pressure).unwrap()["action"],
                "memory-pressure"
            );
        }
    }
}
