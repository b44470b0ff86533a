//! From a target body size to a `count`: the count whose body is the largest not above the
//! target, found by probing users-service (`Content-Length` of `GET /users`), with every answer
//! kept for the rest of the run so the next size of the ladder starts from what is known.
//!
//! The search relies on what the dataset guarantees: the first N users of any larger `count`
//! are the same N users, so the body grows strictly with `count`. Bodies are close to linear in
//! `count` (a few hundred bytes per user), so it interpolates inside the bracket of known counts,
//! and an estimate that keeps landing on one side of the answer is pushed past by a doubling
//! margin: a handful of probes per size, and few more for bodies far from linear. Every probe
//! lies strictly inside the bracket, so the search always ends. A count the service refuses (400: the
//! dataset's cap) closes the bracket from above like a body that is too large, and a target that
//! only refused counts could reach is reported as above the cap.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Client, StatusCode, Url};
use serde::Serialize;

/// What users-service answered for one count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probed {
    /// The body of this count is this many bytes.
    Bytes(u64),
    /// The count is above the dataset's cap (a 400).
    Refused,
}

/// A count and the size of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Fit {
    pub count: u32,
    pub bytes: u64,
}

/// Where a target size lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reach", rename_all = "snake_case")]
pub enum Reach {
    /// `count` gives the largest body not above the target (`count + 1` gives more).
    Reached(Fit),
    /// Every count the service accepts gives less than the target; `largest` is the body of
    /// the largest accepted count (none if it refuses even one user).
    AboveCap { largest: Option<Fit> },
    /// One user's body is already larger than the target.
    BelowOneUser { bytes: u64 },
}

impl Reach {
    /// The count to measure, if the target is reachable.
    pub fn fit(self) -> Option<Fit> {
        match self {
            Reach::Reached(fit) => Some(fit),
            Reach::AboveCap { .. } | Reach::BelowOneUser { .. } => None,
        }
    }
}

/// For the reports: why a size was not measured (a reached size says where).
impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Reached(fit) => write!(f, "count {} gives {} bytes", fit.count, fit.bytes),
            Reach::AboveCap {
                largest: Some(largest),
            } => write!(
                f,
                "unreachable: cap (the largest count users-service accepts, {}, gives {} bytes)",
                largest.count, largest.bytes
            ),
            Reach::AboveCap { largest: None } => {
                f.write_str("unreachable: cap (users-service refuses even one user)")
            }
            Reach::BelowOneUser { bytes } => {
                write!(f, "unreachable: below one user ({bytes} bytes)")
            }
        }
    }
}

/// Every count probed so far in this run, and the search over them.
#[derive(Debug, Default)]
pub struct CountSearch {
    known: BTreeMap<u32, Probed>,
    probes: u32,
}

impl CountSearch {
    /// Probes made so far (answers taken from what is known are not counted).
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// Where `target` bytes land, asking `probe` for the counts not known yet.
    pub async fn find<E>(
        &mut self,
        target: u64,
        mut probe: impl AsyncFnMut(u32) -> Result<Probed, E>,
    ) -> Result<Reach, E> {
        match self.probe_once(1, &mut probe).await? {
            Probed::Refused => return Ok(Reach::AboveCap { largest: None }),
            Probed::Bytes(bytes) if bytes > target => return Ok(Reach::BelowOneUser { bytes }),
            Probed::Bytes(_) => {}
        }
        // Which end of the bracket the last probes moved, and how many times in a row: an
        // estimate that keeps landing on one side is pushed past, by a doubling margin.
        let mut streak: Option<(End, u32)> = None;
        loop {
            let lower = self.largest_within(target);
            let above = self
                .known
                .range(lower.count.saturating_add(1)..)
                .next()
                .map(|(&count, &probed)| (count, probed));
            let guess = match above {
                _ if lower.bytes == target || lower.count == u32::MAX => {
                    return Ok(Reach::Reached(lower));
                }
                Some((upper, Probed::Bytes(_))) if upper == lower.count + 1 => {
                    return Ok(Reach::Reached(lower));
                }
                Some((upper, Probed::Refused)) if upper == lower.count + 1 => {
                    return Ok(Reach::AboveCap {
                        largest: Some(lower),
                    });
                }
                Some((upper, Probed::Bytes(upper_bytes))) => {
                    let upper = Fit {
                        count: upper,
                        bytes: upper_bytes,
                    };
                    pushed(interpolate(lower, upper, target), streak)
                        .clamp(lower.count + 1, upper.count - 1)
                }
                Some((upper, Probed::Refused)) => lower.count + (upper - lower.count) / 2,
                None => extrapolate(lower, target),
            };
            let end = match self.probe_once(guess, &mut probe).await? {
                Probed::Bytes(bytes) if bytes <= target => End::Lower,
                Probed::Bytes(_) | Probed::Refused => End::Upper,
            };
            streak = Some(match streak {
                Some((last, times)) if last == end => (end, times + 1),
                _ => (end, 1),
            });
        }
    }

