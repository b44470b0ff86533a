//! A service (users-service or gateway) run as a child process, for the harness and for the
//! whole-system tests alike: started from this binary's hidden subcommand (`compare`, no fail
//! points), from a service binary (the fail-point build that `run` makes, or a test's own), or
//! by an interpreter; its `listening on ADDR` line awaited, `/readyz` polled, its last lines of
//! output kept for error messages and for tests that wait for a line, and stopped with SIGTERM,
//! a bounded wait, then SIGKILL — also from `Drop`, so an error, a failed test or Ctrl-C never
//! leaves an orphan behind.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmbridge_server::serve::{StartupLine, announced};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

/// Lines of child output kept to explain a failure or to be waited for.
const OUTPUT_LINES_KEPT: usize = 64;
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a stopping service may drain before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: &'static str,
        source: io::Error,
    },
    #[error("{name} exited ({status}) before it was ready; its last output:\n{output}")]
    ExitedEarly {
        name: &'static str,
        status: ExitStatus,
        output: String,
    },
    #[error("{name} did not {what} within {timeout:?}; its last output:\n{output}")]
    NotReady {
        name: &'static str,
        what: &'static str,
        timeout: Duration,
        output: String,
    },
    #[error("{name} printed an unreadable address line {line:?}")]
    BadAnnouncement { name: &'static str, line: String },
    #[error("cannot build the HTTP client that polls {name}'s /readyz: {source}")]
    ReadyClient {
        name: &'static str,
        source: reqwest::Error,
    },
    #[error("cannot stop {name}: {source}")]
    Stop {
        name: &'static str,
        source: io::Error,
    },
}

/// The environment variable that arms the services' fail points (the `fail` crate's syntax).
pub const FAILPOINTS_ENV: &str = shmbridge_server::failpoints::ENV_VAR;

/// The executable that runs one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceProgram {
    /// This binary's hidden subcommand (`compare`): the service code linked into the harness,
    /// which has no fail points.
    Subcommand {
        program: PathBuf,
        subcommand: &'static str,
    },
    /// A service binary of its own: the fail-point build that `run` makes
    /// (`harness::failpoint_build`).
    Binary(PathBuf),
    /// A script run by an interpreter: the Python users-service
    /// (`server/python/users_service.py`) in a virtual environment with the `shmbridge` package.
    Script {
        interpreter: PathBuf,
        script: PathBuf,
    },
}

impl ServiceProgram {
    /// `program [subcommand] --listen ADDR extra...` with a clean environment: the services read
    /// SHMBRIDGE_* settings and FAILPOINTS from it, and a stray one (e.g.
    /// SHMBRIDGE_SHM_FALLBACK_TO_API, which would hide shm failures, or a fail point left armed
    /// in the shell) must not change the run, so the children get only the flags given here.
    pub fn command(&self, listen: SocketAddr, extra: &[&str]) -> Command {
        let mut command = match self {
            ServiceProgram::Subcommand {
                program,
                subcommand,
            } => {
                let mut command = Command::new(program);
                command.arg(subcommand);
                command
            }
            ServiceProgram::Binary(binary) => exits_with_parent(Command::new(binary)),
            ServiceProgram::Script {
                interpreter,
                script,
            } => {
                let mut command = Command::new(interpreter);
                command.arg(script);
                exits_with_parent(command)
            }
        };
        command.args(["--listen", &listen.to_string()]).args(extra);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SHMBRIDGE_") || name == FAILPOINTS_ENV {
                command.env_remove(name);
            }
        }
        // Per-request info logs from two services would only fill pipes; keep warnings.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        command
    }
}

/// Asks for the parent-death signal in the child between fork and exec, so that no service
/// outlives a harness killed with SIGKILL. The harness's own subcommands ask for it themselves; a
/// plain binary or an interpreter does not.
fn exits_with_parent(mut command: Command) -> Command {
    // SAFETY: the closure only makes the prctl(PR_SET_PDEATHSIG) system call, which is
    // async-signal-safe, allocates nothing and touches no memory shared with the parent, as code
    // between fork and exec must.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from));
    }
    command
}

/// How a service ended when asked to stop.
#[derive(Debug)]
pub enum Stopped {
    /// It exited by itself after SIGTERM, with this status.
    Drained(ExitStatus),
    /// It outlived the grace period and was killed.
    Killed,
}

pub struct ServiceProcess {
    name: &'static str,
    child: Child,
    address: SocketAddr,
    output: Arc<KeptOutput>,
}

