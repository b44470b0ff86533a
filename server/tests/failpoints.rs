//! Fault points exist only where the chaos harness builds them: this package's own binaries
//! (what `cargo build` hands to users) refuse `FAILPOINTS` at start-up, while the separate
//! fail-point build fires them where they say: a panic armed at MID_COPY unwinds out of the
//! publication and the slot goes back, and `return` kills users-service with SIGKILL mid-write.

mod process;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use process::{client, failpoint_binaries, start};
use reqwest::StatusCode;
use shmbridge_server::failpoints;
use shmbridge_system_tests::process::finish_bounded;

/// How long a refusing service may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary` with `FAILPOINTS=spec` and returns its exit status, stdout and stderr; kills it
/// and fails the test if it is still running after [`EXIT_TIMEOUT`] (it started instead of
/// refusing).
fn run_armed(binary: &str, spec: &str) -> (std::process::ExitStatus, String, String) {
    let child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0"])
        .env(failpoints::ENV_VAR, spec)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish_bounded(child, EXIT_TIMEOUT);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status, text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_default_build_refuses_failpoints_with_a_clear_error() {
    for (binary, point) in [
        (env!("CARGO_BIN_EXE_users-service"), failpoints::MID_COPY),
        (env!("CARGO_BIN_EXE_gateway"), failpoints::MID_READ),
    ] {
        let (status, stdout, stderr) = run_armed(binary, &format!("{point}=return"));
        assert_eq!(status.code(), Some(1), "{binary}: {stderr}");
        assert!(stdout.is_empty(), "{binary} announced itself: {stdout}");
        assert!(
            stderr.starts_with("error: FAILPOINTS is set")
                && stderr.contains("this binary has no fault points"),
            "{binary}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_panic_armed_mid_copy_unwinds_out_of_the_publication_and_frees_the_slot() {
    let binary = failpoint_binaries().users_service.to_str().unwrap();
    let armed = format!("{}=1*panic(armed by test)", failpoints::MID_COPY);
    // One slot and a claim timeout far below the 1 s lease: the second publication finds the
    // slot free only if the unwound write guard gave it back (the reaper would be too late).
    let users = start(
        "users-service",
        binary,
        &[
            "--listen",
            "127.0.0.1:0",
            "--slot-count",
            "1",
            "--slot-size",
            "65536",
            "--claim-timeout",
            "50ms",
            "--http-signal",
        ],
        &[(failpoints::ENV_VAR, &armed)],
    )
    .await;
    let http = client();
    let publish = format!("{}/shm/users?count=5", users.url());
    let first = http.post(&publish).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        users
            .log_line_containing("armed by test", Duration::from_secs(5))
            .await
            .is_some(),
        "the armed point fired inside the publication"
    );
    // `1*` fires once: the next publication goes through, into the freed slot.
    let second = http.post(&publish).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let handle: shmbridge::Handle = second.text().await.unwrap().parse().unwrap();
    assert_eq!(handle.slot, 0);
}

#[tokio::test]
async fn return_mid_copy_kills_users_service_with_sigkill() {
    let binary = failpoint_binaries().users_service.to_str().unwrap();
    let armed = format!("{}=1*return", failpoints::MID_COPY);
    let mut users = start(
        "users-service",
        binary,
        &[
            "--listen",
            "127.0.0.1:0",
            "--slot-count",
            "2",
            "--slot-size",
            "65536",
            "--http-signal",
        ],
        &[(failpoints::ENV_VAR, &armed)],
    )
    .await;
    // The process dies mid-request: the connection closes (or resets) without an answer.
    let answer = client()
        .post(format!("{}/shm/users?count=5", users.url()))
        .send()
        .await;
    assert!(answer.is_err(), "{answer:?}");
    let status = users
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("users-service died at the armed point");
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32)
    );
    assert!(
        users
            .log_line_containing(
                "fault point users-service::mid-copy: crashing with SIGKILL",
                Duration::from_secs(5)
            )
            .await
            .is_some()
    );
}
