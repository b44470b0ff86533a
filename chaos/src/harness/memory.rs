//! The checks of a run under memory budgets (the `memory-pressure` fault class sets the
//! budgets and makes the pressure): each service's peak resident memory within what its
//! configuration allows plus a fixed overhead, every answer that is not a 200 a clean refusal
//! (503 with `Retry-After`, or 413), and in every round a large body served to the gateway over
//! shared memory while a hog peer held its share of users-service's sealed bytes.
//!
//! Everything is computed from what the run measured: the peaks from each service's `VmHWM`
//! (`/proc/PID/status`) at the end of the run, the answers from the clients' own tallies and
//! the load's failures, the holds from the hog's and the prober's instants. The arithmetic is
//! pure so it is tested without processes.

use std::collections::BTreeMap;
use std::fmt;

use nix::unistd::Pid;
use serde::Serialize;

use crate::loadtest::load::request::NO_RETRY_AFTER;
use crate::loadtest::load::stats::{Failure, FailureClass, Outcome};
use crate::loadtest::sweep::rss::status_field;
use crate::process::role::Role;

const MIB: u64 = 1 << 20;

/// What the gateway's resident memory holds beyond its budget and caches, whatever the load:
/// its code, runtime and threads, the mapped segment (64 slots of 512 KiB by default, 32 MiB,
/// counted when touched), and each connection's buffers. Measured on this project's 2-vCPU VM
/// (release build, `VmHWM` from `/proc/PID/status`): 6.5 MiB idle after start; 38.9 MiB after
/// 2,400 small requests through every route and tier, 8 at a time, then 40 sealed 3 MB bodies
/// (every slot touched); unchanged after 6,000 more from 100 connections at once. Then six
/// waves of 32 concurrent 62 MB requests (19 served, 173 refused at the 256 MiB budget) peaked
/// at 269.6 MiB: within the budget plus that baseline. 64 MiB is the 39 MiB baseline with
/// 25 MiB to spare.
pub const GATEWAY_OVERHEAD: u64 = 64 * MIB;

/// What users-service's resident memory holds beyond its making budget and dataset cache,
/// whatever the load (its large bodies are streamed, and sealed payloads are written into
/// memfds it does not map): code, runtime, threads, the segment it writes, connection buffers.
/// Measured as for [`GATEWAY_OVERHEAD`]: 5.9 MiB idle, 26.7 MiB after the small requests,
/// 30.6 MiB after the 100 concurrent connections, 35.4 MiB after the six waves of 62 MB
/// bodies. 64 MiB is that 35 MiB with 29 MiB to spare.
pub const USERS_SERVICE_OVERHEAD: u64 = 64 * MIB;

/// What one service's resident memory may reach: its budget (the flag it runs with), the
/// bounds of its caches (flags, or the constants the service is built with), and a fixed
/// overhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryLimit {
    pub budget: u64,
    pub caches: u64,
    pub overhead: u64,
}

impl MemoryLimit {
    pub fn bytes(&self) -> u64 {
        self.budget
            .saturating_add(self.caches)
            .saturating_add(self.overhead)
    }
}

/// `640 MiB (256 MiB budget + 320 MiB caches + 64 MiB overhead)`.
impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} budget + {} caches + {} overhead)",
            mib(self.bytes()),
            mib(self.budget),
            mib(self.caches),
            mib(self.overhead)
        )
    }
}

/// Bytes as MiB, to a tenth.
pub fn mib(bytes: u64) -> String {
    let tenths = (bytes * 10).div_ceil(MIB);
    if tenths % 10 == 0 {
        format!("{} MiB", tenths / 10)
    } else {
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    }
}

/// One service's peak resident memory over the run, against its limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeakRss {
    pub service: Role,
    pub limit: MemoryLimit,
    /// `VmHWM` in bytes: the most the process had resident since it started (neither service
    /// restarts in a run under budgets; one that did is an unexpected death of its own).
    pub peak: Option<u64>,
    /// Why the peak could not be read.
    pub error: Option<String>,
}

