//! The hog of a memory-pressure round: a same-uid peer of users-service's control channel, not
//! the gateway, that asks for a large body again and again and redeems none, so that it holds
//! its share of the sealed bytes ([`Holding`]); how it must have been refused
//! ([`judge_share`]); and its release, after which every publication it held must be withdrawn
//! at once. The socket work is the rogue peer's [`Hog`].

use tokio::time::Instant;

use crate::harness::faults::channel::blocking;
use crate::harness::faults::error::InjectError;
use crate::harness::faults::rogue::{Hog, HogEnd, WITHDRAW_TIMEOUT, Withdrawal, release_hog};
use crate::harness::memory::mib;

/// The hog, holding what it took.
pub struct Holding {
    hog: Hog,
    /// When it held its share (its last request answered).
    since: Instant,
}

/// A hold over: what the hog held, from when to when, and what became of its publications.
pub struct Released {
    pub since: Instant,
    /// Just before the hog's connection closed.
    pub at: Instant,
    pub held_bytes: u64,
    /// Publications the hog held.
    pub publications: usize,
    pub withdrawal: Withdrawal,
}

impl Released {
    /// Whether every publication of the hog still waited when it let go: then it held them all
    /// from `since` to `at` (a publication that stopped waiting never waits again).
    pub fn held_throughout(&self) -> bool {
        self.publications > 0 && self.withdrawal.at_close == self.publications
    }

    /// Why the release was not clean: publications still waiting after the withdraw timeout.
    pub fn violation(&self) -> Option<String> {
        self.withdrawal.after.is_none().then(|| {
            format!(
                "{} of the hog's publications still waited {WITHDRAW_TIMEOUT:?} after it closed its connection",
                self.withdrawal.left
            )
        })
    }

    pub fn seconds(&self) -> f64 {
        self.at.duration_since(self.since).as_secs_f64()
    }
}

/// Connects to `@socket` and publishes `request` until refused, holding every publication.
pub async fn take(socket: &str, request: &[u8]) -> Result<Holding, InjectError> {
    let (socket, request) = (socket.to_owned(), request.to_vec());
    let hog = blocking("hog", move || Hog::take_with(&socket, &request)).await?;
    Ok(Holding {
        hog,
        since: Instant::now(),
    })
}

impl Holding {
    pub fn end(&self) -> HogEnd {
        self.hog.report().end
    }

    pub fn held_bytes(&self) -> u64 {
        self.hog.held_bytes()
    }

    /// Closes the hog's connection and watches its publications be withdrawn.
    pub async fn release(self) -> Result<Released, InjectError> {
        let Holding { hog, since } = self;
        let held_bytes = hog.held_bytes();
        let publications = hog.report().held.len();
        let at = Instant::now();
        let withdrawal = release_hog(hog).await?;
        Ok(Released {
            since,
            at,
            held_bytes,
            publications,
            withdrawal,
        })
    }
}

/// The verdict on a hog that asked for bodies of `body` bytes until refused, with a `share` of
/// the sealed bytes: it must end refused exhausted, holding no more than its share, and no less
/// than its share leaves room for (one more body would not have fit).
pub fn judge_share(end: &HogEnd, held_bytes: u64, body: u64, share: u64) -> Result<(), String> {
    if *end != HogEnd::Exhausted {
        return Err(format!(
            "the hog was not refused exhausted at its share of the sealed bytes: {end:?}"
        ));
    }
    if held_bytes > share {
        return Err(format!(
            "the hog held {} of sealed payloads, above its share of {}",
            mib(held_bytes),
            mib(share)
        ));
    }
    if held_bytes + body <= share {
        return Err(format!(
            "the hog was refused holding {}, though its share of {} had room for another {}",
            mib(held_bytes),
            mib(share),
            mib(body)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_hog_must_be_refused_exhausted_exactly_at_its_share() {
        let judge = |end: HogEnd, held: u64| judge_share(&end, held * MIB, 60 * MIB, 128 * MIB);
        assert_eq!(judge(HogEnd::Exhausted, 120), Ok(()));
        let early = judge(HogEnd::Exhausted, 60).unwrap_err();
        assert!(early.contains("refused holding 60 MiB"), "{early}");
        let over = judge(HogEnd::Exhausted, 180).unwrap_err();
        assert!(over.contains("above its share of 128 MiB"), "{over}");
        for end in [
            HogEnd::NeverRefused,
            HogEnd::PeerBusy { limit: 32 },
            HogEnd::Answered { status: 503 },
        ] {
            let error = judge(end, 120).unwrap_err();
            assert!(error.contains("not refused exhausted"), "{error}");
        }
    }

    fn released(publications: usize, at_close: usize, left: usize) -> Released {
        let since = Instant::now();
        Released {
            since,
            at: since + Duration::from_secs(2),
            held_bytes: 120 * MIB,
            publications,
            withdrawal: Withdrawal {
                at_close,
                after: (left == 0).then_some(Duration::from_millis(1)),
                left,
            },
        }
    }

    #[test]
    fn a_hold_counts_only_if_every_publication_waited_to_the_end() {
        let whole = released(2, 2, 0);
        assert!(whole.held_throughout());
        assert_eq!(whole.violation(), None);
        assert_eq!(whole.seconds(), 2.0);
        assert!(!released(2, 1, 0).held_throughout(), "the reaper took one");
        assert!(!released(0, 0, 0).held_throughout(), "nothing held");
        let stuck = released(2, 2, 1);
        assert!(stuck.held_throughout());
        assert!(
            stuck
                .violation()
                .unwrap()
                .contains("1 of the hog's publications")
        );
    }
}
