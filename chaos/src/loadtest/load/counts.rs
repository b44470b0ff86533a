//! The `count` each request of a run asks for: one count (`708`, the seed's), or a weighted mix
//! drawn per request from the run's seeded RNG (`708=9,12000=1`: one request in ten asks for
//! 12,000 users, ~5.8 MB, a body far above one 512 KiB slot that travels sealed).

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::Serialize;
use shmbridge_server::dataset::MAX_COUNT;

use super::weighted::Weighted;

/// Distinct counts a mix may hold. The body checker keeps one expected body per count for the
/// whole run, so this bounds its memory (at most this many bodies, each at most the dataset's
/// cap).
pub const MAX_DISTINCT_COUNTS: usize = 8;

/// The counts of a run and their weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountMix(Weighted<u32>);

impl CountMix {
    /// Every request asks for `count`.
    pub fn single(count: u32) -> Self {
        CountMix(Weighted::one(count))
    }

    /// `counts` with their weights, as listed (a count of weight 0 is listed but never drawn);
    /// `None` if a count is listed twice or every weight is 0.
    pub fn from_weights(counts: Vec<(u32, u32)>) -> Option<Self> {
        Weighted::new(counts, "count").ok().map(CountMix)
    }

    /// The counts that can be drawn, as listed: the bodies a checker must know.
    pub fn counts(&self) -> Vec<u32> {
        self.0.drawable().collect()
    }

    /// Every count with its weight, as listed.
    pub fn weighted(&self) -> &[(u32, u32)] {
        self.0.items()
    }

    /// The count every request asks for, if only one can be drawn.
    pub fn only(&self) -> Option<u32> {
        self.0.only()
    }

    /// The count of the next request; draws nothing from `rng` when there is one count, so a
    /// run with one count replays exactly as before mixes existed.
    pub fn pick(&self, rng: &mut impl Rng) -> u32 {
        self.0.pick(rng)
    }
}

impl FromStr for CountMix {
    type Err = String;

    /// `708` (one count) or `708=9,12000=1`; every count in `1..=MAX_COUNT`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mix = Weighted::parse(text, "count", |item| {
            item.parse::<u32>()
                .ok()
                .filter(|count| (1..=MAX_COUNT).contains(count))
                .ok_or_else(|| format!("count {item:?} is not a whole number in 1..={MAX_COUNT}"))
        })?;
        if mix.items().len() > MAX_DISTINCT_COUNTS {
            return Err(format!(
                "{} counts listed; at most {MAX_DISTINCT_COUNTS} (the checker keeps a body per count)",
                mix.items().len()
            ));
        }
        Ok(CountMix(mix))
    }
}

/// `708` for one count, `708=9,12000=1` for a mix: what `--count` takes back.
impl fmt::Display for CountMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.items() {
            [(count, _)] => write!(f, "{count}"),
            _ => self.0.fmt(f),
        }
    }
}

/// One count as the number it is (as reports wrote `count` before mixes existed), a mix in its
/// command-line form.
impl Serialize for CountMix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.items() {
            [(count, _)] => serializer.serialize_u32(*count),
            _ => serializer.collect_str(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn one_count_or_a_weighted_mix_round_trips() {
        let one: CountMix = "708".parse().unwrap();
        assert_eq!(one, CountMix::single(708));
        assert_eq!(one.to_string(), "708");
        assert_eq!(one.only(), Some(708));
        let mix: CountMix = "708=9, 12000=1".parse().unwrap();
        assert_eq!(mix.weighted(), &[(708, 9), (12_000, 1)]);
        assert_eq!(mix.counts(), vec![708, 12_000]);
        assert_eq!(mix.only(), None);
        assert_eq!(mix.to_string(), "708=9,12000=1");
        assert_eq!(mix.to_string().parse::<CountMix>().unwrap(), mix);
        assert_eq!(serde_json::to_string(&one).unwrap(), "708");
        assert_eq!(serde_json::to_string(&mix).unwrap(), r#""708=9,12000=1""#);
    }

    #[test]
    fn refuses_counts_outside_the_dataset_and_too_many_counts() {
        let above = (MAX_COUNT + 1).to_string();
        for bad in [
            "0",
            "-1",
            "many",
            above.as_str(),
            "708,708",
            "708=0",
            "1=1,2=x",
        ] {
            assert!(bad.parse::<CountMix>().is_err(), "{bad:?} accepted");
        }
        let nine: Vec<String> = (1..=9).map(|count| count.to_string()).collect();
        let error = nine.join(",").parse::<CountMix>().unwrap_err();
        assert!(error.contains("at most 8"), "{error}");
        assert!(nine[..8].join(",").parse::<CountMix>().is_ok());
    }

    #[test]
    fn draws_are_deterministic_per_seed_and_follow_the_weights() {
        let mix: CountMix = "708=9,12000=1".parse().unwrap();
        let draws = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10_000).map(|_| mix.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(5), draws(5));
        assert_ne!(draws(5), draws(6));
        let large = draws(5).iter().filter(|&&count| count == 12_000).count();
        assert!(
            (800..1_200).contains(&large),
            "12000 drawn {large} of 10000"
        );
    }
}
