//! A waiting room in front of a [`MemoryBudget`] (users-service's `--making-budget`): a request
//! whose body does not fit beside the bodies being made now waits for its turn, first come
//! first served, when the budget is expected to make room for it within the request's wait
//! limit; otherwise it is refused at once, as the budget alone does.
//!
//! Why wait at all: a refused client comes back after `Retry-After`, a whole second, and a
//! burst's first bodies are made well within it, so a budget that only refuses leaves the cores
//! idle until the retries arrive (measured: 64 large bodies at once served at half the rate of
//! four at a time). Why not wait unboundedly: waiters whose turn cannot come before their
//! deadline would all miss it together, and hold their connections meanwhile. So the room is
//! sized by time: the bytes ahead of a request (those waiting, and the part of its own that
//! does not fit now) divided by the rate at which the budget has been releasing bytes while busy
//! ([`DrainRate`]) must be within its wait limit. Before any rate is known, one budget's worth
//! may wait.
//!
//! A body of at most [`SMALL_BYTES`] never waits behind the queue: it takes room if there is
//! any, so a small request is served during a burst of large ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::memory_budget::{MemoryBudget, OverBudget, Reservation};

/// A body this small takes room when there is some, even with requests waiting.
pub const SMALL_BYTES: u64 = 1 << 20;

/// Busy time over which one sample of the drain rate is taken.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// Weight of the newest sample in the drain rate's moving average.
const RATE_WEIGHT: f64 = 0.3;

/// The budget and the requests waiting for it (cheap to clone).
#[derive(Clone, Debug)]
pub struct WaitingRoom {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    budget: MemoryBudget,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting requests, in arrival order; only the first tries to take room.
    queue: VecDeque<Waiter>,
    /// The bytes of every request in `queue`.
    queued: u64,
    /// Bytes reserved by admitted requests now.
    held: u64,
    next_id: u64,
    drain: DrainRate,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: u64,
    turn: Arc<Notify>,
}

/// A request's room in the budget, held until it is dropped; dropping it hands the room on.
#[derive(Debug)]
pub struct Admitted {
    reservation: Option<Reservation>,
    shared: Arc<Shared>,
}

/// The rate at which the budget releases bytes while anything is held: bytes released over busy
/// time, sampled every [`RATE_WINDOW`] of busy time, as a moving average.
#[derive(Debug, Default)]
struct DrainRate {
    busy_since: Option<Instant>,
    window_busy: Duration,
    window_bytes: u64,
    bytes_per_second: Option<f64>,
}

impl WaitingRoom {
    pub fn new(budget: MemoryBudget) -> WaitingRoom {
        WaitingRoom {
            shared: Arc::new(Shared {
                budget,
                state: Mutex::default(),
            }),
        }
    }

    /// Room for `bytes`: at once if it fits and nobody is waiting (or it is small), otherwise
    /// after waiting at most `wait_limit` for its turn; refused at once if its turn is not
    /// expected within `wait_limit`, and refused when `wait_limit` passes without it.
    pub async fn admit(&self, bytes: u64, wait_limit: Duration) -> Result<Admitted, OverBudget> {
        let started = Instant::now();
        let (id, turn) = {
            let mut state = self.shared.state();
            if state.queue.is_empty() || bytes <= SMALL_BYTES {
                if let Ok(reservation) = self.shared.budget.reserve(bytes) {
                    return Ok(self.shared.admitted(&mut state, reservation, started));
                }
            }
            let expected = state.expected_wait(bytes, self.shared.budget.bytes());
            if bytes > self.shared.budget.bytes() || expected.is_none_or(|at| at > wait_limit) {
                return Err(self.shared.budget.refusal(bytes));
            }
            state.enqueue(bytes)
        };
        metrics::counter!("budget_waits_total", "budget" => self.shared.budget.kind().as_str())
            .increment(1);
        let mut place = Place {
            shared: &self.shared,
            id,
        };
        let until = started + wait_limit;
        loop {
            if let Some(admitted) = place.try_take(started) {
                return Ok(admitted);
            }
            if tokio::time::timeout_at(until, turn.notified())
                .await
                .is_err()
            {
                drop(place);
                return Err(self.shared.budget.refusal(bytes));
            }
        }
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.state().queue.len()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `reservation` as held, from `asked` (when its request came) until it is dropped.
    fn admitted(
        self: &Arc<Self>,
        state: &mut State,
        reservation: Reservation,
        asked: Instant,
    ) -> Admitted {
        let now = Instant::now();
        if state.held == 0 {
            state.drain.busy_from(now);
        }
        state.held += reservation.bytes();
        metrics::histogram!("budget_wait_seconds", "budget" => self.budget.kind().as_str())
            .record(now.duration_since(asked).as_secs_f64());
        Admitted {
            reservation: Some(reservation),
            shared: Arc::clone(self),
        }
    }

    /// Gives the first waiter its turn to try.
    fn wake_first(state: &State) {
        if let Some(first) = state.queue.front() {
            first.turn.notify_one();
        }
    }
}

impl State {
    fn enqueue(&mut self, bytes: u64) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let turn = Arc::new(Notify::new());
        self.queue.push_back(Waiter {
            id,
            bytes,
            turn: Arc::clone(&turn),
        });
        self.queued += bytes;
        (id, turn)
    }

