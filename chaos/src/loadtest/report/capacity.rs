//! The report of `compare --capacity`: how it was run, each endpoint's medians across rounds,
//! the ratios of those medians, and every round, as Markdown and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::json::{JsonFailure, json_failures, json_transports};
use super::machine::Provenance;
use super::{describe_resource, format_ms, request_flags, rounds_line, thousands, transports_text};
use crate::loadtest::capacity::summary::{Medians, Ratio, RoundFigures};
use crate::loadtest::capacity::{CapacityPlan, CapacityResult, RoundLoad};
use crate::loadtest::load::LoadConfig;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::target::RequestMix;
use crate::loadtest::load::verify::Corruption;

/// Shown where a ratio has no value (its denominator was 0).
const NO_VALUE: &str = "—";

/// Everything a capacity report shows.
pub struct CapacityReport<'a> {
    pub plan: &'a CapacityPlan,
    /// What every run shared: target, the one resource (`count` and `seed`, or a path),
    /// timeout.
    pub base: &'a LoadConfig,
    pub result: &'a CapacityResult,
    /// Size of the expected body of the runs' one resource (`compare --capacity` refuses a
    /// mix); `None` for a path checked by checksum only.
    pub payload_bytes: Option<usize>,
    /// Whether users-service ran with `--cache`.
    pub cache: bool,
    pub provenance: Provenance,
}

impl<'a> CapacityReport<'a> {
    pub fn new(
        plan: &'a CapacityPlan,
        base: &'a LoadConfig,
        result: &'a CapacityResult,
        payload_bytes: Option<usize>,
        cache: bool,
        environment: String,
    ) -> Self {
        CapacityReport {
            plan,
            base,
            result,
            payload_bytes,
            cache,
            provenance: Provenance::now(environment),
        }
    }

    /// The command that repeats this session.
    fn command(&self) -> String {
        let endpoints: Vec<String> = self.plan.endpoints.iter().map(|e| e.to_string()).collect();
        format!(
            "cargo run --release -p shmbridge-chaos -- compare --capacity --rounds {} --round-duration {} {} --endpoints {} {} --timeout {}{}",
            self.plan.rounds,
            humantime::format_duration(self.plan.round_duration),
            self.plan.load.flags(),
            endpoints.join(","),
            request_flags(self.base),
            humantime::format_duration(self.base.timeout),
            if self.cache { " --cache" } else { "" }
        )
    }

    fn bodies(&self) -> &'static str {
        if self.cache {
            "serialized once and cached by users-service (`--cache`), on every path"
        } else {
            "serialized per request, as in the seed (no `--cache`)"
        }
    }
}

pub fn render_markdown(report: &CapacityReport<'_>) -> String {
    let mut out = String::from("# Capacity: each endpoint alone, closed loop\n\n");
    how_it_was_run(&mut out, report);
    medians(&mut out, report);
    ratios(&mut out, &report.result.ratios());
    cpu(&mut out, report);
    rounds(&mut out, report);
    failures(&mut out, report.result);
    corruptions(&mut out, report);
    out
}

fn how_it_was_run(out: &mut String, report: &CapacityReport<'_>) {
    let plan = report.plan;
    out.push_str("## How it was run\n\n");
    let _ = writeln!(
        out,
        "- **Mode**: capacity: each endpoint alone (never mixed with another), {}",
        plan.load
    );
    out.push_str(&rounds_line(
        &plan.endpoints,
        plan.rounds,
        plan.round_duration,
        "per endpoint, interleaved so drift over the session hits every endpoint alike",
    ));
    let _ = writeln!(out, "- **Bodies**: {}", report.bodies());
    match report.base.requests.only() {
        Some(crate::loadtest::load::target::Resource::Users(count)) => {
            let _ = writeln!(
                out,
                "- **Payload Size**: {} bytes (count={count}, seed={})",
                thousands(report.payload_bytes.unwrap_or_default() as u64),
                report.base.seed
            );
        }
        Some(resource) => {
            let _ = writeln!(
                out,
                "- **Path**: {}, asked through each endpoint's prefix (`/via-api`, `/via-shm`, `/via-cached`, none under `auto`)",
                describe_resource(&resource, report.payload_bytes)
            );
        }
        None => {
            let _ = writeln!(out, "- **Requests**: {}", report.base.requests);
        }
    }
    let _ = writeln!(
        out,
        "- **Request Timeout**: {}",
        humantime::format_duration(report.base.timeout)
    );
    report.provenance.write_markdown(out);
    out.push_str(&super::markdown::verification_line(&report.base.requests));
    out.push_str("- **Medians**: across rounds, each column on its own (the round with the median req/s need not be the one with the median p99); with an even number of rounds, the mean of the middle two\n");
    let _ = writeln!(out, "- **Command**: `{}`\n", report.command());
}

