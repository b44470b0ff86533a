//! A self-contained HTML page (no scripts, no external files): the Markdown report plus SVG
//! charts of latency over time per endpoint, throughput over time and the latency distribution.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::{RunReport, markdown};
use crate::loadtest::load::endpoint::Endpoint;

const CHART_SIZE: (u32, u32) = (960, 420);

/// The distribution chart's x axis runs in "nines": 1 = 90%, 2 = 99%, 3 = 99.9%, ...
const MAX_NINES: f64 = 4.0;
const DISTRIBUTION_POINTS: u32 = 200;

/// Labels on a logarithmic size axis at most: 1 KiB .. 64 MiB is 17 powers of 2.
const LOG_X_LABELS: usize = 17;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {chart} chart: {reason}")]
pub struct ChartError {
    chart: &'static str,
    reason: String,
}

/// One line: its legend, its color and its (x, y) points.
pub(super) type Series = (String, RGBColor, Vec<(f64, f64)>);

pub fn render(report: &RunReport<'_>) -> Result<String, ChartError> {
    let mut latency_series = Vec::new();
    let mut throughput_series = Vec::new();
    let mut distribution_series = Vec::new();
    for (&endpoint, stats) in &report.stats.endpoints {
        let color = endpoint_color(endpoint);
        let percentile_line = |percentile: f64| -> Vec<(f64, f64)> {
            stats
                .timeline
                .iter()
                .enumerate()
                .filter(|(_, bucket)| bucket.requests > 0)
                .map(|(second, bucket)| {
                    (
                        second as f64,
                        ms(bucket.latency.value_at_percentile(percentile)),
                    )
                })
                .collect()
        };
        latency_series.push((
            format!("{} p50", endpoint.label()),
            color,
            percentile_line(50.0),
        ));
        latency_series.push((
            format!("{} p99", endpoint.label()),
            lighter(color),
            percentile_line(99.0),
        ));
        throughput_series.push((
            endpoint.label().to_owned(),
            color,
            stats
                .timeline
                .iter()
                .enumerate()
                .map(|(second, bucket)| (second as f64, bucket.requests as f64))
                .collect(),
        ));
        distribution_series.push((
            endpoint.label().to_owned(),
            color,
            distribution_points(&stats.latency),
        ));
    }
    let charts = [
        line_chart(
            Titles {
                chart: "latency over time",
                caption: "Latency per second of the run (p50 dark, p99 light)",
                x_description: "second of the run",
                y_description: "latency (ms)",
            },
            &latency_series,
            None,
        )?,
        line_chart(
            Titles {
                chart: "throughput",
                caption: "Throughput per second of the run",
                x_description: "second of the run",
                y_description: "requests/s",
            },
            &throughput_series,
            None,
        )?,
        line_chart(
            Titles {
                chart: "latency distribution",
                caption: "Latency distribution (x: percentile)",
                x_description: "percentile",
                y_description: "latency (ms)",
            },
            &distribution_series,
            Some(&nines_label),
        )?,
    ];
    Ok(page(
        "shmbridge load test",
        &charts,
        &markdown::render(report),
    ))
}

/// The page: a title, the charts, then the Markdown report as preformatted text.
pub(super) fn page(title: &str, charts: &[String], report: &str) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:1em}}</style>\
         </head><body>\n<h1>{title}</h1>\n",
    );
    for chart in charts {
        let _ = writeln!(page, "<figure>{chart}</figure>");
    }
    let _ = writeln!(
        page,
        "<h2>Report</h2>\n<pre>{}</pre>\n</body></html>",
        escape_html(report)
    );
    page
}

fn line_chart(
    titles: Titles<'_>,
    series: &[Series],
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> Result<String, ChartError> {
    let points = series.iter().flat_map(|(_, _, points)| points);
    let x_max = bounds(points.clone().map(|(x, _)| *x)).map_or(1.0, |(_, high)| high.max(1.0));
    let y_max = bounds(points.map(|(_, y)| *y)).map_or(0.0, |(_, high)| high.max(0.0));
    let y_max = y_max.max(0.001) * 1.1;
    // One label per whole "nine" (0%, 90%, 99%, ...): the distribution's x range always ends
    // on a whole nine.
    let x_labels = x_label.map(|formatter| (x_max as usize + 1, formatter));
    draw(Axes { titles, x_labels }, series, 0.0..x_max, 0.0..y_max)
}

/// A chart whose axes are both logarithmic: x in powers of 2 (sizes), y in powers of 10.
/// Points at or below 0 cannot be placed and are left out.
pub(super) fn log_log_chart(
    titles: Titles<'_>,
    series: &[Series],
    x_label: &dyn Fn(&f64) -> String,
) -> Result<String, ChartError> {
    let series: Vec<Series> = series
        .iter()
        .map(|(name, color, points)| {
            let placed = points.iter().copied().filter(|&(x, y)| x > 0.0 && y > 0.0);
            (name.clone(), *color, placed.collect())
        })
        .collect();
    let points = series.iter().flat_map(|(_, _, points)| points);
    let (x_min, x_max) = bounds(points.clone().map(|(x, _)| *x)).unwrap_or((1.0, 2.0));
    let (y_min, y_max) = bounds(points.map(|(_, y)| *y)).unwrap_or((1.0, 10.0));
    draw(
        Axes {
            titles,
            x_labels: Some((LOG_X_LABELS, x_label)),
        },
        &series,
        (x_min / 1.5..x_max * 1.5).log_scale().base(2.0),
        (y_min / 2.0..y_max * 2.0).log_scale(),
    )
}

/// The lowest and highest of `values`; `None` when there are none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, value| {
        Some(range.map_or((value, value), |(low, high): (f64, f64)| {
            (low.min(value), high.max(value))
        }))
    })
}