impl ServiceProcess {
    /// Starts `program args...` and waits (at most `startup_timeout`) for its address line.
    pub async fn start(
        name: &'static str,
        mut command: Command,
        startup_timeout: Duration,
    ) -> Result<ServiceProcess, ServiceError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|source| ServiceError::Spawn { name, source })?;
        let output = Arc::new(KeptOutput::default());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        keep_output(
            child.stderr.take().expect("stderr is piped"),
            Stream::Stderr,
            output.clone(),
        );
        let announced = tokio::time::timeout(startup_timeout, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some(address) = announced(&line, StartupLine::Public) {
                    return Some((line.clone(), address));
                }
                output.remember(Stream::Stdout, line);
            }
            None
        })
        .await;
        let mut service = ServiceProcess {
            name,
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            output: output.clone(),
        };
        match announced {
            Ok(Some((_, Ok(address)))) => service.address = address,
            Ok(Some((line, Err(_)))) => return Err(ServiceError::BadAnnouncement { name, line }),
            Ok(None) => {
                // stdout closed: the process is exiting; give it a moment to be reaped.
                let status = tokio::time::timeout(STOP_GRACE, service.child.wait()).await;
                return Err(match status {
                    Ok(Ok(status)) => ServiceError::ExitedEarly {
                        name,
                        status,
                        output: service.recent_output(),
                    },
                    _ => service.not_ready("announce its address", startup_timeout),
                });
            }
            Err(_elapsed) => return Err(service.not_ready("announce its address", startup_timeout)),
        }
        // What it printed before its address line is kept for error messages, but is not
        // "printed after start-up" for `next_stdout_line`.
        output.take_unread(Stream::Stdout, |_| false);
        keep_output(stdout.into_inner(), Stream::Stdout, output);
        Ok(service)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDR`, without a trailing slash, to put a path after.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn base_url(&self) -> Url {
        self.url()
            .parse()
            .expect("a socket address forms a valid URL")
    }

    /// Polls `/readyz` until it answers 200, the process exits, or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ServiceError> {
        self.wait_for("/readyz", timeout).await
    }

    /// Polls `path` until it answers 2xx, the process exits, or `timeout` passes.
    pub async fn wait_for(&mut self, path: &str, timeout: Duration) -> Result<(), ServiceError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|source| ServiceError::ReadyClient {
                name: self.name,
                source,
            })?;
        let url = self.base_url().join(path).expect("an absolute path joins");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|source| ServiceError::Stop {
                name: self.name,
                source,
            })? {
                return Err(ServiceError::ExitedEarly {
                    name: self.name,
                    status,
                    output: self.recent_output(),
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.not_ready("answer 2xx on its health path", timeout));
            }
            let answer = client.get(url.clone()).timeout(remaining).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(READY_POLL_INTERVAL.min(remaining)).await;
        }
    }

    /// SIGTERM, then up to `STOP_GRACE` for the service to drain and exit, then SIGKILL.
    pub async fn stop(mut self) -> Result<Stopped, ServiceError> {
        let name = self.name;
        if let Some(status) = self
            .child
            .try_wait()
            .map_err(|source| ServiceError::Stop { name, source })?
        {
            return Ok(Stopped::Drained(status));
        }
        self.send_signal(Signal::SIGTERM);
        // A service the chaos harness paused (SIGSTOP) acts on SIGTERM only once continued.
        self.send_signal(Signal::SIGCONT);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => Ok(Stopped::Drained(
                status.map_err(|source| ServiceError::Stop { name, source })?,
            )),
            Err(_elapsed) => {
                self.child
                    .kill()
                    .await
                    .map_err(|source| ServiceError::Stop { name, source })?;
                Ok(Stopped::Killed)
            }
        }
    }

    /// The child's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs. A
    /// stopped (SIGSTOP) process still runs.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>, ServiceError> {
        let name = self.name;
        self.child
            .try_wait()
            .map_err(|source| ServiceError::Stop { name, source })
    }

    /// Waits at most `timeout` for the process to exit (reaping it); `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The next line the service prints on stdout after its address line, waiting at most
    /// `timeout` (the start-up contract is that there is none).
    pub async fn next_stdout_line(&self, timeout: Duration) -> Option<String> {
        self.output
            .next_matching(Stream::Stdout, |_| true, timeout)
            .await
    }

    /// The next log line (stderr) containing `needle`, waiting at most `timeout` for it. Lines
    /// passed over on the way are not offered again.
    pub async fn log_line_containing(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.output
            .next_matching(Stream::Stderr, |line| line.contains(needle), timeout)
            .await
    }

    /// SIGKILL now and reap; the caller decided this death, so it reports the status rather
    /// than treating it as a failure.
    pub async fn kill(mut self) -> Result<ExitStatus, ServiceError> {
        let name = self.name;
        self.send_signal(Signal::SIGKILL);
        tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .map_err(|_elapsed| ServiceError::Stop {
                name,
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the process outlived SIGKILL (uninterruptible sleep?)",
                ),
            })?
            .map_err(|source| ServiceError::Stop { name, source })
    }

    /// Sends `signal` (e.g. SIGSTOP/SIGCONT) to the running child; nothing once it is reaped.
    pub fn send_signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            // ESRCH (already gone) is the only failure possible for our own child; it is fine.
            let _ = kill(pid, signal);
        }
    }

    /// The service's last lines of output, oldest first.
    pub fn recent_output(&self) -> String {
        self.output.recent()
    }

    fn not_ready(&self, what: &'static str, timeout: Duration) -> ServiceError {
        ServiceError::NotReady {
            name: self.name,
            what,
            timeout,
            output: self.recent_output(),
        }
    }
}

