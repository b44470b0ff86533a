//! The command line: every subcommand has help, `load` refuses a remote target before
//! sending anything, and the services `compare` runs have no fail points.

use std::process::{Command, Stdio};
use std::time::Duration;

use shmbridge_system_tests::process::finish_bounded;

const BINARY: &str = env!("CARGO_BIN_EXE_shmbridge-chaos");

#[test]
fn every_public_subcommand_has_help() {
    for subcommand in ["compare", "load"] {
        let output = Command::new(BINARY)
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for flag in [
            "--users",
            "--spawn-rate",
            "--duration",
            "--wait",
            "--rate",
            "--timeout",
            "--csv",
            "--json",
            "--html",
            "--path",
        ] {
            assert!(help.contains(flag), "{subcommand} --help lacks {flag}");
        }
    }
}

#[test]
fn load_refuses_a_remote_target() {
    let output = Command::new(BINARY)
        .args([
            "load",
            "--target",
            "http://192.0.2.1:8080",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(output.stdout.is_empty(), "no report for a refused run");
}

#[test]
fn rate_and_users_are_exclusive() {
    let output = Command::new(BINARY)
        .args([
            "load",
            "--target",
            "http://127.0.0.1:1",
            "--rate",
            "10",
            "--users",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}

/// `compare` measures this binary's own service subcommands: they must be the services users
/// run, so an armed `FAILPOINTS` is refused at start-up instead of crashing or stalling them.
#[test]
fn the_services_compare_runs_refuse_fail_points() {
    for (subcommand, point) in [
        ("serve-users-service", "users-service::mid-copy"),
        ("serve-gateway", "gateway::mid-read"),
    ] {
        let child = Command::new(BINARY)
            .args([subcommand, "--listen", "127.0.0.1:0"])
            .env("FAILPOINTS", format!("{point}=return"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = finish_bounded(child, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{subcommand}: {stderr}");
        assert!(output.stdout.is_empty(), "{subcommand} started");
        assert!(
            stderr.contains("this binary has no fault points"),
            "{subcommand}: {stderr}"
        );
    }
}

#[test]
fn sweep_help_names_its_patterns_and_subset() {
    let output = Command::new(BINARY)
        .args(["sweep", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--sizes",
        "--patterns",
        "--subset-sizes",
        "[default: random,zeros,text]",
    ] {
        assert!(help.contains(flag), "sweep --help lacks {flag}:\n{help}");
    }
}

/// A `/blobs` query users-service would refuse is refused before anything is sent, with the
/// reason.
#[test]
fn load_refuses_a_bad_path_before_sending() {
    let output = Command::new(BINARY)
        .args([
            "load",
            "--target",
            "http://127.0.0.1:1",
            "--path",
            "/blobs?size=lots",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("size"), "{stderr}");
    assert!(output.stdout.is_empty());
}