fn medians(out: &mut String, report: &CapacityReport<'_>) {
    out.push_str("## Medians across rounds\n\n");
    out.push_str(
        "| Endpoint | Requests/sec | p50 (ms) | p99 (ms) | Requests | Failures | Corrupt | Transport (`x-transport`) |\n",
    );
    out.push_str(
        "|----------|-------------:|---------:|---------:|---------:|---------:|--------:|-----------|\n",
    );
    let medians = report.result.medians();
    for rounds in &report.result.endpoints {
        let Some((_, median)) = medians.iter().find(|(e, _)| *e == rounds.endpoint) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            rounds.endpoint.label(),
            median.requests_per_second,
            format_ms(median.p50_ms),
            format_ms(median.p99_ms),
            thousands(rounds.all.requests),
            thousands(rounds.all.failed()),
            thousands(rounds.all.corrupt),
            transports_text(&rounds.all.transports),
        );
    }
    out.push_str("\nRequests, failures and corrupt bodies are summed over all rounds. Corrupt: a 200 response whose bytes or checksum header differ from the published payload (not counted as a failure). Transport: what the gateway's `x-transport` named for the 200 responses (for shared memory, the tier that carried the body: inline in the answer, a slot, or a sealed memfd), with counts when it named several.\n\n");
}

/// Median CPU time per request by process: where a request's time goes on this machine.
fn cpu(out: &mut String, report: &CapacityReport<'_>) {
    let medians = report.result.medians();
    if medians.iter().all(|(_, median)| median.cpu.is_none()) {
        return;
    }
    out.push_str(
        "## CPU time per request

",
    );
    out.push_str("Medians across rounds, in µs of CPU time (user + system, all threads, from `/proc/PID/stat`) each process spent per request served. The load generator verifies every body, so its share is the same work for every endpoint.

");
    out.push_str(
        "| Endpoint | gateway | users-service | load generator | total |
",
    );
    out.push_str(
        "|----------|--------:|--------------:|---------------:|------:|
",
    );
    for (endpoint, median) in &medians {
        let Some(cpu) = median.cpu else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            endpoint.label(),
            cpu.gateway_us,
            cpu.users_service_us,
            cpu.load_generator_us,
            cpu.total_us(),
        );
    }
    out.push('\n');
}

fn ratios(out: &mut String, ratios: &[Ratio]) {
    if ratios.is_empty() {
        return;
    }
    out.push_str("## Ratios of the medians\n\n");
    out.push_str(
        "Above 1 in Requests/sec: more requests served; below 1 in p50 or p99: faster.\n\n",
    );
    out.push_str("| Ratio | Requests/sec | p50 | p99 |\n|-------|-------------:|----:|----:|\n");
    for ratio in ratios {
        let _ = writeln!(
            out,
            "| {} / {} ({}/{}) | {} | {} | {} |",
            ratio.numerator.label(),
            ratio.denominator.label(),
            ratio.numerator,
            ratio.denominator,
            format_ratio(ratio.requests_per_second),
            format_ratio(ratio.p50),
            format_ratio(ratio.p99),
        );
    }
    out.push('\n');
}

