//! The Markdown report: one latency table, one table of p50 ratios, and the issue's two targets
//! checked at 256 KiB (never changed here: issue 22, item 3).

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::bench::{SizeResult, Transport};

/// The size both targets are stated at.
pub const TARGET_SIZE: usize = 256 * 1024;

/// A size as the issue writes it (4 KiB, 256 KiB, 4 MiB), or in bytes.
pub fn size_label(size: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else if size >= KIB && size.is_multiple_of(KIB) {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn p50(result: &SizeResult, transport: Transport) -> Option<f64> {
    result.histogram(transport).map(|h| micros(h, 0.5))
}

/// The whole report.
pub fn markdown(results: &[SizeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| size | transport | p50 µs | p99 µs | p99.9 µs | round trips |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for result in results {
        for (transport, histogram) in &result.histograms {
            let label = match transport {
                Transport::Shmbridge => {
                    format!("shmbridge ({})", tiers(result))
                }
                other => other.label().to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {:.1} | {:.1} | {:.1} | {} |",
                size_label(result.size),
                micros(histogram, 0.5),
                micros(histogram, 0.99),
                micros(histogram, 0.999),
                histogram.len(),
            );
        }
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| size | floor + inherent p50 µs | shmbridge / iceoryx2 spin | shmbridge / iceoryx2 event | shmbridge / (floor + inherent) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for result in results {
        let Some(ratios) = Ratios::of(result) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} |",
            size_label(result.size),
            ratios.floor_plus_inherent,
            ratios.vs_spin,
            ratios.vs_event,
            ratios.vs_floor,
        );
    }

    let _ = writeln!(out);
    match results
        .iter()
        .find(|r| r.size == TARGET_SIZE)
        .and_then(Ratios::of)
    {
        None => {
            let _ = writeln!(
                out,
                "Targets: not checked (they need 256 KiB and all five transports)."
            );
        }
        Some(r) => {
            let verdict = |met: bool| if met { "met" } else { "missed" };
            let _ = writeln!(
                out,
                "Target 1 at 256 KiB, shmbridge p50 ≤ iceoryx2 p50 (same verification): \
                 vs spin {} ({:.1} vs {:.1} µs), vs event {} ({:.1} vs {:.1} µs).",
                verdict(r.vs_spin <= 1.0),
                r.shmbridge,
                r.spin,
                verdict(r.vs_event <= 1.0),
                r.shmbridge,
                r.event,
            );
            let _ = writeln!(
                out,
                "Target 2 at 256 KiB, shmbridge p50 ≤ 2 × (floor + inherent) p50: {} \
                 ({:.1} vs 2 × {:.1} = {:.1} µs, ratio {:.2}).",
                verdict(r.vs_floor <= 2.0),
                r.shmbridge,
                r.floor_plus_inherent,
                2.0 * r.floor_plus_inherent,
                r.vs_floor,
            );
        }
    }
    out
}

fn tiers(result: &SizeResult) -> String {
    if result.tiers.is_empty() {
        "no tier".into()
    } else {
        result.tiers.iter().copied().collect::<Vec<_>>().join("+")
    }
}

/// The p50s the targets compare, and their ratios.
struct Ratios {
    shmbridge: f64,
    spin: f64,
    event: f64,
    floor_plus_inherent: f64,
    vs_spin: f64,
    vs_event: f64,
    vs_floor: f64,
}

impl Ratios {
    fn of(result: &SizeResult) -> Option<Self> {
        let shmbridge = p50(result, Transport::Shmbridge)?;
        let spin = p50(result, Transport::IceoryxSpin)?;
        let event = p50(result, Transport::IceoryxEvent)?;
        let floor_plus_inherent =
            p50(result, Transport::Floor)? + p50(result, Transport::Inherent)?;
        Some(Self {
            shmbridge,
            spin,
            event,
            floor_plus_inherent,
            vs_spin: shmbridge / spin,
            vs_event: shmbridge / event,
            vs_floor: shmbridge / floor_plus_inherent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_labelled_as_the_issue_writes_them() {
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(256 * 1024), "256 KiB");
        assert_eq!(size_label(4 << 20), "4 MiB");
        assert_eq!(size_label(1000), "1000 B");
    }
}