impl PeakRss {
    /// Reads `pid`'s `VmHWM` now.
    pub fn read(service: Role, pid: Pid, limit: MemoryLimit) -> PeakRss {
        let peak = status_field(pid, "VmHWM").map(|kib| kib * 1024);
        PeakRss {
            service,
            limit,
            peak,
            error: peak
                .is_none()
                .then(|| format!("no VmHWM in /proc/{pid}/status")),
        }
    }

    pub fn within_limit(&self) -> bool {
        self.peak.is_some_and(|peak| peak <= self.limit.bytes())
    }
}

/// Whether a failed request was refused cleanly: a 503 that says when to come back
/// (`Retry-After`), or a 413. Anything else (another status, a reset connection, an unreadable
/// body, no answer in time) is not.
pub fn is_clean_refusal(failure: &Failure) -> bool {
    match failure.class {
        FailureClass::Status(503) => !failure.detail.ends_with(NO_RETRY_AFTER),
        FailureClass::Status(413) => true,
        _ => false,
    }
}

/// The answers a group of clients got, counted as the invariants count them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Answers {
    pub requests: u64,
    pub verified: u64,
    pub corrupt: u64,
    /// No complete answer within the client's timeout: a hang.
    pub timed_out: u64,
    /// The other failures, by kind ([`Failure`]'s text), clean refusals or not.
    pub failures: BTreeMap<String, u64>,
    /// Clean refusals ([`is_clean_refusal`]).
    pub refused: u64,
    /// The failures that are no clean refusal, hangs included, by kind.
    pub unclean: BTreeMap<String, u64>,
}

impl Answers {
    pub fn record(&mut self, outcome: &Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Verified => self.verified += 1,
            Outcome::Corrupt(_) => self.corrupt += 1,
            Outcome::Failed(failure) => self.count_failure(failure, 1),
        }
    }

    /// Counts `count` requests that failed as `failure` (not counted as requests: the load's
    /// failures come from its own totals).
    pub fn count_failure(&mut self, failure: &Failure, count: u64) {
        let kind = failure.to_string();
        if failure.class == FailureClass::Timeout {
            self.timed_out += count;
        } else {
            *self.failures.entry(kind.clone()).or_default() += count;
        }
        if is_clean_refusal(failure) {
            self.refused += count;
        } else {
            *self.unclean.entry(kind).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Answers) {
        self.requests += other.requests;
        self.verified += other.verified;
        self.corrupt += other.corrupt;
        self.timed_out += other.timed_out;
        self.refused += other.refused;
        for (kind, count) in &other.failures {
            *self.failures.entry(kind.clone()).or_default() += count;
        }
        for (kind, count) in &other.unclean {
            *self.unclean.entry(kind.clone()).or_default() += count;
        }
    }
}

/// One hold of the hog's share of sealed bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hold {
    /// Bytes of sealed payloads the hog held, unredeemed.
    pub held_bytes: u64,
    /// From the hog holding its share to its release.
    pub seconds: f64,
    /// Large bodies the gateway served over shared memory, verified, in that time, while every
    /// publication of the hog still waited (a hold the reaper cut short counts none).
    pub served: u64,
}

/// What one round of pressure measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PressureRound {
    /// Every request of the round's own clients (burst, slow readers, prober).
    pub answers: Answers,
    pub holds: Vec<Hold>,
}

impl PressureRound {
    pub fn served_during_holds(&self) -> u64 {
        self.holds.iter().map(|hold| hold.served).sum()
    }
}

/// The checks of a run under memory budgets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryChecks {
    pub peaks: Vec<PeakRss>,
    /// Clean refusals over the whole run, the load's and the rounds' clients'.
    pub refused: u64,
    /// Answers over the whole run that were neither a 200 nor a clean refusal, by kind.
    pub unclean: BTreeMap<String, u64>,
    /// Per round: the hog's holds, and the large bodies served to the gateway during them.
    pub holds: Vec<usize>,
    pub served_during_holds: Vec<u64>,
}

