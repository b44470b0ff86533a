//! The lease and TTL flags are bounded at start-up: each binary refuses a value of zero or above
//! `shmbridge::MAX_DEADLINE_AHEAD` (one hour), from the command line or the environment, with a
//! message naming the flag and the bound, before it binds anything.

use std::process::{Command, Stdio};
use std::time::Duration;

use shmbridge_system_tests::process::finish_bounded;

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary` with `args` and `env`, expecting it to exit by itself; returns its exit code
/// and stderr. Fails the test (after killing it) if it is still running after the timeout.
fn refused(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish_bounded(child, EXIT_TIMEOUT);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn users_service_refuses_a_ready_ttl_out_of_bounds() {
    let binary = env!("CARGO_BIN_EXE_users-service");
    let (code, stderr) = refused(binary, &["--ready-ttl", "2h"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--ready-ttl <READY_TTL>': 2h is above the maximum of 1h"),
        "{stderr}"
    );
    let (code, stderr) = refused(binary, &[], &[("SHMBRIDGE_READY_TTL", "0s")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--ready-ttl <READY_TTL>': must be more than 0 and at most 1h"),
        "{stderr}"
    );
}

#[test]
fn users_service_refuses_a_lease_out_of_bounds() {
    let (code, stderr) = refused(
        env!("CARGO_BIN_EXE_users-service"),
        &["--lease", "61m"],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--lease <LEASE>': 1h 1m is above the maximum of 1h"),
        "{stderr}"
    );
}

#[test]
fn the_gateway_refuses_a_lease_out_of_bounds() {
    let (code, stderr) = refused(env!("CARGO_BIN_EXE_gateway"), &["--lease", "0s"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--lease <LEASE>': must be more than 0 and at most 1h"),
        "{stderr}"
    );
}
