//! A bound on bytes a service holds or makes for requests in flight, refused at once past it:
//! each service has one ([`BudgetKind`]).
//!
//! - The gateway's `--memory-budget`: the bytes of answers it holds — REST bodies as they
//!   arrive, bodies copied out of slots or received inline, sealed mappings pinned by a response
//!   still being written, and the users bodies it serializes itself while it makes them (a
//!   cache then holds them, under its own bound). A response carries its
//!   reservation in its body ([`HeldBody`]), so the bytes stay counted until the connection has
//!   taken the last frame of them, or the client left.
//! - users-service's `--making-budget`: the bytes of bodies being made at once (their size
//!   known, or bounded, from the query before any work), which is also the CPU they take: on a
//!   small host, a burst of large bodies made all at once finishes none of them in time.
//!
//! A request past the budget gets `503` with `Retry-After` (`gateway_busy`, `users_service_busy`),
//! counted in `budget_refusals_total{budget}`: at once, unless it may wait. users-service's
//! requests wait in a [`crate::waiting_room::WaitingRoom`] when their turn is expected within
//! `--making-wait`; a body the gateway has been handed already waits for room until its
//! deadline ([`MemoryBudget::reserve_by`]), since refusing it would waste the work that made
//! it. `budget_reserved_bytes{budget}` is the sum reserved now. The caches have bounds of their
//! own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Bytes per semaphore permit: `Semaphore` counts `u32` permits per call, so a budget in
/// bytes would stop at 4 GiB; in pages it reaches 16 TiB.
const UNIT: u64 = 4096;

/// Frames a held body is cut into: the connection asks for the next one only when its write
/// buffer has room (hyper's holds about 400 KiB), so the body, and its reservation, are
/// released about when the client has read all but that much.
const FRAME_BYTES: usize = 256 << 10;

/// Which budget: what it counts, and how a refusal is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    /// The gateway's bytes of answers in flight (`--memory-budget`).
    GatewayMemory,
    /// users-service's bytes of bodies being made (`--making-budget`).
    Making,
}

impl BudgetKind {
    /// The `budget` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::GatewayMemory => "gateway_memory",
            BudgetKind::Making => "making",
        }
    }
}

/// A reservation refused: `wanted` bytes do not fit beside what `kind`'s budget of `budget`
/// bytes holds now (the client's 503 is `ApiError::OverBudget`).
#[derive(Debug, thiserror::Error)]
#[error("{wanted} bytes would take the {} budget past its {budget} bytes", kind.as_str())]
pub struct OverBudget {
    pub kind: BudgetKind,
    pub wanted: u64,
    pub budget: u64,
}

/// The budget, shared by every request (cheap to clone).
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    /// Woken whenever a reservation is released, for [`MemoryBudget::reserve_by`].
    released: Arc<Notify>,
    bytes: u64,
    kind: BudgetKind,
}

/// Bytes counted against the budget until this is dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    budget: MemoryBudget,
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to whole pages).
    pub fn new(kind: BudgetKind, bytes: u64) -> MemoryBudget {
        let units = usize::try_from(units(bytes))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units)),
            released: Arc::new(Notify::new()),
            bytes,
            kind,
        }
    }

    /// The budget in bytes, as configured.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Which budget this is.
    pub fn kind(&self) -> BudgetKind {
        self.kind
    }

    /// Bytes reserved now (in whole pages).
    pub fn reserved(&self) -> u64 {
        let total = units(self.bytes).min(Semaphore::MAX_PERMITS as u64);
        (total - self.units.available_permits() as u64) * UNIT
    }

    /// Reserves `bytes`, or refuses at once ([`OverBudget`]) if they do not fit beside what is
    /// reserved now.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, OverBudget> {
        let permit = self.take(bytes).ok_or_else(|| self.refusal(bytes))?;
        Ok(Reservation {
            permit,
            budget: self.clone(),
        })
    }

    /// Reserves `bytes`, waiting until `until` for room if they do not fit now: for bytes
    /// that exist already and only need counting (a made body, before it is read), where a
    /// refusal would waste the work that made them.
    pub async fn reserve_by(
        &self,
        bytes: u64,
        until: tokio::time::Instant,
    ) -> Result<Reservation, OverBudget> {
        if bytes > self.bytes {
            return self.reserve(bytes);
        }
        loop {
            // Registered before trying, so that a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(permit) = self.take(bytes) {
                return Ok(Reservation {
                    permit,
                    budget: self.clone(),
                });
            }
            if tokio::time::timeout_at(until, released).await.is_err() {
                return self.reserve(bytes);
            }
        }
    }

    /// Takes room for `bytes` if there is some now.
    fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let wanted = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.units)
            .try_acquire_many_owned(wanted)
            .ok()?;
        self.kind.reserved_gauge().increment(bytes_of(&permit));
        Some(permit)
    }

    /// The refusal of `wanted` bytes, counted in `budget_refusals_total{budget}`.
    pub fn refusal(&self, wanted: u64) -> OverBudget {
        metrics::counter!("budget_refusals_total", "budget" => self.kind.as_str()).increment(1);
        OverBudget {
            kind: self.kind,
            wanted,
            budget: self.bytes,
        }
    }
}

