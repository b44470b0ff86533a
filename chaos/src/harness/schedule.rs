//! The fault schedule: every random decision of a scenario's faults (when, which service,
//! signal or fail point, how long) drawn up front from a ChaCha8 stream seeded with the
//! scenario's seed. ChaCha8's output is portable and fixed across versions, so a seed names
//! the same schedule on every machine and the printed seed replays a failing run.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::faults::{FaultAction, FaultSpec};

/// One fault and the quiet time before it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFault {
    /// Time from the previous fault's service being back (or from the load's start) to this
    /// fault; for a fail-point crash, the longest the armed process is given to reach it.
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub after: Duration,
    pub action: FaultAction,
}

/// Draws `spec.count()` faults from `seed`: each fault's own draws, then its quiet time.
pub fn plan(spec: &FaultSpec, seed: u64) -> Vec<PlannedFault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..spec.count())
        .map(|_| {
            let (interval, action) = spec.draw(&mut rng);
            PlannedFault {
                after: interval.sample(&mut rng),
                action,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::faults::fail_point::FailPoint;
    use crate::harness::faults::kill::{Kill, KillSpec, KillVia, KillsOf};
    use crate::harness::faults::pause::{Pause, PauseSpec};
    use crate::harness::faults::pid_reuse::PidReuseSpec;
    use crate::harness::faults::resize::Resize;
    use crate::harness::faults::scribble::ScribbleSpec;
    use crate::harness::faults::slow::{Slow, SlowSpec};
    use crate::harness::faults::spec::DurationRange;
    use crate::loadtest::load::endpoint::Endpoint;
    use crate::process::role::Role;

    fn range(text: &str) -> DurationRange {
        text.parse().unwrap()
    }

    fn kill(count: u32, failpoint_share: f64) -> KillSpec {
        KillSpec {
            count,
            interval: range("200ms..2s"),
            restart_delay: Duration::from_millis(100),
            failpoint_share,
            failpoint_max_skip: 20,
        }
    }

    fn specs() -> Vec<FaultSpec> {
        vec![
            FaultSpec::ProducerKill(KillsOf(kill(40, 0.5))),
            FaultSpec::GatewayKill(KillsOf(kill(40, 0.5))),
            FaultSpec::Pause(PauseSpec {
                count: 40,
                interval: range("100ms..1s"),
                pause: range("50ms..3s"),
                users_service_share: 0.5,
            }),
            FaultSpec::SlowProducer(SlowSpec {
                count: 40,
                interval: range("1s..4s"),
                delay: range("500ms..3s"),
                percent: [10, 60],
            }),
            FaultSpec::Scribble(ScribbleSpec {
                count: 40,
                interval: range("100ms..1s"),
                strikes: [1, 8],
            }),
            FaultSpec::PidReuse(PidReuseSpec {
                count: 40,
                interval: range("100ms..1s"),
                reader_share: 0.5,
            }),
        ]
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for spec in specs() {
            assert_eq!(plan(&spec, 42), plan(&spec, 42), "{}", spec.kind());
            assert_eq!(plan(&spec, 42).len(), 40);
        }
    }

    #[test]
    fn different_seeds_give_different_schedules() {
        for spec in specs() {
            assert_ne!(plan(&spec, 42), plan(&spec, 43), "{}", spec.kind());
        }
    }

    #[test]
    fn draws_stay_in_their_ranges_and_cover_every_choice() {
        let schedule = plan(&specs()[0], 9);
        let mut signals = 0;
        let mut points = Vec::new();
        for fault in &schedule {
            assert!((range("200ms..2s").min..=range("200ms..2s").max).contains(&fault.after));
            match fault.action {
                FaultAction::ProducerKill(Kill {
                    role: Role::UsersService,
                    via: KillVia::Signal,
                }) => signals += 1,
                FaultAction::ProducerKill(Kill {
                    role: Role::UsersService,
                    via: KillVia::FailPoint { point, skip },
                }) => {
                    assert!(skip <= 20);
                    points.push(point);
                }
                ref other => panic!("unexpected action {other:?}"),
            }
        }
        assert!(signals > 0, "no signal kill in 40 draws at share 0.5");
        for point in FailPoint::PRODUCER {
            assert!(points.contains(&point), "{point:?} never drawn");
        }
        let pauses = plan(&specs()[2], 9);
        for fault in &pauses {
            let FaultAction::Pause(Pause { duration, .. }) = fault.action else {
                panic!("expected a pause");
            };
            assert!((Duration::from_millis(50)..=Duration::from_secs(3)).contains(&duration));
        }
        assert!(pauses.iter().any(|f| f.action.role() == Role::Gateway));
        assert!(pauses.iter().any(|f| f.action.role() == Role::UsersService));
    }

    #[test]
    fn a_share_of_zero_never_arms_a_fail_point() {
        let schedule = plan(&FaultSpec::GatewayKill(KillsOf(kill(30, 0.0))), 5);
        assert!(
            schedule
                .iter()
                .all(|fault| fault.action.arming_in_advance().is_none())
        );
    }

    #[test]
    fn only_fail_point_kills_arm_in_advance() {
        let crash = FaultAction::GatewayKill(Kill {
            role: Role::Gateway,
            via: KillVia::FailPoint {
                point: FailPoint::MidRead,
                skip: 4,
            },
        });
        assert_eq!(
            crash.arming_in_advance(),
            Some((
                Role::Gateway,
                "gateway::mid-read=4*off->1*return".to_owned()
            ))
        );
        let signal = FaultAction::GatewayKill(Kill {
            role: Role::Gateway,
            via: KillVia::Signal,
        });
        assert_eq!(signal.arming_in_advance(), None);
        let slow = FaultAction::SlowProducer(Slow {
            percent: 10,
            delay: Duration::from_secs(1),
        });
        assert_eq!(
            slow.arming_in_advance(),
            None,
            "a slow phase arms its own start"
        );
    }

    #[test]
    fn recovery_paths_follow_what_the_fault_damages() {
        let users_kill = FaultAction::ProducerKill(Kill {
            role: Role::UsersService,
            via: KillVia::Signal,
        });
        assert!(users_kill.affects(Endpoint::Api) && users_kill.affects(Endpoint::Shm));
        assert!(!users_kill.affects(Endpoint::Cached));
        let gateway_pause = FaultAction::Pause(Pause {
            role: Role::Gateway,
            duration: Duration::from_millis(50),
        });
        assert!(
            Endpoint::ALL
                .iter()
                .all(|&path| gateway_pause.affects(path))
        );
        let resize = FaultAction::Resize(Resize {});
        assert!(resize.affects(Endpoint::Shm));
        assert!(!resize.affects(Endpoint::Api));
    }

    #[test]
    fn actions_serialize_as_their_class_says() {
        let json = |action: &FaultAction| serde_json::to_value(action).unwrap();
        let crash = FaultAction::ProducerKill(Kill {
            role: Role::UsersService,
            via: KillVia::FailPoint {
                point: FailPoint::MidCopy,
                skip: 3,
            },
        });
        assert_eq!(
            json(&crash),
            serde_json::json!({
                "action": "kill",
                "role": "users-service",
                "via": "fail-point",
                "point": "mid-copy",
                "skip": 3,
            })
        );
        let pause = FaultAction::Pause(Pause {
            role: Role::Gateway,
            duration: Duration::from_millis(1500),
        });
        assert_eq!(
            json(&pause),
            serde_json::json!({"action": "pause", "role": "gateway", "duration": 1.5})
        );
        assert_eq!(
            json(&FaultAction::Resize(Resize {})),
            serde_json::json!({"action": "resize"})
        );
    }
}
