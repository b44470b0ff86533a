//! Real service processes for end-to-end tests, through the harness's own
//! [`ServiceProcess`]: started from the workspace's binaries on ephemeral ports, address read
//! from their `listening on ADDR` line with a timeout, and stopped whatever the test's outcome;
//! and a bounded wait for any child or command.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use shmbridge_chaos::process::service::ServiceProcess;

use crate::binary::workspace_binary;

/// How long a service may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `binary` with `args` and `env` (e.g. `FAILPOINTS`), logging warnings only, and waits
/// for its `listening on ADDR` line; panics with its output if it does not come.
pub async fn start(
    name: &'static str,
    binary: impl AsRef<Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> ServiceProcess {
    let mut command = tokio::process::Command::new(binary.as_ref());
    command
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    ServiceProcess::start(name, command, STARTUP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The workspace's users-service binary, started with `args`.
pub async fn users_service(args: &[&str]) -> ServiceProcess {
    start(
        "users-service",
        workspace_binary("users-service"),
        args,
        &[],
    )
    .await
}

/// The workspace's gateway binary, started with `args`.
pub async fn gateway(args: &[&str]) -> ServiceProcess {
    start("gateway", workspace_binary("gateway"), args, &[]).await
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
