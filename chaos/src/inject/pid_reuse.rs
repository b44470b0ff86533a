//! PID reuse: a process holding a slot dies and a new, unrelated process gets its pid. The reaper
//! names holders by pid *and* start time, so the newcomer must not keep the slot alive.
//!
//! One round, made deterministic instead of left to pid wrap-around: a holder (this binary's
//! hidden `hold-slot` subcommand) claims or acquires a slot with a one-minute lease, so only
//! dead-owner detection can free it in time; users-service — and with it the reaper — is stopped
//! with SIGSTOP; the holder is killed and reaped; `/proc/sys/kernel/ns_last_pid` is set so the
//! next process created gets the dead holder's pid (root only); a squatter (`sleep`) takes it;
//! users-service resumes; and the round measures how long the reaper takes to free the slot.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmbridge::{
    Consumer, ConsumerOptions, Handle, Owner, Producer, ProducerOptions, Segment,
    attach_via_socket, attach_via_socket_read_only,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use url::Url;

use super::InjectError;

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
/// The holder's lease: far longer than a round, so a lease expiry cannot pass for a reclaim.
pub const HOLDER_LEASE: Duration = Duration::from_secs(60);
/// How long the reaper may take to free the dead holder's slot once resumed (it runs every
/// 250 ms).
pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at placing the squatter on the dead pid before giving up (another process on the
/// machine may fork in between).
const SQUAT_ATTEMPTS: u32 = 20;
/// What the holder prints once it holds its slot.
const HOLDING_PREFIX: &str = "holding ";

/// Why this machine cannot run the round, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (writes /proc/sys/kernel/ns_last_pid)".to_owned());
    }
    match std::fs::OpenOptions::new().write(true).open(NS_LAST_PID) {
        Ok(_) => None,
        Err(error) => Some(format!("cannot open {NS_LAST_PID} for writing: {error}")),
    }
}

/// Which side of the protocol the dead holder was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HolderRole {
    /// Claimed the slot as a producer (WRITING).
    Writer,
    /// Acquired a published slot as a consumer (READING).
    Reader,
}

/// The hidden `hold-slot` subcommand: hold one slot until killed (or the lease ends).
#[derive(clap::Args, Debug)]
pub struct HoldSlotArgs {
    /// Abstract socket serving the segment.
    #[arg(long)]
    pub socket: String,
    #[arg(long, value_enum)]
    pub role: HolderRole,
    /// The handle to acquire, for `--role reader`.
    #[arg(long, required_if_eq("role", "reader"))]
    pub handle: Option<Handle>,
}

/// Holds a slot, prints `holding SLOT GENERATION PID START_TIME`, and sleeps through the lease.
pub async fn hold_slot(args: HoldSlotArgs) -> anyhow::Result<()> {
    let segment = std::sync::Arc::new(attach_via_socket(&args.socket, Duration::from_secs(5))?);
    let owner = Owner::current()?;
    let announce = |slot: u32, generation: u64| {
        println!(
            "{HOLDING_PREFIX}{slot} {generation} {} {}",
            owner.pid, owner.start_time
        );
    };
    match (args.role, args.handle) {
        (HolderRole::Writer, _) => {
            let options = ProducerOptions {
                lease: HOLDER_LEASE,
                ready_ttl: HOLDER_LEASE,
            };
            let producer = Producer::new(segment, options)?;
            let guard = producer.claim(1, Duration::from_secs(1))?;
            let view = producer
                .segment()
                .inspect(guard.slot())
                .expect("a claimed slot is in range");
            announce(guard.slot(), view.generation);
            tokio::time::sleep(HOLDER_LEASE).await;
        }
        (HolderRole::Reader, Some(handle)) => {
            let consumer = Consumer::new(
                segment,
                ConsumerOptions {
                    lease: HOLDER_LEASE,
                },
            )?;
            let _guard = consumer.acquire(&handle)?;
            announce(handle.slot, handle.generation + 1);
            tokio::time::sleep(HOLDER_LEASE).await;
        }
        (HolderRole::Reader, None) => anyhow::bail!("--role reader needs --handle"),
    }
    Ok(())
}

/// What one round observed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PidReuseRound {
    pub role: HolderRole,
    pub slot: u32,
    pub dead_pid: u32,
    /// The holder's and the squatter's start times (clock ticks since boot): same pid, different
    /// processes.
    pub holder_start_time: u64,
    pub squatter_start_time: u64,
    /// From users-service resuming to the slot being free again; `None` if it was still held
    /// after [`RECLAIM_TIMEOUT`] — the violation this round exists to catch.
    #[serde(skip)]
    pub reclaimed_after: Option<Duration>,
    pub reclaimed_after_ms: Option<f64>,
}

