//! The arithmetic of a capacity run, pure so it is tested without services: the order of the
//! runs, one run's figures, the medians across rounds and the ratios between endpoints.

use std::time::Duration;

use serde::Serialize;

use super::cpu::CpuPerRequest;

use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::EndpointStats;

/// One run of the session: one endpoint alone for one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledRun {
    /// 1-based.
    pub round: u32,
    pub endpoint: Endpoint,
}

/// Every endpoint once per round, in the same order each round (A B C A B C): drift over the
/// session (another tenant on the VM, a warming page cache) then falls on every endpoint alike
/// instead of on whichever one ran last.
pub fn schedule(endpoints: &[Endpoint], rounds: u32) -> Vec<ScheduledRun> {
    (1..=rounds)
        .flat_map(|round| {
            endpoints
                .iter()
                .map(move |&endpoint| ScheduledRun { round, endpoint })
        })
        .collect()
}

/// What one endpoint did in one round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundFigures {
    /// 1-based.
    pub round: u32,
    /// This run's place in the whole session (1-based), so drift can be read off the tables.
    pub run: u32,
    pub requests: u64,
    pub elapsed_seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
    pub corrupt: u64,
    /// CPU time per request by process, where it could be measured.
    pub cpu: Option<CpuPerRequest>,
}

impl RoundFigures {
    pub fn of(
        round: u32,
        run: u32,
        stats: &EndpointStats,
        elapsed: Duration,
        cpu: Option<CpuPerRequest>,
    ) -> Self {
        let summary = stats.summary(elapsed);
        RoundFigures {
            round,
            run,
            requests: stats.requests,
            elapsed_seconds: elapsed.as_secs_f64(),
            requests_per_second: summary.requests_per_second,
            p50_ms: summary.median_ms(),
            p99_ms: summary.percentile_ms(99.0),
            failed: stats.failed(),
            corrupt: stats.corrupt,
            cpu,
        }
    }
}

/// The median of `values`; with an even count, the mean of the middle two. `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// One endpoint's figures across rounds, each the median of its own column: the round with the
/// median rate need not be the round with the median p99.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Medians {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Per process, the median over the rounds that measured it.
    pub cpu: Option<CpuPerRequest>,
}

impl Medians {
    /// `None` when there are no rounds.
    pub fn of(rounds: &[RoundFigures]) -> Option<Medians> {
        let column = |figure: fn(&RoundFigures) -> f64| {
            median(&rounds.iter().map(figure).collect::<Vec<_>>())
        };
        let measured: Vec<CpuPerRequest> = rounds.iter().filter_map(|r| r.cpu).collect();
        let cpu_column = |figure: fn(&CpuPerRequest) -> f64| {
            median(&measured.iter().map(figure).collect::<Vec<_>>())
        };
        let cpu = (|| {
            Some(CpuPerRequest {
                gateway_us: cpu_column(|cpu| cpu.gateway_us)?,
                users_service_us: cpu_column(|cpu| cpu.users_service_us)?,
                load_generator_us: cpu_column(|cpu| cpu.load_generator_us)?,
            })
        })();
        Some(Medians {
            requests_per_second: column(|r| r.requests_per_second)?,
            p50_ms: column(|r| r.p50_ms)?,
            p99_ms: column(|r| r.p99_ms)?,
            cpu,
        })
    }
}

/// `numerator`'s medians over `denominator`'s. Above 1 on the rate means more requests per
/// second; below 1 on a latency means faster. `None` where the denominator is 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub numerator: Endpoint,
    pub denominator: Endpoint,
    pub requests_per_second: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Ratio {
    fn of(numerator: (Endpoint, &Medians), denominator: (Endpoint, &Medians)) -> Ratio {
        let divide = |top: f64, bottom: f64| (bottom != 0.0).then(|| top / bottom);
        let (top, bottom) = (numerator.1, denominator.1);
        Ratio {
            numerator: numerator.0,
            denominator: denominator.0,
            requests_per_second: divide(top.requests_per_second, bottom.requests_per_second),
            p50: divide(top.p50_ms, bottom.p50_ms),
            p99: divide(top.p99_ms, bottom.p99_ms),
        }
    }
}

