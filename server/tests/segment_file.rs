//! `--shm-path` over real processes: the segment file exists while users-service runs, is
//! removed on SIGTERM, is left behind by SIGKILL, and that leftover is replaced by the next start.

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

    let mut users = users_service(&args);
    assert!(path.is_file(), "the segment is created at --shm-path");
    users.signal(Signal::SIGTERM);
    let status = users.wait_exit(EXIT_TIMEOUT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "a clean exit removes the segment file");

    let mut users = users_service(&args);
    users.signal(Signal::SIGKILL);
    users.wait_exit(EXIT_TIMEOUT).expect("dies on SIGKILL");
    assert!(path.is_file(), "SIGKILL leaves the file behind");

    let users = users_service(&args);
    let upstream = users.url();
    let gateway = gateway(&["--listen", "127.0.0.1:0", "--upstream", upstream.as_str()]);
    let response = client()
        .get(format!(
            "{}/api/users-via-shm?count=7&seed=2",
            gateway.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), users_json(7, 2));
    assert!(
        users
            .log_line_containing("replacing a leftover shared-memory segment", EXIT_TIMEOUT)
            .is_some(),
        "the replacement is logged as a warning"
    );
}
