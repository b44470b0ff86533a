//! Rogue-peer faults (`rogue-peer`): a same-uid process that is not the gateway connects to
//! users-service's control socket and misbehaves, while the gateway keeps its own connection
//! busy with the load. Each fault draws one misbehaviour:
//!
//! - `garbage`: read the greeting, send one frame that is not a request (random bytes, a valid
//!   version-2 publish header at a wrong length, a reserved byte set, an answer sent the wrong
//!   way); the producer must close the connection within [`CLOSE_TIMEOUT`]. (A publish frame
//!   longer than the channel's bound is not garbage: the producer refuses it, typed, and keeps
//!   the connection; no garbage frame is that long.)
//! - `truncated`: read the greeting, send the first bytes of a valid publish frame and close at
//!   once. A `SOCK_SEQPACKET` message is never split, so a frame cut short is how "dropped
//!   mid-frame" looks on this socket. users-service must go on greeting new connections.
//! - `hog`: connect as a consumer ([`shmbridge::ControlClient`]), publish until refused without redeeming
//!   anything, hold what was taken while the load runs, then close. The refusal must be the
//!   typed busy answer (`PeerBusy` exactly at the per-peer limit, or `SegmentBusy`), and the
//!   producer must withdraw every publication the moment the connection closes, within
//!   [`WITHDRAW_TIMEOUT`], long before the ready TTL.
//! - `hog-kill`: the same hog in a child process (this binary's hidden `rogue-hog`
//!   subcommand), SIGKILLed while it holds: the kernel closes its connection.
//!
//! The rogue is the harness process itself (or its child): same uid as the services, so it
//! passes the `SO_PEERCRED` check, exactly the peer the limits exist for. What each fault saw
//! goes into its note; a check that failed is the fault's violation. The socket exchanges
//! themselves are in [`peer`].
//!
//! A hog's fault counts as "back" from the moment it holds its limit, not from its close: the
//! recovery time then measures how long the gateway went without a verified shm answer while the
//! hog held everything it could take, which the per-peer limit must keep short.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shmbridge::attach_via_socket_read_only;
use shmbridge::control::frame::{Answer, MAX_REQUEST_FRAME_LEN};
use shmbridge::control::{Refusal, RefusalCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::class::{ATTACH_TIMEOUT, Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::spec::DurationRange;
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;
use crate::segment::SegmentError;

mod peer;

use peer::publish_frame;
pub use peer::{
    Closure, Hog, HogEnd, HogReport, RawPeer, Withdrawal, publish_len, send_garbage, send_truncated,
};

/// How long users-service may take to close a connection that sent a malformed frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long users-service may take to withdraw a closed connection's unredeemed publications.
/// The transport's own test holds it to 100 ms on an idle machine; this allows for the load.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a `rogue-hog` child may take to connect, hog and report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `rogue-hog` child lives if nobody kills it: far longer than any hold.
const HOG_LIFETIME: Duration = Duration::from_secs(60);
/// Reserved bytes of a version-2 publish frame: in the common header and after `request_len`.
const PUBLISH_RESERVED: [usize; 6] = [6, 7, 28, 29, 30, 31];
/// The longest random garbage frame: past the producer's receive buffer, so the kernel cuts
/// it (it never starts with the magic, so it is never taken for an oversized request).
const MAX_GARBAGE_LEN: usize = MAX_REQUEST_FRAME_LEN + 16;
/// The longest wrong-length frame: a publish frame longer than this is refused and answered,
/// not closed.
const MAX_WRONG_LENGTH: usize = MAX_REQUEST_FRAME_LEN;
/// The magic every frame starts with (`shmbridge::control::frame`).
const FRAME_MAGIC: &[u8] = b"SHMC";

/// `[fault.rogue-peer]`: a same-uid process that is not the gateway misbehaving on the
/// control socket.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoguePeerSpec {
    pub count: u32,
    pub interval: DurationRange,
    /// How long a hog holds what it took before it closes or is killed.
    pub hold: DurationRange,
    /// The misbehaviours drawn from, each equally likely; all of them unless listed.
    #[serde(default = "RogueKind::all")]
    pub kinds: Vec<RogueKind>,
}

/// The misbehaviours a scenario may list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RogueKind {
    Garbage,
    Truncated,
    Hog,
    HogKill,
}

