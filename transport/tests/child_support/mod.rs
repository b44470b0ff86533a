//! Children for the tests that need real processes: this test binary re-executed as a child,
//! killed and reaped when the test is done, its stdout read line by line with a time limit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

/// How long a child may take to start and answer.
pub const CHILD_WITHIN: Duration = Duration::from_secs(30);

/// A child killed and reaped on drop, so a failing test leaves no process behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (stdout piped) and collects its stdout lines until one contains `until`,
/// for at most [`CHILD_WITHIN`].
pub fn start_until(mut command: Command, until: &str) -> (ChildGuard, Vec<String>) {
    let mut child = ChildGuard(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = received
            .recv_timeout(CHILD_WITHIN)
            .unwrap_or_else(|_| panic!("no {until:?} from the child; it said {seen:?}"));
        let done = line.contains(until);
        seen.push(line);
        if done {
            return (child, seen);
        }
    }
}

/// The rest of the first line in `lines` that starts with `prefix`.
pub fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}