pub(super) fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or(NO_VALUE.to_owned(), |ratio| format!("{ratio:.2}×"))
}

fn rounds(out: &mut String, report: &CapacityReport<'_>) {
    let base = report.base;
    let runs = report.plan.schedule().len();
    out.push_str("## Rounds\n\n");
    for rounds in &report.result.endpoints {
        let _ = writeln!(
            out,
            "### {} (`{}`)\n\n| Round | Run | Requests/sec | p50 (ms) | p99 (ms) | Requests | Failures | Corrupt |\n|------:|----:|-------------:|---------:|---------:|---------:|---------:|--------:|",
            rounds.endpoint.label(),
            base.route(rounds.endpoint)
        );
        for round in &rounds.rounds {
            let _ = writeln!(
                out,
                "| {} | {} of {runs} | {:.1} | {} | {} | {} | {} | {} |",
                round.round,
                round.run,
                round.requests_per_second,
                format_ms(round.p50_ms),
                format_ms(round.p99_ms),
                thousands(round.requests),
                thousands(round.failed),
                thousands(round.corrupt),
            );
        }
        if let Some(median) = Medians::of(&rounds.rounds) {
            let _ = writeln!(
                out,
                "| **Median** | | **{:.1}** | **{}** | **{}** | | | |",
                median.requests_per_second,
                format_ms(median.p50_ms),
                format_ms(median.p99_ms),
            );
        }
        out.push('\n');
    }
}

fn failures(out: &mut String, result: &CapacityResult) {
    if result.endpoints.iter().all(|r| r.all.failures.is_empty()) {
        return;
    }
    out.push_str(
        "### Failures (all rounds)\n\n| Endpoint | Error | Occurrences |\n|----------|-------|-------------|\n",
    );
    for rounds in &result.endpoints {
        for (failure, count) in &rounds.all.failures {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                rounds.endpoint.label(),
                failure.to_string().replace('|', "\\|"),
                thousands(*count)
            );
        }
    }
    out.push('\n');
}

fn corruptions(out: &mut String, report: &CapacityReport<'_>) {
    let result = report.result;
    if result.corrupt() == 0 {
        return;
    }
    out.push_str("### Corrupt Bodies (first samples)\n\n");
    for rounds in &result.endpoints {
        for corruption in &rounds.all.corruption_samples {
            let _ = writeln!(
                out,
                "- {}: {corruption}",
                report.base.route(rounds.endpoint)
            );
        }
    }
    out.push('\n');
}

#[derive(Serialize)]
struct JsonCapacity<'a> {
    mode: &'static str,
    #[serde(flatten)]
    provenance: &'a Provenance,
    command: String,
    cache: bool,
    /// Flattened: a closed-loop session keeps its top-level `users`.
    #[serde(flatten)]
    load: RoundLoad,
    rounds: u32,
    round_duration_seconds: f64,
    /// Endpoints in the order each round runs them.
    order: &'a [Endpoint],
    /// `count` (and `paths`, for a path), as a mixed run's configuration has them.
    #[serde(flatten)]
    requests: &'a RequestMix,
    seed: u64,
    timeout_seconds: f64,
    payload_bytes: Option<usize>,
    endpoints: Vec<JsonEndpoint<'a>>,
    ratios: Vec<Ratio>,
}

#[derive(Serialize)]
struct JsonEndpoint<'a> {
    endpoint: Endpoint,
    path: String,
    medians: Option<Medians>,
    /// Summed over all rounds.
    requests: u64,
    failed: u64,
    corrupt: u64,
    rounds: &'a [RoundFigures],
    failures: Vec<JsonFailure<'a>>,
    corruption_samples: &'a [Corruption],
    /// 200 responses by `x-transport`, over all rounds.
    transports: BTreeMap<String, u64>,
}

