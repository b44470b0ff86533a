//! PID-reuse faults (`pid-reuse`, root only): a process holding a slot dies and a new, unrelated process gets its pid. The reaper
//! names holders by pid, start time and (Linux >= 6.9) pidfs inode, so the newcomer must not keep
//! the slot alive, even when it started within the holder's clock tick.
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
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::control::{ClientOptions, Publication, Tier};
use shmbridge::{
    Consumer, ConsumerOptions, ControlClient, Handle, Owner, Producer, ProducerOptions, Segment,
    attach_via_socket, attach_via_socket_read_only,
};
use shmbridge_server::blobs::{BlobPattern, BlobQuery};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::channel::{ask, get};
use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError, PidReuseError, PublishError};
use super::spec::{DurationRange, half, is_share};
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;
use crate::segment::SegmentError;

/// A slot holder killed and its pid handed to a squatter (root only).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PidReuseSpec {
    pub count: u32,
    pub interval: DurationRange,
    /// Share of the rounds whose holder is a reader (the rest hold a slot as writer), 0 to 1.
    #[serde(default = "half")]
    pub reader_share: f64,
}

/// A process holding a slot as `holder` is killed and its pid given to a squatter.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "pid-reuse")]
pub struct PidReuse {
    pub holder: HolderRole,
}

impl FaultClass for PidReuseSpec {
    const NAME: &'static str = "pid-reuse";
    type Action = PidReuse;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !is_share(self.reader_share) {
            return Err(("fault.reader_share", "must be between 0 and 1".into()));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, PidReuse) {
        let holder = if rng.random_bool(self.reader_share) {
            HolderRole::Reader
        } else {
            HolderRole::Writer
        };
        (self.interval, PidReuse { holder })
    }

    fn unavailable(&self) -> Option<String> {
        unavailable()
    }
}

impl Fault for PidReuse {
    fn role(&self) -> Role {
        Role::UsersService
    }

    /// A third process holds the slot: only the shm route uses slots.
    fn affects(&self, endpoint: Endpoint) -> bool {
        endpoint.uses_shm()
    }

    fn label(&self) -> String {
        format!("pid reuse of a dead {:?}", self.holder).to_lowercase()
    }

    /// One round in which a slot holder dies and a squatter takes its pid; the slot must still
    /// come back within the round's timeout (the reaper checks the holder's start time, not
    /// just its pid).
    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let socket = context.segment_socket().await?;
        let users_pid = context.supervisor.pid(Role::UsersService)?;
        let program = context.supervisor.program().to_owned();
        let round = round(
            &program,
            users_pid.as_raw().unsigned_abs(),
            &socket,
            self.holder,
        )
        .await?;
        let violation = round.reclaimed_after.is_none().then(|| {
            format!(
                "slot {} of dead pid {} (now a squatter's) still held {RECLAIM_TIMEOUT:?} after users-service resumed",
                round.slot, round.dead_pid
            )
        });
        Ok(Injected {
            note: Some(format!(
                "slot {} held by pid {} (start {}) then squatter (start {}); freed after {}",
                round.slot,
                round.dead_pid,
                round.holder_start_time,
                round.squatter_start_time,
                round
                    .reclaimed_after
                    .map_or_else(|| "never".to_owned(), |after| format!("{after:?}"))
            )),
            violation,
            ..Injected::back_now()
        })
    }
}

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
                ..ProducerOptions::default()
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
                    ..ConsumerOptions::default()
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
    /// processes, and about one round in five the same tick, which only the pidfs inode the
    /// holder stamped tells apart.
    pub holder_start_time: u64,
    pub squatter_start_time: u64,
    /// From users-service resuming to the slot being free again; `None` if it was still held
    /// after [`RECLAIM_TIMEOUT`] — the violation this round exists to catch.
    #[serde(skip)]
    pub reclaimed_after: Option<Duration>,
    pub reclaimed_after_ms: Option<f64>,
}

/// Runs one round against users-service (`pid`) whose segment is served on `@socket`;
/// `program` is this binary (for `hold-slot`).
pub async fn round(
    program: &Path,
    users_service_pid: u32,
    socket: &str,
    role: HolderRole,
) -> Result<PidReuseRound, InjectError> {
    let segment =
        attach_via_socket_read_only(socket, Duration::from_secs(5)).map_err(|source| {
            SegmentError::Attach {
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
    // Open until the holder has acquired the publication: closing it would withdraw it.
    let mut channel = None;
    if role == HolderRole::Reader {
        let (handle, client) = publish_one(socket).await.map_err(PidReuseError::from)?;
        holder.args(["--handle", &handle.to_string()]);
        channel = Some(client);
    }
    let mut holder = holder
        .spawn()
        .map_err(|error| InjectError::io("start the slot holder", error))?;
    let (slot, generation, dead_pid, holder_start_time) = read_holding(&mut holder).await?;
    drop(channel);

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

/// The body a reader-role holder acquires: above the largest inline body
/// (`MAX_INLINE_LEN`, 64 KiB) whatever users-service's threshold, and well within a slot.
const HELD_BLOB: BlobQuery = BlobQuery {
    size: 100_000,
    pattern: BlobPattern::Random,
    seed: 1,
};

/// A publication held unredeemed on its open control channel, for another process to acquire.
/// The channel closes first when dropped, so the publication goes back by the connection's
/// close (as a gateway that left), never by a release frame.
struct HeldPublication {
    _client: ControlClient,
    _publication: Publication,
}

/// One slot publication, asked for over the control channel on `@socket`, whose handle the
/// reader-role holder acquires; with the open channel it belongs to.
async fn publish_one(socket: &str) -> Result<(Handle, HeldPublication), PublishError> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let options = ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let client = ControlClient::connect(&socket, &options)?;
        let request = get(&format!("/blobs?{}", HELD_BLOB.to_query_string()));
        let publication = ask(&client, &request, Duration::from_secs(5))?;
        let handle = match (publication.tier(), publication.handle()) {
            (Tier::Slot, Some(handle)) => *handle,
            (tier, _) => {
                return Err(PublishError::NotInSlot {
                    tier: tier.as_str(),
                    status: publication.head().status(),
                });
            }
        };
        Ok((
            handle,
            HeldPublication {
                _client: client,
                _publication: publication,
            },
        ))
    })
    .await?
}

async fn read_holding(holder: &mut Child) -> Result<(u32, u64, u32, u64), InjectError> {
    let stdout = holder.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| PidReuseError::HolderSilent)?
        .map_err(|error| InjectError::io("read the slot holder's report", error))?
        .ok_or(PidReuseError::HolderGone)?;
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
    parsed.ok_or_else(|| PidReuseError::HolderReport(line).into())
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
    Err(PidReuseError::Squat {
        pid,
        attempts: SQUAT_ATTEMPTS,
    }
    .into())
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
