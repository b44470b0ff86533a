//! Which transport `GET /api/users` takes (`--transport`): always REST, always shared memory, or,
//! under `auto`, chosen per request by the size of the body asked for, with REST as the fallback
//! whenever shared memory cannot serve it.
//!
//! The gateway does not know a body's size before it has it, so `auto` decides on an estimate
//! from the count: the seed report's body (256,873 bytes for 708 users) scaled linearly. Users
//! differ in length, which puts the estimate within a few percent of the real size from ten
//! users up, far closer than the factor of two between the sizes a sweep measures.

use crate::dataset::{DEFAULT_COUNT, SEED_REPORT_PAYLOAD_BYTES};
use crate::query::UsersQuery;

/// `--transport`: how `GET /api/users` moves the body.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// Always over HTTP from users-service.
    Api,
    /// Always through shared memory; its failures are the client's errors.
    Shm,
    /// Shared memory for bodies of at least `--auto-shm-min-bytes`, REST below; REST also when
    /// shared memory fails.
    Auto,
}

/// The route one request takes, and why (the `reason` label of `transport_choices_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Api,
    Shm { fallback_to_api: bool },
}

/// `--transport` with its threshold.
#[derive(Clone, Copy, Debug)]
pub struct TransportPolicy {
    pub choice: TransportChoice,
    pub shm_min_bytes: u64,
}

impl TransportPolicy {
    /// The route for `query`, counted in `transport_choices_total{choice, reason}`.
    pub fn route(&self, query: UsersQuery) -> Route {
        let (route, reason) = match self.choice {
            TransportChoice::Api => (Route::Api, "forced"),
            TransportChoice::Shm => (
                Route::Shm {
                    fallback_to_api: false,
                },
                "forced",
            ),
            TransportChoice::Auto if estimated_body_bytes(query.count) < self.shm_min_bytes => {
                (Route::Api, "below_threshold")
            }
            TransportChoice::Auto => (
                Route::Shm {
                    fallback_to_api: true,
                },
                "at_or_above_threshold",
            ),
        };
        let chosen = match route {
            Route::Api => "api",
            Route::Shm { .. } => "shm",
        };
        metrics::counter!("transport_choices_total", "choice" => chosen, "reason" => reason)
            .increment(1);
        route
    }
}

/// The body size `auto` assumes for `count` users.
pub fn estimated_body_bytes(count: u32) -> u64 {
    u64::from(count) * SEED_REPORT_PAYLOAD_BYTES as u64 / u64::from(DEFAULT_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::users_json;

    fn query(count: u32) -> UsersQuery {
        UsersQuery::new(count, 28).unwrap()
    }

    #[test]
    fn the_estimate_is_within_five_percent_of_real_bodies() {
        for count in [10, 100, 708, 3_000] {
            let real = users_json(count, 28).len() as f64;
            let estimate = estimated_body_bytes(count) as f64;
            assert!(
                (estimate - real).abs() / real < 0.05,
                "{count} users: estimate {estimate}, real {real}"
            );
        }
    }

    #[test]
    fn auto_takes_shared_memory_from_the_threshold_up_with_a_fallback() {
        let policy = TransportPolicy {
            choice: TransportChoice::Auto,
            shm_min_bytes: estimated_body_bytes(100),
        };
        assert_eq!(policy.route(query(99)), Route::Api);
        for count in [100, 5_000] {
            assert_eq!(
                policy.route(query(count)),
                Route::Shm {
                    fallback_to_api: true
                }
            );
        }
    }

    #[test]
    fn forced_choices_ignore_the_size() {
        for count in [1, 5_000] {
            let api = TransportPolicy {
                choice: TransportChoice::Api,
                shm_min_bytes: 0,
            };
            assert_eq!(api.route(query(count)), Route::Api);
            let shm = TransportPolicy {
                choice: TransportChoice::Shm,
                shm_min_bytes: u64::MAX,
            };
            assert_eq!(
                shm.route(query(count)),
                Route::Shm {
                    fallback_to_api: false
                }
            );
        }
    }
}
