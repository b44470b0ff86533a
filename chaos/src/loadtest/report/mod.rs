//! Reports of a load run: Markdown in the seed report's layout (with the seed's figures beside
//! ours), Locust-compatible CSV, JSON, and a self-contained HTML page with SVG charts; and the
//! capacity report of `compare --capacity` ([`capacity`]); the report of `sweep` ([`sweep`]).

pub mod capacity;
pub mod csv;
pub mod html;
pub mod json;
pub mod machine;
pub mod markdown;
pub mod seed;
pub mod sweep;

use std::collections::BTreeMap;
use std::time::Duration;

use shmbridge_server::transport_header::Transport;

use crate::loadtest::capacity::summary::schedule;
use crate::loadtest::load::LoadConfig;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::RunStats;
use crate::loadtest::load::target::{Resource, UpstreamPath};
use crate::loadtest::load::verify::BodyChecker;
use machine::Provenance;

/// Everything a report shows about one run.
pub struct RunReport<'a> {
    pub config: &'a LoadConfig,
    pub stats: &'a RunStats,
    /// Size of the expected body of each resource of the run's mix, in the mix's order; `None`
    /// for a path whose bytes are not known (checked by checksum only).
    pub payload_bytes: Vec<Option<usize>>,
    pub provenance: Provenance,
}

impl<'a> RunReport<'a> {
    pub fn new(
        config: &'a LoadConfig,
        stats: &'a RunStats,
        payload_bytes: Vec<Option<usize>>,
        environment: String,
    ) -> Self {
        RunReport {
            config,
            stats,
            payload_bytes,
            provenance: Provenance::now(environment),
        }
    }
}

/// The size of the expected body of each resource of `config`'s mix, in the mix's order;
/// `None` for a path checked by checksum only.
pub fn payload_sizes(config: &LoadConfig, checker: &BodyChecker) -> Vec<Option<usize>> {
    config
        .requests
        .weighted()
        .iter()
        .map(|(resource, _)| {
            checker
                .expected_body(resource.expected(config.seed))
                .map(|body| body.bytes.len())
        })
        .collect()
}

/// The command-line flags that ask for `config`'s resources: `--count 708 --seed 28`, or
/// `--path '/blobs?size=3'` per path (paths come with equal weights on the command line).
pub fn request_flags(config: &LoadConfig) -> String {
    let paths = config.requests.paths();
    if paths.is_empty() {
        let counts = config
            .requests
            .counts()
            .map_or_else(String::new, |counts| counts.to_string());
        return format!("--count {counts} --seed {}", config.seed);
    }
    let flags: Vec<String> = paths
        .iter()
        .map(|(path, _)| format!("--path {}", shell_quoted(path)))
        .collect();
    flags.join(" ")
}

/// `'text'`, for a shell (a `'` inside closes, escapes and reopens the quotes).
pub fn shell_quoted(path: &UpstreamPath) -> String {
    format!("'{}'", path.as_str().replace('\'', "'\\''"))
}

/// One resource as the reports name it: `count=708 (256,873 bytes)` or `` `/blobs?size=3` (3
/// bytes) ``, the size `unknown: checked by x-payload-crc32 only` when nothing knows it.
pub fn describe_resource(resource: &Resource, bytes: Option<usize>) -> String {
    let size = bytes.map_or_else(
        || "size unknown: checked by `x-payload-crc32` only".to_owned(),
        |bytes| format!("{} bytes", thousands(bytes as u64)),
    );
    match resource {
        Resource::Users(count) => format!("count={count} ({size})"),
        Resource::Path(path) => format!("`{path}` ({size})"),
    }
}

/// The `x-transport` values of an endpoint's 200 responses: `shm-slot` when one carried them
/// all, `shm-slot 1,200, shm-sealed 40` when several did, `—` when none was named.
pub fn transports_text(transports: &BTreeMap<Transport, u64>) -> String {
    match transports.len() {
        0 => "—".to_owned(),
        1 => transports
            .keys()
            .next()
            .map_or_else(String::new, |transport| transport.to_string()),
        _ => {
            let parts: Vec<String> = transports
                .iter()
                .map(|(transport, count)| format!("{transport} {}", thousands(*count)))
                .collect();
            parts.join(", ")
        }
    }
}

/// Milliseconds with two decimals: our latencies are often below one millisecond.
pub fn format_ms(ms: f64) -> String {
    format!("{ms:.2}")
}

