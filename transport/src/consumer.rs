//! The consumer side: redeem a [`Handle`], read the bytes, verify them, release the slot; or, for
//! a sealed publication, take its ticket, verify the descriptor that came with the handle and
//! release the ticket.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{AcquireError, ReadError, RedeemError};
use crate::handle::Handle;
use crate::host::{Host, Owner, SystemHost, nanos};
use crate::layout::{SlotState, Word};
use crate::payload;
use crate::sealed::{SealedBytes, SealedError};
use crate::segment::Segment;
use crate::stats::{Counters, Stats};
use crate::verified_payloads::VerifiedPayloads;

/// How long a consumer may hold a slot it reads; at most
/// [`MAX_DEADLINE_AHEAD`](crate::MAX_DEADLINE_AHEAD) (one hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// How long an acquired slot may stay READING before the reaper takes it back.
    pub lease: Duration,
    /// Bytes of verified sealed payloads to keep mapped, so that the same immutable payload
    /// handed over again (a producer's cached body) is not mapped and checksummed again
    /// (`verified_payloads.rs` says why that is sound). 0, the default,
    /// keeps none. Kept payloads stay in memory until evicted.
    pub keep_verified_bytes: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(1),
            keep_verified_bytes: 0,
        }
    }
}

/// Redeems handles against one attached segment.
pub struct Consumer {
    segment: Arc<Segment>,
    options: ConsumerOptions,
    owner: Owner,
    host: Arc<dyn Host>,
    counters: Counters,
    verified: VerifiedPayloads,
}

impl Consumer {
    /// A consumer for this process on the real machine, holding slots under the name the
    /// producer's reaper knows it by ([`Segment::holder_name`]).
    pub fn new(segment: Arc<Segment>, options: ConsumerOptions) -> io::Result<Self> {
        segment.require_writable("consumer")?;
        let owner = segment.holder_name()?;
        Ok(Self::with_host(
            segment,
            options,
            owner,
            Arc::new(SystemHost),
        ))
    }

    /// A consumer that names itself `owner` and asks `host` for time.
    pub fn with_host(
        segment: Arc<Segment>,
        options: ConsumerOptions,
        owner: Owner,
        host: Arc<dyn Host>,
    ) -> Self {
        assert!(segment.is_writable(), "a consumer needs a writable segment");
        Self {
            segment,
            options,
            owner,
            host,
            counters: Counters::default(),
            verified: VerifiedPayloads::new(options.keep_verified_bytes),
        }
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Takes the slot `handle` names, if it is READY at exactly the handle's generation. A handle
    /// is redeemable once: the first acquire moves the generation on. For slot handles only: a
    /// handle that came as a sealed one is a ticket, redeemed with [`Consumer::redeem_sealed`];
    /// read as a slot, its payload area holds no published bytes, which the crc32 check refuses
    /// unless they happen to be the very bytes published.
    pub fn acquire(&self, handle: &Handle) -> Result<ReadGuard<'_>, AcquireError> {
        let segment = &self.segment;
        if handle.len > segment.slot_size() {
            return Err(AcquireError::TooLarge {
                len: handle.len,
                max: segment.slot_size(),
            });
        }
        self.take(handle)
    }

    /// Redeems a sealed publication: takes its ticket (the slot `handle` names, READY at the
    /// handle's generation), verifies `fd` against the handle's length and crc
    /// ([`SealedBytes::verify`]: seals, size, crc over the mapping; or, for a payload kept by
    /// [`ConsumerOptions::keep_verified_bytes`], the same file already verified), then releases
    /// the ticket.
    /// A ticket reclaimed before its release means the publication was given up, so its bytes
    /// are discarded ([`RedeemError::Reclaimed`]). `fd` is closed on return either way; the
    /// bytes stay mapped for the life of the result.
    pub fn redeem_sealed(&self, handle: &Handle, fd: OwnedFd) -> Result<SealedBytes, RedeemError> {
        let mut ticket = self.take(handle)?;
        let verified = self.verified.verify(fd, handle.len.into(), handle.crc);
        if let Err(SealedError::ChecksumMismatch { expected, found }) = &verified {
            Counters::bump(&self.counters.checksum_failures);
            tracing::warn!(
                slot = handle.slot,
                expected,
                found,
                "sealed payload checksum mismatch"
            );
        }
        // Released whatever the verification said: the ticket is spent either way.
        let released = ticket.release();
        let bytes = verified?;
        released.map_err(|_| RedeemError::Reclaimed { slot: handle.slot })?;
        Ok(bytes)
    }