/// Runs one round against users-service (`pid`, `url`) whose segment is served on `@socket`;
/// `program` is this binary (for `hold-slot`).
pub async fn round(
    program: &Path,
    users_service_pid: u32,
    users_service: &Url,
    socket: &str,
    role: HolderRole,
) -> Result<PidReuseRound, InjectError> {
    let segment =
        attach_via_socket_read_only(socket, Duration::from_secs(5)).map_err(|source| {
            InjectError::Attach {
                socket: socket.to_owned(),
                source,
            }
        })?;
    let mut holder = Command::new(program);
    holder
        .args(["hold-slot", "--socket", socket, "--role"])
        .arg(match role {
            HolderRole::Writer => "writer",
            HolderRole::Reader => "reader",
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if role == HolderRole::Reader {
        holder.args(["--handle", &publish_one(users_service).await?.to_string()]);
    }
    let mut holder = holder
        .spawn()
        .map_err(|error| InjectError::io("start the slot holder", error))?;
    let (slot, generation, dead_pid, holder_start_time) = read_holding(&mut holder).await?;

    let paused = Paused::stop(users_service_pid)?;
    holder
        .kill()
        .await
        .map_err(|error| InjectError::io("kill and reap the slot holder", error))?;
    let mut squatter = squat(dead_pid).await?;
    let squatter_start_time = start_time(dead_pid)
        .map_err(|error| InjectError::io("read the squatter's start time", error))?;
    let resumed = Instant::now();
    drop(paused);

    let reclaimed_after = wait_until_moved(&segment, slot, generation, resumed).await;
    let _ = squatter.kill().await;
    Ok(PidReuseRound {
        role,
        slot,
        dead_pid,
        holder_start_time,
        squatter_start_time,
        reclaimed_after,
        reclaimed_after_ms: reclaimed_after.map(|after| after.as_secs_f64() * 1e3),
    })
}

/// One publication, whose handle the reader-role holder acquires.
async fn publish_one(users_service: &Url) -> Result<Handle, InjectError> {
    let fail = |reason: String| {
        InjectError::Refused(format!("cannot publish a payload to hold: {reason}"))
    };
    let url = users_service
        .join("/shm/users?count=1&seed=1")
        .map_err(|error| fail(error.to_string()))?;
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| fail(error.to_string()))?
        .post(url)
        .send()
        .await
        .map_err(|error| fail(error.to_string()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| fail(error.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("status {status}: {text}")));
    }
    text.trim()
        .parse()
        .map_err(|error| fail(format!("unreadable handle {text:?}: {error}")))
}

async fn read_holding(holder: &mut Child) -> Result<(u32, u64, u32, u64), InjectError> {
    let stdout = holder.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| InjectError::Refused("the slot holder did not report within 10 s".into()))?
        .map_err(|error| InjectError::io("read the slot holder's report", error))?
        .ok_or_else(|| {
            InjectError::Refused("the slot holder exited without holding a slot".into())
        })?;
    let fields: Vec<&str> = line
        .strip_prefix(HOLDING_PREFIX)
        .unwrap_or_default()
        .split(' ')
        .collect();
    let parsed = match fields.as_slice() {
        [slot, generation, pid, start] => (|| {
            Some((
                slot.parse().ok()?,
                generation.parse().ok()?,
                pid.parse().ok()?,
                start.parse().ok()?,
            ))
        })(),
        _ => None,
    };
    parsed.ok_or_else(|| InjectError::Refused(format!("unreadable holder report {line:?}")))
}

/// users-service stopped (SIGSTOP) until dropped (SIGCONT), so its reaper cannot look at the
/// slot between the holder's death and the squatter's arrival. Resuming in `Drop` means an
/// error in between never leaves it stopped.
struct Paused(Pid);

impl Paused {
    fn stop(pid: u32) -> Result<Paused, InjectError> {
        let pid = Pid::from_raw(i32::try_from(pid).expect("pids fit i32"));
        kill(pid, Signal::SIGSTOP).map_err(|errno| InjectError::io("stop users-service", errno))?;
        Ok(Paused(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Starts a `sleep` that gets pid `pid`, by setting the last pid handed out just below it.
async fn squat(pid: u32) -> Result<Child, InjectError> {
    for _ in 0..SQUAT_ATTEMPTS {
        std::fs::write(NS_LAST_PID, (pid - 1).to_string())
            .map_err(|error| InjectError::io(format!("write {NS_LAST_PID}"), error))?;
        let mut squatter = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| InjectError::io("start the pid squatter (sleep)", error))?;
        if squatter.id() == Some(pid) {
            return Ok(squatter);
        }
        let _ = squatter.kill().await;
    }
    Err(InjectError::Refused(format!(
        "could not place a process on pid {pid} in {SQUAT_ATTEMPTS} tries"
    )))
}

/// Start time of `pid` (`/proc/PID/stat` field 22), parsed after the command name, which may
/// itself contain spaces and parentheses.
pub fn start_time(pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Field 3 (state) is the first after the name; field 22 is 19 further.
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unreadable /proc/{pid}/stat")))
}

/// Polls `slot` until its generation moves past `generation` (the reaper freed it).
async fn wait_until_moved(
    segment: &Segment,
    slot: u32,
    generation: u64,
    since: Instant,
) -> Option<Duration> {
    let deadline = since + RECLAIM_TIMEOUT;
    loop {
        let view = segment.inspect(slot)?;
        if view.generation != generation {
            return Some(since.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
