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

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::channel::blocking;
use super::class::{Fault, FaultClass, FaultContext, Injected};
use super::error::{FaultError, InjectError};
use super::spec::DurationRange;
use crate::loadtest::load::endpoint::Endpoint;
use crate::process::role::Role;

mod garbage;
mod hog;
mod peer;

pub use garbage::Garbage;
pub use hog::{RogueHogArgs, judge_hog, rogue_hog};
use hog::{hog_injected, hog_kill};
pub use peer::{
    Closure, Hog, HogEnd, HogReport, RawPeer, Withdrawal, publish_len, send_garbage, send_truncated,
};

/// How long users-service may take to close a connection that sent a malformed frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long users-service may take to withdraw a closed connection's unredeemed publications.
/// The transport's own test holds it to 100 ms on an idle machine; this allows for the load.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(1);

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
                let withdrawal = release_hog(hog).await?;
                Ok(hog_injected(&report, withdrawal, holding))
            }
            &Attack::HogKill { hold } => {
                let program = context.supervisor.program().to_owned();
                hog_kill(&program, &socket, hold.min(context.remaining()), context).await
            }
        }
    }
}

/// Closes `hog`'s connection and watches its publications be withdrawn (for at most
/// [`WITHDRAW_TIMEOUT`]), off the async workers.
pub async fn release_hog(hog: Hog) -> Result<Withdrawal, InjectError> {
    let segment = Arc::clone(hog.segment());
    let held = hog.report().held;
    blocking("hog close", move || {
        Ok(Withdrawal::close_and_wait(
            &segment,
            &held,
            || drop(hog),
            WITHDRAW_TIMEOUT,
        ))
    })
    .await
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use shmbridge::control::frame::{MAX_REQUEST_FRAME_LEN, Request};

    use super::garbage::{FRAME_MAGIC, MAX_GARBAGE_LEN, MAX_WRONG_LENGTH, PUBLISH_RESERVED};
    use super::peer::publish_frame;
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
                report(3, HogEnd::Exhausted),
                withdrawn(3),
                "refused exhausted",
            ),
            (
                report(1, HogEnd::Answered { status: 503 }),
                withdrawn(1),
                "answered the hog 503",
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
