//! End to end over real processes: `run` starts users-service and the gateway as children of
//! the chaos binary, injects a scenario's faults under load and judges the invariants; and
//! an interrupted run leaves no child behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{LazyLock, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use shmbridge_chaos::harness::failpoint_build;
use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process::finish_bounded;

/// The chaos binary the workspace built.
static BINARY: LazyLock<PathBuf> = LazyLock::new(|| workspace_binary("shmbridge-chaos"));
/// A 6 s load plus service start-up, the leak check and stop; generous for a loaded 2-core
/// machine.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A short pause scenario: two SIGSTOP/SIGCONT of either service, up to 600 ms each.
const SHORT_PAUSE: &str = r#"
name = "pause"
description = "two short pauses under light load"
seed = 11

[load]
users = 4
wait = "10ms..40ms"
duration = "6s"
endpoints = "api,shm"
# 3,000 users are ~1.1 MB, above one 512 KiB slot: those bodies travel sealed; so do the
# 1,500,000-byte blobs, asked through `/via-api/blobs?...` and `/via-shm/blobs?...`.
counts = "708=3,3000=1"
paths = [{ path = "/blobs?size=1500000&pattern=random&seed=3", weight = 1 }]

[fault.pause]
count = 2
interval = "300ms..800ms"
pause = "100ms..600ms"
"#;

/// How long the fail-point build may take: from scratch on a busy 2-core machine it compiles
/// the services' whole dependency tree once.
const FAILPOINT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Makes the fail-point services `run` builds for itself (the same cargo command, into the same
/// directory), once per test binary, so that a test's own time limit starts only when `run`
/// finds them up to date.
fn build_failpoint_services() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        failpoint_build::build(
            &failpoint_build::target_dir_beside(&BINARY),
            !cfg!(debug_assertions),
            FAILPOINT_BUILD_TIMEOUT,
            true,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    });
}

/// The chaos binary with `args`, once the fail-point services `run` launches are built.
fn spawn(args: &[&str]) -> Child {
    build_failpoint_services();
    Command::new(&*BINARY)
        .args(args)
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the chaos binary starts")
}

fn write_scenario(dir: &Path, text: &str) -> String {
    let path = dir.join("pause.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `scenario` with `--json`, requires it to pass, and returns stdout, stderr and the JSON.
fn run_passing(scenario: &str, progress: &str) -> (String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("chaos.json");
    let json_arg = json_path.to_str().unwrap();
    let output = finish_bounded(
        spawn(&["run", scenario, "--progress", progress, "--json", json_arg]),
        RUN_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let json = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    (stdout, stderr, json)
}

#[test]
fn a_pause_scenario_passes_with_no_corrupt_body() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), SHORT_PAUSE);
    let (stdout, stderr, json) = run_passing(&scenario, "lines");
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("| pause |"))
        .unwrap_or_else(|| panic!("no summary row in:\n{stdout}"));
    let cells: Vec<&str> = summary.split('|').map(str::trim).collect();
    // | Scenario | Seed | Faults | Requests | OK | Clean | Corrupt | Outlived | Deaths | Leaked slots
    // | Leaked bytes | Recovery | Verdict |
    assert_eq!(cells[2], "11", "the scenario's seed: {summary}");
    assert_eq!(cells[3], "2", "both faults injected: {summary}");
    assert_eq!(cells[7], "0", "corrupt bodies: {summary}");
    assert_eq!(cells[11], "0", "leaked bytes: {summary}");
    assert_eq!(cells[13], "PASS", "{summary}");
    assert!(
        stdout.contains(&format!(
            "cargo run --release -p shmbridge-chaos -- run {scenario} --seed 11"
        )),
        "replay command missing:\n{stdout}"
    );
    assert!(stderr.contains("seed 11"), "seed not printed:\n{stderr}");
    assert_eq!(json["passed"], true);
    let invariants = &json["scenarios"][0]["invariants"];
    assert_eq!(invariants["corrupt"], 0);
    assert_eq!(invariants["leaked_slots"], 0);
    assert_eq!(invariants["leaked_bytes"], 0);
    assert_eq!(invariants["leftover_payload_memfds"], 0);
    assert!(invariants["ok"].as_u64().unwrap() > 0, "{invariants}");
    let result = &json["scenarios"][0];
    assert_eq!(result["load"]["count"], "708=3,3000=1");
    assert_eq!(
        result["load"]["paths"],
        serde_json::json!([{"path": "/blobs?size=1500000&pattern=random&seed=3", "weight": 1}])
    );
    assert_eq!(result["sealed_bytes_source"], "producer");
    assert!(
        result["sealed_publications"].as_u64().unwrap() > 0,
        "no body travelled sealed: {result}"
    );
}

#[test]
fn a_bad_scenario_is_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        &SHORT_PAUSE.replace("count = 2", "count = 2\nintervall = \"1s\""),
    );
    let output = finish_bounded(spawn(&["run", &scenario]), RUN_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&scenario), "{stderr}");
    assert!(stderr.contains("unknown field `intervall`"), "{stderr}");
}

#[test]
fn an_interrupted_run_leaves_no_service_behind() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        &SHORT_PAUSE.replace("duration = \"6s\"", "duration = \"60s\""),
    );
    let harness = spawn(&["run", &scenario, "--progress", "quiet"]);
    let harness_pid = harness.id();
    let started = Instant::now();
    let mut services = Vec::new();
    while services.len() < 2 && started.elapsed() < RUN_LIMIT {
        services = children_of(harness_pid);
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(services.len(), 2, "both services should have started");
    // Let a fault or two happen, so a service may be stopped (SIGSTOP) at the interrupt.
    thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-TERM", &harness_pid.to_string()])
        .status()
        .unwrap();
    let output = finish_bounded(harness, RUN_LIMIT);
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for pid in services {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "service {pid} outlived the interrupted harness"
        );
    }
}

/// Process ids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let parent_pid = rest.split_whitespace().nth(1);
        if parent_pid == Some(&parent.to_string()) {
            children.push(pid);
        }
    }
    children
}

/// Two users-service crashes at armed fail points (mid-write): counted as injected faults,
/// never as unexpected deaths, and nothing corrupt is served around them.
const SHORT_FAILPOINT_KILL: &str = r#"
name = "producer-kill"
description = "two fail-point crashes of users-service under light load"
seed = 5

[load]
users = 4
wait = "5ms..20ms"
duration = "6s"
endpoints = "api,shm"

[fault.producer-kill]
count = 2
interval = "300ms..600ms"
restart_delay = "100ms"
failpoint_share = 1.0
failpoint_max_skip = 5
"#;

#[test]
fn fail_point_crashes_are_injected_faults_not_unexpected_deaths() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), SHORT_FAILPOINT_KILL);
    let (_, _, json) = run_passing(&scenario, "quiet");
    let run = &json["scenarios"][0];
    let invariants = &run["invariants"];
    assert_eq!(invariants["unexpected_deaths"], 0, "{invariants}");
    assert_eq!(invariants["corrupt"], 0, "{invariants}");
    let crashes: u64 = invariants["faults"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(label, _)| label.starts_with("crash at users-service::"))
        .map(|(_, count)| count.as_u64().unwrap())
        .sum();
    assert_eq!(
        crashes, 2,
        "both faults were fail-point crashes: {invariants}"
    );
    for fault in run["faults"].as_array().unwrap() {
        assert!(
            fault["note"].is_null(),
            "the fail point was reached, not replaced by a signal: {fault}"
        );
    }
}
