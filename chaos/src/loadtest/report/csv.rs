//! Locust's CSV layout (`PREFIX_stats.csv`, `PREFIX_failures.csv`), so tooling written for
//! Locust reads our runs. Times are in milliseconds, as Locust writes them.

use std::io;
use std::path::{Path, PathBuf};

use super::{RunReport, format_ms};
use crate::loadtest::load::stats::{EndpointStats, LatencySummary, REPORTED_PERCENTILES};

/// Locust's stats columns, in Locust's order; the percentile columns follow.
const STATS_HEADER: [&str; 11] = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
];

const FAILURES_HEADER: [&str; 4] = ["Method", "Name", "Error", "Occurrences"];

/// Writes `PREFIX_stats.csv` and `PREFIX_failures.csv`; returns their paths.
pub fn write(report: &RunReport<'_>, prefix: &Path) -> io::Result<Vec<PathBuf>> {
    let stats_path = with_suffix(prefix, "_stats.csv");
    let failures_path = with_suffix(prefix, "_failures.csv");
    write_stats(report, csv::Writer::from_path(&stats_path)?)?;
    write_failures(report, csv::Writer::from_path(&failures_path)?)?;
    Ok(vec![stats_path, failures_path])
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub fn write_stats<W: io::Write>(
    report: &RunReport<'_>,
    mut out: csv::Writer<W>,
) -> io::Result<()> {
    let mut header: Vec<String> = STATS_HEADER
        .iter()
        .map(|&column| column.to_owned())
        .collect();
    header.extend(REPORTED_PERCENTILES.iter().map(|p| format!("{p}%")));
    out.write_record(&header)?;
    let elapsed = report.stats.elapsed;
    for (endpoint, stats) in &report.stats.endpoints {
        out.write_record(stats_row(
            "GET",
            &report.config.route(*endpoint),
            stats,
            &stats.summary(elapsed),
        ))?;
    }
    let total = report.stats.total();
    out.write_record(stats_row("", "Aggregated", &total, &total.summary(elapsed)))?;
    out.flush()
}

fn stats_row(
    kind: &str,
    name: &str,
    stats: &EndpointStats,
    summary: &LatencySummary,
) -> Vec<String> {
    let average_size = if stats.requests == 0 {
        0.0
    } else {
        stats.body_bytes as f64 / stats.requests as f64
    };
    let mut row = vec![
        kind.to_owned(),
        name.to_owned(),
        stats.requests.to_string(),
        stats.failed().to_string(),
        format_ms(summary.median_ms()),
        format_ms(summary.mean_ms),
        format_ms(summary.min_ms),
        format_ms(summary.max_ms),
        format!("{average_size:.2}"),
        format!("{:.6}", summary.requests_per_second),
        format!("{:.6}", summary.failures_per_second),
    ];
    row.extend(summary.percentiles_ms.iter().map(|(_, ms)| format_ms(*ms)));
    row
}

/// Failures by endpoint and error; corrupt bodies get their own rows, marked `CORRUPT`, so
/// Locust tooling sees them even though they are not in the failure counts.
pub fn write_failures<W: io::Write>(
    report: &RunReport<'_>,
    mut out: csv::Writer<W>,
) -> io::Result<()> {
    out.write_record(FAILURES_HEADER)?;
    for (endpoint, stats) in &report.stats.endpoints {
        let route = report.config.route(*endpoint);
        for (failure, count) in &stats.failures {
            out.write_record(["GET", &route, &failure.to_string(), &count.to_string()])?;
        }
        if stats.corrupt > 0 {
            out.write_record([
                "GET",
                &route,
                "CORRUPT: 200 response with bytes or checksum differing from the published payload",
                &stats.corrupt.to_string(),
            ])?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::report::fixture;

    #[test]
    fn stats_csv_has_locusts_columns_and_an_aggregated_row() {
        let (config, stats) = (fixture::config(), fixture::stats());
        let report = RunReport::new(&config, &stats, vec![Some(100)], "test".into());
        let mut buffer = Vec::new();
        write_stats(&report, csv::Writer::from_writer(&mut buffer)).unwrap();
        let text = String::from_utf8(buffer).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
             Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,\
             50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
        );
        assert_eq!(
            lines[1],
            "GET,/api/users-via-api,4,1,2.00,2.50,1.00,4.00,100.00,2.000000,0.500000,\
             2.00,3.00,3.00,4.00,4.00,4.00,4.00,4.00,4.00,4.00,4.00"
        );
        assert!(lines[3].starts_with(",Aggregated,6,1,"));
    }

    #[test]
    fn failures_csv_lists_failures_and_corruption() {
        let (config, stats) = (fixture::config(), fixture::stats());
        let report = RunReport::new(&config, &stats, vec![Some(100)], "test".into());
        let mut buffer = Vec::new();
        write_failures(&report, csv::Writer::from_writer(&mut buffer)).unwrap();
        let text = String::from_utf8(buffer).unwrap();
        assert!(text.contains("GET,/api/users-via-api,HTTP 503: Service Unavailable,1"));
        assert!(text.contains("GET,/api/users-via-shm,CORRUPT: "));
    }
}