/// `1234567` → `1,234,567`, as the seed report writes counts.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// The `- **Rounds**` line of a report's "How it was run": how many rounds of what length each
/// endpoint ran, `per` what, and the order [`schedule`] runs them in.
fn rounds_line(endpoints: &[Endpoint], rounds: u32, round_duration: Duration, per: &str) -> String {
    let order: Vec<String> = schedule(endpoints, rounds)
        .iter()
        .map(|run| run.endpoint.to_string())
        .collect();
    format!(
        "- **Rounds**: {rounds} of {} {per}; run order: {}\n",
        humantime::format_duration(round_duration),
        order.join(" ")
    )
}

/// A small run with hand-picked numbers, shared by the report formats' tests.
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::Duration;

    use crate::loadtest::capacity::{CapacityPlan, DEFAULT_ENDPOINTS, RoundLoad};
    use crate::loadtest::load::counts::CountMix;
    use crate::loadtest::load::endpoint::{Endpoint, EndpointMix};
    use crate::loadtest::load::stats::{EndpointStats, Failure, FailureClass, Outcome, RunStats};
    use crate::loadtest::load::target::RequestMix;
    use crate::loadtest::load::users::{ThinkTime, UsersProfile};
    use crate::loadtest::load::verify::Corruption;
    use crate::loadtest::load::{LoadConfig, LoadModel};

    /// Two 20 s rounds of every default endpoint, 50 closed-loop users each.
    pub fn capacity_plan() -> CapacityPlan {
        CapacityPlan {
            endpoints: DEFAULT_ENDPOINTS.to_vec(),
            load: RoundLoad::Closed { users: 50 },
            rounds: 2,
            round_duration: Duration::from_secs(20),
        }
    }

    pub fn config() -> LoadConfig {
        LoadConfig {
            target: "http://127.0.0.1:8080".parse().unwrap(),
            model: LoadModel::Users(UsersProfile {
                users: 50,
                spawn_rate: 10.0,
                think: ThinkTime::SEED,
            }),
            duration: Duration::from_secs(120),
            mix: EndpointMix::default(),
            timeout: Duration::from_secs(5),
            requests: RequestMix::users(&CountMix::single(708)),
            seed: 28,
            rng_seed: 42,
        }
    }

    /// api: 4 requests of 1, 2, 3, 4 ms, one a 503. shm: 2 requests of 1 ms, one corrupt.
    /// Elapsed 2 s.
    pub fn stats() -> RunStats {
        let mut api = EndpointStats::default();
        for ms in 1..=4 {
            let outcome = if ms == 4 {
                Outcome::Failed(Failure {
                    class: FailureClass::Status(503),
                    detail: "Service Unavailable".into(),
                })
            } else {
                Outcome::Verified
            };
            api.record(Duration::ZERO, Duration::from_millis(ms), 100, &outcome);
        }
        let mut shm = EndpointStats::default();
        shm.record(
            Duration::ZERO,
            Duration::from_millis(1),
            100,
            &Outcome::Verified,
        );
        let corruption = Corruption::Bytes {
            first_differing_offset: 7,
            expected_byte: Some(b'a'),
            actual_byte: Some(b'b'),
            expected_len: 100,
            actual_len: 100,
            expected_crc: 1,
            actual_crc: 2,
        };
        shm.record(
            Duration::from_secs(1),
            Duration::from_millis(1),
            100,
            &Outcome::Corrupt(Box::new(corruption)),
        );
        RunStats {
            endpoints: [(Endpoint::Api, api), (Endpoint::Shm, shm)].into(),
            elapsed: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_471), "1,471");
        assert_eq!(thousands(256_873), "256,873");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn names_transports_and_resources() {
        let mut transports = BTreeMap::new();
        assert_eq!(transports_text(&transports), "—");
        transports.insert(Transport::ShmSealed, 40);
        assert_eq!(transports_text(&transports), "shm-sealed");
        transports.insert(Transport::ShmSlot, 1_200);
        assert_eq!(
            transports_text(&transports),
            "shm-slot 1,200, shm-sealed 40"
        );
        let path: UpstreamPath = "/x?a='b'".parse().unwrap();
        assert_eq!(shell_quoted(&path), r"'/x?a='\''b'\'''");
        assert_eq!(
            describe_resource(&Resource::Path(path), None),
            "`/x?a='b'` (size unknown: checked by `x-payload-crc32` only)"
        );
        assert_eq!(
            describe_resource(&Resource::Users(708), Some(256_873)),
            "count=708 (256,873 bytes)"
        );
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_ms(0.456), "0.46");
        assert_eq!(format_ms(13.0), "13.00");
    }
}
