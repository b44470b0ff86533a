//! End to end over real processes: `compare` starts users-service and gateway as children of
//! the chaos binary, loads both endpoints, stops the children and writes every report format.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process::finish_bounded;

/// The chaos binary the workspace built.
static BINARY: LazyLock<PathBuf> = LazyLock::new(|| workspace_binary("shmbridge-chaos"));
/// A 5 s run plus service start-up and stop; generous for a loaded 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs the chaos binary, killing it if it outlives `RUN_LIMIT`.
fn run_bounded(args: &[&str]) -> Output {
    let child = Command::new(&*BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the chaos binary starts");
    finish_bounded(child, RUN_LIMIT)
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

/// Ctrl-C during the load: `compare` stops both services (their ports stop answering) and exits
/// with 130, without a report.
#[test]
fn interrupted_compare_stops_its_services() {
    use std::io::{BufRead, BufReader};
    use std::net::{SocketAddr, TcpStream};
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
    let addresses: Vec<SocketAddr> = services_line
        .split([' ', ','])
        .filter_map(|word| word.parse().ok())
        .collect();
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
