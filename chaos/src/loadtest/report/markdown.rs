//! The Markdown report, in the seed report's own layout and wording, with the seed's figures
//! in extra columns, plus what the seed could not show: corrupt bodies and p99.9.

use std::fmt::Write as _;

use super::seed::{self, SeedFigures};
use super::{RunReport, describe_resource, format_ms, thousands};
use crate::loadtest::load::LoadModel;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::load::stats::{EndpointStats, LatencySummary, percent};
use crate::loadtest::load::target::{RequestMix, Resource};
use shmbridge_server::transport_header::Transport;

/// Shown where the seed has no figure.
const NO_SEED_FIGURE: &str = "—";

/// The percentiles of the distribution section: the seed's five and our p99.9.
const DISTRIBUTION_PERCENTILES: [f64; 6] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

pub fn render(report: &RunReport<'_>) -> String {
    let mut out = String::new();
    let rows: Vec<(Endpoint, &EndpointStats, LatencySummary)> = report
        .stats
        .endpoints
        .iter()
        .map(|(&endpoint, stats)| (endpoint, stats, stats.summary(report.stats.elapsed)))
        .collect();
    let total = report.stats.total();
    let total_summary = total.summary(report.stats.elapsed);

    out.push_str("# Load Testing Results\n\n");
    configuration(&mut out, report);
    out.push_str("## Performance Metrics\n\n");
    throughput(&mut out, &rows, &total_summary);
    response_times(&mut out, &rows);
    error_rates(&mut out, &rows, &total);
    failures(&mut out, &rows);
    transports_taken(&mut out, &rows);
    corruptions(&mut out, report, &rows);
    distribution(&mut out, &rows);
    out
}

fn configuration(out: &mut String, report: &RunReport<'_>) {
    let config = report.config;
    out.push_str("## Test Configuration\n\n");
    let _ = writeln!(
        out,
        "- **Duration**: {} (measured {:.1} s; the seed ran {} s)",
        humantime::format_duration(config.duration),
        report.stats.elapsed.as_secs_f64(),
        seed::SEED_DURATION_SECONDS
    );
    match config.model {
        LoadModel::Users(users) => {
            let _ = writeln!(
                out,
                "- **Number of Users**: {}{}",
                users.users,
                seed_differs(users.users != seed::SEED_USERS, seed::SEED_USERS)
            );
            let _ = writeln!(
                out,
                "- **Spawn Rate**: {} users/second{}",
                users.spawn_rate,
                seed_differs(
                    users.spawn_rate != seed::SEED_SPAWN_RATE,
                    seed::SEED_SPAWN_RATE
                )
            );
            let _ = writeln!(
                out,
                "- **Think Time**: {} per user between requests{}",
                users.think,
                if users.think.max.is_zero() {
                    " (closed-loop capacity)"
                } else {
                    ""
                }
            );
        }
        LoadModel::OpenLoop(open) => {
            let _ = writeln!(
                out,
                "- **Open-loop Rate**: {} requests/second, at most {} in flight; latency measured from each request's scheduled send time",
                open.rate, open.connections
            );
        }
    }
    match (config.requests.weighted(), &report.payload_bytes[..]) {
        ([(Resource::Users(count), _)], [bytes]) => {
            let _ = writeln!(
                out,
                "- **Payload Size**: {} bytes (count={count}, seed={}; the seed's was {})",
                thousands(bytes.unwrap_or_default() as u64),
                config.seed,
                thousands(seed::SEED_PAYLOAD_BYTES)
            );
        }
        ([(resource @ Resource::Path(_), _)], [bytes]) => {
            let _ = writeln!(
                out,
                "- **Path**: {}, asked through each endpoint's prefix (REST `/via-api`, shared memory `/via-shm`, the ceiling `/via-cached`, none under `auto`); the seed's payload was {} bytes",
                describe_resource(resource, *bytes),
                thousands(seed::SEED_PAYLOAD_BYTES)
            );
        }
        (weighted, sizes) if config.requests.paths().is_empty() => {
            let sizes: Vec<String> = weighted
                .iter()
                .zip(sizes)
                .map(|((resource, weight), bytes)| {
                    format!(
                        "{resource} ({} bytes) weight {weight}",
                        thousands(bytes.unwrap_or_default() as u64)
                    )
                })
                .collect();
            let counts = config
                .requests
                .counts()
                .map_or_else(String::new, |counts| counts.to_string());
            let _ = writeln!(
                out,
                "- **Payload Sizes**: each request picks a count at random by weight (`--count {counts}`): {} (seed={}; the seed's was {} bytes)",
                sizes.join(", "),
                config.seed,
                thousands(seed::SEED_PAYLOAD_BYTES)
            );
        }
        (weighted, sizes) => {
            let items: Vec<String> = weighted
                .iter()
                .zip(sizes)
                .map(|((resource, weight), bytes)| {
                    format!("{} weight {weight}", describe_resource(resource, *bytes))
                })
                .collect();
            let counts = if config.requests.counts().is_some() {
                format!(
                    "counts with seed={} on the seed's routes, paths",
                    config.seed
                )
            } else {
                "paths".to_owned()
            };
            let _ = writeln!(
                out,
                "- **Requests**: each request picks one at random by weight: {} ({counts} through each endpoint's prefix: REST `/via-api`, shared memory `/via-shm`, the ceiling `/via-cached`, none under `auto`)",
                items.join(", "),
            );
        }
    }
    let _ = writeln!(
        out,
        "- **Endpoint Mix**: {} (each request picks one at random by weight)",
        config.mix
    );
    let _ = writeln!(
        out,
        "- **Request Timeout**: {}",
        humantime::format_duration(config.timeout)
    );
    let _ = writeln!(
        out,
        "- **Random Seed**: {} (`--rng-seed {}` replays the same think times and endpoint picks)",
        config.rng_seed, config.rng_seed
    );
    report.provenance.write_markdown(out);
    out.push_str(&verification_line(&config.requests));
    out.push('\n');
}

