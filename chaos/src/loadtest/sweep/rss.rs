//! Peak resident memory of each service during one step of a sweep. The kernel keeps each
//! process's high-water mark (`VmHWM` in `/proc/PID/status`), and writing `5` to
//! `/proc/PID/clear_refs` resets it to the current RSS (Linux ≥ 4.0): reset before the step,
//! read after, and the peak is exact, however short it was. Where that reset does not work
//! (an older kernel, no permission) the fallback samples `VmRSS` every [`SAMPLE_INTERVAL`] and
//! keeps the largest, which can miss a peak shorter than the interval; the report says which.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::unistd::Pid;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::loadtest::capacity::cpu::Processes;

/// How often the fallback samples `VmRSS`.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// What `clear_refs` is told: reset the peak RSS to the current RSS.
const RESET_PEAK: &[u8] = b"5";

/// How peaks are measured in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PeakMethod {
    /// `VmHWM`, reset through `clear_refs` before each step.
    HighWaterMark,
    /// The largest `VmRSS` sampled every [`SAMPLE_INTERVAL`]; `why` the high-water mark
    /// could not be used.
    Sampled { why: String },
}

impl PeakMethod {
    /// The high-water mark if resetting it works for both services' processes on this kernel,
    /// else sampling.
    pub fn detect(processes: Processes) -> PeakMethod {
        match reset_works().and_then(|()| {
            [processes.gateway, processes.users_service]
                .into_iter()
                .try_for_each(reset_peak)
        }) {
            Ok(()) => PeakMethod::HighWaterMark,
            Err(why) => PeakMethod::Sampled { why },
        }
    }

    /// For the report.
    pub fn describe(&self) -> String {
        match self {
            PeakMethod::HighWaterMark => "`VmHWM` from `/proc/PID/status` after the step, reset with `echo 5 > /proc/PID/clear_refs` before it (exact)".to_owned(),
            PeakMethod::Sampled { why } => format!(
                "the largest `VmRSS` from `/proc/PID/status` sampled every {} ms during the step (may miss shorter peaks; the high-water mark could not be used: {why})",
                SAMPLE_INTERVAL.as_millis()
            ),
        }
    }
}

/// Peak RSS of each service over one step, in KiB as the kernel counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeakRss {
    pub gateway_kib: u64,
    pub users_service_kib: u64,
}

/// One step being measured.
pub struct PeakStep {
    processes: Processes,
    samplers: Option<[Sampler; 2]>,
}

struct Sampler {
    pid: Pid,
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl PeakStep {
    /// Starts measuring: resets the high-water marks, or starts the samplers.
    pub fn start(method: &PeakMethod, processes: Processes) -> PeakStep {
        let samplers = match method {
            PeakMethod::HighWaterMark => {
                for pid in [processes.gateway, processes.users_service] {
                    // Checked by `detect`; a process that exited since has no peak to read.
                    let _ = reset_peak(pid);
                }
                None
            }
            PeakMethod::Sampled { .. } => Some([
                Sampler::start(processes.gateway),
                Sampler::start(processes.users_service),
            ]),
        };
        PeakStep {
            processes,
            samplers,
        }
    }

    /// The peaks since `start`; `None` if a process could not be read (it exited).
    pub async fn finish(self) -> Option<PeakRss> {
        let (gateway_kib, users_service_kib) = match self.samplers {
            None => (
                status_field(self.processes.gateway, "VmHWM")?,
                status_field(self.processes.users_service, "VmHWM")?,
            ),
            Some([gateway, users_service]) => (gateway.finish()?, users_service.finish()?),
        };
        Some(PeakRss {
            gateway_kib,
            users_service_kib,
        })
    }
}

impl Sampler {
    fn start(pid: Pid) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                ticker.tick().await;
                if let Some(rss) = status_field(pid, "VmRSS") {
                    seen.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        Sampler { pid, peak, task }
    }

    /// Stops sampling, with one last sample; `None` if the process was never read.
    fn finish(self) -> Option<u64> {
        self.task.abort();
        let last = status_field(self.pid, "VmRSS").unwrap_or(0);
        Some(self.peak.load(Ordering::Relaxed).max(last)).filter(|&kib| kib > 0)
    }
}

/// Writes `5` to `/proc/PID/clear_refs`.
fn reset_peak(pid: Pid) -> Result<(), String> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, RESET_PEAK).map_err(|error| format!("cannot write {path}: {error}"))
}

