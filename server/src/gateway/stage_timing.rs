//! Where one forwarded request's time went inside the gateway, stage by stage: sent to the
//! client as a standard `Server-Timing` header (W3C Server Timing, durations in milliseconds)
//! and observed in `gateway_stage_seconds{stage}` for `/metrics`.
//!
//! The stages, in the order a request meets them:
//! - `attach`: finding the control channel and a permit among the publications in flight;
//! - `channel`: from the request frame sent to the answer received, which holds the producer's
//!   wake-up, its handler making the body, the publication, and the gateway's own wake-up;
//! - `redeem`: reading the body from its tier and verifying its crc32;
//! - `upstream`: over REST, from sending the request to the whole body received and checked.
//!
//! A producer that reports its own stages (users-service's `make`, the time its handler took to
//! make the body) sends its own `Server-Timing`, passed on beside the gateway's as any end-to-end
//! header is: `channel` minus `make` is then the time the two processes spent waking and handing
//! over. Only the attempt that answered is timed; a retried or fallen-back request's first
//! attempt shows in the request's total (`http_request_duration_seconds`) alone.

use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::Response;

use crate::server_timing::{SERVER_TIMING, entry};

/// One stage of a forwarded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Attach,
    Channel,
    Redeem,
    Upstream,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Attach => "attach",
            Stage::Channel => "channel",
            Stage::Redeem => "redeem",
            Stage::Upstream => "upstream",
        }
    }
}

/// The stages one attempt went through, with their durations, in order.
#[derive(Debug, Default)]
pub struct Stages {
    timed: Vec<(Stage, Duration)>,
}

impl Stages {
    /// Records `stage` as having run from `since` until now, and returns now: the start of the
    /// next stage.
    pub fn end(&mut self, stage: Stage, since: Instant) -> Instant {
        let now = Instant::now();
        self.timed
            .push((stage, now.saturating_duration_since(since)));
        now
    }

    /// Observes every stage in `gateway_stage_seconds{stage}` and appends them to `response`
    /// as one `Server-Timing` header (beside any the upstream sent).
    pub fn report(&self, response: &mut Response) {
        if self.timed.is_empty() {
            return;
        }
        for (stage, duration) in &self.timed {
            metrics::histogram!("gateway_stage_seconds", "stage" => stage.as_str())
                .record(duration.as_secs_f64());
        }
        let value = HeaderValue::from_str(&self.header_value())
            .expect("stage names and decimal digits are a valid header value");
        response.headers_mut().append(SERVER_TIMING, value);
    }

    /// `channel;dur=0.412, redeem;dur=0.031`: milliseconds, to the microsecond.
    fn header_value(&self) -> String {
        let entries: Vec<String> = self
            .timed
            .iter()
            .map(|(stage, duration)| entry(stage.as_str(), *duration))
            .collect();
        entries.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_lists_each_stage_in_order_in_milliseconds() {
        let stages = Stages {
            timed: vec![
                (Stage::Attach, Duration::from_micros(5)),
                (Stage::Channel, Duration::from_micros(1_412)),
                (Stage::Redeem, Duration::from_nanos(31_400)),
            ],
        };
        assert_eq!(
            stages.header_value(),
            "attach;dur=0.005, channel;dur=1.412, redeem;dur=0.031"
        );
    }

    #[test]
    fn a_response_gets_one_header_beside_the_upstreams_and_none_without_stages() {
        let mut response = Response::new(axum::body::Body::empty());
        response
            .headers_mut()
            .insert(SERVER_TIMING, HeaderValue::from_static("make;dur=0.3"));
        Stages::default().report(&mut response);
        assert_eq!(response.headers().get_all(SERVER_TIMING).iter().count(), 1);
        let mut stages = Stages::default();
        stages.end(Stage::Upstream, Instant::now());
        stages.report(&mut response);
        let values: Vec<_> = response.headers().get_all(SERVER_TIMING).iter().collect();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0], "make;dur=0.3");
        assert!(values[1].to_str().unwrap().starts_with("upstream;dur="));
    }
}