    /// How long until `bytes` more would fit behind the queue, at the drain rate; `None` if
    /// that cannot be told (no rate yet, and more than one budget's worth would be waiting).
    fn expected_wait(&self, bytes: u64, budget: u64) -> Option<Duration> {
        let room = budget.saturating_sub(self.held);
        let needed = (self.queued + bytes).saturating_sub(room);
        if needed == 0 {
            return Some(Duration::ZERO);
        }
        match self.drain.bytes_per_second {
            Some(rate) => Some(Duration::from_secs_f64(needed as f64 / rate)),
            None => (self.queued + bytes <= budget).then_some(Duration::ZERO),
        }
    }
}

/// A waiter's place in the queue; dropping it (the wait timed out, or the request was
/// dropped) leaves the queue and, if it was first, gives the next its turn.
struct Place<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
}

impl Place<'_> {
    /// Takes room if this waiter is first and its bytes fit now; then the next waiter gets its
    /// turn to try too.
    fn try_take(&mut self, asked: Instant) -> Option<Admitted> {
        let mut state = self.shared.state();
        let first = state.queue.front()?;
        if first.id != self.id {
            return None;
        }
        let bytes = first.bytes;
        let reservation = self.shared.budget.reserve(bytes).ok()?;
        state.queue.pop_front();
        state.queued -= bytes;
        // Popped: dropping this place now has nothing to remove.
        self.id = u64::MAX;
        Shared::wake_first(&state);
        Some(self.shared.admitted(&mut state, reservation, asked))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        let Some(index) = state.queue.iter().position(|waiter| waiter.id == self.id) else {
            return;
        };
        let waiter = state.queue.remove(index).expect("found just now");
        state.queued -= waiter.bytes;
        if index == 0 {
            Shared::wake_first(&state);
        }
    }
}

impl Admitted {
    /// Bytes held (in whole pages).
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.reservation.as_ref().map_or(0, Reservation::bytes)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let bytes = reservation.bytes();
        let mut state = self.shared.state();
        drop(reservation);
        state.held -= bytes;
        let held = state.held;
        state.drain.released(bytes, held, Instant::now());
        Shared::wake_first(&state);
    }
}

impl DrainRate {
    fn busy_from(&mut self, now: Instant) {
        self.busy_since = Some(now);
    }