pub fn render_json(report: &CapacityReport<'_>) -> serde_json::Result<String> {
    let json = JsonCapacity {
        mode: "capacity",
        provenance: &report.provenance,
        command: report.command(),
        cache: report.cache,
        load: report.plan.load,
        rounds: report.plan.rounds,
        round_duration_seconds: report.plan.round_duration.as_secs_f64(),
        order: &report.plan.endpoints,
        requests: &report.base.requests,
        seed: report.base.seed,
        timeout_seconds: report.base.timeout.as_secs_f64(),
        payload_bytes: report.payload_bytes,
        endpoints: report
            .result
            .endpoints
            .iter()
            .map(|rounds| JsonEndpoint {
                endpoint: rounds.endpoint,
                path: report.base.route(rounds.endpoint),
                medians: Medians::of(&rounds.rounds),
                requests: rounds.all.requests,
                failed: rounds.all.failed(),
                corrupt: rounds.all.corrupt,
                rounds: &rounds.rounds,
                failures: json_failures(&rounds.all.failures),
                corruption_samples: &rounds.all.corruption_samples,
                transports: json_transports(&rounds.all.transports),
            })
            .collect(),
        ratios: report.result.ratios(),
    };
    serde_json::to_string_pretty(&json)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::loadtest::capacity::EndpointRounds;
    use crate::loadtest::load::stats::{EndpointStats, Failure, FailureClass, Outcome};
    use crate::loadtest::report::fixture;

    fn round(round: u32, run: u32, rate: f64, p50_ms: f64, p99_ms: f64) -> RoundFigures {
        RoundFigures {
            round,
            run,
            requests: (rate * 10.0) as u64,
            elapsed_seconds: 10.0,
            requests_per_second: rate,
            p50_ms,
            p99_ms,
            failed: 0,
            corrupt: 0,
            cpu: None,
        }
    }

    /// Two rounds of api, shm, cached; shm has one 503 in its second round.
    fn result() -> CapacityResult {
        let rates = [
            (Endpoint::Api, [(1_000.0, 2.0, 10.0), (1_200.0, 2.2, 12.0)]),
            (Endpoint::Shm, [(1_500.0, 1.0, 8.0), (1_700.0, 1.2, 9.0)]),
            (Endpoint::Cached, [(2_000.0, 0.5, 4.0), (2_400.0, 0.7, 6.0)]),
        ];
        let endpoints = rates
            .into_iter()
            .enumerate()
            .map(|(position, (endpoint, figures))| {
                let rounds: Vec<RoundFigures> = figures
                    .iter()
                    .enumerate()
                    .map(|(index, &(rate, p50, p99))| {
                        let run = (index * 3 + position + 1) as u32;
                        round(index as u32 + 1, run, rate, p50, p99)
                    })
                    .collect();
                let mut all = EndpointStats::default();
                if endpoint == Endpoint::Shm {
                    all.record(
                        Duration::ZERO,
                        Duration::from_millis(1),
                        0,
                        &Outcome::Failed(Failure {
                            class: FailureClass::Status(503),
                            detail: "Service Unavailable".into(),
                        }),
                    );
                }
                EndpointRounds {
                    endpoint,
                    rounds,
                    all,
                }
            })
            .collect();
        CapacityResult { endpoints }
    }

    #[test]
    fn markdown_says_how_it_ran_and_shows_medians_ratios_and_rounds() {
        let (plan, base, result) = (fixture::capacity_plan(), fixture::config(), result());
        let report = CapacityReport::new(&plan, &base, &result, Some(256_873), true, "test".into());
        let text = render_markdown(&report);
        for line in [
            "closed loop: 50 users, no think time",
            "run order: api shm cached api shm cached",
            "(`--cache`)",
            "`cargo run --release -p shmbridge-chaos -- compare --capacity --rounds 2 --round-duration 20s --users 50 --endpoints api,shm,cached --count 708 --seed 28 --timeout 5s --cache`",
            // medians of two rounds are the means of the two
            "| REST API | 1100.0 | 2.10 | 11.00 |",
            "| Shared Memory | 1600.0 | 1.10 | 8.50 | 1 | 1 | 0 |",
            "| Cached (ceiling) | 2200.0 | 0.60 | 5.00 |",
            "| Shared Memory / REST API (shm/api) | 1.45× | 0.52× | 0.77× |",
            "| REST API / Cached (ceiling) (api/cached) | 0.50× | 3.50× | 2.20× |",
            "| Shared Memory / Cached (ceiling) (shm/cached) | 0.73× | 1.83× | 1.70× |",
            "### Shared Memory (`/api/users-via-shm`)",
            "| 2 | 5 of 6 | 1700.0 | 1.20 | 9.00 | 17,000 | 0 | 0 |",
            "| **Median** | | **1600.0** | **1.10** | **8.50** | | | |",
            "| Shared Memory | HTTP 503: Service Unavailable | 1 |",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
        assert!(!text.contains("Corrupt Bodies"), "{text}");
        assert!(!text.contains("Cached (ceiling) / REST API"), "{text}");
    }

    #[test]
    fn a_path_session_names_its_path_command_and_tiers() {
        use crate::loadtest::load::target::RequestMix;
        use shmbridge_server::transport_header::Transport;

        let (plan, mut base, mut result) = (fixture::capacity_plan(), fixture::config(), result());
        base.requests = RequestMix::path("/blobs?size=65536&pattern=text&seed=1".parse().unwrap());
        for _ in 0..3 {
            result.endpoints[1]
                .all
                .count_transport(Some(Transport::ShmSlot));
        }
        result.endpoints[0]
            .all
            .count_transport(Some(Transport::Api));
        let report = CapacityReport::new(&plan, &base, &result, Some(65_536), false, "test".into());
        let text = render_markdown(&report);
        for line in [
            "- **Path**: `/blobs?size=65536&pattern=text&seed=1` (65,536 bytes), asked through each endpoint's prefix",
            "--endpoints api,shm,cached --path '/blobs?size=65536&pattern=text&seed=1' --timeout 5s`",
            "| Shared Memory | 1600.0 | 1.10 | 8.50 | 1 | 1 | 0 | shm-slot |",
            "| REST API | 1100.0 | 2.10 | 11.00 | 0 | 0 | 0 | api |",
            "| Cached (ceiling) | 2200.0 | 0.60 | 5.00 | 0 | 0 | 0 | — |",
            "### Shared Memory (`/via-shm/blobs?size=65536&pattern=text&seed=1`)",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(
            json["paths"][0]["path"],
            "/blobs?size=65536&pattern=text&seed=1"
        );
        assert_eq!(json["payload_bytes"], 65_536);
        assert_eq!(json["endpoints"][1]["transports"]["shm-slot"], 3);
        assert_eq!(
            json["endpoints"][1]["path"],
            "/via-shm/blobs?size=65536&pattern=text&seed=1"
        );
    }

    #[test]
    fn json_carries_rounds_medians_and_ratios() {
        let (plan, base, result) = (fixture::capacity_plan(), fixture::config(), result());
        let report =
            CapacityReport::new(&plan, &base, &result, Some(256_873), false, "test".into());
        let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(json["mode"], "capacity");
        assert_eq!(json["cache"], false);
        assert_eq!(
            (&json["model"], &json["users"]),
            (&"closed".into(), &50.into())
        );
        assert_eq!(json["order"], serde_json::json!(["api", "shm", "cached"]));
        // Where and when, at the top level as in every JSON report.
        assert_eq!(json["environment"], "test");
        assert!(json["date"].is_string(), "{json}");
        assert!(json["machine"]["logical_cores"].is_u64(), "{json}");
        let shm = &json["endpoints"][1];
        assert_eq!(shm["endpoint"], "shm");
        assert_eq!(shm["medians"]["requests_per_second"], 1600.0);
        assert_eq!(shm["rounds"].as_array().unwrap().len(), 2);
        assert_eq!(shm["failures"][0]["occurrences"], 1);
        let first = &json["ratios"][0];
        assert_eq!(
            (&first["numerator"], &first["denominator"]),
            (&"shm".into(), &"api".into())
        );
    }
}
