//! The leaked-slot check at the end of a scenario: once the load has stopped and both
//! services are healthy, every slot of the segment must come back to free. Read from
//! users-service's `shm_slots` gauge (its own scan of the segment, refreshed every second)
//! until the segment inspector can read the slot table directly.

use std::time::Duration;

use tokio::time::Instant;

use super::supervisor::{Supervisor, SupervisorError};
use crate::faults::Role;

/// A published slot waits up to users-service's 5 s ready TTL for its reader, a held one up to
/// its 1 s lease, then the reaper (every 250 ms) takes it back, and the gauge refreshes every
/// second: a slot still busy after this long is leaked.
pub const LEAK_SETTLE: Duration = Duration::from_secs(8);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// users-service refreshes the gauge every second: a reading taken this long after the load
/// stopped shows slots claimed by its last requests.
const GAUGE_REFRESH: Duration = Duration::from_millis(1100);

/// Slots not free, polled until none is or `LEAK_SETTLE` passes; `None` when users-service
/// exports no slot gauge.
pub async fn leaked_slots(supervisor: &Supervisor) -> Result<Option<u32>, SupervisorError> {
    tokio::time::sleep(GAUGE_REFRESH).await;
    let deadline = Instant::now() + LEAK_SETTLE;
    loop {
        let busy = busy_slots(&supervisor.scrape_metrics(Role::UsersService).await?);
        if busy.is_none_or(|busy| busy == 0) || Instant::now() >= deadline {
            return Ok(busy);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The sum of `shm_slots` over every state but `free`; `None` without any `shm_slots`.
fn busy_slots(metrics: &str) -> Option<u32> {
    let lines = metrics.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    let slots: Vec<_> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == "shm_slots")
        .collect();
    if slots.is_empty() {
        return None;
    }
    let busy: f64 = slots
        .iter()
        .filter(|sample| sample.labels.get("state") != Some("free"))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => {
                value
            }
            _ => 0.0,
        })
        .sum();
    Some(busy as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_state_but_free() {
        let metrics = "# TYPE shm_slots gauge\n\
            shm_slots{state=\"free\"} 60\n\
            shm_slots{state=\"writing\"} 1\n\
            shm_slots{state=\"ready\"} 2\n\
            shm_slots{state=\"reading\"} 0\n\
            shm_slots{state=\"unknown\"} 1\n\
            # TYPE http_requests_total counter\n\
            http_requests_total{route=\"/x\",status=\"200\"} 5\n";
        assert_eq!(busy_slots(metrics), Some(4));
        assert_eq!(busy_slots("shm_slots{state=\"free\"} 64\n"), Some(0));
        assert_eq!(busy_slots("http_requests_total 5\n"), None);
    }
}