impl RogueKind {
    pub const ALL: [RogueKind; 4] = [
        RogueKind::Garbage,
        RogueKind::Truncated,
        RogueKind::Hog,
        RogueKind::HogKill,
    ];

    fn all() -> Vec<RogueKind> {
        RogueKind::ALL.to_vec()
    }
}

/// One planned misbehaviour.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename = "rogue-peer")]
pub struct RoguePeer {
    #[serde(flatten)]
    pub attack: Attack,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Attack {
    /// One malformed frame after the greeting.
    Garbage { frame: Garbage },
    /// The first `len` bytes of a publish frame, then the connection closed.
    Truncated { len: usize },
    /// Publish until refused, hold for `hold`, close.
    Hog {
        #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
        hold: Duration,
    },
    /// Publish until refused in a child process, SIGKILLed after `hold`.
    HogKill {
        #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
        hold: Duration,
    },
}

/// A frame the producer must refuse to read, and close the connection for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Garbage {
    /// `len` random bytes drawn from `seed` (never a valid frame).
    Random { len: usize, seed: u64 },
    /// A valid publish frame cut or zero-padded to `len` bytes (at most the longest publish
    /// frame).
    WrongLength { len: usize },
    /// A valid publish frame with the reserved byte at `offset` set to `value`.
    Reserved { offset: usize, value: u8 },
    /// A producer's answer, sent to the producer.
    WrongDirection,
}

impl Garbage {
    fn draw(rng: &mut ChaCha8Rng) -> Garbage {
        match rng.random_range(0..4) {
            0 => Garbage::Random {
                len: rng.random_range(1..=MAX_GARBAGE_LEN),
                seed: rng.random(),
            },
            1 => {
                let len = rng.random_range(16..MAX_WRONG_LENGTH);
                Garbage::WrongLength {
                    len: if len >= publish_len() { len + 1 } else { len },
                }
            }
            2 => Garbage::Reserved {
                offset: PUBLISH_RESERVED[rng.random_range(0..PUBLISH_RESERVED.len())],
                value: rng.random_range(1..=u8::MAX),
            },
            _ => Garbage::WrongDirection,
        }
    }

    fn shape(&self) -> &'static str {
        match self {
            Garbage::Random { .. } => "random",
            Garbage::WrongLength { .. } => "wrong length",
            Garbage::Reserved { .. } => "reserved byte",
            Garbage::WrongDirection => "wrong direction",
        }
    }

    /// The bytes sent.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Garbage::Random { len, seed } => {
                let mut bytes = vec![0; len];
                ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
                // Random bytes start with the magic once in 2^32 draws; never let them parse,
                // nor be answered as another version's frame or an oversized request.
                if bytes.starts_with(FRAME_MAGIC) {
                    bytes[0] ^= 0xff;
                }
                bytes
            }
            Garbage::WrongLength { len } => {
                let mut bytes = publish_frame();
                bytes.resize(len, 0);
                bytes
            }
            Garbage::Reserved { offset, value } => {
                let mut bytes = publish_frame();
                bytes[offset] = value;
                bytes
            }
            Garbage::WrongDirection => Answer::Refused {
                id: 1,
                refusal: Refusal {
                    code: RefusalCode::Exhausted,
                    detail: 0,
                },
            }
            .encode(),
        }
    }
}

impl FaultClass for RoguePeerSpec {
    const NAME: &'static str = "rogue-peer";
    type Action = RoguePeer;

