//! The harness's output: a Markdown table per scenario (every invariant with its value and
//! limit, the memory checks of a run under budgets among them, faults by kind, clean failures
//! by class, unexpected deaths), a summary table across
//! scenarios with the replay command of each, and the JSON document with everything.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::invariants::Invariants;
use super::leaks::SealedBytesSource;
use super::memory::{MemoryChecks, mib};
use super::scenario_run::ScenarioResult;
use crate::loadtest::load::target::RequestMix;
use crate::process::role::Role;

/// Fault notes listed per scenario besides those of faults that showed a violation.
const NOTES_SHOWN: usize = 8;

#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub passed: bool,
    pub scenarios: &'a [ScenarioResult],
}

impl<'a> JsonReport<'a> {
    pub fn new(scenarios: &'a [ScenarioResult]) -> Self {
        JsonReport {
            passed: scenarios.iter().all(ScenarioResult::passed),
            scenarios,
        }
    }
}

/// `` count `708=18,12000=1`, paths `/blobs?size=3000&pattern=text&seed=1` (weight 3) ``.
fn requests_text(requests: &RequestMix) -> String {
    let mut parts = Vec::new();
    if let Some(counts) = requests.counts() {
        parts.push(format!("count `{counts}`"));
    }
    let paths: Vec<String> = requests
        .paths()
        .into_iter()
        .map(|(path, weight)| format!("`{path}` (weight {weight})"))
        .collect();
    if !paths.is_empty() {
        parts.push(format!("paths {}", paths.join(", ")));
    }
    parts.join(", ")
}

