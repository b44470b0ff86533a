//! The checkers of a chaos scenario, counted like Jepsen's: requests, verified answers, clean
//! failures by class, corrupt bodies, requests that outlived their deadline, unexpected
//! process deaths, leaked slots and sealed bytes, leftover payload memfds, faults injected, and the recovery time after each fault
//! (from the faulted service being back to the first verified answer on every path through
//! it), and for a run under memory budgets the checks of [`memory`](super::memory). The
//! arithmetic here is pure so it is tested without processes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::harness::memory::{Answers, MemoryChecks};
use crate::harness::scenario::Expectations;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::recorder::{RequestObserver, RequestRecord};
use crate::loadtest::load::stats::{FailureClass, Outcome, RunStats};

/// Records when each verified answer arrived, per endpoint, for the recovery times.
#[derive(Default)]
pub struct SuccessLog {
    completions: Mutex<BTreeMap<Endpoint, Vec<Instant>>>,
}

impl RequestObserver for SuccessLog {
    fn observe(&self, request: &RequestRecord<'_>) {
        if matches!(request.outcome, Outcome::Verified) {
            let mut completions = self
                .completions
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            completions
                .entry(request.endpoint)
                .or_default()
                .push(request.due + request.latency);
        }
    }
}

impl SuccessLog {
    /// The completion instants per endpoint, sorted.
    pub fn sorted(&self) -> BTreeMap<Endpoint, Vec<Instant>> {
        let mut completions = self
            .completions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        for instants in completions.values_mut() {
            instants.sort_unstable();
        }
        completions
    }
}

