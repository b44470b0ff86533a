//! The seed's figures (the Locust report of the Go gateway and Python data service this project
//! rebuilds), printed beside ours in every table. Only the REST and shared-memory endpoints
//! existed in the seed.

use serde::Serialize;

use crate::loadtest::load::endpoint::Endpoint;

/// One row of the seed report, in milliseconds and per second as Locust printed them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeedFigures {
    pub requests_per_second: f64,
    pub total_requests: u64,
    pub failures: u64,
    pub failure_percent: f64,
    pub average_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// "X% of requests: ≤ Y ms", for X in 50, 75, 90, 95, 99.
    pub distribution_ms: [(f64, f64); 5],
}

pub const SEED_DURATION_SECONDS: u64 = 120;
pub const SEED_USERS: u32 = 50;
pub const SEED_SPAWN_RATE: f64 = 10.0;
pub const SEED_PAYLOAD_BYTES: u64 = 256_873;

pub const SEED_REST: SeedFigures = SeedFigures {
    requests_per_second: 12.39,
    total_requests: 1_471,
    failures: 5,
    failure_percent: 0.34,
    average_ms: 13.0,
    median_ms: 10.0,
    p90_ms: 18.0,
    p95_ms: 26.0,
    max_ms: 163.0,
    distribution_ms: [
        (50.0, 10.0),
        (75.0, 13.0),
        (90.0, 18.0),
        (95.0, 26.0),
        (99.0, 78.0),
    ],
};

pub const SEED_SHM: SeedFigures = SeedFigures {
    requests_per_second: 12.26,
    total_requests: 1_455,
    failures: 70,
    failure_percent: 4.81,
    average_ms: 14.0,
    median_ms: 11.0,
    p90_ms: 19.0,
    p95_ms: 27.0,
    max_ms: 202.0,
    distribution_ms: [
        (50.0, 11.0),
        (75.0, 14.0),
        (90.0, 19.0),
        (95.0, 27.0),
        (99.0, 82.0),
    ],
};

/// The seed's total row: only throughput and failures are given.
pub const SEED_TOTAL_REQUESTS_PER_SECOND: f64 = 24.65;
pub const SEED_TOTAL_REQUESTS: u64 = 2_926;
pub const SEED_TOTAL_FAILURES: u64 = 75;
pub const SEED_TOTAL_FAILURE_PERCENT: f64 = 2.56;

pub fn seed_figures(endpoint: Endpoint) -> Option<&'static SeedFigures> {
    match endpoint {
        Endpoint::Api => Some(&SEED_REST),
        // The seed's shared-memory path was HTTP-signalled; both of ours stand beside it.
        Endpoint::Shm | Endpoint::ShmHttp => Some(&SEED_SHM),
        Endpoint::Cached | Endpoint::Auto | Endpoint::Published => None,
    }
}

impl SeedFigures {
    /// The seed's latency at `percentile`, where the seed report gives one.
    pub fn percentile_ms(&self, percentile: f64) -> Option<f64> {
        self.distribution_ms
            .iter()
            .find(|(p, _)| *p == percentile)
            .map(|(_, ms)| *ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rows_add_up_to_its_total() {
        assert_eq!(
            SEED_REST.total_requests + SEED_SHM.total_requests,
            SEED_TOTAL_REQUESTS
        );
        assert_eq!(SEED_REST.failures + SEED_SHM.failures, SEED_TOTAL_FAILURES);
        let rate = SEED_REST.requests_per_second + SEED_SHM.requests_per_second;
        assert!((rate - SEED_TOTAL_REQUESTS_PER_SECOND).abs() < 0.005);
        assert_eq!(SEED_REST.percentile_ms(90.0), Some(SEED_REST.p90_ms));
        assert_eq!(SEED_SHM.percentile_ms(50.0), Some(SEED_SHM.median_ms));
    }
}
