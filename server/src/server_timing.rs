//! The standard `Server-Timing` response header (W3C Server Timing): one `name;dur=MS` entry
//! per stage, durations in milliseconds to the microsecond. users-service reports the time it
//! took to make a body (`make`); the gateway its own stages (`gateway::stage_timing`), beside
//! the upstream's.

use std::time::Duration;

/// The header's name (not among `http`'s constants).
pub const SERVER_TIMING: &str = "server-timing";

/// One entry: `make;dur=0.412`.
pub fn entry(name: &str, duration: Duration) -> String {
    format!("{name};dur={:.3}", duration.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_its_name_and_milliseconds_to_the_microsecond() {
        assert_eq!(
            entry("make", Duration::from_nanos(412_400)),
            "make;dur=0.412"
        );
        assert_eq!(
            entry("channel", Duration::from_millis(1_500)),
            "channel;dur=1500.000"
        );
    }
}
