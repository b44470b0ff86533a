//! Timeouts and intervals arrive from Python as float seconds; these turn them into durations
//! or a `ValueError` naming the argument.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Zero or more seconds (zero: try once, do not wait).
pub fn non_negative(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!("{name} must be finite seconds >= 0, got {value}"))
    })
}

/// More than zero seconds.
pub fn positive(name: &str, value: f64) -> PyResult<Duration> {
    non_negative(name, value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be finite seconds > 0, got {value}"))
        })
}
