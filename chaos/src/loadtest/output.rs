//! Writes a finished run's report: Markdown to stdout, and the CSV, JSON and HTML files asked for
//! (a capacity session: Markdown and JSON; a sweep: Markdown, JSON and HTML). The runners
//! (`compare`, `sweep`, `load`) only measure and return what they measured; this is the one
//! place that turns it into a report and writes it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::loadtest::cli::OutputArgs;
use crate::loadtest::compare::Comparison;
use crate::loadtest::report::capacity::{self, CapacityReport};
use crate::loadtest::report::machine::Provenance;
use crate::loadtest::report::sweep::{self, SweepReport};
use crate::loadtest::report::{RunReport, csv, html, json, markdown};
use crate::loadtest::sweep::SweepRun;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("cannot write the report to stdout: {0}")]
    Stdout(io::Error),
    #[error(transparent)]
    Chart(#[from] html::ChartError),
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// `compare`'s report, mixed or `--capacity`.
pub fn write_comparison(comparison: &Comparison, output: &OutputArgs) -> Result<(), OutputError> {
    match comparison {
        Comparison::Mixed(run) => write_report(
            &RunReport::new(
                &run.config,
                &run.stats,
                run.payload_bytes.clone(),
                run.environment.clone(),
            ),
            output,
        ),
        Comparison::Capacity(session) => write_capacity_report(
            &CapacityReport::new(
                &session.plan,
                &session.base,
                &session.result,
                session.payload_bytes,
                session.cache,
                session.environment.clone(),
            ),
            output,
        ),
    }
}

/// `sweep`'s report, dated now.
pub fn write_sweep(run: &SweepRun, output: &OutputArgs) -> Result<(), OutputError> {
    write_sweep_report(
        &SweepReport {
            plan: &run.plan,
            result: &run.result,
            provenance: Provenance::now(run.environment.clone()),
        },
        output,
    )
}

pub fn write_report(report: &RunReport<'_>, output: &OutputArgs) -> Result<(), OutputError> {
    write_stdout(&markdown::render(report))?;
    if let Some(prefix) = &output.csv {
        let written = csv::write(report, prefix).map_err(|source| OutputError::File {
            path: prefix.clone(),
            source,
        })?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = &output.json {
        write_file(path, &json::render(report)?)?;
    }
    if let Some(path) = &output.html {
        write_file(path, &html::render(report)?)?;
    }
    Ok(())
}

/// `compare --capacity`'s report; `--csv` and `--html` are refused by its command line, since
/// their layouts describe one mixed run.
fn write_capacity_report(
    report: &CapacityReport<'_>,
    output: &OutputArgs,
) -> Result<(), OutputError> {
    write_stdout(&capacity::render_markdown(report))?;
    if let Some(path) = &output.json {
        write_file(path, &capacity::render_json(report)?)?;
    }
    Ok(())
}

/// `sweep`'s report: Markdown, and the JSON and HTML asked for (its caller refuses `--csv`).
fn write_sweep_report(report: &SweepReport<'_>, output: &OutputArgs) -> Result<(), OutputError> {
    write_stdout(&sweep::render_markdown(report))?;
    if let Some(path) = &output.json {
        write_file(path, &sweep::render_json(report)?)?;
    }
    if let Some(path) = &output.html {
        write_file(path, &sweep::render_html(report)?)?;
    }
    Ok(())
}

fn write_stdout(text: &str) -> Result<(), OutputError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(OutputError::Stdout)
}

fn write_file(path: &Path, contents: &str) -> Result<(), OutputError> {
    std::fs::write(path, contents).map_err(|source| OutputError::File {
        path: path.to_owned(),
        source,
    })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