    fn count(&self) -> u32 {
        self.count
    }

    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.kinds.is_empty() {
            return Err(("fault.kinds", "must list at least one kind".into()));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> (DurationRange, RoguePeer) {
        let attack = match self.kinds[rng.random_range(0..self.kinds.len())] {
            RogueKind::Garbage => Attack::Garbage {
                frame: Garbage::draw(rng),
            },
            RogueKind::Truncated => Attack::Truncated {
                len: rng.random_range(1..publish_len()),
            },
            RogueKind::Hog => Attack::Hog {
                hold: self.hold.sample(rng),
            },
            RogueKind::HogKill => Attack::HogKill {
                hold: self.hold.sample(rng),
            },
        };
        (self.interval, RoguePeer { attack })
    }
}

impl Fault for RoguePeer {
    fn role(&self) -> Role {
        Role::UsersService
    }

    /// Only the shm route asks users-service over the control channel.
    fn affects(&self, endpoint: Endpoint) -> bool {
        endpoint.uses_shm()
    }

    fn label(&self) -> String {
        match &self.attack {
            Attack::Garbage { frame } => format!("rogue peer: garbage frame ({})", frame.shape()),
            Attack::Truncated { .. } => "rogue peer: truncated frame".to_owned(),
            Attack::Hog { .. } => "rogue peer: hog, closed".to_owned(),
            Attack::HogKill { .. } => "rogue peer: hog, SIGKILLed".to_owned(),
        }
    }

    async fn inject(&self, context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
        let socket = context.segment_socket().await?;
        match &self.attack {
            Attack::Garbage { frame } => {
                let bytes = frame.bytes();
                let closure = blocking("garbage", move || {
                    send_garbage(&socket, &bytes, CLOSE_TIMEOUT)
                })
                .await?;
                Ok(judged(closure.judge()))
            }
            &Attack::Truncated { len } => {
                let probe = blocking("truncated", move || {
                    send_truncated(&socket, len, CLOSE_TIMEOUT)
                })
                .await?;
                Ok(judged(judge_truncated(len, probe)))
            }
            &Attack::Hog { hold } => {
                let hog = blocking("hog", move || Hog::take(&socket)).await?;
                let holding = tokio::time::Instant::now();
                context
                    .supervisor
                    .watch(hold.min(context.remaining()), None)
                    .await?;
                let report = hog.report();
                let segment = Arc::clone(hog.segment());
                let held = report.held.clone();
                let withdrawal = blocking("hog close", move || {
                    Ok(Withdrawal::close_and_wait(
                        &segment,
                        &held,
                        || drop(hog),
                        WITHDRAW_TIMEOUT,
                    ))
                })
                .await?;
                Ok(hog_injected(&report, withdrawal, holding))
            }
            &Attack::HogKill { hold } => {
                let program = context.supervisor.program().to_owned();
                hog_kill(&program, &socket, hold.min(context.remaining()), context).await
            }
        }
    }
}

/// Runs a blocking socket exchange off the async workers.
async fn blocking<T: Send + 'static>(
    task: &'static str,
    work: impl FnOnce() -> Result<T, InjectError> + Send + 'static,
) -> Result<T, InjectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| InjectError::Task { task, source })?
}

/// A note and maybe a violation, for a fault whose service never went away.
fn judged((note, violation): (String, Option<String>)) -> Injected {
    Injected {
        note: Some(note),
        violation,
        ..Injected::back_now()
    }
}

fn judge_truncated(len: usize, probe: Result<Duration, String>) -> (String, Option<String>) {
    let sent = format!(
        "sent {len} of {} bytes of a publish frame, closed",
        publish_len()
    );
    match probe {
        Ok(after) => (
            format!(
                "{sent}; a new connection was greeted after {:.1} ms",
                after.as_secs_f64() * 1e3
            ),
            None,
        ),
        Err(error) => (
            format!("{sent}; a new connection was not greeted"),
            Some(format!(
                "users-service stopped greeting new connections after a truncated frame: {error}"
            )),
        ),
    }
}

