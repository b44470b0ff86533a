//! The sweep report as an HTML page: latency and throughput against size on log axes, then the
//! Markdown report.

use super::SweepReport;
use super::markdown::render_markdown;
use crate::loadtest::load::endpoint::Endpoint;
use crate::loadtest::report::html::{self, ChartError, Series, endpoint_color, lighter};
use crate::loadtest::sweep::ladder::Size;
use crate::loadtest::sweep::summary::Cell;

/// The page: per load model, latency (p50 dark, p99 light) and throughput against size for the
/// first pattern (the one measured at every size), both axes logarithmic, then the Markdown
/// report with every pattern. Sizes where an endpoint served no verified body are left out of
/// its lines.
pub fn render_html(report: &SweepReport<'_>) -> Result<String, ChartError> {
    let size_label = |bytes: &f64| Size(bytes.round() as u64).to_string();
    let pattern = report.plan.patterns[0];
    let mut charts = Vec::new();
    for load in report.plan.loads {
        let sizes = report.model(load, pattern);
        let line = |endpoint: Endpoint, figure: fn(&Cell) -> f64| -> Vec<(f64, f64)> {
            sizes
                .iter()
                .filter_map(|size| {
                    // A cell of error answers only would chart the time of an error.
                    let cell = size
                        .cells
                        .iter()
                        .find(|cell| cell.endpoint == endpoint && !cell.served_nothing())?;
                    Some((size.target.bytes() as f64, figure(cell)))
                })
                .collect()
        };
        let mut latency: Vec<Series> = Vec::new();
        let mut throughput: Vec<Series> = Vec::new();
        let mut rate: Vec<Series> = Vec::new();
        for &endpoint in &report.plan.endpoints {
            let color = endpoint_color(endpoint);
            latency.push((
                format!("{} p50", endpoint.label()),
                color,
                line(endpoint, |c| c.p50_ms),
            ));
            latency.push((
                format!("{} p99", endpoint.label()),
                lighter(color),
                line(endpoint, |c| c.p99_ms),
            ));
            throughput.push((
                endpoint.label().to_owned(),
                color,
                line(endpoint, |c| c.megabytes_per_second),
            ));
            rate.push((
                endpoint.label().to_owned(),
                color,
                line(endpoint, |c| c.requests_per_second),
            ));
        }
        let model = format!("{} ({}), {pattern} bodies", load.name(), load.flags());
        for (chart, caption, y, series) in [
            (
                "sweep latency",
                "Latency against body size (p50 dark, p99 light)",
                "latency (ms)",
                &latency,
            ),
            (
                "sweep throughput",
                "Verified throughput against body size",
                "MB/s",
                &throughput,
            ),
            (
                "sweep rate",
                "Requests per second against body size",
                "requests/s",
                &rate,
            ),
        ] {
            let titles = html::Titles {
                chart,
                caption: &format!("{caption}, {model}"),
                x_description: "body size",
                y_description: y,
            };
            charts.push(html::log_log_chart(titles, series, &size_label)?);
        }
    }
    Ok(html::page(
        "shmbridge payload-size sweep",
        &charts,
        &render_markdown(report),
    ))
}