    /// Takes the slot `handle` names, READY at exactly the handle's generation, whatever the
    /// handle's length: a slot's payload for [`Consumer::acquire`], a ticket for
    /// [`Consumer::redeem_sealed`].
    pub(crate) fn take(&self, handle: &Handle) -> Result<ReadGuard<'_>, AcquireError> {
        let segment = &self.segment;
        if handle.epoch != segment.epoch() {
            Counters::bump(&self.counters.stale_handles);
            return Err(AcquireError::WrongEpoch {
                expected: segment.epoch(),
                found: handle.epoch,
            });
        }
        if handle.slot >= segment.slot_count() {
            return Err(AcquireError::SlotOutOfRange {
                slot: handle.slot,
                slots: segment.slot_count(),
            });
        }
        let descriptor = segment.descriptor(handle.slot);
        let ready = Word::new(handle.generation, SlotState::Ready);
        let held = descriptor
            .transition(ready, SlotState::Reading)
            .map_err(|found| {
                Counters::bump(&self.counters.stale_handles);
                AcquireError::Stale {
                    slot: handle.slot,
                    expected: handle.generation,
                    found: found.generation(),
                    found_state: found.state(),
                }
            })?;
        let lease_end = self.host.now_ns().saturating_add(nanos(self.options.lease));
        descriptor.stamp_holder(held, self.owner, lease_end);
        tracing::debug!(
            slot = handle.slot,
            generation = held.generation(),
            "slot acquired"
        );
        Ok(ReadGuard {
            consumer: self,
            handle: *handle,
            held,
            released: false,
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sealed_reused: self.verified.reused(),
            ..self.counters.snapshot(&self.segment)
        }
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("segment", &self.segment)
            .field("owner", &self.owner)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// An acquired slot. Every way of reading it verifies the crc32 against the handle and that the
/// slot was not reclaimed before the read finished, then releases the slot; dropping it unread
/// releases it too.
pub struct ReadGuard<'a> {
    consumer: &'a Consumer,
    handle: Handle,
    /// The READING word this guard won.
    held: Word,
    released: bool,
}

impl ReadGuard<'_> {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Whether this reader still holds its slot (the reaper has not taken it back).
    pub fn is_held(&self) -> bool {
        self.consumer.segment.descriptor(self.handle.slot).word() == self.held
    }

    /// Copies the payload into a new buffer and verifies it.
    pub fn copy_out(self) -> Result<Vec<u8>, ReadError> {
        let mut bytes = Vec::new();
        self.copy_into(&mut bytes)?;
        Ok(bytes)
    }

    /// Copies the payload into `dst` (replacing its contents, reusing its allocation) and verifies
    /// the copy: the crc is computed over the private copy, so bytes that change in shared memory
    /// after the copy cannot slip through. On error `dst` is left empty.
    ///
    /// There is deliberately no way to read the payload in place: it can change under the reader
    /// at any time (a reclaim, a scribbler), so a check made on shared bytes says nothing about
    /// the bytes used afterwards.
    pub fn copy_into(mut self, dst: &mut Vec<u8>) -> Result<(), ReadError> {
        // acquire checked `len <= slot_size`.
        payload::load(
            self.consumer.segment.payload(self.handle.slot),
            self.handle.len as usize,
            dst,
        );
        let found = crc32fast::hash(dst);
        let result = self.release().and_then(|()| self.verify(found));
        if result.is_err() {
            dst.clear();
        }
        result
    }

    fn verify(&self, found: u32) -> Result<(), ReadError> {
        if found == self.handle.crc {
            return Ok(());
        }
        Counters::bump(&self.consumer.counters.checksum_failures);
        tracing::warn!(
            slot = self.handle.slot,
            expected = self.handle.crc,
            found,
            "payload checksum mismatch"
        );
        Err(ReadError::ChecksumMismatch {
            expected: self.handle.crc,
            found,
        })
    }

    /// Gives the slot back. Fails when the reaper took it during the read: the bytes read may then
    /// belong to a later publication.
    fn release(&mut self) -> Result<(), ReadError> {
        self.released = true;
        let descriptor = self.consumer.segment.descriptor(self.handle.slot);
        match descriptor.transition(self.held, SlotState::Free) {
            Ok(_) => Ok(()),
            Err(found) => {
                Counters::bump(&self.consumer.counters.reads_reclaimed);
                tracing::warn!(
                    slot = self.handle.slot,
                    held = self.held.generation(),
                    found = found.generation(),
                    "slot reclaimed during read"
                );
                Err(ReadError::Reclaimed {
                    slot: self.handle.slot,
                })
            }
        }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Unread: nothing was returned from the slot, so a failed release has nothing to undo.
            let _ = self.release();
        }
    }
}