pub fn scenario_markdown(result: &ScenarioResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Chaos scenario `{}`: {}\n\n{}\n\nSeed {}, {} faults planned ({}), run took {:.1} s. Replay: `{}`\n",
        result.name,
        verdict(result),
        result.description.trim(),
        result.seed,
        result.fault.count(),
        result.fault.kind(),
        result.elapsed.as_secs_f64(),
        result.replay
    );
    if let Some(load) = &result.load {
        let _ = writeln!(
            out,
            "Load: endpoints `{}`, {}{}, for {}.\n",
            load.mix,
            requests_text(&load.requests),
            if load.requests.only().is_some() {
                ""
            } else {
                " (each request draws its count or path by weight)"
            },
            humantime::format_duration(load.duration)
        );
    }
    if let Some(reason) = &result.skipped {
        let _ = writeln!(out, "Skipped: {reason}\n");
    }
    if let Some(error) = &result.error {
        let _ = writeln!(out, "**Harness error:** {error}\n");
    }
    let Some(invariants) = &result.invariants else {
        return out;
    };
    let max_recovery = result.expect.max_recovery;
    let mut rows: Vec<(&str, String, String, bool)> = vec![
        (
            "requests",
            invariants.requests.to_string(),
            String::new(),
            true,
        ),
        (
            "verified (ok)",
            invariants.ok.to_string(),
            String::new(),
            true,
        ),
        (
            "clean failures",
            invariants.clean_failure_total().to_string(),
            result
                .expect
                .max_failures
                .map_or_else(String::new, |max| format!("≤ {max}")),
            result
                .expect
                .max_failures
                .is_none_or(|max| invariants.clean_failure_total() <= max),
        ),
        (
            "corrupt bodies",
            invariants.corrupt.to_string(),
            "0".into(),
            invariants.corrupt == 0,
        ),
        (
            "outlived their deadline",
            invariants.outlived_deadline.to_string(),
            "0".into(),
            invariants.outlived_deadline == 0,
        ),
        (
            "unexpected process deaths",
            invariants.unexpected_deaths.to_string(),
            "0".into(),
            invariants.unexpected_deaths == 0,
        ),
        (
            "leaked slots (segment slot table)",
            leaked(invariants),
            "0".into(),
            invariants.leaked_slots == Some(0),
        ),
        (
            "leaked bytes (sealed payloads in flight)",
            leaked_bytes(invariants, result.sealed_bytes_source),
            "0".into(),
            invariants.leaked_bytes == Some(0),
        ),
        (
            "sealed publications (users-service's last life)",
            result
                .sealed_publications
                .map_or_else(|| "not reported".to_owned(), |made| made.to_string()),
            String::new(),
            true,
        ),
        (
            "leftover payload memfds (gateway, users-service)",
            leftover_memfds(invariants),
            match result.expect.max_payload_memfds {
                0 => "0".into(),
                max => format!("≤ {max}"),
            },
            invariants
                .leftover_payload_memfds
                .is_some_and(|left| left <= result.expect.max_payload_memfds),
        ),
        (
            "faults injected",
            format!(
                "{} of {}",
                invariants.faults_injected(),
                invariants.faults_planned
            ),
            "≥ 1".into(),
            invariants.faults_planned == 0 || invariants.faults_injected() > 0,
        ),
        (
            "recovery max",
            seconds(invariants.recovery.max),
            format!("≤ {}", seconds(Some(max_recovery))),
            invariants
                .recovery
                .max
                .is_none_or(|max| max <= max_recovery),
        ),
        (
            "recovery p99",
            seconds(invariants.recovery.p99),
            String::new(),
            true,
        ),
        (
            "faults never recovered",
            invariants.recovery.unrecovered.to_string(),
            "0".into(),
            invariants.recovery.unrecovered == 0,
        ),
        (
            "latency p99 / max",
            format!(
                "{} / {}",
                seconds(Some(invariants.latency_p99)),
                seconds(Some(invariants.latency_max))
            ),
            result
                .expect
                .max_latency
                .map(|limit| format!("max ≤ {}", seconds(Some(limit))))
                .unwrap_or_default(),
            result
                .expect
                .max_latency
                .is_none_or(|limit| invariants.latency_max <= limit),
        ),
    ];
    if let Some(memory) = &invariants.memory {
        rows.extend(memory_rows(memory));
    }
    out.push_str("| Checker | Value | Expected | |\n|---|---:|---:|---|\n");
    for (name, value, expected, ok) in rows {
        let mark = if ok { "ok" } else { "**VIOLATED**" };
        let _ = writeln!(out, "| {name} | {value} | {expected} | {mark} |");
    }
    out.push('\n');
    if !invariants.faults.is_empty() {
        out.push_str("| Fault | Injected |\n|---|---:|\n");
        for (fault, count) in &invariants.faults {
            let _ = writeln!(out, "| {fault} | {count} |");
        }
        out.push('\n');
    }
    // Every fault that showed a violation, and the first few others as examples; the JSON
    // report has them all.
    let mut examples = 0;
    let mut left_out = 0;
    for fault in &result.faults {
        let Some(note) = fault.note.as_deref() else {
            continue;
        };
        if fault.violation.is_none() && examples == NOTES_SHOWN {
            left_out += 1;
            continue;
        }
        if fault.violation.is_none() {
            examples += 1;
        }
        let _ = writeln!(out, "- fault {}: {note}", fault.index + 1);
    }
    if left_out > 0 {
        let _ = writeln!(out, "- … {left_out} more fault notes in the JSON report");
    }
    write_table(
        &mut out,
        "| Clean failure | Count |\n|---|---:|",
        invariants
            .clean_failures
            .iter()
            .map(|(class, count)| format!("| {class} | {count} |")),
    );
    write_table(
        &mut out,
        "| Caught by the services (counters since each one's last start) | Service | Count |\n|---|---|---:|",
        result.detections.iter().map(|detection| {
            format!(
                "| `{}` | {} | {} |",
                detection.counter, detection.service, detection.value
            )
        }),
    );
    for error in &result.detection_errors {
        let _ = writeln!(out, "- counters not read: {error}");
    }
    write_table(
        &mut out,
        "| Leaked slot | State | Generation | Owner pid | Len |\n|---:|---|---:|---:|---:|",
        result.leaked.iter().map(|row| {
            format!(
                "| {} | {} | {} | {} | {} |",
                row.slot, row.state, row.generation, row.owner_pid, row.len
            )
        }),
    );
    if result
        .payload_memfds
        .iter()
        .any(|memfds| memfds.total() > 0)
    {
        out.push_str(
            "\n| Service holding sealed payloads | Pid | Mappings | Descriptors |\n|---|---:|---:|---:|\n",
        );
        for memfds in &result.payload_memfds {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                memfds.service, memfds.pid, memfds.mappings, memfds.descriptors
            );
        }
    }
    for death in &result.unexpected_deaths {
        let _ = writeln!(
            out,
            "\n**Unexpected death** of {} at {:.2} s: {}; its last output:\n```\n{}\n```",
            death.role, death.at_seconds, death.status, death.output
        );
    }
    for violation in &result.violations {
        let _ = writeln!(out, "- **violated:** {violation}");
    }
    out
}

pub fn summary_markdown(results: &[ScenarioResult]) -> String {
    let mut out = String::from(
        "## Chaos summary\n\n\
         | Scenario | Seed | Faults | Requests | OK | Clean failures | Corrupt | Outlived deadline | Unexpected deaths | Leaked slots | Leaked bytes | Recovery max / p99 | Verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for result in results {
        let _ = match &result.invariants {
            Some(run) => writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                result.name,
                result.seed,
                run.faults_injected(),
                run.requests,
                run.ok,
                run.clean_failure_total(),
                run.corrupt,
                run.outlived_deadline,
                run.unexpected_deaths,
                leaked(run),
                leaked_bytes(run, result.sealed_bytes_source),
                seconds(run.recovery.max),
                seconds(run.recovery.p99),
                verdict(result)
            ),
            None => writeln!(
                out,
                "| {} | {} | | | | | | | | | | | {} |",
                result.name,
                result.seed,
                verdict(result)
            ),
        };
    }
    out.push_str("\nReplay:\n");
    for result in results {
        let _ = writeln!(out, "- `{}`", result.replay);
    }
    out
}