impl MemoryChecks {
    /// From the peaks read at the end, the load's failures and the rounds' measurements.
    pub fn new<'a>(
        peaks: Vec<PeakRss>,
        load_failures: &BTreeMap<Failure, u64>,
        rounds: impl IntoIterator<Item = &'a PressureRound>,
    ) -> MemoryChecks {
        let mut answers = Answers::default();
        for (failure, &count) in load_failures {
            answers.count_failure(failure, count);
        }
        let mut holds = Vec::new();
        let mut served_during_holds = Vec::new();
        for round in rounds {
            answers.merge(&round.answers);
            holds.push(round.holds.len());
            served_during_holds.push(round.served_during_holds());
        }
        MemoryChecks {
            peaks,
            refused: answers.refused,
            unclean: answers.unclean,
            holds,
            served_during_holds,
        }
    }

    pub fn unclean_total(&self) -> u64 {
        self.unclean.values().sum()
    }

    /// Every violated check, in words.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        for peak in &self.peaks {
            match peak.peak {
                None => violations.push(format!(
                    "the peak RSS of {} could not be read: {}",
                    peak.service,
                    peak.error.as_deref().unwrap_or("no reason given")
                )),
                Some(bytes) if !peak.within_limit() => violations.push(format!(
                    "{} peaked at {} resident (VmHWM), above its {}",
                    peak.service,
                    mib(bytes),
                    peak.limit
                )),
                Some(_) => {}
            }
        }
        if !self.unclean.is_empty() {
            let kinds: Vec<String> = self
                .unclean
                .iter()
                .map(|(kind, count)| format!("{count} × {kind}"))
                .collect();
            violations.push(format!(
                "{} answers were neither a 200 nor a clean refusal (503 with Retry-After, 413): {}",
                self.unclean_total(),
                kinds.join(", ")
            ));
        }
        for (round, (&served, &holds)) in
            self.served_during_holds.iter().zip(&self.holds).enumerate()
        {
            if served == 0 {
                violations.push(format!(
                    "round {}: no large body was served to the gateway over shared memory while the hog held its share ({holds} holds)",
                    round + 1
                ));
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::verify::Corruption;

    fn failure(class: FailureClass, detail: &str) -> Failure {
        Failure {
            class,
            detail: detail.to_owned(),
        }
    }

    fn busy() -> Failure {
        failure(
            FailureClass::Status(503),
            "Service Unavailable (gateway_busy)",
        )
    }

    #[test]
    fn only_a_503_with_retry_after_or_a_413_is_a_clean_refusal() {
        assert!(is_clean_refusal(&busy()));
        assert!(is_clean_refusal(&failure(
            FailureClass::Status(413),
            "Payload Too Large (payload_too_large)"
        )));
        for unclean in [
            failure(
                FailureClass::Status(503),
                "Service Unavailable (gateway_busy), no Retry-After",
            ),
            failure(FailureClass::Status(502), "Bad Gateway (shm_corrupt)"),
            failure(FailureClass::Status(500), "Internal Server Error"),
            failure(FailureClass::Connection, "Connection reset by peer"),
            failure(FailureClass::Body, "closed before the body ended"),
            failure(FailureClass::Timeout, ""),
        ] {
            assert!(!is_clean_refusal(&unclean), "{unclean}");
        }
    }

    #[test]
    fn answers_count_refusals_hangs_and_the_rest_apart() {
        let mut answers = Answers::default();
        answers.record(&Outcome::Verified);
        answers.record(&Outcome::Failed(busy()));
        answers.record(&Outcome::Failed(busy()));
        answers.record(&Outcome::Failed(failure(FailureClass::Timeout, "")));
        answers.record(&Outcome::Failed(failure(
            FailureClass::Connection,
            "Connection reset by peer",
        )));
        answers.record(&Outcome::Corrupt(Box::new(Corruption::Header {
            header_crc: 1,
            expected_crc: 2,
        })));
        assert_eq!(
            (
                answers.requests,
                answers.verified,
                answers.corrupt,
                answers.timed_out,
                answers.refused
            ),
            (6, 1, 1, 1, 2)
        );
        assert_eq!(
            answers.failures,
            BTreeMap::from([
                ("HTTP 503: Service Unavailable (gateway_busy)".to_owned(), 2),
                ("connection error: Connection reset by peer".to_owned(), 1),
            ]),
            "a hang is counted apart from the failures"
        );
        assert_eq!(
            answers.unclean,
            BTreeMap::from([
                ("connection error: Connection reset by peer".to_owned(), 1),
                ("timeout".to_owned(), 1),
            ])
        );
        let mut twice = answers.clone();
        twice.merge(&answers);
        assert_eq!((twice.requests, twice.refused), (12, 4));
        assert_eq!(twice.unclean["timeout"], 2);
    }

    const LIMIT: MemoryLimit = MemoryLimit {
        budget: 256 * MIB,
        caches: 320 * MIB,
        overhead: 64 * MIB,
    };

    fn peak(bytes: Option<u64>) -> PeakRss {
        PeakRss {
            service: Role::Gateway,
            limit: LIMIT,
            peak: bytes,
            error: bytes.is_none().then(|| "gone".to_owned()),
        }
    }

    fn round(served: &[u64]) -> PressureRound {
        PressureRound {
            answers: Answers::default(),
            holds: served
                .iter()
                .map(|&served| Hold {
                    held_bytes: 120 * MIB,
                    seconds: 2.0,
                    served,
                })
                .collect(),
        }
    }

    fn checks(
        peaks: Vec<PeakRss>,
        load: &[(Failure, u64)],
        rounds: &[PressureRound],
    ) -> MemoryChecks {
        MemoryChecks::new(peaks, &load.iter().cloned().collect(), rounds)
    }

    #[test]
    fn the_limit_adds_its_terms_and_says_them() {
        assert_eq!(LIMIT.bytes(), 640 * MIB);
        assert_eq!(
            LIMIT.to_string(),
            "640 MiB (256 MiB budget + 320 MiB caches + 64 MiB overhead)"
        );
        assert_eq!(mib(276_116 * 1024), "269.7 MiB");
    }

    #[test]
    fn a_run_within_its_limits_passes_and_each_violation_is_named() {
        let load = [(busy(), 40)];
        let good = checks(
            vec![peak(Some(640 * MIB))],
            &load,
            &[round(&[0, 2]), round(&[1])],
        );
        assert_eq!(good.violations(), Vec::<String>::new());
        assert_eq!(good.refused, 40);
        assert_eq!(
            (good.holds, good.served_during_holds),
            (vec![2, 1], vec![2, 1])
        );

        let over = checks(vec![peak(Some(640 * MIB + 1))], &load, &[round(&[1])]);
        let violations = over.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0]
                .starts_with("gateway peaked at 640.1 MiB resident (VmHWM), above its 640 MiB"),
            "{violations:?}"
        );

        let unread = checks(vec![peak(None)], &load, &[round(&[1])]);
        assert!(unread.violations()[0].contains("could not be read: gone"));

        let mut unclean_round = round(&[1]);
        unclean_round
            .answers
            .record(&Outcome::Failed(failure(FailureClass::Timeout, "")));
        let unclean = checks(
            vec![peak(Some(MIB))],
            &[(
                failure(
                    FailureClass::Status(503),
                    "Service Unavailable (upstream_busy), no Retry-After",
                ),
                3,
            )],
            &[unclean_round],
        );
        let violations = unclean.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].starts_with("4 answers were neither"),
            "{violations:?}"
        );
        assert!(violations[0].contains("1 × timeout"), "{violations:?}");
        assert!(violations[0].contains("3 × HTTP 503"), "{violations:?}");

        let starved = checks(vec![peak(Some(MIB))], &load, &[round(&[1]), round(&[0, 0])]);
        assert_eq!(
            starved.violations(),
            [
                "round 2: no large body was served to the gateway over shared memory while the hog held its share (2 holds)"
            ]
        );
    }
}