/// Whether a reset really lowers the high-water mark on this kernel, tried on this process:
/// touch 32 MiB of fresh memory, unmap it, reset, and the peak must have dropped by most of it.
fn reset_works() -> Result<(), String> {
    const TOUCHED: usize = 32 << 20;
    let own = Pid::this();
    let mut region = memmap2::MmapMut::map_anon(TOUCHED)
        .map_err(|error| format!("cannot map {TOUCHED} bytes to check the reset: {error}"))?;
    region.iter_mut().step_by(4096).for_each(|byte| *byte = 1);
    let raised = status_field(own, "VmHWM").ok_or("no VmHWM in /proc/self/status")?;
    drop(region);
    reset_peak(own)?;
    let after = status_field(own, "VmHWM").ok_or("no VmHWM in /proc/self/status")?;
    if after + (TOUCHED as u64 / 2 / 1024) <= raised {
        Ok(())
    } else {
        Err(format!(
            "writing 5 to clear_refs left VmHWM at {after} kB (it was {raised} kB with 32 MiB more mapped)"
        ))
    }
}

/// The value in kB of `field` in `/proc/PID/status`; `None` if the process or field is gone.
pub fn status_field(pid: Pid, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

/// The value in kB of a `/proc/PID/status` line such as `VmHWM:\t  13540 kB`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != field {
            return None;
        }
        let number = value.trim().strip_suffix("kB")?.trim();
        number.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tgateway\nVmPeak:\t  3060 kB\nVmHWM:\t   218436 kB\nVmRSS:\t    13632 kB\nVmRSSAnon:\t 100 kB\nThreads:\t3\n";

    #[test]
    fn status_fields_are_read_in_kib_by_exact_name() {
        assert_eq!(parse_status_kib(STATUS, "VmHWM"), Some(218_436));
        assert_eq!(parse_status_kib(STATUS, "VmRSS"), Some(13_632));
        // "VmRSS" must not match "VmRSSAnon", and fields without kB are not sizes
        assert_eq!(parse_status_kib("VmRSSAnon:\t 100 kB\n", "VmRSS"), None);
        assert_eq!(parse_status_kib(STATUS, "Threads"), None);
        assert_eq!(parse_status_kib(STATUS, "VmSwap"), None);
        assert_eq!(parse_status_kib("VmHWM:\t x kB\n", "VmHWM"), None);
    }

    /// The kernel part, on this process: this kernel resets the mark (the sweep's report
    /// relies on it), and a step sees memory touched during it.
    #[tokio::test]
    async fn a_step_sees_a_peak_that_is_gone_by_its_end() {
        let own = Processes {
            gateway: Pid::this(),
            users_service: Pid::this(),
        };
        reset_works().expect("clear_refs resets VmHWM on this kernel");
        // An earlier, larger peak that a step must not report.
        let mut earlier = memmap2::MmapMut::map_anon(192 << 20).unwrap();
        earlier.iter_mut().step_by(4096).for_each(|byte| *byte = 1);
        drop(earlier);
        let earlier_peak = status_field(Pid::this(), "VmHWM").unwrap();
        for method in [
            PeakMethod::HighWaterMark,
            PeakMethod::Sampled { why: "test".into() },
        ] {
            let before = status_field(Pid::this(), "VmRSS").unwrap();
            let step = PeakStep::start(&method, own);
            let mut region = memmap2::MmapMut::map_anon(64 << 20).unwrap();
            region.iter_mut().step_by(4096).for_each(|byte| *byte = 1);
            // long enough for several samples
            tokio::time::sleep(SAMPLE_INTERVAL * 5).await;
            drop(region);
            let peak = step.finish().await.unwrap();
            assert!(
                peak.gateway_kib >= before + 60 * 1024,
                "{method:?}: peak {} kB, before {before} kB",
                peak.gateway_kib
            );
            assert!(
                peak.gateway_kib + 64 * 1024 < earlier_peak,
                "{method:?}: peak {} kB still holds the earlier {earlier_peak} kB",
                peak.gateway_kib
            );
        }
    }
}
