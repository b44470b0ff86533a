//! A weighted choice among a few items, drawn per request from the run's seeded RNG: what the
//! endpoint mix (`api=3,shm=1`), the count mix (`708=9,12000=1`) and the request mix (counts and
//! upstream paths, [`super::target::RequestMix`]) share, including their command-line form.

use std::fmt;

use rand::Rng;

/// Items with whole-number weights; an item of weight 0 is listed but never drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighted<T> {
    items: Vec<(T, u32)>,
    total: u32,
}

impl<T: Clone + PartialEq + fmt::Display> Weighted<T> {
    /// Refuses an item listed twice and a mix whose weights sum to 0 (or overflow); `noun`
    /// names an item in the errors ("endpoint", "count").
    pub fn new(items: Vec<(T, u32)>, noun: &str) -> Result<Self, String> {
        for (index, (item, _)) in items.iter().enumerate() {
            if items[..index].iter().any(|(earlier, _)| earlier == item) {
                return Err(format!("{noun} {item} listed twice"));
            }
        }
        let total = items
            .iter()
            .try_fold(0u32, |sum, &(_, weight)| sum.checked_add(weight))
            .ok_or_else(|| format!("{noun} weights overflow"))?;
        if total == 0 {
            return Err(format!(
                "the {noun} mix needs at least one {noun} with a weight above 0"
            ));
        }
        Ok(Weighted { items, total })
    }

    /// `item` alone.
    pub fn one(item: T) -> Self {
        Weighted {
            items: vec![(item, 1)],
            total: 1,
        }
    }

    /// `item=weight,...` (a missing `=weight` is 1), each item read by `parse_item`.
    pub fn parse(
        text: &str,
        noun: &str,
        parse_item: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Self, String> {
        let items = text
            .split(',')
            .map(|part| match part.split_once('=') {
                Some((item, weight)) => Ok((
                    parse_item(item.trim())?,
                    weight
                        .trim()
                        .parse()
                        .map_err(|_| format!("weight {weight:?} is not a whole number"))?,
                )),
                None => Ok((parse_item(part.trim())?, 1)),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Weighted::new(items, noun)
    }

    /// Every item with its weight, as listed.
    pub fn items(&self) -> &[(T, u32)] {
        &self.items
    }

    /// The items that can be drawn (weight above 0), as listed.
    pub fn drawable(&self) -> impl Iterator<Item = T> + '_ {
        self.items
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(item, _)| item.clone())
    }

    /// The one item drawn every time, if there is only one that can be drawn.
    pub fn only(&self) -> Option<T> {
        self.items
            .iter()
            .find(|&&(_, weight)| weight == self.total)
            .map(|(item, _)| item.clone())
    }

    /// Draws one item by weight. A mix with a single drawable item takes nothing from `rng`,
    /// so adding a one-item mix to a run leaves its other draws (think times, endpoint picks)
    /// exactly as they were.
    pub fn pick(&self, rng: &mut impl Rng) -> T {
        if let Some(item) = self.only() {
            return item;
        }
        let mut ticket = rng.random_range(0..self.total);
        for (item, weight) in &self.items {
            if ticket < *weight {
                return item.clone();
            }
            ticket -= weight;
        }
        unreachable!(
            "ticket {ticket} drawn below the total weight {}",
            self.total
        )
    }
}

/// The command-line form, every weight written: `api=1,shm=3`.
impl<T: fmt::Display> fmt::Display for Weighted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (item, weight)) in self.items.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}={weight}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn letter(text: &str) -> Result<char, String> {
        match text.as_bytes() {
            [byte @ b'a'..=b'z'] => Ok(char::from(*byte)),
            _ => Err(format!("{text:?} is not a letter")),
        }
    }

    #[test]
    fn parses_items_and_weights_and_writes_them_back() {
        let mix = Weighted::parse("a=3, b", "letter", letter).unwrap();
        assert_eq!(mix.items(), &[('a', 3), ('b', 1)]);
        assert_eq!(mix.to_string(), "a=3,b=1");
        for bad in ["A", "a,a", "a=0", "a=x", "a=4294967295,b=1", ""] {
            assert!(
                Weighted::parse(bad, "letter", letter).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        let mix = Weighted::parse("a=1,b=3", "letter", letter).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let b = (0..10_000).filter(|_| mix.pick(&mut rng) == 'b').count();
        assert!((7_200..7_800).contains(&b), "b drawn {b} of 10000");
    }

    #[test]
    fn a_single_drawable_item_takes_nothing_from_the_rng() {
        let mix = Weighted::parse("a=0,b=2", "letter", letter).unwrap();
        assert_eq!(mix.only(), Some('b'));
        assert_eq!(mix.drawable().collect::<Vec<_>>(), vec!['b']);
        let mut used = StdRng::seed_from_u64(3);
        let mut untouched = StdRng::seed_from_u64(3);
        assert!((0..100).all(|_| mix.pick(&mut used) == 'b'));
        assert_eq!(used.random::<u64>(), untouched.random::<u64>());
        assert_eq!(
            Weighted::parse("a,b", "letter", letter).unwrap().only(),
            None
        );
    }
}
