//! Getting users-service and gateway binaries *with* fault points: a cargo invocation of its own
//! (`cargo build -p shmbridge-server --features failpoints`) into a target directory of its own,
//! for the chaos harness's `run`, whose tooling this is, and for the tests that arm fault points
//! (the server's own among them, through a dev-dependency on this crate).
//!
//! Why not a Cargo feature on a dependency: Cargo unifies features across everything one
//! invocation builds, so any workspace member depending on the server crate with `failpoints` would
//! put fault points into the binaries `cargo build --release` hands to users, and into the
//! services `compare` measures. A separate invocation keeps them apart; a separate target
//! directory (`<target>/chaos-services`) keeps it from replacing the ordinary binaries, which
//! live at the same file names.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The directory, beside the profile directories of the usual target directory, that holds the
/// fail-point build.
pub const TARGET_SUBDIR: &str = "chaos-services";

/// The server package's manifest: the separate build is of that package, beside this one in
/// the workspace.
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../server/Cargo.toml");

/// How often the build is checked for completion while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The two service binaries of a fail-point build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailpointBinaries {
    pub users_service: PathBuf,
    pub gateway: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FailpointBuildError {
    #[error("cannot run {cargo:?} to build the fail-point services: {source}")]
    Spawn {
        cargo: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the fail-point build failed: {0}")]
    Wait(std::io::Error),
    #[error("the fail-point build did not finish within {timeout:?} and was killed")]
    Timeout { timeout: Duration },
    #[error("the fail-point build failed ({status}); cargo's messages are above")]
    Failed { status: ExitStatus },
    #[error("the fail-point build reported no `{name}` executable")]
    MissingExecutable { name: &'static str },
}

/// `<target>/chaos-services` for an executable at `<target>/<profile>/<name>`: the fail-point
/// build lives in the same target directory as the program asking for it (so `CARGO_TARGET_DIR`
/// and `cargo clean` apply to it), but never in a profile directory of the ordinary build.
pub fn target_dir_beside(executable: &Path) -> PathBuf {
    executable
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("target"))
        .join(TARGET_SUBDIR)
}

/// Builds (or finds up to date) users-service and gateway with fault points into `target_dir`,
/// with the release profile if `release`, and returns their paths as cargo reports them. The
/// cargo that runs is `$CARGO` (set for programs `cargo run` and `cargo test` start), else
/// `cargo` from `PATH`. Its progress goes to this process's stderr when `show_progress`; the
/// build is killed if it outlives `timeout`.
pub fn build(
    target_dir: &Path,
    release: bool,
    timeout: Duration,
    show_progress: bool,
) -> Result<FailpointBinaries, FailpointBuildError> {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--manifest-path", MANIFEST])
        .args([
            "-p",
            "shmbridge-server",
            "--features",
            "failpoints",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // Artifacts as JSON on stdout (their paths, whatever the profile or target triple);
        // diagnostics still rendered for humans on stderr.
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if show_progress {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    if release {
        command.arg("--release");
    }
    let mut child = command
        .spawn()
        .map_err(|source| FailpointBuildError::Spawn {
            cargo: cargo.clone(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // Read on a thread: a full pipe would stall cargo while this thread waits for it.
    let reader = std::thread::spawn(move || executables(BufReader::new(stdout)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(FailpointBuildError::Wait)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FailpointBuildError::Timeout { timeout });
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    // cargo has exited, so its stdout is closed and the reader is at its end.
    let found = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(FailpointBuildError::Failed { status });
    }
    let find = |name: &'static str| {
        found
            .iter()
            .find(|(binary, _)| binary == name)
            .map(|(_, path)| path.clone())
            .ok_or(FailpointBuildError::MissingExecutable { name })
    };
    Ok(FailpointBinaries {
        users_service: find("users-service")?,
        gateway: find("gateway")?,
    })
}

/// `(binary name, executable path)` of every `compiler-artifact` message that has one.
fn executables(messages: impl BufRead) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let message: serde_json::Value = serde_json::from_str(&line).ok()?;
            if message["reason"] != "compiler-artifact" {
                return None;
            }
            let name = message["target"]["name"].as_str()?.to_owned();
            let executable = message["executable"].as_str()?;
            Some((name, PathBuf::from(executable)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_goes_beside_the_profile_directories() {
        assert_eq!(
            target_dir_beside(Path::new("/work/target/release/shmbridge-chaos")),
            Path::new("/work/target/chaos-services")
        );
    }

    #[test]
    fn executables_are_read_from_cargo_artifact_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"shmbridge"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"gateway"},"executable":"/t/debug/gateway"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            executables(messages.as_bytes()),
            [("gateway".to_owned(), PathBuf::from("/t/debug/gateway"))]
        );
    }
}
