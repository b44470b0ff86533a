//! Closed-loop load as Locust runs it: simulated users start at a fixed spawn rate, and each
//! one loops request → think time → request until the run ends.
//!
//! Default think time, derived from the seed report: 50 users produced 24.65 req/s, so each
//! user completed a cycle every 50 / 24.65 ≈ 2.03 s. With responses of ~13 ms the think time
//! is the whole cycle, so a mean of 2 s reproduces the seed: Locust's usual
//! `between(1, 3)`, uniform 1–3 s. Check: users start 0.1 s apart, so user i runs for
//! 120 − i/10 s; summed over 50 users that is 5,877.5 user-seconds, / 2.013 s per cycle
//! ≈ 2,920 requests, against the seed's 2,926.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Generator;

/// The pause between a user's requests, drawn uniformly from `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ThinkTime {
    #[serde(serialize_with = "super::serialize_seconds")]
    pub min: Duration,
    #[serde(serialize_with = "super::serialize_seconds")]
    pub max: Duration,
}

impl ThinkTime {
    /// The seed profile's think time (see the module doc for the derivation).
    pub const SEED: ThinkTime = ThinkTime {
        min: Duration::from_secs(1),
        max: Duration::from_secs(3),
    };
    /// No think time: every user sends its next request as soon as the last one finished.
    pub const NONE: ThinkTime = ThinkTime {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        if self.min == self.max {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

impl FromStr for ThinkTime {
    type Err = String;

    /// `1s..3s` (uniform range), `2s` (constant) or `0` (no wait).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| -> Result<Duration, String> {
            let part = part.trim();
            if part == "0" {
                return Ok(Duration::ZERO);
            }
            humantime::parse_duration(part).map_err(|error| format!("{part:?}: {error}"))
        };
        let (min, max) = match text.split_once("..") {
            Some((min, max)) => (parse(min)?, parse(max)?),
            None => {
                let constant = parse(text)?;
                (constant, constant)
            }
        };
        if min > max {
            return Err(format!("range {text:?} has its minimum above its maximum"));
        }
        Ok(ThinkTime { min, max })
    }
}

impl fmt::Display for ThinkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", humantime::format_duration(self.min))
        } else {
            write!(
                f,
                "{}..{}",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max)
            )
        }
    }
}

/// Locust's user model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct UsersProfile {
    pub users: u32,
    /// Users started per second until all are running.
    pub spawn_rate: f64,
    pub think: ThinkTime,
}

/// Runs the users until the generator's end; requests in flight then finish (bounded by the
/// timeout).
pub(super) async fn run_users(profile: UsersProfile, generator: Arc<Generator>) {
    let spawn_interval = Duration::from_secs_f64(1.0 / profile.spawn_rate);
    let first_start = generator.recorder.started();
    let mut users = JoinSet::new();
    for user in 0..profile.users {
        let start = first_start + spawn_interval * user;
        if start >= generator.end {
            break;
        }
        tokio::time::sleep_until(start).await;
        let rng = StdRng::seed_from_u64(generator.rng_seed.wrapping_add(u64::from(user)));
        users.spawn(run_one_user(profile.think, rng, generator.clone()));
    }
    while users.join_next().await.is_some() {}
}

async fn run_one_user(think: ThinkTime, mut rng: StdRng, generator: Arc<Generator>) {
    let active = &generator.recorder.live().active_users;
    active.fetch_add(1, Ordering::Relaxed);
    while Instant::now() < generator.end {
        let endpoint = generator.mix.pick(&mut rng);
        let resource = generator.requests.pick(&mut rng);
        let sent = Instant::now();
        let completed = generator
            .context
            .execute(endpoint, &resource, sent + generator.timeout)
            .await;
        generator
            .recorder
            .record(endpoint, &resource, sent, &completed);
        let pause = think.sample(&mut rng);
        if !pause.is_zero() {
            tokio::time::sleep_until((Instant::now() + pause).min(generator.end)).await;
        }
    }
    active.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_time_forms() {
        assert_eq!("1s..3s".parse::<ThinkTime>().unwrap(), ThinkTime::SEED);
        assert_eq!("0".parse::<ThinkTime>().unwrap(), ThinkTime::NONE);
        let constant: ThinkTime = "250ms".parse().unwrap();
        assert_eq!(constant.min, Duration::from_millis(250));
        assert_eq!(constant.max, Duration::from_millis(250));
        assert!("3s..1s".parse::<ThinkTime>().is_err());
        assert!("soon".parse::<ThinkTime>().is_err());
        assert_eq!(ThinkTime::SEED.to_string(), "1s..3s");
    }

    #[test]
    fn think_time_samples_stay_in_range_and_average_the_midpoint() {
        let mut rng = StdRng::seed_from_u64(3);
        let samples: Vec<Duration> = (0..10_000)
            .map(|_| ThinkTime::SEED.sample(&mut rng))
            .collect();
        assert!(
            samples
                .iter()
                .all(|d| (ThinkTime::SEED.min..=ThinkTime::SEED.max).contains(d))
        );
        let mean = samples.iter().sum::<Duration>().as_secs_f64() / samples.len() as f64;
        assert!((mean - 2.0).abs() < 0.05, "mean think time {mean}");
    }
}
