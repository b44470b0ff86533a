//! `--shm-path` over real processes: the segment file exists while users-service runs, is
//! removed on SIGTERM, is left behind by SIGKILL, and that leftover is replaced by the next start
//! even while a gateway still holds the dead producer's descriptor; a second users-service on a
//! live one's path is refused.

mod process;

use std::time::Duration;

use nix::sys::signal::Signal;
use process::{client, gateway, users_service};
use reqwest::StatusCode;
use shmbridge_server::dataset::users_json;

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_goes_on_sigterm_stays_on_sigkill_and_is_replaced_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--slot-count",
        "4",
        "--shm-path",
        path.to_str().unwrap(),
    ];

    let mut users = users_service(&args).await;
    assert!(path.is_file(), "the segment is created at --shm-path");
    users.send_signal(Signal::SIGTERM);
    let status = users
        .wait_exit(EXIT_TIMEOUT)
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "a clean exit removes the segment file");

    // Fixed port, so the gateway finds the restarted users-service where it left the old one.
    let mut users = users_service(&args).await;
    let listen = users.address().to_string();
    let args = [&["--listen", listen.as_str()], &args[2..]].concat();
    let upstream = users.url();
    let gateway = gateway(&["--listen", "127.0.0.1:0", "--upstream", upstream.as_str()]).await;
    let shm_url = format!("{}/api/users-via-shm?count=7&seed=2", gateway.url());
    let response = client().get(&shm_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The gateway now holds the segment's descriptor; the producer dies.
    users.send_signal(Signal::SIGKILL);
    users
        .wait_exit(EXIT_TIMEOUT)
        .await
        .expect("dies on SIGKILL");
    assert!(path.is_file(), "SIGKILL leaves the file behind");

    // The dead producer's lock is gone although the gateway's descriptor is still open.
    let users = users_service(&args).await;
    let response = client().get(&shm_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), users_json(7, 2));
    assert!(
        users
            .log_line_containing("replacing a leftover shared-memory segment", EXIT_TIMEOUT)
            .await
            .is_some(),
        "the replacement is logged as a warning"
    );
}

#[tokio::test]
async fn a_second_users_service_on_a_live_ones_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let path = path.to_str().unwrap();
    let first = users_service(&[
        "--listen",
        "127.0.0.1:0",
        "--slot-count",
        "4",
        "--shm-path",
        path,
    ])
    .await;
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_users-service"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--slot-count",
            "4",
            "--shm-path",
            path,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second users-service started on a live segment's path");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let pid = first.pid().expect("the first users-service runs");
    let expected = format!("segment {path} is in use by pid {pid}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(std::path::Path::new(path).is_file(), "the live file stays");
}