impl Reservation {
    /// Adds `bytes` to this reservation, or refuses as [`MemoryBudget::reserve`] does (what is
    /// held already stays held until the reservation is dropped).
    pub fn grow(&mut self, bytes: u64) -> Result<(), OverBudget> {
        let held = self.bytes();
        let more = self
            .budget
            .take(bytes)
            .ok_or_else(|| self.budget.refusal(bytes + held))?;
        self.permit.merge(more);
        Ok(())
    }

    /// Bytes held (in whole pages).
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }
}

impl BudgetKind {
    /// `budget_reserved_bytes{budget}`, kept by increments so that concurrent changes add up.
    fn reserved_gauge(self) -> metrics::Gauge {
        metrics::gauge!("budget_reserved_bytes", "budget" => self.as_str())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .kind
            .reserved_gauge()
            .decrement(bytes_of(&self.permit));
        // The permit itself would go back only after this body, when a waiter woken here could
        // already have found no room: its units go back first.
        drop(self.permit.split(self.permit.num_permits()));
        self.budget.released.notify_waiters();
    }
}

fn bytes_of(permit: &OwnedSemaphorePermit) -> f64 {
    (permit.num_permits() as u64 * UNIT) as f64
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// A response body that keeps its reservation until its last frame is taken (or it is
/// dropped), handing out the bytes in [`FRAME_BYTES`] slices of the one buffer (no copy).
pub struct HeldBody {
    rest: Bytes,
    reservation: Option<Reservation>,
}

impl HeldBody {
    /// `bytes` as a response body holding `reservation`.
    pub fn body(bytes: Bytes, reservation: Reservation) -> Body {
        Body::new(HeldBody {
            rest: bytes,
            reservation: Some(reservation),
        })
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            self.reservation = None;
            return Poll::Ready(None);
        }
        let take = self.rest.len().min(FRAME_BYTES);
        let frame = self.rest.split_to(take);
        if self.rest.is_empty() {
            self.reservation = None;
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_past_the_budget_is_refused_and_one_dropped_is_given_back() {
        let budget = MemoryBudget::new(BudgetKind::GatewayMemory, 10 * UNIT);
        let first = budget.reserve(6 * UNIT).unwrap();
        let error = budget.reserve(5 * UNIT).unwrap_err();
        assert_eq!((error.wanted, error.budget), (5 * UNIT, 10 * UNIT));
        assert_eq!(budget.reserved(), 6 * UNIT);
        let mut second = budget.reserve(4 * UNIT).unwrap();
        assert!(second.grow(1).is_err(), "the budget is full");
        assert_eq!(second.bytes(), 4 * UNIT);
        drop(first);
        second.grow(UNIT + 1).unwrap();
        assert_eq!(second.bytes(), 6 * UNIT, "rounded up to whole pages");
        drop(second);
        assert_eq!(budget.reserved(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_made_body_waits_for_room_until_its_deadline() {
        let budget = MemoryBudget::new(BudgetKind::GatewayMemory, 10 * UNIT);
        let held = budget.reserve(8 * UNIT).unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            async move {
                budget
                    .reserve_by(4 * UNIT, until)
                    .await
                    .map(|held| held.bytes())
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 4 * UNIT);

        let _full = budget.reserve(10 * UNIT).unwrap();
        let asked = tokio::time::Instant::now();
        let until = asked + std::time::Duration::from_millis(300);
        assert!(budget.reserve_by(UNIT, until).await.is_err());
        assert_eq!(
            tokio::time::Instant::now(),
            until,
            "refused at its deadline"
        );
        let never = budget.reserve_by(11 * UNIT, until + std::time::Duration::from_secs(9));
        assert!(never.await.is_err(), "more than the budget does not wait");
        assert_eq!(tokio::time::Instant::now(), until);
    }

    #[test]
    fn more_than_the_whole_budget_is_refused() {
        let budget = MemoryBudget::new(BudgetKind::Making, 1 << 20);
        assert!(budget.reserve((1 << 20) + 1).is_err());
        assert!(budget.reserve(u64::MAX).is_err());
        assert!(budget.reserve(1 << 20).is_ok());
    }

    #[tokio::test]
    async fn a_held_body_gives_its_bytes_in_bounded_frames_and_its_reservation_back_at_the_end() {
        use http_body::Body as _;
        let budget = MemoryBudget::new(BudgetKind::GatewayMemory, 4 << 20);
        let bytes = Bytes::from(
            (0..FRAME_BYTES * 2 + 7)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let mut body = HeldBody {
            rest: bytes.clone(),
            reservation: Some(budget.reserve(bytes.len() as u64).unwrap()),
        };
        let mut received = Vec::new();
        let mut frames = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= FRAME_BYTES);
            frames += 1;
            if frames < 3 {
                assert!(budget.reserved() > 0, "held while frames remain");
            }
            received.extend_from_slice(&data);
        }
        assert_eq!(frames, 3);
        assert_eq!(received, bytes);
        assert_eq!(budget.reserved(), 0, "given back with the last frame");

        let dropped = HeldBody::body(bytes, budget.reserve(1).unwrap());
        assert!(budget.reserved() > 0);
        drop(dropped);
        assert_eq!(budget.reserved(), 0, "given back when the client leaves");
    }
}
