//! End to end over real processes: `sweep` starts users-service and gateway as `compare` does,
//! asks `/blobs` for each exact size and pattern through the gateway's prefixes, runs every
//! endpoint at every step closed loop and open loop, reports which shm tier carried each size
//! and a size above the payload limit without stopping, and stops the children.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process::{addresses_in, run_within};

/// The chaos binary the workspace built.
static BINARY: LazyLock<PathBuf> = LazyLock::new(|| workspace_binary("shmbridge-chaos"));
/// 5 measured steps × 2 load models × 3 endpoints × 300 ms of load, plus warm-ups, service
/// start-up and stop; generous for a loaded 2-core machine and a debug build.
const RUN_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn sweep_measures_every_endpoint_at_each_exact_size_and_pattern_and_stops_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("sweep.json");
    let html_path = dir.path().join("sweep.html");
    let output = run_within(
        &BINARY,
        &[
            "sweep",
            // 100 bytes travel inline, 64 KiB + 1 in a slot, 1 MiB sealed; 128 MiB is above
            // users-service's payload limit: reported, not measured, and not fatal
            "--sizes",
            "100,65537,1M,128M",
            "--patterns",
            "random,zeros",
            // zeros at 100 bytes and 1 MiB only
            "--subset-sizes",
            "100,1M",
            "--duration",
            "300ms",
            "--rounds",
            "1",
            "--users",
            "2",
            "--rate",
            "10",
            "--connections",
            "4",
            "--progress",
            "quiet",
            "--json",
            json_path.to_str().unwrap(),
            "--html",
            html_path.to_str().unwrap(),
        ],
        RUN_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );

    for text in [
        "# Payload-size sweep",
        "| random | 100 B | 100 | shm-inline |",
        "| random | 65537 B | 65,537 | shm-slot |",
        "| random | 1 MiB | 1,048,576 | shm-sealed |",
        "| random | 128 MiB | — | — | — | — | above users-service's payload limit (",
        "| zeros | 100 B | 100 | shm-inline |",
        "| zeros | 1 MiB | 1,048,576 | shm-sealed |",
        "## Closed loop (`--users 2`)",
        "## Open loop (`--rate 10 --connections 4`)",
        "**Crossover, random**: **",
        "**Crossover, zeros**: **",
        "| random | 1 MiB | Shared Memory | shm-sealed |",
        "| zeros | 1 MiB | Cached (ceiling) | cached |",
        "| zeros | 1 MiB | REST API | api |",
        "started by `sweep`",
    ] {
        assert!(stdout.contains(text), "report lacks {text:?}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6, "{report}");
    assert_eq!(steps[3]["outcome"], "above_limit", "{}", steps[3]);
    let measured: Vec<(&str, u64, &str)> = steps
        .iter()
        .filter(|step| step["outcome"] == "measured")
        .map(|step| {
            let pattern = step["pattern"].as_str().unwrap();
            // exactly the size asked for: every body was checked to be that blob
            let bytes = step["bytes"].as_u64().unwrap();
            assert_eq!(bytes, step["target_bytes"].as_u64().unwrap(), "{step}");
            let tiers = step["shm_transports"].as_object().unwrap();
            assert_eq!(tiers.len(), 1, "one tier carried every shm body: {step}");
            let tier = tiers.keys().next().unwrap().as_str();
            for process in ["gateway_kib", "users_service_kib"] {
                assert!(step["peak_rss"][process].as_u64().unwrap() > 1024, "{step}");
            }
            let models = step["models"].as_array().unwrap();
            assert_eq!(models.len(), 2, "{step}");
            for model in models {
                let names: Vec<&str> = model["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|cell| {
                        assert_eq!(cell["corrupt"], 0, "{cell}");
                        assert_eq!(cell["failed"], 0, "{cell}");
                        assert!(cell["requests"].as_u64().unwrap() > 0, "{cell}");
                        cell["endpoint"].as_str().unwrap()
                    })
                    .collect();
                assert_eq!(names, ["api", "shm", "cached"], "{model}");
            }
            (pattern, bytes, tier)
        })
        .collect();
    assert_eq!(
        measured,
        [
            ("random", 100, "shm-inline"),
            ("random", 65_537, "shm-slot"),
            ("random", 1 << 20, "shm-sealed"),
            ("zeros", 100, "shm-inline"),
            ("zeros", 1 << 20, "shm-sealed"),
        ]
    );
    // two load models × two patterns
    assert_eq!(report["crossovers"].as_array().unwrap().len(), 4);

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(html.matches("<svg").count(), 6);

    // "users-service on A, gateway on B": both ports are closed once sweep has exited
    let services_line = stderr
        .lines()
        .find(|line| line.starts_with("users-service on "))
        .unwrap_or_else(|| panic!("no services line:\n{stderr}"));
    let addresses = addresses_in(services_line);
    assert_eq!(addresses.len(), 2, "{services_line}");
    for address in &addresses {
        assert!(
            TcpStream::connect_timeout(address, Duration::from_secs(1)).is_err(),
            "{address} still accepts connections after sweep exited"
        );
    }
}

/// `--csv` is refused before any service starts: a sweep's rows are not Locust's.
#[test]
fn sweep_refuses_csv() {
    let output = run_within(
        &BINARY,
        &["sweep", "--sizes", "1K", "--csv", "/nonexistent/prefix"],
        RUN_LIMIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sweep writes no CSV"), "{stderr}");
    assert!(!stderr.contains("users-service on"), "{stderr}");
}

/// An endpoint that has no route for `/blobs` (shm-http asks only for users) is refused before
/// any service starts.
#[test]
fn sweep_refuses_an_endpoint_that_cannot_carry_blobs() {
    let output = run_within(
        &BINARY,
        &["sweep", "--sizes", "1K", "--endpoints", "api,shm-http"],
        RUN_LIMIT,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shm-http cannot carry /blobs?size=1024&pattern=random&seed=28"),
        "{stderr}"
    );
    assert!(!stderr.contains("users-service on"), "{stderr}");
}
