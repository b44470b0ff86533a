//! What the end-to-end tests share: waiting for a chaos-binary child without ever hanging.

use std::process::{Child, Output};
use std::thread;
use std::time::{Duration, Instant};

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