/// Writes an axis label.
type Formatter<'a> = &'a dyn Fn(&f64) -> String;

/// The words around a chart.
pub(super) struct Titles<'a> {
    /// Names the chart in an error.
    pub chart: &'static str,
    pub caption: &'a str,
    pub x_description: &'a str,
    pub y_description: &'a str,
}

/// The words and labels around a chart.
struct Axes<'a> {
    titles: Titles<'a>,
    /// How many x labels at most, and how each is written (plotters' numbers otherwise).
    x_labels: Option<(usize, Formatter<'a>)>,
}

fn draw<X, Y>(axes: Axes<'_>, series: &[Series], x: X, y: Y) -> Result<String, ChartError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let chart = axes.titles.chart;
    let failed = |reason: String| ChartError { chart, reason };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|error| failed(error.to_string()))?;
        let mut context = ChartBuilder::on(&root)
            .caption(axes.titles.caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(|error| failed(error.to_string()))?;
        let mut mesh = context.configure_mesh();
        mesh.x_desc(axes.titles.x_description)
            .y_desc(axes.titles.y_description);
        if let Some((count, formatter)) = axes.x_labels {
            mesh.x_labels(count).x_label_formatter(formatter);
        }
        mesh.draw().map_err(|error| failed(error.to_string()))?;
        for (name, color, points) in series {
            let color = *color;
            context
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|error| failed(error.to_string()))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        context
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|error| failed(error.to_string()))?;
        root.present().map_err(|error| failed(error.to_string()))?;
    }
    Ok(svg)
}

/// (nines, latency ms) points from p0 up to 99.99%, or to the last whole nine the sample
/// count can resolve (1,000 samples resolve 99.9%).
fn distribution_points(latency: &Histogram<u64>) -> Vec<(f64, f64)> {
    if latency.is_empty() {
        return Vec::new();
    }
    let resolvable = (latency.len() as f64).log10().floor().clamp(1.0, MAX_NINES);
    (0..=DISTRIBUTION_POINTS)
        .map(|step| {
            let nines = resolvable * f64::from(step) / f64::from(DISTRIBUTION_POINTS);
            let quantile = 1.0 - 10f64.powf(-nines);
            (nines, ms(latency.value_at_quantile(quantile)))
        })
        .collect()
}

fn nines_label(nines: &f64) -> String {
    let percent = format!("{:.4}", 100.0 * (1.0 - 10f64.powf(-nines)));
    format!("{}%", percent.trim_end_matches('0').trim_end_matches('.'))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub(super) fn endpoint_color(endpoint: Endpoint) -> RGBColor {
    match endpoint {
        Endpoint::Api => RGBColor(31, 119, 180),
        Endpoint::Shm => RGBColor(214, 39, 40),
        Endpoint::ShmHttp => RGBColor(255, 127, 14),
        Endpoint::Cached => RGBColor(44, 160, 44),
        Endpoint::Auto => RGBColor(148, 103, 189),
        Endpoint::Published => RGBColor(140, 86, 75),
    }
}

pub(super) fn lighter(color: RGBColor) -> RGBColor {
    let lift = |channel: u8| channel + (255 - channel) / 2;
    RGBColor(lift(color.0), lift(color.1), lift(color.2))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }

    #[test]
    fn distribution_ends_at_the_resolvable_percentile() {
        let mut latency = crate::loadtest::load::stats::new_latency_histogram();
        for micros in 1..=1_000 {
            latency.record(micros).unwrap();
        }
        let points = distribution_points(&latency);
        let (last_nines, last_ms) = *points.last().unwrap();
        assert_eq!(last_nines, 3.0);
        assert_eq!(last_ms, 0.999);
        assert_eq!(points[0], (0.0, 0.001));
    }
}