/// The rows of a run under memory budgets: each service's peak against its limit, the
/// refusals, and the large bodies served to the gateway while the hog held its share.
fn memory_rows(memory: &MemoryChecks) -> Vec<(&'static str, String, String, bool)> {
    let mut rows: Vec<_> = memory
        .peaks
        .iter()
        .map(|peak| {
            (
                match peak.service {
                    Role::Gateway => "peak RSS, gateway (VmHWM)",
                    Role::UsersService => "peak RSS, users-service (VmHWM)",
                },
                peak.peak.map_or_else(|| "unread".to_owned(), mib),
                format!("≤ {}", peak.limit),
                peak.within_limit(),
            )
        })
        .collect();
    let served: Vec<String> = memory
        .served_during_holds
        .iter()
        .map(u64::to_string)
        .collect();
    rows.extend([
        (
            "clean refusals (503 with Retry-After, 413)",
            memory.refused.to_string(),
            String::new(),
            true,
        ),
        (
            "answers neither 200 nor a clean refusal",
            memory.unclean_total().to_string(),
            "0".to_owned(),
            memory.unclean.is_empty(),
        ),
        (
            "large shm bodies served while the hog held its share, per round",
            served.join(", "),
            "≥ 1 each".to_owned(),
            memory.served_during_holds.iter().all(|&served| served > 0),
        ),
    ]);
    rows
}

/// A markdown table after a blank line: `head` (its header and separator rows), then `rows`;
/// nothing at all when there are no rows.
fn write_table(out: &mut String, head: &str, rows: impl Iterator<Item = String>) {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "\n{head}");
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
}

fn verdict(result: &ScenarioResult) -> &'static str {
    match (&result.skipped, &result.error, result.violations.is_empty()) {
        (Some(_), _, _) => "SKIPPED",
        (None, Some(_), _) => "ERROR",
        (None, None, true) => "PASS",
        (None, None, false) => "FAIL",
    }
}

fn leaked(invariants: &Invariants) -> String {
    invariants
        .leaked_slots
        .map_or_else(|| "unread".to_owned(), |leaked| leaked.to_string())
}

fn leaked_bytes(invariants: &Invariants, source: Option<SealedBytesSource>) -> String {
    match (invariants.leaked_bytes, source) {
        (None, _) => "unread".to_owned(),
        (Some(bytes), Some(SealedBytesSource::SegmentTickets)) => {
            format!("{bytes} (segment tickets)")
        }
        (Some(bytes), _) => bytes.to_string(),
    }
}

fn leftover_memfds(invariants: &Invariants) -> String {
    invariants
        .leftover_payload_memfds
        .map_or_else(|| "unread".to_owned(), |left| left.to_string())
}

fn seconds(duration: Option<Duration>) -> String {
    match duration {
        Some(duration) if duration < Duration::from_secs(1) => {
            format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
        }
        Some(duration) => format!("{:.2} s", duration.as_secs_f64()),
        None => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::harness::memory::{MemoryLimit, PeakRss};

    #[test]
    fn memory_rows_mark_what_failed() {
        let limit = MemoryLimit {
            budget: 256 << 20,
            caches: 0,
            overhead: 64 << 20,
        };
        let peak = |service, bytes: u64| PeakRss {
            service,
            limit,
            peak: Some(bytes),
            error: None,
        };
        let memory = MemoryChecks {
            peaks: vec![
                peak(Role::Gateway, 321 << 20),
                peak(Role::UsersService, 40 << 20),
            ],
            refused: 12,
            unclean: BTreeMap::from([("timeout".to_owned(), 1)]),
            holds: vec![1, 3],
            served_during_holds: vec![2, 0],
        };
        let rows = memory_rows(&memory);
        let marks: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|(name, value, _, ok)| (*name, value.as_str(), *ok))
            .collect();
        assert_eq!(
            marks,
            [
                ("peak RSS, gateway (VmHWM)", "321 MiB", false),
                ("peak RSS, users-service (VmHWM)", "40 MiB", true),
                ("clean refusals (503 with Retry-After, 413)", "12", true),
                ("answers neither 200 nor a clean refusal", "1", false),
                (
                    "large shm bodies served while the hog held its share, per round",
                    "2, 0",
                    false
                ),
            ]
        );
        assert_eq!(
            rows[0].2,
            "≤ 320 MiB (256 MiB budget + 0 MiB caches + 64 MiB overhead)"
        );
    }

    #[test]
    fn a_table_stands_after_a_blank_line_and_is_left_out_without_rows() {
        let mut out = String::from("text\n");
        write_table(&mut out, "| A |\n|---|", std::iter::empty());
        assert_eq!(out, "text\n");
        write_table(
            &mut out,
            "| A |\n|---|",
            ["| 1 |", "| 2 |"].map(String::from).into_iter(),
        );
        assert_eq!(out, "text\n\n| A |\n|---|\n| 1 |\n| 2 |\n");
    }
}
