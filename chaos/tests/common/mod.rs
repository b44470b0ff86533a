//! What the end-to-end tests share: waiting for a chaos-binary child without ever hanging, and
//! the fail-point build of the services that `run` launches.

#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::process::{Child, Output};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use shmbridge_server::failpoint_build;

/// How long the fail-point build may take: from scratch on a busy 2-core machine it compiles
/// the services' whole dependency tree once.
const FAILPOINT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Makes the fail-point services `run` builds for itself (the same cargo command, into the same
/// directory), once per test binary, so that a test's own time limit starts only when `run`
/// finds them up to date.
pub fn build_failpoint_services() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let harness = Path::new(env!("CARGO_BIN_EXE_shmbridge-chaos"));
        failpoint_build::build(
            &failpoint_build::target_dir_beside(harness),
            !cfg!(debug_assertions),
            FAILPOINT_BUILD_TIMEOUT,
            true,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    });
}

/// Waits for `child`, killing it (and failing the test with its stderr) if it outlives `limit`.
pub fn finish_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("waiting works").is_none() {
        if started.elapsed() > limit {
            child.kill().expect("kill works");
            let output = child.wait_with_output().expect("reaping works");
            panic!(
                "the chaos binary ran past {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("reaping works")
}
