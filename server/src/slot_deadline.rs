//! The flags that become deadlines stamped into slot descriptors (`--lease` on both services,
//! `--ready-ttl` on users-service): parsed and bounded at start-up, so that a value the reaper
//! would misread is refused with the flag's name and the bound instead of running.
//!
//! The bounds: more than zero (a zero lease or TTL expires as it is stamped, so every slot would
//! be reclaimed mid-hand-off) and at most [`shmbridge::MAX_DEADLINE_AHEAD`] (one hour): the
//! reaper treats any deadline further ahead as scribbled and reclaims the slot at once, so with
//! `--ready-ttl 2h` every publication would be taken back before its gateway could redeem it.

use std::time::Duration;

use shmbridge::MAX_DEADLINE_AHEAD;

/// Why a lease or TTL value was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SlotDeadlineError {
    #[error(transparent)]
    Unparsable(#[from] humantime::DurationError),
    #[error(
        "must be more than 0 and at most {} (shmbridge::MAX_DEADLINE_AHEAD)",
        humantime::format_duration(MAX_DEADLINE_AHEAD)
    )]
    Zero,
    #[error(
        "{} is above the maximum of {} (shmbridge::MAX_DEADLINE_AHEAD): the reaper would treat \
         the deadline as scribbled and reclaim every slot at once",
        humantime::format_duration(*value),
        humantime::format_duration(MAX_DEADLINE_AHEAD)
    )]
    TooLong { value: Duration },
}

/// Parses a lease or TTL flag (`500ms`, `5s`, ...) and checks it with [`check`]. Used as the
/// clap value parser, so an error names the flag (or its environment variable's flag).
pub fn parse(text: &str) -> Result<Duration, SlotDeadlineError> {
    check(humantime::parse_duration(text)?)
}

/// Checks a lease or TTL: more than zero and at most [`MAX_DEADLINE_AHEAD`].
pub fn check(value: Duration) -> Result<Duration, SlotDeadlineError> {
    if value.is_zero() {
        Err(SlotDeadlineError::Zero)
    } else if value > MAX_DEADLINE_AHEAD {
        Err(SlotDeadlineError::TooLong { value })
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_of_the_maximum_and_exclusive_of_zero() {
        assert_eq!(parse("1h"), Ok(MAX_DEADLINE_AHEAD));
        assert_eq!(parse("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse("0s"), Err(SlotDeadlineError::Zero));
        assert!(matches!(
            parse("3601s"),
            Err(SlotDeadlineError::TooLong { .. })
        ));
        assert!(matches!(
            parse("soon"),
            Err(SlotDeadlineError::Unparsable(_))
        ));
    }
}
