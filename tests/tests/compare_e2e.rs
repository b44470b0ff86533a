//! End to end over real processes: `compare` starts users-service and gateway as children of
//! the chaos binary, loads both endpoints (mixed, or each alone with `--capacity`), stops the
//! children and writes every report format.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process;

/// The chaos binary the workspace built.
static BINARY: LazyLock<PathBuf> = LazyLock::new(|| workspace_binary("shmbridge-chaos"));
/// A run of 5 to 12 s of load plus service start-up and stop; generous for a loaded 2-core
/// machine.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs the chaos binary, killing it if it outlives `RUN_LIMIT`.
fn run_bounded(args: &[&str]) -> Output {
    run_within(args, RUN_LIMIT)
}

/// Runs the chaos binary, killing it if it outlives `limit`.
fn run_within(args: &[&str], limit: Duration) -> Output {
    process::run_within(&BINARY, args, limit)
}

#[test]
fn compare_reports_both_endpoints_with_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let html_path = dir.path().join("run.html");
    let csv_prefix = dir.path().join("run");
    let CompareRun { stdout, report, .. } = compare_run(
        &[
            "--duration",
            "5s",
            "--users",
            "10",
            "--progress",
            "lines",
            "--html",
            html_path.to_str().unwrap(),
            "--csv",
            csv_prefix.to_str().unwrap(),
        ],
        RUN_LIMIT,
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

/// `--path`: two bodies, a 600,000-byte blob (above a 512 KiB slot: sealed) and three users,
/// asked for through every transport's prefix (REST `/via-api`, shm `/via-shm`, the ceiling
/// `/via-cached`, the gateway's choice under `auto`), every body verified byte for byte; the shm ones travel in a
/// shm tier (the blob sealed, the users inline) and the report counts them by `x-transport`.
#[test]
fn compare_loads_any_path_through_every_transport_and_counts_the_tiers() {
    // Small enough for a debug build to serve many in the run: with a few slow requests per
    // endpoint, one could see only blobs and never count the inline tier.
    let blob = "/blobs?size=600000&pattern=random&seed=9";
    let users = "/users?count=3&seed=7";
    let CompareRun { stdout, report, .. } = compare_run(
        &[
            "--path",
            blob,
            "--path",
            users,
            "--endpoints",
            "api,shm,cached,auto",
            "--duration",
            "5s",
            "--users",
            "4",
            "--wait",
            "0",
            "--rng-seed",
            "7",
            // a debug build moving large bodies beside other tests on 2 cores
            "--timeout",
            "20s",
            "--progress",
            "quiet",
        ],
        RUN_LIMIT,
    );
    for text in [
        "`/blobs?size=600000&pattern=random&seed=9` (600,000 bytes) weight 1",
        "`/users?count=3&seed=7` (1,",
        "### Transport Taken (200 responses, by `x-transport`)",
    ] {
        assert!(stdout.contains(text), "report lacks {text:?}:\n{stdout}");
    }
    assert_eq!(
        report["config"]["paths"],
        serde_json::json!([{"path": blob, "weight": 1}, {"path": users, "weight": 1}])
    );
    assert!(
        report["config"].get("count").is_none(),
        "{}",
        report["config"]
    );
    let sizes: Vec<u64> = report["payload_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|size| size["bytes"].as_u64().unwrap())
        .collect();
    let users_bytes = shmbridge_server::dataset::users_json(3, 7).len() as u64;
    assert_eq!(sizes, [600_000, users_bytes]);
    let mut names = Vec::new();
    for endpoint in report["endpoints"].as_array().unwrap() {
        let name = endpoint["endpoint"].as_str().unwrap();
        names.push(name);
        assert_eq!(endpoint["corrupt"], 0, "{endpoint}");
        assert_eq!(endpoint["failed"], 0, "{endpoint}");
        let requests = endpoint["requests"].as_u64().unwrap();
        assert!(requests > 0, "{endpoint}");
        let transports = endpoint["transports"].as_object().unwrap();
        let counted = |transport: &str| transports.get(transport).and_then(|n| n.as_u64());
        match name {
            "api" => assert_eq!(counted("api"), Some(requests), "{endpoint}"),
            "cached" => assert_eq!(counted("cached"), Some(requests), "{endpoint}"),
            // every body over shared memory, the blob sealed and the users inline
            _ => {
                let (sealed, inline) = (counted("shm-sealed"), counted("shm-inline"));
                assert_eq!(
                    sealed.unwrap_or(0) + inline.unwrap_or(0),
                    requests,
                    "{endpoint}"
                );
                assert!(sealed.is_some() && inline.is_some(), "{endpoint}");
            }
        }
        let route = endpoint["path"].as_str().unwrap();
        assert!(route.contains("/*"), "{route}");
    }
    assert_eq!(names, ["api", "shm", "cached", "auto"]);
}

/// A path that shm-http cannot carry, or a mix for `--capacity`, is refused before any service
/// starts.
#[test]
fn compare_refuses_what_a_path_cannot_run_before_starting_services() {
    let blob = "/blobs?size=3&pattern=zeros&seed=1";
    for (args, reason) in [
        (
            &["compare", "--path", blob, "--endpoints", "api,shm-http"][..],
            "shm-http cannot carry /blobs?size=3&pattern=zeros&seed=1",
        ),
        (
            &[
                "compare",
                "--capacity",
                "--path",
                blob,
                "--path",
                "/users?count=3",
            ],
            "--capacity measures one payload size",
        ),
    ] {
        let output = run_bounded(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(!stderr.contains("users-service on"), "{stderr}");
    }
}

/// `--capacity`: each endpoint alone, rounds interleaved (api shm cached api shm cached), the
/// services started once, and a report of per-round figures, medians and ratios, 0 corrupt.
#[test]
fn capacity_runs_each_endpoint_alone_in_interleaved_rounds() {
    let CompareRun {
        stdout,
        stderr,
        report,
    } = compare_run(
        &[
            "--capacity",
            "--rounds",
            "2",
            "--round-duration",
            "2s",
            "--users",
            "4",
            "--progress",
            "quiet",
        ],
        RUN_LIMIT,
    );

    // The runs happened in the interleaved order, against one pair of services.
    let runs: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("run "))
        .collect();
    assert_eq!(
        runs,
        [
            "run 1/6: round 1/2, api alone for 2s",
            "run 2/6: round 1/2, shm alone for 2s",
            "run 3/6: round 1/2, cached alone for 2s",
            "run 4/6: round 2/2, api alone for 2s",
            "run 5/6: round 2/2, shm alone for 2s",
            "run 6/6: round 2/2, cached alone for 2s",
        ],
        "{stderr}"
    );
    assert_eq!(stderr.matches("users-service on ").count(), 1, "{stderr}");

    for text in [
        "closed loop: 4 users, no think time",
        "run order: api shm cached api shm cached",
        "## Medians across rounds",
        "## Ratios of the medians",
        "| Shared Memory / REST API (shm/api) |",
        "| Shared Memory / Cached (ceiling) (shm/cached) |",
        "| REST API / Cached (ceiling) (api/cached) |",
        "### Cached (ceiling) (`/api/users-cached`)",
        "| **Median** |",
    ] {
        assert!(stdout.contains(text), "report lacks {text:?}:\n{stdout}");
    }

    let endpoints = report["endpoints"].as_array().unwrap();
    let names: Vec<&str> = endpoints
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "shm", "cached"]);
    for endpoint in endpoints {
        assert_eq!(endpoint["corrupt"], 0, "{endpoint}");
        let rounds = endpoint["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{endpoint}");
        for round in rounds {
            assert!(round["requests"].as_u64().unwrap() > 0, "{round}");
            assert_eq!(round["corrupt"], 0, "{round}");
        }
        assert!(
            endpoint["medians"]["requests_per_second"].as_f64().unwrap() > 0.0,
            "{endpoint}"
        );
        assert!(
            endpoint["medians"]["p99_ms"].as_f64().unwrap() > 0.0,
            "{endpoint}"
        );
    }
    let ratios: Vec<(&str, &str)> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ratio| {
            assert!(
                ratio["requests_per_second"].as_f64().unwrap() > 0.0,
                "{ratio}"
            );
            (
                ratio["numerator"].as_str().unwrap(),
                ratio["denominator"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ratios,
        [("shm", "api"), ("api", "cached"), ("shm", "cached")]
    );
}

/// Ctrl-C during the load: `compare` stops both services (their ports stop answering) and exits
/// with 130, without a report.
#[test]
fn interrupted_compare_stops_its_services() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::sync::mpsc;

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut child = Command::new(&*BINARY)
        .args([
            "compare",
            "--duration",
            "60s",
            "--users",
            "2",
            "--progress",
            "quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the chaos binary starts");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let services_line = loop {
        match lines_rx.recv_timeout(RUN_LIMIT) {
            Ok(line) if line.starts_with("users-service on ") => break line,
            Ok(_) => {}
            Err(error) => {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("no services line from compare: {error}");
            }
        }
    };
    // "users-service on A, gateway on B"
    let addresses = process::addresses_in(&services_line);
    assert_eq!(addresses.len(), 2, "{services_line}");
    for address in &addresses {
        TcpStream::connect_timeout(address, Duration::from_secs(5)).expect("service is up");
    }

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "compare did not exit after SIGINT"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "no report after an interrupt: {stdout}");
    for address in &addresses {
        assert!(
            TcpStream::connect_timeout(address, Duration::from_secs(1)).is_err(),
            "{address} still accepts connections after compare exited"
        );
    }
}

/// A service that cannot get ready in time is a clear error, not a hang.
#[test]
fn startup_timeout_is_a_clear_error() {
    let output = run_bounded(&["compare", "--duration", "5s", "--startup-timeout", "1ms"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("users-service did not"), "{stderr}");
    assert!(output.stdout.is_empty());
}

/// What a `compare` run that exited 0 printed and reported.
struct CompareRun {
    stdout: String,
    stderr: String,
    report: serde_json::Value,
}

/// Runs `compare` with `args` and a JSON report, within `limit`, and asserts it exited 0.
fn compare_run(args: &[&str], limit: Duration) -> CompareRun {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    let mut all = vec!["compare", "--json", json_path.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = run_within(&all, limit);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    CompareRun {
        stdout,
        stderr,
        report,
    }
}

/// Asserts that every endpoint of `report` made requests, with 0 corrupt and 0 failed.
fn assert_every_endpoint_clean(report: &serde_json::Value) {
    for endpoint in report["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["corrupt"], 0, "{endpoint}");
        assert_eq!(endpoint["failed"], 0, "{endpoint}");
        assert!(endpoint["requests"].as_u64().unwrap() > 0, "{endpoint}");
    }
}

/// The seed's own architecture: a Python users-service (the `shmbridge` package, built into a
/// virtual environment by `compare` itself) behind the Rust gateway, which redeems what the
/// Python producer publishes. Every body is verified byte for byte against the Rust dataset.
#[test]
fn compare_runs_the_seed_profile_against_the_python_users_service() {
    // Building the wheel from a cold target dir takes about a minute on 2 cores.
    let run = compare_run(
        &[
            "--users-service",
            "python",
            "--duration",
            "5s",
            "--users",
            "10",
            "--progress",
            "lines",
        ],
        Duration::from_secs(600),
    );
    assert_every_endpoint_clean(&run.report);
    assert!(
        run.stdout.contains("users-service in Python"),
        "the report names the Python service:\n{}",
        run.stdout
    );
}

/// The seed's gateway language: the Go gateway (built by `compare` itself with
/// `transport/go/build.sh`) in front of the Rust users-service, its shared-memory bodies
/// redeemed by the Go package and verified byte for byte by the load tool.
#[test]
fn compare_runs_the_seed_profile_through_the_go_gateway() {
    let run = compare_run(
        &[
            "--gateway",
            "go",
            "--duration",
            "5s",
            "--users",
            "10",
            "--progress",
            "lines",
        ],
        Duration::from_secs(300),
    );
    assert_every_endpoint_clean(&run.report);
    assert!(
        run.stdout.contains("gateway in Go"),
        "the report names the Go gateway:\n{}",
        run.stdout
    );
    let shm = run.report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|endpoint| endpoint["endpoint"] == "shm")
        .expect("an shm endpoint");
    assert!(
        shm.to_string().contains("shm-slot"),
        "the Go gateway's shm bodies came through a slot: {shm}"
    );
}

/// An endpoint the Go gateway does not serve is refused before any service starts.
#[test]
fn the_go_gateway_refuses_endpoints_it_does_not_serve() {
    let output = run_bounded(&["compare", "--gateway", "go", "--endpoints", "api,cached"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the Go gateway serves the api and shm endpoints only, not cached"),
        "{stderr}"
    );
}
