//! The words fault specs are written in, shared by every class's `[fault.NAME]` table: duration
//! ranges, a plain repeated fault, and the serde readers for durations and parsed strings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize};

use crate::loadtest::load::users::ThinkTime;

/// A uniform range of durations, written `"1s..3s"` (or one duration for a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    /// A uniform draw, at millisecond resolution so the printed schedule is exact.
    pub fn sample(self, rng: &mut impl Rng) -> Duration {
        let (min, max) = (self.min.as_millis(), self.max.as_millis());
        let millis = if min == max {
            min
        } else {
            rng.random_range(min..=max)
        };
        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

impl FromStr for DurationRange {
    type Err = String;

    /// The same forms as a think time: the load engine already parses them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ThinkTime { min, max } = text.parse()?;
        Ok(DurationRange { min, max })
    }
}

impl fmt::Display for DurationRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ThinkTime {
            min: self.min,
            max: self.max,
        }
        .fmt(f)
    }
}

impl<'de> Deserialize<'de> for DurationRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str(deserializer)
    }
}

impl Serialize for DurationRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A fault with no parameters of its own, repeated `count` times.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatSpec {
    pub count: u32,
    pub interval: DurationRange,
}

/// Whether a share (of kills, pauses, rounds...) is a fraction from 0 to 1.
pub fn is_share(share: f64) -> bool {
    (0.0..=1.0).contains(&share)
}

/// The default share: half.
pub fn half() -> f64 {
    0.5
}

/// Reads a string through its type's `FromStr`.
pub fn from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err: fmt::Display>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Reads an optional string through its type's `FromStr` (with `#[serde(default)]`).
pub fn optional_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err: fmt::Display>,
{
    from_str(deserializer).map(Some)
}

/// Reads a duration the way operators write one (`"2s"`, `"500ms"`).
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|error| serde::de::Error::custom(format!("{text:?} is not a duration: {error}")))
}
