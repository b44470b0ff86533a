//! The gateway's one bound on the bytes it holds for answers in flight (`--memory-budget`):
//! REST bodies as they arrive, bodies copied out of slots or received inline, sealed mappings
//! pinned by a response still being written, and the users bodies it serializes itself.
//!
//! A request whose answer would take the total past the budget is refused at once —
//! `503 gateway_busy` with `Retry-After`, counted in `gateway_busy_total` — and not queued:
//! waiting would hold its connection and its upstream's work while the bytes ahead of it drain,
//! and under a burst every waiter would miss its deadline together. A reservation is given back
//! when it is dropped; a response carries its reservation in its body ([`HeldBody`]), so the
//! bytes stay counted until the connection has taken the last frame of them, or the client
//! left. `gateway_memory_reserved_bytes` is the sum reserved now.
//!
//! The caches (`--keep-verified-bytes`, the two cached routes) have bounds of their own; a
//! response served from one still reserves its length here while it is being written, because
//! an entry evicted meanwhile stays alive in that response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api_error::ApiError;

/// Bytes per semaphore permit: `Semaphore` counts `u32` permits per call, so a budget in
/// bytes would stop at 4 GiB; in pages it reaches 16 TiB.
const UNIT: u64 = 4096;

/// Frames a held body is cut into: the connection asks for the next one only when its write
/// buffer has room (hyper's holds about 400 KiB), so the body, and its reservation, are
/// released about when the client has read all but that much.
const FRAME_BYTES: usize = 256 << 10;

/// The budget, shared by every request (cheap to clone).
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    bytes: u64,
}

/// Bytes counted against the budget until this is dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    budget: MemoryBudget,
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to whole pages).
    pub fn new(bytes: u64) -> MemoryBudget {
        let units = usize::try_from(units(bytes))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units)),
            bytes,
        }
    }

    /// The budget in bytes, as configured.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes reserved now (in whole pages).
    pub fn reserved(&self) -> u64 {
        let total = units(self.bytes).min(Semaphore::MAX_PERMITS as u64);
        (total - self.units.available_permits() as u64) * UNIT
    }

    /// Reserves `bytes`, or refuses at once with [`ApiError::GatewayBusy`] if they do not fit
    /// beside what is reserved now.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, ApiError> {
        let permit = self.take(bytes, 0)?;
        Ok(Reservation {
            permit,
            budget: self.clone(),
        })
    }

    fn take(&self, bytes: u64, held: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        Arc::clone(&self.units)
            .try_acquire_many_owned(wanted)
            .inspect(|permit| {
                metrics::gauge!(RESERVED_GAUGE).increment(permit.num_permits() as f64 * UNIT as f64)
            })
            .map_err(|_| {
                metrics::counter!("gateway_busy_total").increment(1);
                ApiError::GatewayBusy {
                    wanted: bytes + held,
                    budget: self.bytes,
                }
            })
    }
}

impl Reservation {
    /// Adds `bytes` to this reservation, or refuses as [`MemoryBudget::reserve`] does (what is
    /// held already stays held until the reservation is dropped).
    pub fn grow(&mut self, bytes: u64) -> Result<(), ApiError> {
        let held = self.bytes();
        let more = self.budget.take(bytes, held)?;
        self.permit.merge(more);
        Ok(())
    }

    /// Bytes held (in whole pages).
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        metrics::gauge!(RESERVED_GAUGE).decrement(self.bytes() as f64);
    }
}

/// The gauge of bytes reserved now, kept by increments so that concurrent changes add up.
const RESERVED_GAUGE: &str = "gateway_memory_reserved_bytes";

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
        let budget = MemoryBudget::new(10 * UNIT);
        let first = budget.reserve(6 * UNIT).unwrap();
        let error = budget.reserve(5 * UNIT).unwrap_err();
        assert_eq!(error.code(), "gateway_busy");
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

    #[test]
    fn more_than_the_whole_budget_is_refused() {
        let budget = MemoryBudget::new(1 << 20);
        assert!(budget.reserve((1 << 20) + 1).is_err());
        assert!(budget.reserve(u64::MAX).is_err());
        assert!(budget.reserve(1 << 20).is_ok());
    }

    #[tokio::test]
    async fn a_held_body_gives_its_bytes_in_bounded_frames_and_its_reservation_back_at_the_end() {
        use http_body::Body as _;
        let budget = MemoryBudget::new(4 << 20);
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