/// The report's "Body Verification" line: byte for byte and by checksum, and which paths were
/// checked by their checksum header alone.
pub(super) fn verification_line(requests: &RequestMix) -> String {
    let mut line = String::from(
        "- **Body Verification**: every 200 body compared byte for byte with the expected payload and with `x-payload-crc32`",
    );
    let unknown = requests.checksum_only();
    if !unknown.is_empty() {
        let paths: Vec<String> = unknown.iter().map(|path| format!("`{path}`")).collect();
        let _ = write!(
            line,
            "; except bodies of {}, whose bytes nothing here knows: those are checked against their `x-payload-crc32` only",
            paths.join(", ")
        );
    }
    line.push('\n');
    line
}

fn throughput(
    out: &mut String,
    rows: &[(Endpoint, &EndpointStats, LatencySummary)],
    total: &LatencySummary,
) {
    out.push_str("### Throughput\n\n");
    out.push_str(
        "| Endpoint | Requests/sec | Total Requests | Seed Requests/sec | Seed Total Requests |\n",
    );
    out.push_str(
        "|----------|--------------|----------------|-------------------|---------------------|\n",
    );
    for (endpoint, _, summary) in rows {
        let seed = seed::seed_figures(*endpoint);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {} | {} |",
            endpoint.label(),
            summary.requests_per_second,
            thousands(summary.requests),
            seed_value(seed, |s| format!("{:.2}", s.requests_per_second)),
            seed_value(seed, |s| thousands(s.total_requests)),
        );
    }
    let _ = writeln!(
        out,
        "| **Total** | **{:.2}** | **{}** | **{:.2}** | **{}** |\n",
        total.requests_per_second,
        thousands(total.requests),
        seed::SEED_TOTAL_REQUESTS_PER_SECOND,
        thousands(seed::SEED_TOTAL_REQUESTS)
    );
}

