//! What the services themselves caught and repaired during a scenario — checksum failures, stale
//! handles, retries, reclaims, header repairs — read from their `/metrics` at the end. It shows
//! that a fault landed even when the client saw nothing (the gateway retried, the reaper
//! cleaned up). Counters restart with their process, so after a restart they cover only the
//! service's last life; the scenario report says so.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::process::role::Role;
use crate::process::supervisor::Supervisor;

/// The counters worth reporting, per service.
const COUNTERS: [(Role, &[&str]); 2] = [
    (
        Role::Gateway,
        &[
            "checksum_failures_total",
            "shm_stale_handles_total",
            "shm_retries_total",
            "shm_reattaches_total",
            "published_stale_total",
            "published_dropped_total",
        ],
    ),
    (
        Role::UsersService,
        &[
            "shm_reclaims_total",
            "shm_header_repairs_total",
            "shm_claims_exhausted_total",
        ],
    ),
];

/// One non-zero counter sample: `service`, `metric{labels}` and its value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub service: String,
    pub counter: String,
    pub value: f64,
}

/// Reads both services' counters; a service whose `/metrics` cannot be read is reported as
/// such in the error list rather than failing the scenario.
pub async fn read(supervisor: &Supervisor) -> (Vec<Detection>, Vec<String>) {
    let mut detections = Vec::new();
    let mut errors = Vec::new();
    for (role, names) in COUNTERS {
        let text = match supervisor.get(role, "/metrics").await {
            Ok((200, text)) => text,
            Ok((status, _)) => {
                errors.push(format!("{role}: /metrics answered {status}"));
                continue;
            }
            Err(error) => {
                errors.push(format!("{role}: {error}"));
                continue;
            }
        };
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let scrape = match prometheus_parse::Scrape::parse(lines) {
            Ok(scrape) => scrape,
            Err(error) => {
                errors.push(format!("{role}: unreadable /metrics: {error}"));
                continue;
            }
        };
        let mut found = BTreeMap::new();
        for sample in &scrape.samples {
            let (prometheus_parse::Value::Counter(value) | prometheus_parse::Value::Untyped(value)) =
                sample.value
            else {
                continue;
            };
            if value > 0.0 && names.contains(&sample.metric.as_str()) {
                let labels = sample.labels.to_string();
                let counter = if labels.is_empty() {
                    sample.metric.clone()
                } else {
                    format!("{}{{{labels}}}", sample.metric)
                };
                found.insert(counter, value);
            }
        }
        detections.extend(found.into_iter().map(|(counter, value)| Detection {
            service: role.to_string(),
            counter,
            value,
        }));
    }
    (detections, errors)
}