/// The note and violation of a hog fault: the refusal must be the typed busy answer at the
/// limit, and every publication must be withdrawn once the connection closed.
pub fn judge_hog(report: &HogReport, withdrawal: Withdrawal) -> (String, Option<String>) {
    let taken = report.held.len();
    let mut violations = Vec::new();
    let refusal = match &report.end {
        HogEnd::PeerBusy { limit } => {
            if taken as u64 != *limit {
                violations.push(format!(
                    "refused as peer-busy after {taken} publications, but its limit is {limit}"
                ));
            }
            format!("refused peer-busy (limit {limit})")
        }
        HogEnd::SegmentBusy { limit } => format!("refused segment-busy (limit {limit})"),
        HogEnd::OtherRefusal { refusal } => {
            violations.push(format!(
                "the hog was refused with {refusal:?}, not a busy answer"
            ));
            format!("refused: {refusal}")
        }
        HogEnd::Failed { error } => {
            violations.push(format!("the hog's request failed unrefused: {error}"));
            format!("failed: {error}")
        }
        HogEnd::NeverRefused => {
            violations.push(format!(
                "the hog took {taken} publications, more than the segment has slots, and was never refused"
            ));
            "never refused".to_owned()
        }
    };
    let withdrawn = match withdrawal.after {
        Some(after) => format!(
            "{} withdrawn {:.1} ms after the close",
            withdrawal.at_close,
            after.as_secs_f64() * 1e3
        ),
        None => {
            violations.push(format!(
                "{} of the hog's {} publications still waited {WITHDRAW_TIMEOUT:?} after its connection closed",
                withdrawal.left, withdrawal.at_close
            ));
            format!(
                "{} of {} not withdrawn",
                withdrawal.left, withdrawal.at_close
            )
        }
    };
    let expired = taken - withdrawal.at_close.min(taken);
    let expired = if expired > 0 {
        format!(" ({expired} gone before the close)")
    } else {
        String::new()
    };
    (
        format!("took {taken} publications, {refusal}; {withdrawn}{expired}"),
        (!violations.is_empty()).then(|| violations.join("; ")),
    )
}

/// A hog fault's record: back from the moment it held its limit (see the module doc).
fn hog_injected(
    report: &HogReport,
    withdrawal: Withdrawal,
    holding: tokio::time::Instant,
) -> Injected {
    let (note, violation) = judge_hog(report, withdrawal);
    Injected {
        back: Some(holding),
        note: Some(note),
        violation,
    }
}

/// Starts a `rogue-hog` child, lets it hold for `hold`, SIGKILLs it and watches its
/// publications be withdrawn.
async fn hog_kill(
    program: &Path,
    socket: &str,
    hold: Duration,
    context: &mut FaultContext<'_>,
) -> Result<Injected, FaultError> {
    let segment = attach_via_socket_read_only(socket, ATTACH_TIMEOUT)
        .map_err(|source| SegmentError::Attach {
            socket: socket.to_owned(),
            source,
        })
        .map_err(InjectError::from)?;
    let mut child = Command::new(program)
        .args(["rogue-hog", "--socket", socket])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| InjectError::io("start the rogue-hog child", error))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::time::timeout(REPORT_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| InjectError::io("read the rogue-hog's report", io::ErrorKind::TimedOut))?
        .map_err(|error| InjectError::io("read the rogue-hog's report", error))?
        .ok_or_else(|| {
            InjectError::io(
                "read the rogue-hog's report",
                io::Error::other("it exited without one"),
            )
        })?;
    let report: HogReport = serde_json::from_str(&line)
        .map_err(|error| InjectError::io(format!("read the rogue-hog's report {line:?}"), error))?;
    let holding = tokio::time::Instant::now();
    context.supervisor.watch(hold, None).await?;
    let held = report.held.clone();
    // SIGKILL, then reap: the kernel closes the child's connection as it dies. The blocking
    // task must not reap it while the harness's runtime does, so it only sends the signal.
    let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let withdrawal = blocking("hog-kill withdrawal", move || {
        Ok(Withdrawal::close_and_wait(
            &segment,
            &held,
            || {
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            },
            WITHDRAW_TIMEOUT,
        ))
    })
    .await?;
    child
        .wait()
        .await
        .map_err(|error| InjectError::io("reap the rogue-hog", error))?;
    Ok(hog_injected(&report, withdrawal, holding))
}