    async fn probe_once<E>(
        &mut self,
        count: u32,
        probe: &mut impl AsyncFnMut(u32) -> Result<Probed, E>,
    ) -> Result<Probed, E> {
        if let Some(&known) = self.known.get(&count) {
            return Ok(known);
        }
        let probed = probe(count).await?;
        self.probes += 1;
        self.known.insert(count, probed);
        Ok(probed)
    }

    /// The largest known count whose body is not above `target` (count 1 is known to be).
    fn largest_within(&self, target: u64) -> Fit {
        self.known
            .iter()
            .filter_map(|(&count, &probed)| match probed {
                Probed::Bytes(bytes) if bytes <= target => Some(Fit { count, bytes }),
                _ => None,
            })
            .next_back()
            .expect("count 1 was probed and fits before the search starts")
    }
}

/// The end of the bracket a probe moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The probed body was not above the target.
    Lower,
    /// It was above, or the count was refused.
    Upper,
}

/// The largest count the straight line between `lower` and `upper` keeps within `target`
/// (at least `lower`'s).
fn interpolate(lower: Fit, upper: Fit, target: u64) -> u32 {
    let span = u128::from(upper.count - lower.count);
    let rise = u128::from(upper.bytes.saturating_sub(lower.bytes)).max(1);
    let step = u128::from(target - lower.bytes) * span / rise;
    u32::try_from(u128::from(lower.count) + step).unwrap_or(u32::MAX)
}

/// `estimate` moved away from the end the last probes kept moving: not at all after one move
/// (a good estimate is then one probe from the answer), then by 1, 2, 4, ... users.
fn pushed(estimate: u32, streak: Option<(End, u32)>) -> u32 {
    match streak {
        Some((end, times)) if times >= 2 => {
            let push = 1u32 << (times - 2).min(31);
            match end {
                End::Lower => estimate.saturating_add(push),
                End::Upper => estimate.saturating_sub(push),
            }
        }
        _ => estimate,
    }
}

/// With nothing known above `lower`: its bytes per user carried on to `target`, 1% past it so
/// the next probe usually brackets the answer; at least one more user.
fn extrapolate(lower: Fit, target: u64) -> u32 {
    let per_user = lower.bytes as f64 / f64::from(lower.count);
    let guess = (target as f64 / per_user * 1.01).ceil();
    (guess.min(f64::from(u32::MAX)) as u32).max(lower.count + 1)
}

/// Why a probe of users-service failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot build the probe's HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("probing {url}: {source}")]
    Request { url: Url, source: reqwest::Error },
    #[error("probing {url}: no answer within {timeout:?}")]
    Timeout { url: Url, timeout: Duration },
    #[error("probing {url}: answered {status}")]
    Status { url: Url, status: StatusCode },
    #[error("probing {url}: the answer has no Content-Length")]
    NoLength { url: Url },
}

