//! The sweep report as Markdown: how it was run, what became of each step, then per load model
//! the medians, the ratios and the crossover size, and the errors by step.

use std::fmt::Write as _;

use super::{ModelAtSize, NO_VALUE, SweepReport, model_crossover, shm_transports};
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::report::capacity::format_ratio;
use crate::loadtest::report::{format_ms, rounds_line, thousands, transports_text};
use crate::loadtest::sweep::ladder::Size;
use crate::loadtest::sweep::rss::PeakMethod;
use crate::loadtest::sweep::summary::{shm_over, shm_wins};
use crate::loadtest::sweep::{SizeStep, StepOutcome};

fn describe_crossover(sizes: &[ModelAtSize<'_>]) -> String {
    let compared = sizes
        .iter()
        .filter(|size| shm_wins(&size.cells).is_some())
        .count();
    if compared == 0 {
        return "not computed (shm and REST were not both measured)".to_owned();
    }
    match model_crossover(sizes) {
        Some(size) => format!("**{size}** (shm wins there and at every larger measured size)"),
        None => "**none** (shm does not win at the largest measured size)".to_owned(),
    }
}

pub fn render_markdown(report: &SweepReport<'_>) -> String {
    let mut out =
        String::from("# Payload-size sweep: REST, shared memory and the cached ceiling\n\n");
    how_it_was_run(&mut out, report);
    sizes(&mut out, report);
    for load in report.plan.loads {
        let _ = writeln!(
            out,
            "## {} (`{}`)\n",
            capitalized(load.name()),
            load.flags()
        );
        for &pattern in &report.plan.patterns {
            let _ = writeln!(
                out,
                "**Crossover, {pattern}**: {}\n",
                describe_crossover(&report.model(load, pattern))
            );
        }
        let models: Vec<ModelAtSize<'_>> = report
            .plan
            .patterns
            .iter()
            .flat_map(|&pattern| report.model(load, pattern))
            .collect();
        medians(&mut out, &models);
        ratios(&mut out, &models);
    }
    failures(&mut out, report);
    out
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn how_it_was_run(out: &mut String, report: &SweepReport<'_>) {
    let plan = report.plan;
    let sizes: Vec<String> = plan.ladder.sizes().iter().map(Size::to_string).collect();
    out.push_str("## How it was run\n\n");
    let _ = writeln!(out, "- **Sizes**: {}", sizes.join(", "));
    let patterns: Vec<&str> = plan.patterns.iter().map(|p| p.as_str()).collect();
    let _ = writeln!(
        out,
        "- **Patterns**: {}; {} at every size{}",
        patterns.join(", "),
        patterns[0],
        match (&plan.subset, &patterns[1..]) {
            (_, []) => String::new(),
            (crate::loadtest::sweep::SizeSubset::All, others) => {
                format!(", {} at every size too", others.join(", "))
            }
            (crate::loadtest::sweep::SizeSubset::Sizes(subset), others) => format!(
                ", {} at the sizes also in `--subset-sizes {subset}`",
                others.join(", ")
            ),
        }
    );
    let _ = writeln!(
        out,
        "- **Bodies**: exactly the size asked, `GET /blobs?size=N&pattern=P&seed={}` of users-service through the gateway's prefixes: REST `/via-api/blobs?…`, shared memory `/via-shm/blobs?…`, the ceiling `/via-cached/blobs?…`{}; {}; sizes above its payload limit ({} bytes) are reported, not measured",
        plan.seed,
        if plan.endpoints.contains(&Endpoint::Auto) {
            ", the gateway's `--transport` `/blobs?…`"
        } else {
            ""
        },
        if plan.cache {
            "made once per query by users-service (`--cache`) and kept as one sealed payload, \
             handed over the channel as itself and served over REST from its mapping"
        } else {
            "generated per request by users-service (without `--cache`)"
        },
        thousands(plan.max_payload)
    );
    let [first, then] = &plan.loads;
    let _ = writeln!(
        out,
        "- **Load at each step**: each endpoint alone, first {first}; then {then}"
    );
    out.push_str(&rounds_line(
        &plan.endpoints,
        plan.rounds,
        plan.round_duration,
        "per endpoint, per step and load model, interleaved",
    ));
    let _ = writeln!(
        out,
        "- **Peak RSS**: per step (all rounds of both load models), {}",
        report.result.peak_method.as_ref().map_or_else(
            || "not measured (no process ids)".to_owned(),
            PeakMethod::describe
        )
    );
    let _ = writeln!(
        out,
        "- **Request Timeout**: {}",
        humantime::format_duration(plan.timeout)
    );
    report.provenance.write_markdown(out);
    out.push_str("- **Body Verification**: every 200 body compared byte for byte with the blob generator's bytes (`shmbridge_server::blobs::blob_bytes`) and with `x-payload-crc32`\n");
    out.push_str("- **Transport**: what the gateway's `x-transport` named for the 200 responses: `api` for REST, and for shared memory the tier that carried the body (`shm-inline` in the answer, `shm-slot` in a slot of the segment, `shm-sealed` in a sealed memfd; `api-fallback` when shared memory could not serve it); with counts when several did\n");
    out.push_str("- **Figures**: medians across rounds, each column on its own; req/s counts every answer, MB/s only verified bodies (10^6 bytes/s); Errors: answers that were not a verified body, summed over rounds\n");
    out.push_str("- **Shared memory wins at a size** when every shm answer was a verified body and its p50 is not above REST's (or REST served none); the **crossover** of a pattern is the first measured size from which it wins at every larger measured size\n");
    let _ = writeln!(out, "- **Command**: `{}`\n", report.command());
}

fn sizes(out: &mut String, report: &SweepReport<'_>) {
    out.push_str("## Sizes\n\n");
    out.push_str("| Pattern | Size | Body bytes | Shared memory carried by (`x-transport`) | Peak RSS gateway (MiB) | Peak RSS users-service (MiB) | Note |\n");
    out.push_str("|---------|-----:|-----------:|------------------------------------------|-----------------------:|-----------------------------:|------|\n");
    for step in &report.result.steps {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            step.pattern,
            step.target,
            size_row(step)
        );
    }
    out.push('\n');
}

fn size_row(step: &SizeStep) -> String {
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    match &step.outcome {
        StepOutcome::Measured { peak_rss, .. } => {
            let (gateway, users_service) = peak_rss
                .map_or((NO_VALUE.into(), NO_VALUE.into()), |peak| {
                    (mib(peak.gateway_kib), mib(peak.users_service_kib))
                });
            format!(
                "{} | {} | {gateway} | {users_service} | ",
                thousands(step.target.bytes()),
                transports_text(&shm_transports(step)),
            )
        }
        StepOutcome::AboveLimit { limit } => format!(
            "{NO_VALUE} | {NO_VALUE} | {NO_VALUE} | {NO_VALUE} | above users-service's payload limit ({} bytes): not measured",
            thousands(*limit)
        ),
    }
}

fn medians(out: &mut String, sizes: &[ModelAtSize<'_>]) {
    out.push_str(
        "| Pattern | Size | Endpoint | Transport | p50 (ms) | p99 (ms) | req/s | MB/s | Requests | Errors | Corrupt |\n",
    );
    out.push_str(
        "|---------|-----:|----------|-----------|---------:|---------:|------:|-----:|---------:|-------:|--------:|\n",
    );
    for size in sizes {
        for cell in &size.cells {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                size.pattern,
                size.target,
                cell.endpoint.label(),
                size.transports(cell.endpoint),
                format_ms(cell.p50_ms),
                format_ms(cell.p99_ms),
                cell.requests_per_second,
                format_throughput(cell.megabytes_per_second),
                thousands(cell.requests),
                thousands(cell.failed),
                thousands(cell.corrupt),
            );
        }
    }
    out.push('\n');
}

fn ratios(out: &mut String, sizes: &[ModelAtSize<'_>]) {
    out.push_str("Ratios of the medians: below 1 in p50, faster; above 1 in req/s, more served. — where either side served no verified body (its figures time error answers).\n\n");
    out.push_str("| Pattern | Size | shm/REST p50 | shm/REST req/s | shm/ceiling p50 | shm/ceiling req/s | shm wins |\n");
    out.push_str("|---------|-----:|-------------:|---------------:|----------------:|------------------:|----------|\n");
    for size in sizes {
        let served = |endpoint| {
            size.cells
                .iter()
                .any(|cell| cell.endpoint == endpoint && !cell.served_nothing())
        };
        let against = |denominator| {
            shm_over(&size.ratios, denominator)
                .filter(|_| served(Endpoint::Shm) && served(denominator))
        };
        let (api, cached) = (against(Endpoint::Api), against(Endpoint::Cached));
        let shm_errors = size
            .cells
            .iter()
            .any(|cell| cell.endpoint == Endpoint::Shm && !cell.clean());
        let wins = match shm_wins(&size.cells) {
            None => NO_VALUE,
            Some(true) => "yes",
            Some(false) if shm_errors => "no (shm errors)",
            Some(false) => "no",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {wins} |",
            size.pattern,
            size.target,
            format_ratio(api.and_then(|r| r.p50)),
            format_ratio(api.and_then(|r| r.requests_per_second)),
            format_ratio(cached.and_then(|r| r.p50)),
            format_ratio(cached.and_then(|r| r.requests_per_second)),
        );
    }
    out.push('\n');
}

/// Throughput with three significant figures down to 0.001: small bodies at a low rate move
/// well under 1 MB/s.
fn format_throughput(value: f64) -> String {
    match value {
        value if value >= 100.0 => format!("{value:.0}"),
        value if value >= 10.0 => format!("{value:.1}"),
        value if value >= 1.0 => format!("{value:.2}"),
        value => format!("{value:.3}"),
    }
}

fn failures(out: &mut String, report: &SweepReport<'_>) {
    let mut rows = String::new();
    for load in report.plan.loads {
        for &pattern in &report.plan.patterns {
            for size in report.model(load, pattern) {
                for rounds in &size.result.endpoints {
                    for (failure, count) in &rounds.all.failures {
                        let _ = writeln!(
                            rows,
                            "| {pattern} | {} | {} | {} | {} | {} |",
                            size.target,
                            load.flags(),
                            rounds.endpoint.label(),
                            failure.to_string().replace('|', "\\|"),
                            thousands(*count)
                        );
                    }
                    for corruption in &rounds.all.corruption_samples {
                        let _ = writeln!(
                            rows,
                            "| {pattern} | {} | {} | {} | corrupt: {corruption} | |",
                            size.target,
                            load.flags(),
                            rounds.endpoint.label(),
                        );
                    }
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("## Errors by step and endpoint\n\n| Pattern | Size | Load | Endpoint | Error | Occurrences |\n|---------|-----:|------|----------|-------|------------:|\n");
    out.push_str(&rows);
    out.push('\n');
}