impl Drop for ServiceProcess {
    /// The error and Ctrl-C path: the same SIGTERM → grace → SIGKILL sequence as `stop`,
    /// blocking because `Drop` cannot await.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.send_signal(Signal::SIGTERM);
        // A service the chaos harness paused (SIGSTOP) acts on SIGTERM only once continued.
        self.send_signal(Signal::SIGCONT);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // kill_on_drop(true) sends SIGKILL when the Child itself drops, and tokio reaps it.
        self.send_signal(Signal::SIGKILL);
    }
}

/// Which of a child's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// The last [`OUTPUT_LINES_KEPT`] lines of a child's output, and how far each stream has been
/// read by the waits of [`KeptOutput::next_matching`].
#[derive(Default)]
struct KeptOutput {
    lines: Mutex<OutputLines>,
    /// Woken after every new line.
    changed: Notify,
}

#[derive(Default)]
struct OutputLines {
    kept: VecDeque<(Stream, String)>,
    /// Lines dropped from the front so far: the number of the first kept line.
    dropped: u64,
    /// Per stream (stdout, stderr), the number of the first line a wait has not passed yet.
    unread: [u64; 2],
}

impl KeptOutput {
    fn remember(&self, stream: Stream, line: String) {
        let mut lines = self.lock();
        if lines.kept.len() == OUTPUT_LINES_KEPT {
            lines.kept.pop_front();
            lines.dropped += 1;
        }
        lines.kept.push_back((stream, line));
        drop(lines);
        self.changed.notify_waiters();
    }

    fn recent(&self) -> String {
        let lines = self.lock();
        let text: Vec<&str> = lines.kept.iter().map(|(_, line)| line.as_str()).collect();
        text.join("\n")
    }

    /// The next unread line of `stream` that `matches`, waiting at most `timeout`.
    async fn next_matching(
        &self,
        stream: Stream,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before the look, so a line remembered in between still wakes it.
            let changed = self.changed.notified();
            if let Some(line) = self.take_unread(stream, &matches) {
                return Some(line);
            }
            tokio::time::timeout_at(deadline, changed).await.ok()?;
        }
    }

    /// Reads `stream`'s unread lines up to the first that `matches`, or to the end.
    fn take_unread(&self, stream: Stream, matches: impl Fn(&str) -> bool) -> Option<String> {
        let mut lines = self.lock();
        let lines = &mut *lines;
        let unread = &mut lines.unread[stream as usize];
        let first = usize::try_from(unread.saturating_sub(lines.dropped)).unwrap_or(usize::MAX);
        *unread = lines.dropped + lines.kept.len() as u64;
        for (number, (from, line)) in lines.kept.iter().enumerate().skip(first) {
            if *from == stream && matches(line) {
                *unread = lines.dropped + number as u64 + 1;
                return Some(line.clone());
            }
        }
        None
    }

    fn lock(&self) -> MutexGuard<'_, OutputLines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn keep_output(
    stream: impl AsyncRead + Unpin + Send + 'static,
    from: Stream,
    output: Arc<KeptOutput>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            output.remember(from, line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_takes_each_streams_lines_once_in_order_and_skips_what_was_dropped() {
        let output = KeptOutput::default();
        output.remember(Stream::Stderr, "warn one".into());
        output.remember(Stream::Stdout, "out one".into());
        output.remember(Stream::Stderr, "warn two".into());
        let quick = Duration::from_millis(10);
        let contains = |needle: &'static str| move |line: &str| line.contains(needle);

        assert_eq!(
            output
                .next_matching(Stream::Stderr, contains("two"), quick)
                .await,
            Some("warn two".into())
        );
        // "warn one" was passed over on the way to "warn two": not offered again.
        assert_eq!(
            output
                .next_matching(Stream::Stderr, contains("one"), quick)
                .await,
            None
        );
        assert_eq!(
            output.next_matching(Stream::Stdout, |_| true, quick).await,
            Some("out one".into())
        );

        for number in 0..OUTPUT_LINES_KEPT + 5 {
            output.remember(Stream::Stderr, format!("later {number}"));
        }
        // The first five later lines fell out of the window; the wait starts at what is kept.
        assert_eq!(
            output.next_matching(Stream::Stderr, |_| true, quick).await,
            Some("later 5".into())
        );
        assert_eq!(output.recent().lines().count(), OUTPUT_LINES_KEPT);
    }

    #[tokio::test]
    async fn a_wait_wakes_for_a_line_that_arrives_while_it_waits() {
        let output = Arc::new(KeptOutput::default());
        let writer = output.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.remember(Stream::Stderr, "late".into());
        });
        let line = output
            .next_matching(
                Stream::Stderr,
                |line| line == "late",
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(line.as_deref(), Some("late"));
    }
}