/// Time from `back` to the first verified answer at or after it on every one of `paths`;
/// `None` if some path never answered again.
pub fn recovery_time(
    back: Instant,
    paths: &[Endpoint],
    successes: &BTreeMap<Endpoint, Vec<Instant>>,
) -> Option<Duration> {
    paths
        .iter()
        .map(|path| {
            let sorted = successes.get(path)?;
            let first = sorted.get(sorted.partition_point(|&done| done < back))?;
            Some(first.duration_since(back))
        })
        .try_fold(Duration::ZERO, |slowest, time| Some(slowest.max(time?)))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecoverySummary {
    /// Faults whose service came back and answered again.
    pub recovered: usize,
    /// Faults after which some path never answered verified again before the load ended.
    pub unrecovered: usize,
    #[serde(serialize_with = "optional_seconds")]
    pub max: Option<Duration>,
    /// Nearest-rank 99th percentile.
    #[serde(serialize_with = "optional_seconds")]
    pub p99: Option<Duration>,
}

impl RecoverySummary {
    pub fn of(times: &[Option<Duration>]) -> RecoverySummary {
        let mut recovered: Vec<Duration> = times.iter().flatten().copied().collect();
        recovered.sort_unstable();
        let p99 = (!recovered.is_empty()).then(|| {
            let rank = (recovered.len() * 99).div_ceil(100);
            recovered[rank - 1]
        });
        RecoverySummary {
            recovered: recovered.len(),
            unrecovered: times.len() - recovered.len(),
            max: recovered.last().copied(),
            p99,
        }
    }
}

/// Every count a scenario is judged by.
#[derive(Clone, Debug, Serialize)]
pub struct Invariants {
    pub requests: u64,
    pub ok: u64,
    /// Failures that are clean answers (an HTTP error, a refused connection...) by class and
    /// detail (for an HTTP error, the gateway's error code).
    pub clean_failures: BTreeMap<String, u64>,
    pub corrupt: u64,
    /// Requests with no complete answer before the client's timeout.
    pub outlived_deadline: u64,
    pub unexpected_deaths: usize,
    /// Slots not free once the load stopped and both services were healthy, read from the
    /// segment's slot table; `None` if it could not be read.
    pub leaked_slots: Option<u32>,
    /// Sealed payload bytes still counted in flight once the load stopped and the TTL passed
    /// (the producer's count, or the segment's tickets); `None` if the segment could not be
    /// read.
    pub leaked_bytes: Option<u64>,
    /// Why the slot table could not be read.
    pub leak_check_error: Option<String>,
    /// Sealed payload memfds the gateway and users-service still map or hold open at the end;
    /// `None` if they could not be counted.
    pub leftover_payload_memfds: Option<u32>,
    /// Why the payload memfds could not be counted.
    pub payload_memfd_error: Option<String>,
    pub faults_planned: u32,
    /// Faults carried out, by what was done.
    pub faults: BTreeMap<String, u64>,
    pub recovery: RecoverySummary,
    /// Violations a fault showed by itself (a resize the kernel allowed, a dead holder's slot
    /// never reclaimed...).
    pub fault_violations: Vec<String>,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub latency_p99: Duration,
    #[serde(serialize_with = "crate::loadtest::load::serialize_seconds")]
    pub latency_max: Duration,
    /// A run under memory budgets: peaks, refusals, holds.
    pub memory: Option<MemoryChecks>,
}

impl Invariants {
    /// The request counts of `stats`; the other fields start empty.
    pub fn from_stats(stats: &RunStats, faults_planned: u32) -> Invariants {
        let total = stats.total();
        let mut clean_failures = BTreeMap::new();
        let mut outlived_deadline = 0;
        for (failure, &count) in &total.failures {
            match failure.class {
                FailureClass::Timeout => outlived_deadline += count,
                _ => *clean_failures.entry(failure.to_string()).or_default() += count,
            }
        }
        Invariants {
            requests: total.requests,
            ok: total.verified,
            clean_failures,
            corrupt: total.corrupt,
            outlived_deadline,
            unexpected_deaths: 0,
            leaked_slots: None,
            leaked_bytes: None,
            leak_check_error: None,
            leftover_payload_memfds: None,
            payload_memfd_error: None,
            faults_planned,
            faults: BTreeMap::new(),
            recovery: RecoverySummary::default(),
            fault_violations: Vec::new(),
            latency_p99: Duration::from_micros(total.latency.value_at_quantile(0.99)),
            latency_max: Duration::from_micros(total.latency.max()),
            memory: None,
        }
    }

    /// Counts the requests of clients beside the load (a fault's own): their answers join the
    /// load's in every count, and a hang counts as a request that outlived its deadline.
    pub fn count_clients(&mut self, answers: &Answers) {
        self.requests += answers.requests;
        self.ok += answers.verified;
        self.corrupt += answers.corrupt;
        self.outlived_deadline += answers.timed_out;
        for (kind, count) in &answers.failures {
            *self.clean_failures.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn clean_failure_total(&self) -> u64 {
        self.clean_failures.values().sum()
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Every violated invariant or expectation, in words; empty when the scenario passed.
    pub fn violations(&self, expect: &Expectations) -> Vec<String> {
        let mut violations = Vec::new();
        if self.corrupt > 0 {
            violations.push(format!("{} corrupt bodies (must be 0)", self.corrupt));
        }
        if self.outlived_deadline > 0 {
            violations.push(format!(
                "{} requests outlived their deadline (must be 0)",
                self.outlived_deadline
            ));
        }
        if self.unexpected_deaths > 0 {
            violations.push(format!(
                "{} unexpected process deaths (must be 0)",
                self.unexpected_deaths
            ));
        }
        match self.leaked_slots {
            Some(0) => {}
            Some(leaked) => violations.push(format!("{leaked} slots leaked (must be 0)")),
            None => violations.push(format!(
                "the leaked slots could not be read: {}",
                self.leak_check_error
                    .as_deref()
                    .unwrap_or("no reason given")
            )),
        }
        // An unread slot table is reported once, above: the bytes come from the same check.
        if let Some(leaked) = self.leaked_bytes.filter(|&leaked| leaked > 0) {
            violations.push(format!("{leaked} sealed bytes leaked (must be 0)"));
        }
        match self.leftover_payload_memfds {
            Some(left) if left <= expect.max_payload_memfds => {}
            Some(left) => violations.push(format!(
                "{left} sealed payload memfds still mapped or open (must be at most {})",
                expect.max_payload_memfds
            )),
            None => violations.push(format!(
                "the payload memfds could not be counted: {}",
                self.payload_memfd_error
                    .as_deref()
                    .unwrap_or("no reason given")
            )),
        }
        if self.faults_planned > 0 && self.faults_injected() == 0 {
            violations.push("no fault was injected: the run proves nothing".to_owned());
        }
        if self.recovery.unrecovered > 0 {
            violations.push(format!(
                "{} faults never recovered (no verified answer afterwards)",
                self.recovery.unrecovered
            ));
        }
        if let Some(max) = self.recovery.max.filter(|&max| max > expect.max_recovery) {
            violations.push(format!(
                "recovery took up to {max:?} (expected at most {:?})",
                expect.max_recovery
            ));
        }
        violations.extend(self.fault_violations.iter().cloned());
        if let Some(limit) = expect.max_latency.filter(|&limit| self.latency_max > limit) {
            violations.push(format!(
                "a request took {:?} (expected at most {limit:?})",
                self.latency_max
            ));
        }
        if let Some(limit) = expect
            .max_failures
            .filter(|&limit| self.clean_failure_total() > limit)
        {
            violations.push(format!(
                "{} requests failed (expected at most {limit})",
                self.clean_failure_total()
            ));
        }
        if let Some(memory) = &self.memory {
            violations.extend(memory.violations());
        }
        violations
    }
}

fn optional_seconds<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn recovery_waits_for_every_path() {
        let origin = Instant::now();
        let successes = BTreeMap::from([
            (Endpoint::Api, vec![origin + ms(10), origin + ms(120)]),
            (Endpoint::Shm, vec![origin + ms(50), origin + ms(300)]),
        ]);
        let back = origin + ms(100);
        assert_eq!(
            recovery_time(back, &[Endpoint::Api], &successes),
            Some(ms(20))
        );
        assert_eq!(
            recovery_time(back, &[Endpoint::Api, Endpoint::Shm], &successes),
            Some(ms(200))
        );
        assert_eq!(
            recovery_time(origin + ms(301), &[Endpoint::Shm], &successes),
            None
        );
        assert_eq!(
            recovery_time(back, &[Endpoint::Cached], &successes),
            None,
            "a path with no success at all never recovered"
        );
        assert_eq!(
            recovery_time(origin + ms(50), &[Endpoint::Shm], &successes),
            Some(Duration::ZERO),
            "an answer at the very instant counts"
        );
    }

    #[test]
    fn recovery_summary_max_and_nearest_rank_p99() {
        let times: Vec<Option<Duration>> = (1..=200).map(|i| Some(ms(i))).collect();
        let summary = RecoverySummary::of(&times);
        assert_eq!(summary.recovered, 200);
        assert_eq!(summary.max, Some(ms(200)));
        assert_eq!(summary.p99, Some(ms(198)));

        let mut few = vec![Some(ms(30)), None, Some(ms(10)), Some(ms(900))];
        let summary = RecoverySummary::of(&few);
        assert_eq!(summary.unrecovered, 1);
        assert_eq!(summary.max, Some(ms(900)));
        assert_eq!(
            summary.p99,
            Some(ms(900)),
            "with 3 values p99 is the largest"
        );
        few.clear();
        assert_eq!(RecoverySummary::of(&few), RecoverySummary::default());
    }

    fn passing() -> Invariants {
        Invariants {
            requests: 100,
            ok: 90,
            clean_failures: BTreeMap::from([("HTTP 503".to_owned(), 10)]),
            corrupt: 0,
            outlived_deadline: 0,
            unexpected_deaths: 0,
            leaked_slots: Some(0),
            leaked_bytes: Some(0),
            leak_check_error: None,
            leftover_payload_memfds: Some(0),
            payload_memfd_error: None,
            faults_planned: 3,
            faults: BTreeMap::from([("SIGKILL gateway".to_owned(), 3)]),
            recovery: RecoverySummary::of(&[Some(ms(200)), Some(ms(400))]),
            fault_violations: Vec::new(),
            latency_p99: ms(100),
            latency_max: ms(2100),
            memory: None,
        }
    }

    #[test]
    fn a_clean_run_passes_and_each_violation_is_named() {
        let expect = Expectations::default();
        assert_eq!(passing().violations(&expect), Vec::<String>::new());
        type Breaks = fn(&mut Invariants);
        let cases: [(Breaks, &str); 12] = [
            (
                |run| run.fault_violations.push("fault 2: resized".into()),
                "fault 2: resized",
            ),
            (|run| run.corrupt = 1, "corrupt"),
            (|run| run.outlived_deadline = 2, "deadline"),
            (|run| run.unexpected_deaths = 1, "unexpected"),
            (|run| run.leaked_slots = Some(3), "3 slots leaked"),
            (|run| run.leaked_slots = None, "could not be read"),
            (
                |run| run.leaked_bytes = Some(5_800_000),
                "5800000 sealed bytes leaked",
            ),
            (
                |run| run.leftover_payload_memfds = Some(2),
                "2 sealed payload memfds",
            ),
            (
                |run| run.leftover_payload_memfds = None,
                "payload memfds could not be counted",
            ),
            (|run| run.faults.clear(), "no fault"),
            (
                |run| run.recovery = RecoverySummary::of(&[Some(ms(1500))]),
                "recovery took",
            ),
            (
                |run| run.recovery = RecoverySummary::of(&[None]),
                "never recovered",
            ),
        ];
        for (break_it, expected) in cases {
            let mut run = passing();
            break_it(&mut run);
            let violations = run.violations(&expect);
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert!(violations[0].contains(expected), "{violations:?}");
        }
        let strict = Expectations {
            max_latency: Some(ms(2000)),
            ..Expectations::default()
        };
        assert!(passing().violations(&strict)[0].contains("a request took"));
        let at_most = |failures| Expectations {
            max_failures: Some(failures),
            ..Expectations::default()
        };
        let failed = passing().clean_failure_total();
        assert!(failed > 0);
        assert!(passing().violations(&at_most(failed)).is_empty());
        assert!(passing().violations(&at_most(failed - 1))[0].contains("requests failed"));
        let mut starved = passing();
        starved.memory = Some(MemoryChecks::new(
            Vec::new(),
            &BTreeMap::new(),
            [&crate::harness::memory::PressureRound::default()],
        ));
        assert_eq!(starved.violations(&expect).len(), 1);
        assert!(starved.violations(&expect)[0].starts_with("round 1: no large body"));
    }

    #[test]
    fn a_faults_own_clients_join_every_count() {
        use crate::loadtest::load::stats::{Failure, FailureClass, Outcome};
        let mut run = passing();
        let mut answers = Answers::default();
        answers.record(&Outcome::Verified);
        answers.record(&Outcome::Failed(Failure {
            class: FailureClass::Status(503),
            detail: String::new(),
        }));
        answers.record(&Outcome::Failed(Failure {
            class: FailureClass::Timeout,
            detail: String::new(),
        }));
        run.count_clients(&answers);
        assert_eq!((run.requests, run.ok, run.outlived_deadline), (103, 91, 1));
        assert_eq!(run.clean_failures["HTTP 503"], 11);
        assert!(run.violations(&Expectations::default())[0].contains("1 requests outlived"));
    }
}
