//! Where and when a report's figures were measured (the machine, the services' environment,
//! the date), so its numbers are read in context.

use std::fmt::Write as _;
use std::fs;
use std::time::SystemTime;

use serde::Serialize;

/// What every report says about where and when it was measured. Serialized as its three
/// fields, which the JSON reports flatten into their top level.
#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    /// When the run ended, RFC 3339 UTC.
    pub date: String,
    /// Where the services ran, e.g. "users-service and gateway started by `compare` on loopback".
    pub environment: String,
    pub machine: MachineInfo,
}

impl Provenance {
    /// This machine, dated now.
    pub fn now(environment: String) -> Self {
        Provenance {
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            environment,
            machine: MachineInfo::detect(),
        }
    }

    /// The markdown reports' three lines for it.
    pub fn write_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "- **Test Environment**: {}", self.environment);
        let _ = writeln!(out, "- **Machine**: {}", self.machine.describe());
        let _ = writeln!(out, "- **Test Date**: {}", self.date);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub logical_cores: usize,
    pub memory_gib: Option<f64>,
    pub kernel: String,
    /// The 1-minute load average when the report was written: it includes this run's own load,
    /// and anything above it says other work shared the CPUs.
    pub load_average: Option<f64>,
}

impl MachineInfo {
    /// Reads /proc; anything unreadable is reported as unknown rather than failing the run.
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
            logical_cores: std::thread::available_parallelism().map_or(0, |cores| cores.get()),
            memory_gib: memory_gib(&meminfo),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|release| format!("Linux {}", release.trim()))
                .unwrap_or_else(|_| std::env::consts::OS.into()),
            load_average: fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| load_average(&text)),
        }
    }

    pub fn describe(&self) -> String {
        let memory = self
            .memory_gib
            .map(|gib| format!(", {gib:.0} GiB RAM"))
            .unwrap_or_default();
        let load = self
            .load_average
            .map(|load| format!("; 1-minute load average {load:.2} at the end of the run"))
            .unwrap_or_default();
        format!(
            "{}, {} logical cores{memory}, {}{load}",
            self.cpu_model, self.logical_cores, self.kernel
        )
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

fn memory_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

fn load_average(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor: 0\n"), None);
        let meminfo = "MemTotal:       25165824 kB\nMemFree: 1 kB\n";
        assert_eq!(memory_gib(meminfo), Some(24.0));
        assert_eq!(memory_gib(""), None);
        assert_eq!(load_average("3.75 5.04 4.25 1/81 20917\n"), Some(3.75));
        assert_eq!(load_average(""), None);
    }
}
