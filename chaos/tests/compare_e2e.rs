//! End to end over real processes: `compare` starts users-service and gateway as children of
//! the chaos binary, loads both endpoints, stops the children and writes every report format.

use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_shmbridge-chaos");
/// A 5 s run plus service start-up and stop; generous for a loaded 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs the chaos binary, killing it if it outlives `RUN_LIMIT`.
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the chaos binary starts");
    let started = Instant::now();
    while child.try_wait().expect("waiting works").is_none() {
        if started.elapsed() > RUN_LIMIT {
            child.kill().expect("kill works");
            let output = child.wait_with_output().expect("reaping works");
            panic!(
                "compare ran past {RUN_LIMIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("reaping works")
}

#[test]
fn compare_reports_both_endpoints_with_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("run.json");
    let html_path = dir.path().join("run.html");
    let csv_prefix = dir.path().join("run");
    let output = run_bounded(&[
        "compare",
        "--duration",
        "5s",
        "--users",
        "10",
        "--progress",
        "lines",
        "--json",
        json_path.to_str().unwrap(),
        "--html",
        html_path.to_str().unwrap(),
        "--csv",
        csv_prefix.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );

    for heading in [
        "## Test Configuration",
        "### Throughput",
        "### Error Rates",
        "## Response Time Distribution",
    ] {
        assert!(
            stdout.contains(heading),
            "report lacks {heading:?}:\n{stdout}"
        );
    }
    assert!(stdout.contains("| REST API |") && stdout.contains("| Shared Memory |"));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let endpoints = report["endpoints"].as_array().unwrap();
    let names: Vec<&str> = endpoints
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "shm"]);
    for endpoint in endpoints {
        assert_eq!(endpoint["corrupt"], 0, "{endpoint}");
        assert!(endpoint["requests"].as_u64().unwrap() > 0, "{endpoint}");
        assert!(endpoint["latency"]["requests_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(endpoint["body_bytes"].as_u64().unwrap() % 256_873, 0);
    }
    assert_eq!(report["total"]["corrupt"], 0);

    let stats_csv = std::fs::read_to_string(dir.path().join("run_stats.csv")).unwrap();
    assert!(stats_csv.starts_with("Type,Name,Request Count,Failure Count,Median Response Time"));
    assert!(stats_csv.contains("GET,/api/users-via-shm,") && stats_csv.contains(",Aggregated,"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
}
