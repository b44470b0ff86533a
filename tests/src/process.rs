//! Real service processes for end-to-end tests: started from the workspace's binaries on
//! ephemeral ports, address read from their `listening on ADDR` line with a timeout, and killed
//! and reaped by a guard's `Drop` whatever the test's outcome; and a bounded wait for any child
//! or command.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmbridge_server::serve::{StartupLine, announced};

use crate::binary::workspace_binary;

/// How long a service may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running service process; killed (SIGKILL) and reaped on drop unless it already exited.
pub struct ServiceProcess {
    child: Child,
    pub address: SocketAddr,
    /// Lines the process printed on stdout after its `listening on` line.
    later_stdout: Receiver<String>,
    /// Its log lines (stderr), kept for tests that check what was logged.
    log: Receiver<String>,
}

impl ServiceProcess {
    /// Starts `binary` with `args` and waits for its `listening on ADDR` line.
    pub fn start(binary: impl AsRef<Path>, args: &[&str]) -> ServiceProcess {
        ServiceProcess::start_with_env(binary, args, &[])
    }

    /// [`ServiceProcess::start`] with extra environment variables (e.g. `FAILPOINTS`).
    pub fn start_with_env(
        binary: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        let path = binary.as_ref();
        let binary = path.display();
        let mut child = Command::new(path)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut process = ServiceProcess {
            child,
            address: "0.0.0.0:0".parse().expect("valid placeholder"),
            later_stdout: forward_lines(stdout),
            log: forward_lines(stderr),
        };
        let first = match process.later_stdout.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(error) => panic!("{binary} printed no address within {STARTUP_TIMEOUT:?}: {error}"),
        };
        process.address = announced(&first, StartupLine::Public)
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{binary} printed {first:?}, not `listening on ADDR`"));
        process
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("the child is alive and ours");
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on our child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Any further stdout line, waiting at most `timeout` (the contract is one line only).
    pub fn extra_stdout_line(&self, timeout: Duration) -> Option<String> {
        self.later_stdout.recv_timeout(timeout).ok()
    }

    /// The first log line containing `needle`, waiting at most `timeout` for it.
    pub fn log_line_containing(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(left).ok()?;
            if line.contains(needle) {
                return Some(line);
            }
        }
    }
}

/// Reads `source` line by line on a thread, echoing nothing, until it closes.
fn forward_lines(source: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (lines_tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The workspace's users-service binary, started with `args`.
pub fn users_service(args: &[&str]) -> ServiceProcess {
    ServiceProcess::start(workspace_binary("users-service"), args)
}

/// The workspace's gateway binary, started with `args`.
pub fn gateway(args: &[&str]) -> ServiceProcess {
    ServiceProcess::start(workspace_binary("gateway"), args)
}

/// An HTTP client for tests: every request bounded, no pooled connection reused across a
/// service restart surprise.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// Waits for `child`, killing it (and failing the test with its stderr) if it outlives `limit`.
pub fn finish_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("waiting works").is_none() {
        if started.elapsed() > limit {
            child.kill().expect("kill works");
            let output = child.wait_with_output().expect("reaping works");
            panic!(
                "the child ran past {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("reaping works")
}

/// Runs `program` with `args` (stdin closed, stdout and stderr kept) to its end, killing it if
/// it outlives `limit`.
pub fn run_within(program: &Path, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{} does not start: {error}", program.display()));
    finish_bounded(child, limit)
}

/// The addresses in a line such as `compare`'s `users-service on A, gateway on B`.
pub fn addresses_in(line: &str) -> Vec<SocketAddr> {
    line.split([' ', ','])
        .filter_map(|word| word.parse().ok())
        .collect()
}
