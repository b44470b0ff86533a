//! The payload sizes a sweep measures: `--sizes 1K,64K,1M` or a doubling range `1K..64M`,
//! binary units (1K = 1,024 bytes), kept sorted and without repeats.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A target body size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// `1 KiB`, `64 MiB`, or bytes (`1500 B`) when not a whole number of either.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            bytes if bytes >= GIB && bytes % GIB == 0 => write!(f, "{} GiB", bytes / GIB),
            bytes if bytes >= MIB && bytes % MIB == 0 => write!(f, "{} MiB", bytes / MIB),
            bytes if bytes >= KIB && bytes % KIB == 0 => write!(f, "{} KiB", bytes / KIB),
            bytes => write!(f, "{bytes} B"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("{0:?} is not a size (expected e.g. 1500, 64K, 1M or 1GiB)")]
    NotASize(String),
    #[error("size {0:?} is 0 bytes")]
    Zero(String),
    #[error("size {0:?} is too large")]
    TooLarge(String),
    #[error("range {0:?} ends below its start")]
    Descending(String),
    #[error("the ladder has no sizes")]
    Empty,
}

impl FromStr for Size {
    type Err = LadderError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => KIB,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => GIB,
            _ => return Err(LadderError::NotASize(text.to_owned())),
        };
        let number: u64 = digits
            .parse()
            .map_err(|_| LadderError::NotASize(text.to_owned()))?;
        let bytes = number
            .checked_mul(multiplier)
            .ok_or_else(|| LadderError::TooLarge(text.to_owned()))?;
        if bytes == 0 {
            return Err(LadderError::Zero(text.to_owned()));
        }
        Ok(Size(bytes))
    }
}

/// The sizes of a sweep, ascending, each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladder(Vec<Size>);

impl Ladder {
    pub fn sizes(&self) -> &[Size] {
        &self.0
    }
}

/// The ladder: 1 KiB to 64 MiB, doubling (17 sizes).
impl Default for Ladder {
    fn default() -> Self {
        DEFAULT_LADDER.parse().expect("the default ladder parses")
    }
}

/// The default ladder in `--sizes` syntax.
pub const DEFAULT_LADDER: &str = "1K..64M";

impl FromStr for Ladder {
    type Err = LadderError;

    /// Comma-separated items, each a size or `FROM..TO`: FROM, 2×FROM, 4×FROM, ... up to TO.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut sizes = Vec::new();
        for item in text.split(',').filter(|item| !item.trim().is_empty()) {
            match item.split_once("..") {
                Some((from, to)) => {
                    let (from, to): (Size, Size) = (from.parse()?, to.parse()?);
                    if to < from {
                        return Err(LadderError::Descending(item.trim().to_owned()));
                    }
                    let mut size = from.0;
                    while size <= to.0 {
                        sizes.push(Size(size));
                        size = match size.checked_mul(2) {
                            Some(next) => next,
                            None => break,
                        };
                    }
                }
                None => sizes.push(item.parse()?),
            }
        }
        sizes.sort();
        sizes.dedup();
        if sizes.is_empty() {
            return Err(LadderError::Empty);
        }
        Ok(Ladder(sizes))
    }
}

/// In `--sizes` form, each size listed.
impl fmt::Display for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|size| flag_form(*size)).collect();
        f.write_str(&items.join(","))
    }
}

/// `64K`, `1M`: the shortest form `--sizes` reads back.
fn flag_form(size: Size) -> String {
    match size.0 {
        bytes if bytes >= GIB && bytes % GIB == 0 => format!("{}G", bytes / GIB),
        bytes if bytes >= MIB && bytes % MIB == 0 => format!("{}M", bytes / MIB),
        bytes if bytes >= KIB && bytes % KIB == 0 => format!("{}K", bytes / KIB),
        bytes => bytes.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(text: &str) -> Vec<u64> {
        text.parse::<Ladder>()
            .unwrap()
            .sizes()
            .iter()
            .map(|size| size.bytes())
            .collect()
    }

    #[test]
    fn default_ladder_doubles_from_one_kib_to_sixty_four_mib() {
        let sizes: Vec<u64> = Ladder::default().sizes().iter().map(|s| s.0).collect();
        assert_eq!(sizes.len(), 17);
        assert_eq!(sizes[0], 1024);
        assert_eq!(*sizes.last().unwrap(), 64 << 20);
        assert!(sizes.windows(2).all(|pair| pair[1] == 2 * pair[0]));
    }

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(
            ladder("1K,2k,3KiB,1M,1mb,1G,1500,7b"),
            [7, 1024, 1500, 2048, 3072, 1 << 20, 1 << 30]
        );
    }

    #[test]
    fn lists_are_sorted_and_deduplicated_and_ranges_double() {
        assert_eq!(ladder("1M, 64K,1K,64K"), [1024, 65_536, 1 << 20]);
        assert_eq!(ladder("1K..8K"), [1024, 2048, 4096, 8192]);
        // a range stops at its last doubling not above the end
        assert_eq!(ladder("3K..13K,1K"), [1024, 3072, 6144, 12_288]);
        assert_eq!(ladder("4K..4K"), [4096]);
    }

    #[test]
    fn bad_ladders_are_refused_with_the_reason() {
        for (text, error) in [
            ("", LadderError::Empty),
            (" , ", LadderError::Empty),
            ("0K", LadderError::Zero("0K".into())),
            ("12Q", LadderError::NotASize("12Q".into())),
            ("K", LadderError::NotASize("K".into())),
            ("-1K", LadderError::NotASize("-1K".into())),
            ("8K..1K", LadderError::Descending("8K..1K".into())),
            (
                "99999999999999999999G",
                LadderError::NotASize("99999999999999999999G".into()),
            ),
            ("99999999999G", LadderError::TooLarge("99999999999G".into())),
        ] {
            assert_eq!(text.parse::<Ladder>(), Err(error), "{text:?}");
        }
    }

    #[test]
    fn sizes_display_in_their_largest_whole_unit_and_round_trip() {
        let shown: Vec<String> = [1500, 1024, 3 << 20, 1 << 30, (1 << 20) + 1024]
            .into_iter()
            .map(|bytes| Size(bytes).to_string())
            .collect();
        assert_eq!(shown, ["1500 B", "1 KiB", "3 MiB", "1 GiB", "1025 KiB"]);
        let ladder: Ladder = "1K..64M,1500".parse().unwrap();
        assert_eq!(ladder.to_string().parse::<Ladder>().unwrap(), ladder);
        assert!(ladder.to_string().starts_with("1K,1500,2K,"));
    }
}