/// Asks users-service's `GET /users` for the `Content-Length` of a count: the size as the
/// service itself serves it (and its cap as it enforces it), whatever generator it runs.
pub struct HttpProbe {
    client: Client,
    users: Url,
    seed: u64,
    timeout: Duration,
}

impl HttpProbe {
    /// Probes `GET {users_service}/users?count=N&seed={seed}`, each within `timeout`.
    pub fn new(users_service: &Url, seed: u64, timeout: Duration) -> Result<Self, ProbeError> {
        let client = Client::builder()
            .no_proxy()
            .build()
            .map_err(ProbeError::Client)?;
        let mut users = users_service.clone();
        users.set_path("/users");
        Ok(HttpProbe {
            client,
            users,
            seed,
            timeout,
        })
    }

    /// The body size for `count`; only the head is read (the body is dropped unread).
    pub async fn probe(&self, count: u32) -> Result<Probed, ProbeError> {
        let mut url = self.users.clone();
        url.query_pairs_mut()
            .clear()
            .append_pair("count", &count.to_string())
            .append_pair("seed", &self.seed.to_string());
        let response = tokio::time::timeout(self.timeout, self.client.get(url.clone()).send())
            .await
            .map_err(|_| ProbeError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
            .map_err(|source| ProbeError::Request {
                url: url.clone(),
                source,
            })?;
        match response.status() {
            StatusCode::OK => response
                .content_length()
                .map(Probed::Bytes)
                .ok_or(ProbeError::NoLength { url }),
            StatusCode::BAD_REQUEST => Ok(Probed::Refused),
            status => Err(ProbeError::Status { url, status }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A dataset shaped like the real one: `[`, users of 340..389 bytes joined by commas, `]`.
    fn body_sizes(max_count: u32) -> Vec<u64> {
        let mut sizes = vec![2];
        let mut total = 2u64;
        for user in 1..=u64::from(max_count) {
            total += 340 + (user * 7_919) % 50 + u64::from(user > 1);
            sizes.push(total);
        }
        sizes
    }

    /// The answer by brute force: the largest count whose body is not above `target`.
    fn brute_force(sizes: &[u64], cap: u32, target: u64) -> Reach {
        if sizes[1] > target {
            return Reach::BelowOneUser { bytes: sizes[1] };
        }
        let count = (1..=cap)
            .rev()
            .find(|&c| sizes[c as usize] <= target)
            .unwrap();
        let fit = Fit {
            count,
            bytes: sizes[count as usize],
        };
        if count == cap && sizes[count as usize] != target {
            Reach::AboveCap { largest: Some(fit) }
        } else {
            Reach::Reached(fit)
        }
    }

    fn search_sync(search: &mut CountSearch, target: u64, bytes: impl Fn(u32) -> Probed) -> Reach {
        let probe = async |count: u32| Ok::<_, Infallible>(bytes(count));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(search.find(target, probe)).unwrap()
    }

    fn capped(sizes: &[u64], cap: u32) -> impl Fn(u32) -> Probed + '_ {
        move |count| {
            if count > cap {
                Probed::Refused
            } else {
                Probed::Bytes(sizes[count as usize])
            }
        }
    }

    #[test]
    fn finds_the_largest_count_not_above_every_target_in_a_few_probes() {
        let sizes = body_sizes(200_000);
        let cap = 200_000;
        for target in (1..70)
            .map(|step| step * 999_983)
            .chain([1_024, 4_096, 65_536])
        {
            let mut search = CountSearch::default();
            let found = search_sync(&mut search, target, capped(&sizes, cap));
            assert_eq!(found, brute_force(&sizes, cap, target), "target {target}");
            assert!(
                search.probes() <= 5,
                "{} probes for {target}",
                search.probes()
            );
        }
    }

    #[test]
    fn a_ladder_reuses_what_earlier_sizes_probed() {
        let sizes = body_sizes(200_000);
        let mut search = CountSearch::default();
        let mut probes_per_size = Vec::new();
        for target in (10..=26).map(|power| 1u64 << power) {
            let before = search.probes();
            let found = search_sync(&mut search, target, capped(&sizes, 200_000));
            assert_eq!(
                found,
                brute_force(&sizes, 200_000, target),
                "target {target}"
            );
            probes_per_size.push(search.probes() - before);
        }
        let again = search.probes();
        search_sync(&mut search, 1 << 20, |_| panic!("1 MiB was found before"));
        assert_eq!(search.probes(), again);
        assert!(
            probes_per_size.iter().all(|&probes| probes <= 3),
            "{probes_per_size:?}"
        );
    }

    #[test]
    fn targets_past_the_cap_are_above_it_and_the_cap_is_found_by_bisection() {
        let sizes = body_sizes(20_000);
        let cap = 10_000;
        let mut search = CountSearch::default();
        let cap_bytes = sizes[cap as usize];
        for target in [cap_bytes - 1, cap_bytes, cap_bytes + 1, 64 << 20] {
            let found = search_sync(&mut search, target, capped(&sizes, cap));
            assert_eq!(found, brute_force(&sizes, cap, target), "target {target}");
        }
        assert_eq!(
            search_sync(&mut CountSearch::default(), 64 << 20, capped(&sizes, cap)),
            Reach::AboveCap {
                largest: Some(Fit {
                    count: cap,
                    bytes: cap_bytes
                })
            }
        );
        // bisection over 1..~190,000 takes about 17 probes, not one per count
        assert!(search.probes() <= 24, "{} probes", search.probes());
    }

    #[test]
    fn tiny_targets_and_a_service_that_refuses_everything() {
        let sizes = body_sizes(10);
        assert_eq!(
            search_sync(&mut CountSearch::default(), 100, capped(&sizes, 10)),
            Reach::BelowOneUser { bytes: sizes[1] }
        );
        assert_eq!(
            search_sync(&mut CountSearch::default(), 1 << 20, |_| Probed::Refused),
            Reach::AboveCap { largest: None }
        );
    }

    #[test]
    fn a_body_far_from_linear_is_still_found_exactly() {
        // cubic growth: interpolation keeps landing below, the doubling push bounds it
        let cubic = |count: u32| Probed::Bytes(u64::from(count).saturating_pow(3));
        for target in [7, 8, 9, 1_000_000, 999_999_999_999, 123_456_789] {
            let mut search = CountSearch::default();
            let Reach::Reached(fit) = search_sync(&mut search, target, cubic) else {
                panic!("target {target} not reached");
            };
            let count = u64::from(fit.count);
            assert!(
                count.pow(3) <= target && (count + 1).pow(3) > target,
                "{target}"
            );
            assert!(
                search.probes() <= 32,
                "{} probes for {target}",
                search.probes()
            );
        }
    }

    #[test]
    fn unreachable_sizes_say_why() {
        let largest = Fit {
            count: 10_000,
            bytes: 3_633_046,
        };
        assert_eq!(
            Reach::AboveCap {
                largest: Some(largest)
            }
            .to_string(),
            "unreachable: cap (the largest count users-service accepts, 10000, gives 3633046 bytes)"
        );
        assert_eq!(
            Reach::BelowOneUser { bytes: 361 }.to_string(),
            "unreachable: below one user (361 bytes)"
        );
        assert_eq!(Reach::Reached(largest).fit(), Some(largest));
        assert_eq!(Reach::BelowOneUser { bytes: 1 }.fit(), None);
    }

    #[test]
    fn a_probe_error_ends_the_search() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut search = CountSearch::default();
        let failing = async |count: u32| {
            if count == 1 {
                Ok(Probed::Bytes(300))
            } else {
                Err("down")
            }
        };
        assert_eq!(runtime.block_on(search.find(4_096, failing)), Err("down"));
    }
}
