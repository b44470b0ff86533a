//! The fault schedule: every random decision of a scenario's faults (when, which service,
//! signal or fail point, how long) drawn up front from a ChaCha8 stream seeded with the
//! scenario's seed. ChaCha8's output is portable and fixed across versions, so a seed names
//! the same schedule on every machine and the printed seed replays a failing run.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{DurationRange, FaultSpec};
use crate::faults::{FailPoint, FaultAction, KillVia, Role};
use crate::inject::pid_reuse::HolderRole;
use crate::inject::scribble::ScribbleTarget;
use crate::inject::stale::StaleKind;

/// One fault and the quiet time before it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFault {
    /// Time from the previous fault's service being back (or from the load's start) to this
    /// fault; for a fail-point crash, the longest the armed process is given to reach it.
    #[serde(serialize_with = "crate::load::serialize_seconds")]
    pub after: Duration,
    pub action: FaultAction,
}

/// Draws `spec.count()` faults from `seed`.
pub fn plan(spec: &FaultSpec, seed: u64) -> Vec<PlannedFault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..spec.count())
        .map(|_| {
            let (interval, action) = match spec {
                FaultSpec::ProducerKill(kill) | FaultSpec::GatewayKill(kill) => {
                    let role = if matches!(spec, FaultSpec::ProducerKill(_)) {
                        Role::UsersService
                    } else {
                        Role::Gateway
                    };
                    let via = if rng.random_bool(kill.failpoint_share) {
                        let point = match role {
                            Role::UsersService => {
                                FailPoint::PRODUCER[rng.random_range(0..FailPoint::PRODUCER.len())]
                            }
                            Role::Gateway => FailPoint::MidRead,
                        };
                        let skip = rng.random_range(0..=kill.failpoint_max_skip);
                        KillVia::FailPoint { point, skip }
                    } else {
                        KillVia::Signal
                    };
                    (kill.interval, FaultAction::Kill { role, via })
                }
                FaultSpec::Pause(pause) => {
                    let role = if rng.random_bool(pause.users_service_share) {
                        Role::UsersService
                    } else {
                        Role::Gateway
                    };
                    let duration = sample(pause.pause, &mut rng);
                    (pause.interval, FaultAction::Pause { role, duration })
                }
                FaultSpec::SlowProducer(slow) => {
                    let [low, high] = slow.percent;
                    let percent = rng.random_range(low..=high);
                    let delay = sample(slow.delay, &mut rng);
                    (slow.interval, FaultAction::Slow { percent, delay })
                }
                FaultSpec::Scribble(scribble) => {
                    let target =
                        ScribbleTarget::ALL[rng.random_range(0..ScribbleTarget::ALL.len())];
                    let [low, high] = scribble.strikes;
                    let strikes = rng.random_range(low..=high);
                    // Where each strike lands depends on which slots hold data at that
                    // moment; the seed fixes the draws, the load fixes the slots.
                    let seed = rng.random();
                    let action = FaultAction::Scribble {
                        target,
                        strikes,
                        seed,
                    };
                    (scribble.interval, action)
                }
                FaultSpec::Resize(resize) => (resize.interval, FaultAction::Resize),
                FaultSpec::FullTmpfs(full) => (full.interval, FaultAction::FullTmpfs),
                FaultSpec::StaleSegment(stale) => {
                    let kind = StaleKind::ALL[rng.random_range(0..StaleKind::ALL.len())];
                    (stale.interval, FaultAction::StaleSegment { kind })
                }
                FaultSpec::PidReuse(pid_reuse) => {
                    let holder = if rng.random_bool(pid_reuse.reader_share) {
                        HolderRole::Reader
                    } else {
                        HolderRole::Writer
                    };
                    (pid_reuse.interval, FaultAction::PidReuse { holder })
                }
            };
            PlannedFault {
                after: sample(interval, &mut rng),
                action,
            }
        })
        .collect()
}

/// A uniform draw from `range`, at millisecond resolution so the printed schedule is exact.
fn sample(range: DurationRange, rng: &mut impl Rng) -> Duration {
    let (min, max) = (range.min.as_millis(), range.max.as_millis());
    let millis = if min == max {
        min
    } else {
        rng.random_range(min..=max)
    };
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{KillSpec, PauseSpec, PidReuseSpec, ScribbleSpec, SlowSpec};

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
            FaultSpec::ProducerKill(kill(40, 0.5)),
            FaultSpec::GatewayKill(kill(40, 0.5)),
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
                FaultAction::Kill {
                    role: Role::UsersService,
                    via: KillVia::Signal,
                } => signals += 1,
                FaultAction::Kill {
                    role: Role::UsersService,
                    via: KillVia::FailPoint { point, skip },
                } => {
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
            let FaultAction::Pause { duration, .. } = fault.action else {
                panic!("expected a pause");
            };
            assert!((Duration::from_millis(50)..=Duration::from_secs(3)).contains(&duration));
        }
        assert!(pauses.iter().any(|f| f.action.role() == Role::Gateway));
        assert!(pauses.iter().any(|f| f.action.role() == Role::UsersService));
    }

    #[test]
    fn a_share_of_zero_never_arms_a_fail_point() {
        let schedule = plan(&FaultSpec::GatewayKill(kill(30, 0.0)), 5);
        assert!(
            schedule
                .iter()
                .all(|fault| fault.action.arming_in_advance().is_none())
        );
    }
}
