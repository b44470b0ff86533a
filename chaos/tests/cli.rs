//! The command line: every subcommand has help, and `load` refuses a remote target before
//! sending anything.

use std::process::Command;

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
