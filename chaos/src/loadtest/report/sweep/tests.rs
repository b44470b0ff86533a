use std::time::Duration;

use super::*;
use crate::loadtest::capacity::EndpointRounds;
use crate::loadtest::capacity::summary::RoundFigures;
use crate::loadtest::load::open_loop::OpenLoopProfile;
use crate::loadtest::load::stats::{EndpointStats, Failure, FailureClass, Outcome};
use crate::loadtest::sweep::SizeSubset;
use crate::loadtest::sweep::rss::{PeakMethod, PeakRss};

const CLOSED: RoundLoad = RoundLoad::Closed { users: 8 };
const OPEN: RoundLoad = RoundLoad::Open(OpenLoopProfile {
    rate: 20.0,
    connections: 16,
});

fn plan() -> SweepPlan {
    SweepPlan {
        ladder: "1K,1M,128M".parse().unwrap(),
        patterns: vec![BlobPattern::Random, BlobPattern::Zeros],
        subset: SizeSubset::Sizes("1M".parse().unwrap()),
        endpoints: vec![Endpoint::Api, Endpoint::Shm, Endpoint::Cached],
        loads: [CLOSED, OPEN],
        rounds: 1,
        round_duration: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
        seed: 28,
        rng_seed: 7,
        cache: true,
        max_payload: 64 << 20,
    }
}

/// One round per endpoint: (endpoint, p50 ms, requests in 2 s, failed with 507); every 200
/// response named `transport` for shm, `api` for REST, `cached` for the ceiling.
fn session(figures: [(Endpoint, f64, u64, u64); 3], transport: Transport) -> CapacityResult {
    CapacityResult {
        endpoints: figures
            .into_iter()
            .map(|(endpoint, p50_ms, requests, failed)| {
                let mut all = EndpointStats::default();
                for index in 0..requests {
                    let outcome = if index < failed {
                        Outcome::Failed(Failure {
                            class: FailureClass::Status(507),
                            detail: "Insufficient Storage".into(),
                        })
                    } else {
                        all.count_transport(Some(match endpoint {
                            Endpoint::Shm => transport,
                            Endpoint::Cached => Transport::Cached,
                            _ => Transport::Api,
                        }));
                        Outcome::Verified
                    };
                    all.record(Duration::ZERO, Duration::from_millis(1), 0, &outcome);
                }
                EndpointRounds {
                    endpoint,
                    rounds: vec![RoundFigures {
                        round: 1,
                        run: 1,
                        requests,
                        elapsed_seconds: 2.0,
                        requests_per_second: requests as f64 / 2.0,
                        p50_ms,
                        p99_ms: p50_ms * 2.0,
                        failed,
                        corrupt: 0,
                        cpu: None,
                    }],
                    all,
                }
            })
            .collect(),
    }
}

fn measured(api: f64, shm: f64, shm_failed: u64, transport: Transport) -> StepOutcome {
    StepOutcome::Measured {
        sessions: [CLOSED, OPEN]
            .into_iter()
            .map(|load| {
                let figures = [
                    (Endpoint::Api, api, 100, 0),
                    (Endpoint::Shm, shm, 200, shm_failed),
                    (Endpoint::Cached, shm / 2.0, 400, 0),
                ];
                (load, session(figures, transport))
            })
            .collect(),
        peak_rss: Some(PeakRss {
            gateway_kib: 2048,
            users_service_kib: 3072,
        }),
    }
}

/// random 1 KiB: shm slower than REST, inline. random 1 MiB: shm faster, clean, sealed.
/// random 128 MiB: above the limit. zeros 1 MiB: shm faster, sealed.
fn result() -> SweepResult {
    let step = |pattern, target, outcome| SizeStep {
        pattern,
        target,
        outcome,
    };
    SweepResult {
        steps: vec![
            step(
                BlobPattern::Random,
                Size(1024),
                measured(1.0, 2.0, 0, Transport::ShmInline),
            ),
            step(
                BlobPattern::Random,
                Size(1 << 20),
                measured(8.0, 4.0, 0, Transport::ShmSealed),
            ),
            step(
                BlobPattern::Random,
                Size(128 << 20),
                StepOutcome::AboveLimit { limit: 64 << 20 },
            ),
            step(
                BlobPattern::Zeros,
                Size(1 << 20),
                measured(8.0, 10.0, 0, Transport::ShmSealed),
            ),
        ],
        peak_method: Some(PeakMethod::HighWaterMark),
    }
}

fn report<'a>(plan: &'a SweepPlan, result: &'a SweepResult) -> SweepReport<'a> {
    SweepReport {
        plan,
        result,
        provenance: Provenance {
            date: "2026-12-02T00:00:00Z".into(),
            ..Provenance::now("test".into())
        },
    }
}

