//! The arithmetic of a sweep, pure so it is tested without services: one endpoint's figures at
//! one size (medians across its rounds), whether shared memory wins at a size, and the
//! crossover size from which it wins at every larger size.

use serde::Serialize;

use crate::loadtest::capacity::CapacityResult;
use crate::loadtest::capacity::summary::{Ratio, RoundFigures, median};
use crate::loadtest::load::endpoint::Endpoint;

/// One endpoint at one size under one load model: medians across rounds, sums over them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub endpoint: Endpoint,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// All answers, failed ones included (as Locust counts them).
    pub requests_per_second: f64,
    /// Verified bodies only, in 10^6 bytes per second.
    pub megabytes_per_second: f64,
    pub requests: u64,
    pub failed: u64,
    pub corrupt: u64,
}

impl Cell {
    /// Every answer a verified body (and at least one answer).
    pub fn clean(&self) -> bool {
        self.requests > 0 && self.failed == 0 && self.corrupt == 0
    }

    /// Not one verified body.
    pub fn served_nothing(&self) -> bool {
        self.failed + self.corrupt >= self.requests
    }
}

/// Each endpoint's cell of one capacity session whose bodies were `body_bytes` long; endpoints
/// that ran no round are left out.
pub fn cells(result: &CapacityResult, body_bytes: u64) -> Vec<Cell> {
    let medians = result.medians();
    result
        .endpoints
        .iter()
        .filter_map(|rounds| {
            let (_, medians) = medians.iter().find(|(e, _)| *e == rounds.endpoint)?;
            let throughput: Vec<f64> = rounds
                .rounds
                .iter()
                .map(|round| verified_megabytes_per_second(round, body_bytes))
                .collect();
            Some(Cell {
                endpoint: rounds.endpoint,
                p50_ms: medians.p50_ms,
                p99_ms: medians.p99_ms,
                requests_per_second: medians.requests_per_second,
                megabytes_per_second: median(&throughput)?,
                requests: rounds.all.requests,
                failed: rounds.all.failed(),
                corrupt: rounds.all.corrupt,
            })
        })
        .collect()
}

fn verified_megabytes_per_second(round: &RoundFigures, body_bytes: u64) -> f64 {
    if round.elapsed_seconds <= 0.0 {
        return 0.0;
    }
    let verified = round.requests.saturating_sub(round.failed + round.corrupt);
    (verified * body_bytes) as f64 / round.elapsed_seconds / 1e6
}

/// shm over `denominator` from a session's ratios, if both ran.
pub fn shm_over(ratios: &[Ratio], denominator: Endpoint) -> Option<Ratio> {
    ratios
        .iter()
        .find(|ratio| ratio.numerator == Endpoint::Shm && ratio.denominator == denominator)
        .copied()
}

/// Shared memory wins at a size when it served every request with a verified body and its p50
/// is not above REST's, or REST served none at all. `None` when either did not run.
pub fn shm_wins(cells: &[Cell]) -> Option<bool> {
    let find = |endpoint| cells.iter().find(|cell| cell.endpoint == endpoint);
    let (shm, api) = (find(Endpoint::Shm)?, find(Endpoint::Api)?);
    Some(shm.clean() && (api.served_nothing() || shm.p50_ms <= api.p50_ms))
}