/// The hidden `rogue-hog` subcommand: a hog in a process of its own, to be SIGKILLed.
#[derive(clap::Args, Debug)]
pub struct RogueHogArgs {
    /// Abstract socket serving the segment and its control channel.
    #[arg(long)]
    pub socket: String,
}

/// Takes what it can, prints its [`HogReport`] as one JSON line, and holds it until killed
/// (or [`HOG_LIFETIME`] passed).
pub async fn rogue_hog(args: RogueHogArgs) -> anyhow::Result<()> {
    let hog = tokio::task::spawn_blocking(move || Hog::take(&args.socket)).await??;
    println!("{}", serde_json::to_string(&hog.report())?);
    tokio::time::sleep(HOG_LIFETIME).await;
    drop(hog);
    Ok(())
}

#[cfg(test)]
mod tests {
    use shmbridge::control::frame::Request;

    use super::*;
    use crate::harness::faults::{FaultAction, FaultSpec};
    use crate::harness::schedule::plan;

    fn spec(kinds: Vec<RogueKind>) -> RoguePeerSpec {
        RoguePeerSpec {
            count: 200,
            interval: "200ms..1s".parse().unwrap(),
            hold: "200ms..2s".parse().unwrap(),
            kinds,
        }
    }

    fn attacks(spec: RoguePeerSpec, seed: u64) -> Vec<Attack> {
        plan(&FaultSpec::RoguePeer(spec), seed)
            .into_iter()
            .map(|fault| match fault.action {
                FaultAction::RoguePeer(rogue) => rogue.attack,
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    #[test]
    fn draws_cover_every_kind_and_shape_within_their_ranges() {
        let drawn = attacks(spec(RogueKind::all()), 3);
        assert_eq!(
            drawn,
            attacks(spec(RogueKind::all()), 3),
            "same seed, same plan"
        );
        assert_ne!(drawn, attacks(spec(RogueKind::all()), 4));
        let hold = spec(Vec::new()).hold;
        let mut shapes = Vec::new();
        let mut kinds = Vec::new();
        for attack in &drawn {
            match attack {
                Attack::Garbage { frame } => {
                    shapes.push(frame.shape());
                    kinds.push(RogueKind::Garbage);
                }
                Attack::Truncated { len } => {
                    assert!((1..publish_len()).contains(len), "{len}");
                    kinds.push(RogueKind::Truncated);
                }
                Attack::Hog { hold: held } | Attack::HogKill { hold: held } => {
                    assert!((hold.min..=hold.max).contains(held), "{held:?}");
                    kinds.push(if matches!(attack, Attack::Hog { .. }) {
                        RogueKind::Hog
                    } else {
                        RogueKind::HogKill
                    });
                }
            }
        }
        for kind in RogueKind::ALL {
            assert!(kinds.contains(&kind), "{kind:?} never drawn");
        }
        for shape in ["random", "wrong length", "reserved byte", "wrong direction"] {
            assert!(shapes.contains(&shape), "{shape} never drawn");
        }
        let only_hogs = attacks(spec(vec![RogueKind::Hog]), 3);
        assert!(
            only_hogs
                .iter()
                .all(|attack| matches!(attack, Attack::Hog { .. }))
        );
    }

    #[test]
    fn no_kinds_is_refused() {
        assert_eq!(spec(Vec::new()).validate().unwrap_err().0, "fault.kinds");
        assert!(spec(vec![RogueKind::Garbage]).validate().is_ok());
    }

    #[test]
    fn every_garbage_frame_is_malformed() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2000 {
            let frame = Garbage::draw(&mut rng);
            let bytes = frame.bytes();
            assert!(Request::decode(&bytes).is_err(), "{frame:?} parses");
            assert!(!bytes.starts_with(FRAME_MAGIC) || bytes.len() <= MAX_REQUEST_FRAME_LEN);
            if let Garbage::WrongLength { len } = frame {
                assert_ne!(len, publish_len());
                assert!((16..=MAX_WRONG_LENGTH).contains(&len));
            }
            if let Garbage::Random { .. } = frame {
                assert!(!bytes.starts_with(FRAME_MAGIC), "{frame:?}");
                assert!(bytes.len() <= MAX_GARBAGE_LEN);
            }
        }
        // The bytes a random frame's seed names are the ones sent, every time.
        let random = Garbage::Random { len: 30, seed: 5 };
        assert_eq!(random.bytes(), random.bytes());
        // Even random bytes that happen to start like a frame are broken before sending.
        let valid = publish_frame();
        assert!(Request::decode(&valid).is_ok());
        assert!(valid.starts_with(FRAME_MAGIC));
        assert!(PUBLISH_RESERVED.iter().all(|&offset| valid[offset] == 0));
        // Each reserved byte, set, breaks the frame.
        for offset in PUBLISH_RESERVED {
            let frame = Garbage::Reserved { offset, value: 1 };
            assert!(Request::decode(&frame.bytes()).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn actions_serialize_with_what_they_send() {
        let json = |attack: Attack| serde_json::to_value(RoguePeer { attack }).unwrap();
        assert_eq!(
            json(Attack::Garbage {
                frame: Garbage::Reserved {
                    offset: 21,
                    value: 7
                }
            }),
            serde_json::json!({
                "action": "rogue-peer",
                "kind": "garbage",
                "frame": {"shape": "reserved", "offset": 21, "value": 7},
            })
        );
        assert_eq!(
            json(Attack::Truncated { len: 12 }),
            serde_json::json!({"action": "rogue-peer", "kind": "truncated", "len": 12})
        );
        assert_eq!(
            json(Attack::HogKill {
                hold: Duration::from_millis(1250)
            }),
            serde_json::json!({"action": "rogue-peer", "kind": "hog-kill", "hold": 1.25})
        );
    }

    #[test]
    fn hog_reports_round_trip_as_one_json_line() {
        let report = HogReport {
            held: vec![(3, 8), (4, 2)],
            end: HogEnd::SegmentBusy { limit: 48 },
        };
        let line = serde_json::to_string(&report).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<HogReport>(&line).unwrap(), report);
    }

    fn withdrawn(at_close: usize) -> Withdrawal {
        Withdrawal {
            at_close,
            after: Some(Duration::from_millis(3)),
            left: 0,
        }
    }

    fn report(taken: u32, end: HogEnd) -> HogReport {
        HogReport {
            held: (0..taken).map(|slot| (slot, 1)).collect(),
            end,
        }
    }

    #[test]
    fn a_hog_is_judged_by_its_refusal_and_its_withdrawal() {
        let (note, violation) = judge_hog(&report(4, HogEnd::PeerBusy { limit: 4 }), withdrawn(4));
        assert_eq!(violation, None, "{note}");
        assert!(
            note.contains("took 4 publications, refused peer-busy (limit 4)"),
            "{note}"
        );
        let (_, violation) = judge_hog(&report(3, HogEnd::SegmentBusy { limit: 6 }), withdrawn(3));
        assert_eq!(violation, None);
        let cases = [
            (
                report(5, HogEnd::PeerBusy { limit: 4 }),
                withdrawn(5),
                "its limit is 4",
            ),
            (
                report(9, HogEnd::NeverRefused),
                withdrawn(9),
                "never refused",
            ),
            (
                report(
                    2,
                    HogEnd::OtherRefusal {
                        refusal: "every slot is busy".into(),
                    },
                ),
                withdrawn(2),
                "not a busy answer",
            ),
            (
                report(
                    2,
                    HogEnd::Failed {
                        error: "closed".into(),
                    },
                ),
                withdrawn(2),
                "failed unrefused",
            ),
            (
                report(4, HogEnd::PeerBusy { limit: 4 }),
                Withdrawal {
                    at_close: 4,
                    after: None,
                    left: 1,
                },
                "1 of the hog's 4 publications still waited",
            ),
        ];
        for (report, withdrawal, expected) in cases {
            let (note, violation) = judge_hog(&report, withdrawal);
            let violation = violation.unwrap_or_else(|| panic!("no violation: {note}"));
            assert!(violation.contains(expected), "{violation}");
        }
    }
}