#[test]
fn markdown_shows_steps_tiers_figures_ratios_crossovers_and_unmeasured_sizes() {
    let (plan, result) = (plan(), result());
    let text = render_markdown(&report(&plan, &result));
    for line in [
        "- **Sizes**: 1 KiB, 1 MiB, 128 MiB",
        "- **Patterns**: random, zeros; random at every size, zeros at the sizes also in `--subset-sizes 1M`",
        "`GET /blobs?size=N&pattern=P&seed=28`",
        "`VmHWM` from `/proc/PID/status` after the step, reset with `echo 5 > /proc/PID/clear_refs`",
        "`cargo run --release -p shmbridge-chaos -- sweep --sizes 1K,1M,128M --patterns random,zeros --subset-sizes 1M --endpoints api,shm,cached --users 8 --rate 20 --connections 16 --rounds 1 --duration 2s --timeout 10s --seed 28 --rng-seed 7 --cache`",
        "| random | 1 KiB | 1,024 | shm-inline | 2.0 | 3.0 |  |",
        "| random | 1 MiB | 1,048,576 | shm-sealed | 2.0 | 3.0 |  |",
        "| random | 128 MiB | — | — | — | — | above users-service's payload limit (67,108,864 bytes): not measured |",
        "| zeros | 1 MiB | 1,048,576 | shm-sealed |",
        "## Closed loop (`--users 8`)",
        "## Open loop (`--rate 20 --connections 16`)",
        "**Crossover, random**: **1 MiB** (shm wins there and at every larger measured size)",
        "**Crossover, zeros**: **none** (shm does not win at the largest measured size)",
        // 100 requests of 1,048,576 bytes in 2 s
        "| random | 1 MiB | REST API | api | 8.00 | 16.00 | 50.0 | 52.4 | 100 | 0 | 0 |",
        "| random | 1 MiB | Shared Memory | shm-sealed | 4.00 | 8.00 | 100.0 | 105 | 200 | 0 | 0 |",
        "| random | 1 KiB | Cached (ceiling) | cached |",
        // 200 bodies of 1,024 bytes in 2 s
        "| random | 1 KiB | Shared Memory | shm-inline | 2.00 | 4.00 | 100.0 | 0.102 | 200 | 0 | 0 |",
        "| random | 1 KiB | 2.00× | 2.00× | 2.00× | 0.50× | no |",
        "| random | 1 MiB | 0.50× | 2.00× | 2.00× | 0.50× | yes |",
        "| zeros | 1 MiB | 1.25× | 2.00× | 2.00× | 0.50× | no |",
    ] {
        assert!(text.contains(line), "report lacks {line:?}:\n{text}");
    }
    assert_eq!(text.matches("**Crossover, random**").count(), 2);
    assert_eq!(text.matches("**Crossover, zeros**").count(), 2);
    assert!(!text.contains("## Errors by step"), "{text}");
}

#[test]
fn errors_are_counted_per_step_and_endpoint_and_lose_the_size() {
    let plan = plan();
    let mut result = result();
    result.steps[1].outcome = measured(8.0, 0.5, 200, Transport::ShmSealed);
    let text = render_markdown(&report(&plan, &result));
    for line in [
        "**Crossover, random**: **none** (shm does not win at the largest measured size)",
        "| random | 1 MiB | Shared Memory | — | 0.50 | 1.00 | 100.0 | 0.000 | 200 | 200 | 0 |",
        // fast 507s give no ratio
        "| random | 1 MiB | — | — | — | — | no (shm errors) |",
        "| random | 1 MiB | --users 8 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
        "| random | 1 MiB | --rate 20 --connections 16 | Shared Memory | HTTP 507: Insufficient Storage | 200 |",
    ] {
        assert!(text.contains(line), "report lacks {line:?}:\n{text}");
    }
}

#[test]
fn json_and_html_carry_every_step() {
    let (plan, result) = (plan(), result());
    let report = report(&plan, &result);
    let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
    assert_eq!(json["mode"], "sweep");
    assert_eq!(json["sizes"], serde_json::json!([1024, 1 << 20, 128 << 20]));
    assert_eq!(json["patterns"], serde_json::json!(["random", "zeros"]));
    assert_eq!(json["subset_sizes"], "1M");
    assert_eq!(json["peak_rss_method"]["method"], "high_water_mark");
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[1]["outcome"], "measured");
    assert_eq!(steps[1]["pattern"], "random");
    assert_eq!(steps[1]["bytes"], 1 << 20);
    assert_eq!(
        steps[1]["path"],
        "/blobs?size=1048576&pattern=random&seed=28"
    );
    assert_eq!(
        steps[1]["shm_transports"],
        serde_json::json!({"shm-sealed": 400})
    );
    assert_eq!(steps[1]["peak_rss"]["gateway_kib"], 2048);
    assert_eq!(steps[1]["models"][0]["shm_wins"], true);
    assert_eq!(steps[1]["models"][0]["cells"][1]["endpoint"], "shm");
    assert_eq!(
        steps[1]["models"][0]["transports"][1],
        serde_json::json!({"endpoint": "shm", "transports": {"shm-sealed": 200}})
    );
    assert_eq!(steps[2]["outcome"], "above_limit");
    assert_eq!(steps[2]["limit_bytes"], 64 << 20);
    assert_eq!(steps[3]["pattern"], "zeros");
    let crossovers = json["crossovers"].as_array().unwrap();
    assert_eq!(crossovers.len(), 4);
    assert_eq!(crossovers[0]["pattern"], "random");
    assert_eq!(crossovers[0]["crossover_bytes"], 1 << 20);
    assert_eq!(crossovers[1]["crossover_bytes"], serde_json::Value::Null);
    let html = render_html(&report).unwrap();
    // latency, MB/s and req/s for each of the two load models, of the first pattern
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(
        html.contains("\n1 MiB\n") && html.contains("Payload-size sweep"),
        "{html}"
    );
}
