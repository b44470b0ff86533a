//! Where a request's CPU time goes: the CPU time (user + system, all threads) each process spent
//! during a run, read from `/proc/PID/stat` before and after, divided by the requests it served.
//! The clock ticks in 10 ms steps, which a 20 s run of thousands of requests makes negligible.

use std::time::Duration;

use nix::unistd::Pid;
use serde::Serialize;

/// The processes a capacity session runs: this one (the load generator) and the two services.
#[derive(Clone, Copy, Debug)]
pub struct Processes {
    pub gateway: Pid,
    pub users_service: Pid,
}

/// CPU time spent so far by each process.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    gateway: Duration,
    users_service: Duration,
    load_generator: Duration,
}

/// Microseconds of CPU time per request, by process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuPerRequest {
    pub gateway_us: f64,
    pub users_service_us: f64,
    pub load_generator_us: f64,
}

impl CpuPerRequest {
    pub fn total_us(&self) -> f64 {
        self.gateway_us + self.users_service_us + self.load_generator_us
    }
}

impl Processes {
    /// Each process's CPU time now; `None` if one of them cannot be read (it exited).
    pub fn snapshot(&self) -> Option<CpuSnapshot> {
        Some(CpuSnapshot {
            gateway: cpu_time(&self.gateway.to_string())?,
            users_service: cpu_time(&self.users_service.to_string())?,
            load_generator: cpu_time("self")?,
        })
    }
}

impl CpuSnapshot {
    /// What each process spent from `self` to `later`, per request of `requests`.
    pub fn per_request(&self, later: &CpuSnapshot, requests: u64) -> Option<CpuPerRequest> {
        if requests == 0 {
            return None;
        }
        let per_request = |before: Duration, after: Duration| {
            after.saturating_sub(before).as_secs_f64() * 1e6 / requests as f64
        };
        Some(CpuPerRequest {
            gateway_us: per_request(self.gateway, later.gateway),
            users_service_us: per_request(self.users_service, later.users_service),
            load_generator_us: per_request(self.load_generator, later.load_generator),
        })
    }
}

/// utime + stime of `/proc/{pid}/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// utime + stime in clock ticks: fields 14 and 15, counted after the parenthesised command
/// name, which may itself contain spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 12345 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu_time() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time("self").unwrap() >= Duration::from_millis(10));
    }

    #[test]
    fn cpu_per_request_divides_the_difference() {
        let at = |ms| Duration::from_millis(ms);
        let before = CpuSnapshot {
            gateway: at(100),
            users_service: at(50),
            load_generator: at(10),
        };
        let after = CpuSnapshot {
            gateway: at(300),
            users_service: at(150),
            load_generator: at(110),
        };
        let per_request = before.per_request(&after, 1000).unwrap();
        assert_eq!(per_request.gateway_us, 200.0);
        assert_eq!(per_request.users_service_us, 100.0);
        assert_eq!(per_request.load_generator_us, 100.0);
        assert_eq!(per_request.total_us(), 400.0);
        assert_eq!(before.per_request(&after, 0), None);
    }
}