    /// `bytes` were released at `now`, leaving `held` reserved.
    fn released(&mut self, bytes: u64, held: u64, now: Instant) {
        self.window_bytes += bytes;
        let Some(since) = self.busy_since else {
            return;
        };
        let busy = self.window_busy + now.duration_since(since);
        if busy >= RATE_WINDOW {
            let sample = self.window_bytes as f64 / busy.as_secs_f64();
            self.bytes_per_second = Some(match self.bytes_per_second {
                Some(rate) => rate + RATE_WEIGHT * (sample - rate),
                None => sample,
            });
            self.window_bytes = 0;
            self.window_busy = Duration::ZERO;
            self.busy_since = (held > 0).then_some(now);
        } else if held == 0 {
            self.window_busy = busy;
            self.busy_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_budget::BudgetKind;

    const MIB: u64 = 1 << 20;
    const LONG: Duration = Duration::from_secs(3600);

    fn room(mib: u64) -> WaitingRoom {
        WaitingRoom::new(MemoryBudget::new(BudgetKind::Making, mib * MIB))
    }

    /// Lets every spawned task run until it waits.
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_fit_waits_for_the_room_released_before_it() {
        let room = room(10);
        let first = room.admit(8 * MIB, LONG).await.unwrap();
        let waiting = tokio::spawn({
            let room = room.clone();
            async move { room.admit(8 * MIB, LONG).await.map(|held| held.bytes()) }
        });
        settle().await;
        assert_eq!(room.waiting(), 1);
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap().unwrap(), 8 * MIB);
        assert_eq!(room.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_take_their_turns_in_order_and_only_a_small_body_passes_them() {
        let room = room(10);
        let first = room.admit(8 * MIB, LONG).await.unwrap();
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        // The second would fit beside the first, but comes after one that does not.
        for (name, bytes) in [("large", 6 * MIB), ("medium", 3 * MIB / 2)] {
            let (room, admitted) = (room.clone(), Arc::clone(&admitted));
            waiters.push(tokio::spawn(async move {
                let held = room.admit(bytes, LONG).await.unwrap();
                admitted.lock().unwrap().push(name);
                held
            }));
            settle().await;
        }
        assert_eq!(room.waiting(), 2);
        let small = room.admit(SMALL_BYTES, LONG).await.unwrap();
        assert!(admitted.lock().unwrap().is_empty());
        drop((first, small));
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*admitted.lock().unwrap(), ["large", "medium"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_not_expected_within_the_limit_is_refused_at_once() {
        let room = room(10);
        // Before any rate is known, one budget's worth may wait.
        let full = room.admit(10 * MIB, LONG).await.unwrap();
        let over = room.admit(11 * MIB, LONG).await.unwrap_err();
        assert_eq!(over.wanted, 11 * MIB);
        // 10 MiB released after one busy second: a drain rate of 10 MiB/s.
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(full);
        let full = room.admit(10 * MIB, LONG).await.unwrap();
        let asked = Instant::now();
        let refused = room.admit(4 * MIB, Duration::from_millis(300)).await;
        assert!(refused.is_err(), "4 MiB at 10 MiB/s is 0.4 s away");
        assert_eq!(Instant::now(), asked, "refused without waiting");
        let waiting = tokio::spawn({
            let room = room.clone();
            async move {
                room.admit(4 * MIB, Duration::from_millis(500))
                    .await
                    .is_ok()
            }
        });
        settle().await;
        assert_eq!(room.waiting(), 1);
        drop(full);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_past_its_limit_is_refused_and_the_next_takes_its_turn() {
        let room = room(10);
        let _first = room.admit(8 * MIB, LONG).await.unwrap();
        let impatient = tokio::spawn({
            let room = room.clone();
            async move {
                room.admit(6 * MIB, Duration::from_millis(100))
                    .await
                    .is_ok()
            }
        });
        settle().await;
        let next = tokio::spawn({
            let room = room.clone();
            async move { room.admit(3 * MIB / 2, LONG).await.map(|held| held.bytes()) }
        });
        settle().await;
        assert_eq!(room.waiting(), 2);
        // The first waiter gives up after its 100 ms; the second fits beside what is held.
        assert!(!impatient.await.unwrap());
        assert_eq!(next.await.unwrap().unwrap(), 3 * MIB / 2);
        assert_eq!(room.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_leaves_the_queue() {
        let room = room(10);
        let first = room.admit(8 * MIB, LONG).await.unwrap();
        let dropped = tokio::spawn({
            let room = room.clone();
            async move { room.admit(6 * MIB, LONG).await.map(drop) }
        });
        settle().await;
        assert_eq!(room.waiting(), 1);
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(room.waiting(), 0);
        drop(first);
        // Nothing is left held or queued: the whole budget is free again.
        room.admit(10 * MIB, Duration::ZERO).await.unwrap();
    }
}