/// The first of `sizes` (ascending) from which shared memory wins at that size and at every
/// larger one; `None` if it does not win at the largest.
pub fn crossover<T: Copy>(sizes: &[(T, bool)]) -> Option<T> {
    let losing_tail = sizes.iter().rposition(|&(_, wins)| !wins);
    let first_winner = losing_tail.map_or(0, |last_loss| last_loss + 1);
    sizes.get(first_winner).map(|&(size, _)| size)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::loadtest::capacity::EndpointRounds;
    use crate::loadtest::load::stats::{EndpointStats, Failure, FailureClass, Outcome};

    #[test]
    fn crossover_is_where_the_winning_tail_starts() {
        assert_eq!(crossover::<u32>(&[]), None);
        assert_eq!(crossover(&[(1, true), (2, true)]), Some(1));
        assert_eq!(crossover(&[(1, false), (2, true), (3, true)]), Some(2));
        // a win below a later loss does not count
        assert_eq!(
            crossover(&[(1, true), (2, false), (3, true), (4, true)]),
            Some(3)
        );
        assert_eq!(crossover(&[(1, true), (2, true), (3, false)]), None);
        assert_eq!(crossover(&[(1, false)]), None);
    }

    fn cell(endpoint: Endpoint, p50_ms: f64, requests: u64, failed: u64) -> Cell {
        Cell {
            endpoint,
            p50_ms,
            p99_ms: p50_ms * 2.0,
            requests_per_second: 1.0,
            megabytes_per_second: 1.0,
            requests,
            failed,
            corrupt: 0,
        }
    }

    #[test]
    fn shm_wins_only_clean_and_not_slower_than_a_serving_rest() {
        let api = cell(Endpoint::Api, 2.0, 100, 0);
        assert_eq!(
            shm_wins(&[api, cell(Endpoint::Shm, 1.0, 100, 0)]),
            Some(true)
        );
        assert_eq!(
            shm_wins(&[api, cell(Endpoint::Shm, 2.0, 100, 0)]),
            Some(true)
        );
        assert_eq!(
            shm_wins(&[api, cell(Endpoint::Shm, 2.5, 100, 0)]),
            Some(false)
        );
        // fast 507s are not a win
        assert_eq!(
            shm_wins(&[api, cell(Endpoint::Shm, 0.1, 100, 100)]),
            Some(false)
        );
        assert_eq!(
            shm_wins(&[api, cell(Endpoint::Shm, 0.1, 100, 1)]),
            Some(false)
        );
        // shm serves where REST serves nothing, however slow
        let api_down = cell(Endpoint::Api, 0.1, 50, 50);
        assert_eq!(
            shm_wins(&[api_down, cell(Endpoint::Shm, 9.0, 10, 0)]),
            Some(true)
        );
        assert_eq!(shm_wins(&[cell(Endpoint::Shm, 1.0, 1, 0)]), None);
    }

    fn round(round: u32, requests: u64, failed: u64, p50_ms: f64) -> RoundFigures {
        RoundFigures {
            round,
            run: round,
            requests,
            elapsed_seconds: 2.0,
            requests_per_second: requests as f64 / 2.0,
            p50_ms,
            p99_ms: p50_ms * 3.0,
            failed,
            corrupt: 0,
            cpu: None,
        }
    }

    #[test]
    fn cells_take_medians_and_count_only_verified_bytes() {
        let mut all = EndpointStats::default();
        all.record(
            Duration::ZERO,
            Duration::from_millis(1),
            0,
            &Outcome::Failed(Failure {
                class: FailureClass::Status(507),
                detail: String::new(),
            }),
        );
        let result = CapacityResult {
            endpoints: vec![EndpointRounds {
                endpoint: Endpoint::Shm,
                // 100, 200 and 300 requests in 2 s, the last with 100 failures
                rounds: vec![
                    round(1, 100, 0, 1.0),
                    round(2, 200, 0, 3.0),
                    round(3, 300, 100, 2.0),
                ],
                all,
            }],
        };
        let cells = cells(&result, 1_000_000);
        assert_eq!(cells.len(), 1);
        let shm = cells[0];
        assert_eq!((shm.p50_ms, shm.p99_ms), (2.0, 6.0));
        assert_eq!(shm.requests_per_second, 100.0);
        // verified per round: 100, 200, 200 bodies of 1 MB in 2 s: 50, 100, 100 MB/s
        assert_eq!(shm.megabytes_per_second, 100.0);
        assert_eq!((shm.requests, shm.failed), (1, 1));
    }
}
