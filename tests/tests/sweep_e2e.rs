//! End to end over real processes: `sweep` starts users-service and gateway as `compare` does,
//! finds each size's count, runs every endpoint at every measured size closed loop and open
//! loop, reports a size it cannot reach without stopping, and stops the children.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process::{addresses_in, run_within};

/// The chaos binary the workspace built.
static BINARY: LazyLock<PathBuf> = LazyLock::new(|| workspace_binary("shmbridge-chaos"));
/// 2 measured sizes × 2 load models × 3 endpoints × 300 ms of load, plus probes, service
/// start-up and stop; generous for a loaded 2-core machine and a debug build.
const RUN_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn sweep_measures_every_endpoint_at_each_reachable_size_and_stops_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("sweep.json");
    let html_path = dir.path().join("sweep.html");
    let output = run_within(
        &BINARY,
        &[
            "sweep",
            // 100 bytes is less than one user: reported, not measured, and not fatal
            "--sizes",
            "100,1K,64K",
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
        "| 100 B | — | — | — | — | unreachable: below one user (",
        "## Closed loop (`--users 2`)",
        "## Open loop (`--rate 10 --connections 4`)",
        "**Crossover**: **",
        "| 64 KiB | Shared Memory |",
        "| 64 KiB | Cached (ceiling) |",
        "started by `sweep`",
    ] {
        assert!(stdout.contains(text), "report lacks {text:?}:\n{stdout}");
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{report}");
    assert_eq!(steps[0]["outcome"], "unreachable", "{}", steps[0]);
    for (step, target) in steps[1..].iter().zip([1024, 65_536]) {
        assert_eq!(step["outcome"], "measured", "{step}");
        let bytes = step["bytes"].as_u64().unwrap();
        // the largest body not above the size: within one user (< 500 bytes) of it
        assert!(bytes <= target && bytes + 500 > target, "{step}");
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
                    assert!(cell["requests"].as_u64().unwrap() > 0, "{cell}");
                    cell["endpoint"].as_str().unwrap()
                })
                .collect();
            assert_eq!(names, ["api", "shm", "cached"], "{model}");
        }
    }
    assert_eq!(report["crossovers"].as_array().unwrap().len(), 2);

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