fn response_times(out: &mut String, rows: &[(Endpoint, &EndpointStats, LatencySummary)]) {
    out.push_str("### Response Times (in milliseconds)\n\n");
    let mut header = String::from("| Metric |");
    let mut rule = String::from("|--------|");
    for (endpoint, _, _) in rows {
        let _ = write!(header, " {} |", endpoint.label());
        rule.push_str("------|");
    }
    let seeded: Vec<(Endpoint, &SeedFigures)> = rows
        .iter()
        .filter_map(|(endpoint, _, _)| seed::seed_figures(*endpoint).map(|s| (*endpoint, s)))
        .collect();
    for (endpoint, _) in &seeded {
        let _ = write!(header, " Seed {} |", endpoint.label());
        rule.push_str("------|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    type Ours = fn(&LatencySummary) -> f64;
    type Theirs = fn(&SeedFigures) -> Option<f64>;
    let metrics: [(&str, Ours, Theirs); 7] = [
        ("Average", |s| s.mean_ms, |s| Some(s.average_ms)),
        ("Median", |s| s.median_ms(), |s| Some(s.median_ms)),
        (
            "90th percentile",
            |s| s.percentile_ms(90.0),
            |s| Some(s.p90_ms),
        ),
        (
            "95th percentile",
            |s| s.percentile_ms(95.0),
            |s| Some(s.p95_ms),
        ),
        (
            "99th percentile",
            |s| s.percentile_ms(99.0),
            |s| s.percentile_ms(99.0),
        ),
        ("99.9th percentile", |s| s.percentile_ms(99.9), |_| None),
        ("Maximum", |s| s.max_ms, |s| Some(s.max_ms)),
    ];
    for (name, ours, theirs) in metrics {
        let _ = write!(out, "| {name} |");
        for (_, _, summary) in rows {
            let _ = write!(out, " {} |", format_ms(ours(summary)));
        }
        for (_, seed) in &seeded {
            let figure = theirs(seed).map_or(NO_SEED_FIGURE.to_owned(), |ms| format!("{ms:.0}"));
            let _ = write!(out, " {figure} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn error_rates(
    out: &mut String,
    rows: &[(Endpoint, &EndpointStats, LatencySummary)],
    total: &EndpointStats,
) {
    out.push_str("### Error Rates\n\n");
    out.push_str("| Endpoint | Total Requests | Failures | Failure Rate | Corrupt | Seed Failures | Seed Failure Rate |\n");
    out.push_str("|----------|----------------|----------|--------------|---------|---------------|-------------------|\n");
    for (endpoint, stats, _) in rows {
        let seed = seed::seed_figures(*endpoint);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2}% | {} | {} | {} |",
            endpoint.label(),
            thousands(stats.requests),
            thousands(stats.failed()),
            stats.failure_percent(),
            thousands(stats.corrupt),
            seed_value(seed, |s| thousands(s.failures)),
            seed_value(seed, |s| format!("{:.2}%", s.failure_percent)),
        );
    }
    let _ = writeln!(
        out,
        "| **Total** | **{}** | **{}** | **{:.2}%** | **{}** | **{}** | **{:.2}%** |\n",
        thousands(total.requests),
        thousands(total.failed()),
        percent(total.failed(), total.requests),
        thousands(total.corrupt),
        thousands(seed::SEED_TOTAL_FAILURES),
        seed::SEED_TOTAL_FAILURE_PERCENT
    );
    out.push_str("Corrupt: a 200 response whose bytes or checksum header differ from the published payload (the seed's Locust run could not detect these; they are not counted as failures).\n\n");
}

fn failures(out: &mut String, rows: &[(Endpoint, &EndpointStats, LatencySummary)]) {
    if rows.iter().all(|(_, stats, _)| stats.failures.is_empty()) {
        return;
    }
    out.push_str(
        "### Failures\n\n| Endpoint | Error | Occurrences |\n|----------|-------|-------------|\n",
    );
    for (endpoint, stats, _) in rows {
        for (failure, count) in &stats.failures {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                endpoint.label(),
                failure.to_string().replace('|', "\\|"),
                thousands(*count)
            );
        }
    }
    out.push('\n');
}

/// 200 responses by the transport the gateway said carried the body (`x-transport`): which
/// path, and for shared memory which tier (inline, slot, sealed). Shown whenever the gateway
/// named one.
fn transports_taken(out: &mut String, rows: &[(Endpoint, &EndpointStats, LatencySummary)]) {
    if rows.iter().all(|(_, stats, _)| stats.transports.is_empty()) {
        return;
    }
    let taken: Vec<Transport> = Transport::ALL
        .into_iter()
        .filter(|transport| {
            rows.iter()
                .any(|(_, stats, _)| stats.transports.contains_key(transport))
        })
        .collect();
    out.push_str("### Transport Taken (200 responses, by `x-transport`)\n\n| Endpoint |");
    for transport in &taken {
        let _ = write!(out, " {transport} |");
    }
    out.push_str("\n|----------|");
    out.push_str(&"------|".repeat(taken.len()));
    out.push('\n');
    for (endpoint, stats, _) in rows {
        let _ = write!(out, "| {} |", endpoint.label());
        for transport in &taken {
            let count = stats.transports.get(transport).copied().unwrap_or(0);
            let _ = write!(out, " {} |", thousands(count));
        }
        out.push('\n');
    }
    out.push('\n');
}

fn corruptions(
    out: &mut String,
    report: &RunReport<'_>,
    rows: &[(Endpoint, &EndpointStats, LatencySummary)],
) {
    if rows.iter().all(|(_, stats, _)| stats.corrupt == 0) {
        return;
    }
    out.push_str("### Corrupt Bodies (first samples)\n\n");
    for (endpoint, stats, _) in rows {
        for corruption in &stats.corruption_samples {
            let _ = writeln!(out, "- {}: {corruption}", report.config.route(*endpoint));
        }
    }
    out.push('\n');
}

fn distribution(out: &mut String, rows: &[(Endpoint, &EndpointStats, LatencySummary)]) {
    out.push_str("## Response Time Distribution\n\n");
    for (endpoint, _, summary) in rows {
        let seed = seed::seed_figures(*endpoint);
        let _ = writeln!(
            out,
            "### {}\n\n| Requests | shmbridge | Seed |\n|----------|-----------|------|",
            endpoint.label()
        );
        for percentile in DISTRIBUTION_PERCENTILES {
            let theirs = seed
                .and_then(|s| s.percentile_ms(percentile))
                .map_or(NO_SEED_FIGURE.to_owned(), |ms| format!("≤ {ms:.0}ms"));
            let _ = writeln!(
                out,
                "| {percentile}% of requests | ≤ {}ms | {theirs} |",
                format_ms(summary.percentile_ms(percentile))
            );
        }
        out.push('\n');
    }
}

/// " (the seed's was X)" where our setting differs from the seed's, so the seed columns are
/// read as what they are.
fn seed_differs(differs: bool, seed: impl std::fmt::Display) -> String {
    if differs {
        format!(" (the seed's was {seed}; its figures below are for that)")
    } else {
        String::new()
    }
}

fn seed_value(seed: Option<&SeedFigures>, figure: impl Fn(&SeedFigures) -> String) -> String {
    seed.map_or(NO_SEED_FIGURE.to_owned(), figure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::load::stats::Outcome;
    use crate::loadtest::report::fixture;
    use std::time::Duration;

    #[test]
    fn the_hybrid_endpoint_shows_the_transports_it_took() {
        let config = fixture::config();
        let mut stats = fixture::stats();
        let text = render(&RunReport::new(
            &config,
            &stats,
            vec![Some(256_873)],
            "test".into(),
        ));
        assert!(!text.contains("Transport Taken"), "{text}");

        let mut auto = EndpointStats::default();
        for (transport, times) in [(Transport::Shm, 3), (Transport::ApiFallback, 1)] {
            for _ in 0..times {
                auto.record(
                    Duration::ZERO,
                    Duration::from_millis(1),
                    9,
                    &Outcome::Verified,
                );
                auto.count_transport(Some(transport));
            }
        }
        stats.endpoints.insert(Endpoint::Auto, auto);
        let text = render(&RunReport::new(
            &config,
            &stats,
            vec![Some(256_873)],
            "test".into(),
        ));
        assert!(
            text.contains("| Endpoint | shm | api-fallback |\n"),
            "{text}"
        );
        assert!(text.contains("| Hybrid (--transport) | 3 | 1 |"), "{text}");
        assert!(text.contains("| REST API | 0 | 0 |"), "{text}");
    }

    #[test]
    fn a_path_run_names_its_path_how_it_was_checked_and_the_tiers_that_carried_it() {
        let mut config = fixture::config();
        config.requests =
            RequestMix::path("/blobs?size=3000000&pattern=random&seed=9".parse().unwrap());
        let mut stats = fixture::stats();
        let shm = stats.endpoints.get_mut(&Endpoint::Shm).unwrap();
        shm.count_transport(Some(Transport::ShmSealed));
        shm.count_transport(Some(Transport::ShmSealed));
        stats
            .endpoints
            .get_mut(&Endpoint::Api)
            .unwrap()
            .count_transport(Some(Transport::Api));
        let text = render(&RunReport::new(
            &config,
            &stats,
            vec![Some(3_000_000)],
            "test".into(),
        ));
        for line in [
            "- **Path**: `/blobs?size=3000000&pattern=random&seed=9` (3,000,000 bytes), asked through each endpoint's prefix",
            "### Transport Taken (200 responses, by `x-transport`)",
            "| Endpoint | api | shm-sealed |",
            "| Shared Memory | 0 | 2 |",
            "- /via-shm/blobs?size=3000000&pattern=random&seed=9: first differing offset 7",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
        assert!(
            !text.contains("checked against their `x-payload-crc32` only"),
            "{text}"
        );

        config.requests = RequestMix::new(
            Some(&crate::loadtest::load::counts::CountMix::single(708)),
            &[("/metrics-like".parse().unwrap(), 1)],
        )
        .unwrap();
        let text = render(&RunReport::new(
            &config,
            &stats,
            vec![Some(256_873), None],
            "test".into(),
        ));
        for line in [
            "- **Requests**: each request picks one at random by weight: count=708 (256,873 bytes) weight 1, `/metrics-like` (size unknown: checked by `x-payload-crc32` only) weight 1",
            "except bodies of `/metrics-like`, whose bytes nothing here knows: those are checked against their `x-payload-crc32` only",
            "- /api/users-via-shm, /via-shm/metrics-like: first differing offset 7",
        ] {
            assert!(text.contains(line), "report lacks {line:?}:\n{text}");
        }
    }

    #[test]
    fn tables_show_ours_beside_the_seeds() {
        let (config, stats) = (fixture::config(), fixture::stats());
        let report = RunReport::new(&config, &stats, vec![Some(256_873)], "test".into());
        let text = render(&report);
        // 4 requests in 2 s; the seed's 12.39 req/s and 1,471 requests beside them.
        assert!(
            text.contains("| REST API | 2.00 | 4 | 12.39 | 1,471 |"),
            "{text}"
        );
        assert!(text.contains("| **Total** | **3.00** | **6** | **24.65** | **2,926** |"));
        // mean of 1, 2, 3, 4 ms; the seed's 13 and 14 ms averages.
        assert!(
            text.contains("| Average | 2.50 | 1.00 | 13 | 14 |"),
            "{text}"
        );
        assert!(text.contains("| 99.9th percentile | 4.00 | 1.00 | — | — |"));
        // 1 failure of 4, corrupt counted apart from failures.
        assert!(
            text.contains("| REST API | 4 | 1 | 25.00% | 0 | 5 | 0.34% |"),
            "{text}"
        );
        assert!(text.contains("| Shared Memory | 2 | 0 | 0.00% | 1 | 70 | 4.81% |"));
        assert!(text.contains("| REST API | HTTP 503: Service Unavailable | 1 |"));
        assert!(
            text.contains("/api/users-via-shm: first differing offset 7 (expected 0x61, got 0x62)")
        );
        assert!(text.contains("| 75% of requests | ≤ 3.00ms | ≤ 13ms |"));
        assert!(text.contains("- **Payload Size**: 256,873 bytes (count=708, seed=28"));
        assert!(text.contains("- **Number of Users**: 50\n"), "{text}");
    }

    #[test]
    fn a_profile_other_than_the_seeds_says_what_the_seed_ran() {
        let mut config = fixture::config();
        config.model = LoadModel::Users(crate::loadtest::load::users::UsersProfile {
            users: 500,
            spawn_rate: 50.0,
            think: crate::loadtest::load::users::ThinkTime::SEED,
        });
        let stats = fixture::stats();
        let text = render(&RunReport::new(
            &config,
            &stats,
            vec![Some(256_873)],
            "test".into(),
        ));
        assert!(
            text.contains(
                "- **Number of Users**: 500 (the seed's was 50; its figures below are for that)"
            ),
            "{text}"
        );
        assert!(text.contains("- **Spawn Rate**: 50 users/second (the seed's was 10;"));
        // the seed's tables are still there beside ours
        assert!(text.contains("| **Total** | **3.00** | **6** | **24.65** | **2,926** |"));
    }
}