/// Every endpoint against REST (the transport to beat) and against the cached body (the
/// gateway's ceiling), when those ran: first each endpoint but the ceiling over REST, then each
/// endpoint over the ceiling. REST against the ceiling is listed once, as REST/cached, since
/// cached/REST is its inverse. In `medians` order, so a new endpoint gets its rows unasked.
pub fn ratios(medians: &[(Endpoint, Medians)]) -> Vec<Ratio> {
    let find = |wanted: Endpoint| medians.iter().find(|(endpoint, _)| *endpoint == wanted);
    let mut ratios = Vec::new();
    if let Some((api, api_medians)) = find(Endpoint::Api) {
        ratios.extend(
            medians
                .iter()
                .filter(|(endpoint, _)| !matches!(endpoint, Endpoint::Api | Endpoint::Cached))
                .map(|(endpoint, m)| Ratio::of((*endpoint, m), (*api, api_medians))),
        );
    }
    if let Some((cached, cached_medians)) = find(Endpoint::Cached) {
        ratios.extend(
            medians
                .iter()
                .filter(|(endpoint, _)| *endpoint != Endpoint::Cached)
                .map(|(endpoint, m)| Ratio::of((*endpoint, m), (*cached, cached_medians))),
        );
    }
    ratios
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::stats::{Failure, FailureClass, Outcome};

    fn figures(requests_per_second: f64, p50_ms: f64, p99_ms: f64) -> RoundFigures {
        RoundFigures {
            round: 1,
            run: 1,
            requests: 0,
            elapsed_seconds: 1.0,
            requests_per_second,
            p50_ms,
            p99_ms,
            failed: 0,
            corrupt: 0,
            cpu: None,
        }
    }

    fn medians(requests_per_second: f64, p50_ms: f64, p99_ms: f64) -> Medians {
        Medians {
            requests_per_second,
            p50_ms,
            p99_ms,
            cpu: None,
        }
    }

    #[test]
    fn cpu_medians_are_taken_per_process_over_the_rounds_that_measured_them() {
        let cpu = |gateway_us, users_service_us, load_generator_us| {
            Some(CpuPerRequest {
                gateway_us,
                users_service_us,
                load_generator_us,
            })
        };
        let rounds = [
            RoundFigures {
                cpu: cpu(100.0, 10.0, 50.0),
                ..figures(1.0, 1.0, 1.0)
            },
            RoundFigures {
                cpu: cpu(300.0, 30.0, 40.0),
                ..figures(1.0, 1.0, 1.0)
            },
            RoundFigures {
                cpu: cpu(200.0, 90.0, 60.0),
                ..figures(1.0, 1.0, 1.0)
            },
            figures(1.0, 1.0, 1.0),
        ];
        let medians = Medians::of(&rounds).unwrap();
        assert_eq!(medians.cpu, cpu(200.0, 30.0, 50.0));
        assert_eq!(Medians::of(&rounds[3..]).unwrap().cpu, None);
    }

    #[test]
    fn schedule_interleaves_rounds_in_the_given_order() {
        let endpoints = [Endpoint::Api, Endpoint::Shm, Endpoint::Cached];
        let order: Vec<(u32, Endpoint)> = schedule(&endpoints, 2)
            .into_iter()
            .map(|run| (run.round, run.endpoint))
            .collect();
        assert_eq!(
            order,
            [
                (1, Endpoint::Api),
                (1, Endpoint::Shm),
                (1, Endpoint::Cached),
                (2, Endpoint::Api),
                (2, Endpoint::Shm),
                (2, Endpoint::Cached),
            ]
        );
        assert!(schedule(&endpoints, 0).is_empty());
        assert_eq!(schedule(&[Endpoint::Shm], 3).len(), 3);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // one outlier round does not move it
        assert_eq!(median(&[100.0, 101.0, 5_000.0]), Some(101.0));
    }

    #[test]
    fn medians_take_each_column_on_its_own() {
        let rounds = [
            figures(1_000.0, 1.0, 9.0),
            figures(3_000.0, 3.0, 7.0),
            figures(2_000.0, 5.0, 8.0),
        ];
        assert_eq!(Medians::of(&rounds), Some(medians(2_000.0, 3.0, 8.0)));
        assert_eq!(Medians::of(&[]), None);
    }

    #[test]
    fn round_figures_come_from_the_run_stats() {
        let mut stats = EndpointStats::default();
        for ms in 1..=100 {
            stats.record(
                Duration::ZERO,
                Duration::from_millis(ms),
                10,
                &Outcome::Verified,
            );
        }
        stats.record(
            Duration::ZERO,
            Duration::from_millis(1),
            0,
            &Outcome::Failed(Failure {
                class: FailureClass::Timeout,
                detail: String::new(),
            }),
        );
        let round = RoundFigures::of(2, 5, &stats, Duration::from_secs(4), None);
        assert_eq!((round.round, round.run), (2, 5));
        assert_eq!(round.requests, 101);
        assert_eq!(round.requests_per_second, 25.25);
        assert_eq!((round.failed, round.corrupt), (1, 0));
        assert!((round.p50_ms - 50.0).abs() <= 0.05, "{}", round.p50_ms);
        assert!((round.p99_ms - 99.0).abs() <= 0.1, "{}", round.p99_ms);
    }

    #[test]
    fn ratios_against_rest_and_the_ceiling() {
        let all = [
            (Endpoint::Api, medians(1_000.0, 2.0, 10.0)),
            (Endpoint::Shm, medians(1_500.0, 1.0, 8.0)),
            (Endpoint::Cached, medians(2_000.0, 0.5, 4.0)),
        ];
        let ratio = |numerator, denominator, rate, p50, p99| Ratio {
            numerator,
            denominator,
            requests_per_second: Some(rate),
            p50: Some(p50),
            p99: Some(p99),
        };
        assert_eq!(
            ratios(&all),
            [
                ratio(Endpoint::Shm, Endpoint::Api, 1.5, 0.5, 0.8),
                ratio(Endpoint::Api, Endpoint::Cached, 0.5, 4.0, 2.5),
                ratio(Endpoint::Shm, Endpoint::Cached, 0.75, 2.0, 2.0),
            ]
        );
    }

    #[test]
    fn ratios_need_their_reference_and_a_nonzero_denominator() {
        let shm_only = [(Endpoint::Shm, medians(1.0, 1.0, 1.0))];
        assert!(ratios(&shm_only).is_empty());
        let no_ceiling = [
            (Endpoint::Api, medians(0.0, 0.0, 2.0)),
            (Endpoint::Shm, medians(5.0, 1.0, 1.0)),
        ];
        let only = ratios(&no_ceiling);
        assert_eq!(only.len(), 1);
        assert_eq!(
            (only[0].requests_per_second, only[0].p50, only[0].p99),
            (None, None, Some(0.5))
        );
    }
}
