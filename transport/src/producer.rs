//! The producer side: claim a free slot, write the payload into it, publish it as a [`Handle`];
//! or publish a sealed payload (a body larger than a slot, or an immutable one handed out again)
//! on a ticket (a slot claimed and published without its payload area), keeping count of the sealed bytes in flight, in all and per peer.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{ClaimError, PublishError};
use crate::handle::Handle;
use crate::host::{Host, Owner, SystemHost, nanos};
use crate::layout::{SlotState, Word};
use crate::payload;
use crate::reaper::Reaper;
use crate::sealed::{SealedPayload, SealedWriter};
use crate::segment::Segment;
use crate::stats::{Counters, Reclaims, Stats};
use crate::sync;

/// How long a producer may hold what it claims. Both durations must stay within
/// [`MAX_DEADLINE_AHEAD`](crate::MAX_DEADLINE_AHEAD) (one hour): the reaper treats deadlines further
/// out as scribbled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerOptions {
    /// How long a claimed slot may stay WRITING before the reaper takes it back.
    pub lease: Duration,
    /// How long a published slot waits for its consumer before the reaper takes it back.
    pub ready_ttl: Duration,
    /// The largest sealed payload [`Producer::publish_sealed`] accepts (at most `u32::MAX`, what
    /// a handle's length holds).
    pub max_payload: usize,
    /// How many bytes of sealed payloads may wait for their consumers at once, or be being
    /// written for them (a channel's response counts its body from before the first byte: see
    /// [`ResponseWriter::expect_min_len`](crate::control::ResponseWriter::expect_min_len)); a
    /// publication that would pass it waits for room, then fails with
    /// [`ClaimError::BytesExhausted`]. A payload published on several tickets at once (a cache
    /// hands one to many requests) counts once.
    pub max_sealed_bytes: u64,
    /// How many of those bytes the publications made for one peer (one control connection) may
    /// hold at once: past it, that peer's publication waits for its own to be redeemed, then
    /// fails with [`ClaimError::BytesExhausted`] naming this share (the channel refuses it
    /// [`Exhausted`](crate::control::RefusalCode::Exhausted)), while other peers go on
    /// publishing. Without it a peer that redeems nothing could hold the whole budget: four
    /// unredeemed 64 MiB payloads take the default 256 MiB. `None`
    /// ([`ProducerOptions::sealed_share`]): half of `max_sealed_bytes`, so one such peer leaves
    /// the others at least the other half, but never less than one of the largest payloads.
    /// [`Producer::publish_sealed`] called directly publishes for no peer, within
    /// `max_sealed_bytes` only.
    pub max_sealed_bytes_per_peer: Option<u64>,
}

impl ProducerOptions {
    /// The sealed bytes one peer's publications may hold:
    /// [`max_sealed_bytes_per_peer`](ProducerOptions::max_sealed_bytes_per_peer), or by default
    /// half of `max_sealed_bytes` but room for one of the largest payloads.
    pub fn sealed_share(&self) -> u64 {
        self.max_sealed_bytes_per_peer.unwrap_or_else(|| {
            let largest = (self.max_payload as u64).min(self.max_sealed_bytes);
            (self.max_sealed_bytes / 2).max(largest)
        })
    }
}

impl Default for ProducerOptions {
    /// A hand-off takes well under a millisecond; a one-second lease only ever expires on a
    /// paused or hung writer. The TTL covers a consumer that is slow to redeem under load.
    /// Sealed payloads: 64 MiB each, 256 MiB in flight, so four of the largest can wait at once,
    /// two of them for any one peer.
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(1),
            ready_ttl: Duration::from_secs(5),
            max_payload: 64 << 20,
            max_sealed_bytes: 256 << 20,
            max_sealed_bytes_per_peer: None,
        }
    }
}

/// Claims, writes and publishes slots; also runs the reaper.
pub struct Producer {
    segment: Arc<Segment>,
    options: ProducerOptions,
    owner: Owner,
    host: Arc<dyn Host>,
    /// Where the next claim starts scanning, so claims spread over the slots instead of all
    /// contending for slot 0. Process-local and only a hint: std atomics, not the loom shim.
    cursor: AtomicU32,
    reaper: Mutex<Reaper>,
    /// Sealed publications whose bytes may still count against `max_sealed_bytes`.
    sealed: sync::Mutex<SealedTickets>,
    counters: Counters,
}

/// The peer a sealed publication is made for, whose share of the sealed bytes it counts
/// against (see [`ProducerOptions::max_sealed_bytes_per_peer`]): one per control connection, in
/// its [`PeerLedger`](crate::control::PeerLedger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SealedPeer(u64);

impl SealedPeer {
    /// A peer no other in this process is, nor ever will be: publications of a closed
    /// connection may still count when the next one opens. Std atomics, not the loom shim: no
    /// model races on it.
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// The producer's record of its sealed publications not known to be over, and of those being
/// made now: counted from before their ticket exists, so that publishers racing for the last
/// room cannot all pass the limit.
#[derive(Debug, Default)]
struct SealedTickets {
    publications: Vec<SealedPublication>,
    /// Reservations waiting for room, each its peer and its place in arrival order: one takes
    /// room only once no earlier one of its peer still waits, so a late request cannot pass an
    /// early one. Per peer: a peer waiting for its own share must not hold the others up.
    waiting: Vec<(Option<SealedPeer>, u64)>,
    next_place: u64,
}

/// One sealed publication, made or being made.
#[derive(Clone, Copy, Debug)]
struct SealedPublication {
    /// [`SealedPayload::id`]: the tickets of one payload count its bytes once.
    payload: u64,
    bytes: u64,
    peer: Option<SealedPeer>,
    /// Its slot and READY generation; `None` while it is being made.
    ticket: Option<(u32, u64)>,
}

impl SealedTickets {
    /// Forgets every ticket that no longer waits or is being redeemed (state word past
    /// READY(g) and READING(g+1): released, withdrawn or reclaimed).
    fn prune(&mut self, segment: &Segment) {
        self.publications.retain(|publication| {
            let Some((slot, ready)) = publication.ticket else {
                return true;
            };
            let word = segment.descriptor(slot).word();
            word == Word::new(ready, SlotState::Ready)
                || word == Word::new(ready.wrapping_add(1), SlotState::Reading)
        });
    }

    /// Bytes of the publications `counted` picks, each payload's once however many of them
    /// publish it.
    fn bytes(&self, counted: impl Fn(&SealedPublication) -> bool) -> u64 {
        let mut payloads: Vec<(u64, u64)> = (self.publications.iter())
            .filter(|publication| counted(publication))
            .map(|publication| (publication.payload, publication.bytes))
            .collect();
        payloads.sort_unstable_by_key(|&(payload, _)| payload);
        payloads.dedup_by_key(|&mut (payload, _)| payload);
        payloads.iter().map(|&(_, bytes)| bytes).sum()
    }

    /// Counts `new` (not yet published) if its peer's share and the whole budget have room for
    /// it; or the bytes in flight and the limit that leave none, the peer's share first. A
    /// publication for no peer is held to the whole budget only.
    fn reserve(
        &mut self,
        new: SealedPublication,
        place: u64,
        share: u64,
        max: u64,
    ) -> Result<(), (u64, u64)> {
        let waits_behind =
            (self.waiting.iter()).any(|&(peer, earlier)| peer == new.peer && earlier < place);
        let counted_already = self
            .publications
            .iter()
            .any(|publication| publication.payload == new.payload && publication.peer == new.peer);
        if waits_behind && !counted_already {
            return Err(match new.peer {
                Some(_) => (
                    self.bytes(|publication| publication.peer == new.peer),
                    share,
                ),
                None => (self.bytes(|_| true), max),
            });
        }
        if new.peer.is_some() {
            self.room(&new, |publication| publication.peer == new.peer, share)?;
        }
        self.room(&new, |_| true, max)?;
        self.publications.push(new);
        Ok(())
    }

    /// Whether the publications `counted` picks leave room under `max` for `new`, whose payload
    /// takes none where one of them counts it already; if not, the bytes they hold.
    fn room(
        &self,
        new: &SealedPublication,
        counted: impl Fn(&SealedPublication) -> bool,
        max: u64,
    ) -> Result<(), (u64, u64)> {
        let in_flight = self.bytes(&counted);
        let counted_already = (self.publications.iter())
            .any(|publication| counted(publication) && publication.payload == new.payload);
        if counted_already || in_flight + new.bytes <= max {
            Ok(())
        } else {
            Err((in_flight, max))
        }
    }

    /// Sets the bytes of the publication being made at `index` to `bytes` if its peer's share and
    /// the whole budget have room for the difference; or the bytes in flight and the limit that
    /// leave none. Shrinking always succeeds.
    fn resize(&mut self, index: usize, bytes: u64, share: u64, max: u64) -> Result<(), (u64, u64)> {
        let made = self.publications[index];
        if bytes > made.bytes {
            let others = |counted: &dyn Fn(&SealedPublication) -> bool| {
                self.bytes(|publication| counted(publication)) - made.bytes
            };
            if made.peer.is_some() {
                let in_flight = others(&|publication| publication.peer == made.peer);
                if in_flight + bytes > share {
                    return Err((in_flight, share));
                }
            }
            let in_flight = others(&|_| true);
            if in_flight + bytes > max {
                return Err((in_flight, max));
            }
        }
        self.publications[index].bytes = bytes;
        Ok(())
    }

    /// Whether room for `bytes` more could still come from publications being redeemed: the
    /// bodies being made, which hold their room until they are published, leave it under the
    /// peer's share and the whole budget.
    fn could_make_room(&self, peer: Option<SealedPeer>, bytes: u64, share: u64, max: u64) -> bool {
        let being_made = |counted: &dyn Fn(&SealedPublication) -> bool| -> u64 {
            (self.publications.iter())
                .filter(|publication| publication.ticket.is_none() && counted(publication))
                .map(|publication| publication.bytes)
                .sum()
        };
        (peer.is_none() || being_made(&|publication| publication.peer == peer) + bytes <= share)
            && being_made(&|_| true) + bytes <= max
    }

    /// Takes the next place among the reservations waiting for room for `peer`'s publications.
    fn enter(&mut self, peer: Option<SealedPeer>) -> u64 {
        let place = self.next_place;
        self.next_place += 1;
        self.waiting.push((peer, place));
        place
    }

    fn leave(&mut self, place: u64) {
        self.waiting.retain(|&(_, waiting)| waiting != place);
    }

    /// The publication being made that `made` is, to record its ticket on or to forget.
    /// Publications being made of one payload for one peer are interchangeable.
    fn being_made(&mut self, made: &SealedPublication) -> Option<usize> {
        self.publications.iter().position(|publication| {
            publication.ticket.is_none()
                && (publication.payload, publication.peer) == (made.payload, made.peer)
        })
    }
}

impl Producer {
    /// A producer for this process on the real machine. Fails on a read-only segment.
    pub fn new(segment: Arc<Segment>, options: ProducerOptions) -> io::Result<Self> {
        segment.require_writable("producer")?;
        Ok(Self::with_host(
            segment,
            options,
            Owner::current()?,
            Arc::new(SystemHost),
        ))
    }

    /// A producer that names itself `owner` and asks `host` for time and liveness.
    ///
    /// # Panics
    /// On a read-only segment ([`Producer::new`] returns an error instead).
    pub fn with_host(
        segment: Arc<Segment>,
        options: ProducerOptions,
        owner: Owner,
        host: Arc<dyn Host>,
    ) -> Self {
        assert!(segment.is_writable(), "a producer needs a writable segment");
        let reaper = Mutex::new(Reaper::new(segment.slot_count()));
        Self {
            segment,
            options,
            owner,
            host,
            cursor: AtomicU32::new(0),
            reaper,
            sealed: sync::Mutex::new(SealedTickets::default()),
            counters: Counters::default(),
        }
    }

    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Claims a slot for a payload of at most `len` bytes, waiting at most `timeout` for one to
    /// free up. When none is free it reaps, then backs off (10 µs doubling to 1 ms).
    pub fn claim(&self, len: usize, timeout: Duration) -> Result<WriteGuard<'_>, ClaimError> {
        let max = self.segment.slot_size() as usize;
        if len > max {
            return Err(ClaimError::TooLarge { len, max });
        }
        self.claim_until(len, self.host.now_ns().saturating_add(nanos(timeout)))
    }

    /// [`Producer::claim`] of a `len` already checked against the slot size, until `deadline`
    /// (host nanoseconds).
    fn claim_until(&self, len: usize, deadline: u64) -> Result<WriteGuard<'_>, ClaimError> {
        let mut backoff = Duration::from_micros(10);
        loop {
            if let Some(guard) = self.try_claim(len) {
                return Ok(guard);
            }
            if self.reap().total() > 0
                && let Some(guard) = self.try_claim(len)
            {
                return Ok(guard);
            }
            let now = self.host.now_ns();
            if now >= deadline {
                Counters::bump(&self.counters.claims_exhausted);
                return Err(ClaimError::Exhausted {
                    slots: self.segment.slot_count(),
                });
            }
            self.host
                .sleep(backoff.min(Duration::from_nanos(deadline - now)));
            backoff = (backoff * 2).min(Duration::from_millis(1));
        }
    }

    fn try_claim(&self, len: usize) -> Option<WriteGuard<'_>> {
        let count = self.segment.slot_count();
        let start = self.cursor.fetch_add(1, Relaxed) % count;
        (0..count).find_map(|offset| {
            let slot = (start + offset) % count;
            let descriptor = self.segment.descriptor(slot);
            let word = descriptor.word();
            if word.state() != Some(SlotState::Free) {
                return None;
            }
            let held = descriptor.transition(word, SlotState::Writing).ok()?;
            let lease_end = self.host.now_ns().saturating_add(nanos(self.options.lease));
            descriptor.stamp_holder(held, self.owner, lease_end);
            tracing::debug!(slot, generation = held.generation(), "slot claimed");
            Some(WriteGuard {
                producer: self,
                slot,
                held,
                capacity: len,
                written: 0,
                hasher: crc32fast::Hasher::new(),
                finished: false,
            })
        })
    }

    /// Runs one reaper pass now and returns what it reclaimed. The pass also restores the shared
    /// header from the validated copy if something scribbled on it (counted in
    /// [`Stats::header_repairs`]). Concurrent calls do not queue: if another thread is reaping,
    /// this one returns at once with nothing reclaimed.
    pub fn reap(&self) -> Reclaims {
        let Ok(mut reaper) = self.reaper.try_lock() else {
            return Reclaims::default();
        };
        if self.segment.repair_header() {
            Counters::bump(&self.counters.header_repairs);
            tracing::debug!(
                epoch = format_args!("{:016x}", self.segment.epoch()),
                "segment header was overwritten; restored the validated copy"
            );
        }
        let reclaims = reaper.reap(&self.segment, self.host.as_ref(), self.options.lease);
        self.counters.add_reclaims(&reclaims);
        drop(reaper);
        self.sealed_in_flight();
        reclaims
    }

    /// Publishes `payload`, a sealed payload of any size, on a ticket: a slot claimed and
    /// published with the payload's length and crc but without its payload area. The caller
    /// sends the handle as a sealed one, with `payload`'s descriptor (a control answer of tier
    /// sealed), to redeem with [`Consumer::redeem_sealed`](crate::Consumer::redeem_sealed): the
    /// handle's length alone does not tell a ticket from a slot.
    ///
    /// Waits at most `timeout`, first for room under
    /// [`ProducerOptions::max_sealed_bytes`] ([`ClaimError::BytesExhausted`]; a payload already
    /// published on a ticket that still counts takes no more room; publications for one peer
    /// take room in the order they began waiting for it), then for a free slot
    /// ([`ClaimError::Exhausted`]). Refuses a payload above [`ProducerOptions::max_payload`] (or
    /// what `max_sealed_bytes` or [`ProducerOptions::sealed_share`] hold) with
    /// [`ClaimError::TooLarge`].
    pub fn publish_sealed(
        &self,
        payload: &SealedPayload,
        timeout: Duration,
    ) -> Result<Handle, ClaimError> {
        self.publish_sealed_for(payload, None, timeout)
    }

    /// [`Producer::publish_sealed`] for `peer`, whose publications' bytes are also held to
    /// [`ProducerOptions::sealed_share`].
    pub(crate) fn publish_sealed_for(
        &self,
        payload: &SealedPayload,
        peer: Option<SealedPeer>,
        timeout: Duration,
    ) -> Result<Handle, ClaimError> {
        self.check_sealed_len(payload.len())?;
        let deadline = self.host.now_ns().saturating_add(nanos(timeout));
        let room = self.reserve_sealed(payload.id(), payload.len(), peer, deadline)?;
        self.publish_in(room, payload, deadline)
    }

    /// Reserves room for a sealed body of `bytes` that `writer` is about to write for `peer`,
    /// before any of it is made, waiting at most `timeout` for it as
    /// [`Producer::publish_sealed`] does. The body grows its room as it is written
    /// ([`Producer::grow_sealed`]) and is published in it ([`Producer::publish_sealed_in`]);
    /// dropping the room gives it back.
    pub(crate) fn reserve_sealed_body(
        &self,
        writer: &SealedWriter,
        bytes: u64,
        peer: SealedPeer,
        timeout: Duration,
    ) -> Result<SealedRoom<'_>, ClaimError> {
        let deadline = self.host.now_ns().saturating_add(nanos(timeout));
        self.reserve_sealed(writer.id(), bytes, Some(peer), deadline)
    }

    /// Grows `room` to hold `needed` bytes, and to `wanted` (more) when that fits now. A body that
    /// has room already waits at most `timeout` for more, and only while the bodies being made
    /// leave room under the limits once every published payload is redeemed: otherwise bodies
    /// holding room while each waits for the others' could wait for nothing until their
    /// deadlines, so it is refused at once.
    pub(crate) fn grow_sealed(
        &self,
        room: &mut SealedRoom<'_>,
        needed: u64,
        wanted: u64,
        timeout: Duration,
    ) -> Result<(), ClaimError> {
        let deadline = self.host.now_ns().saturating_add(nanos(timeout));
        self.resize_sealed(room, needed, wanted.max(needed), deadline)
    }

    /// Publishes `payload`, written by the writer `room` was reserved for, in that room (sized
    /// to the payload first), waiting at most `timeout` for a ticket.
    pub(crate) fn publish_sealed_in(
        &self,
        mut room: SealedRoom<'_>,
        payload: &SealedPayload,
        timeout: Duration,
    ) -> Result<Handle, ClaimError> {
        debug_assert_eq!(
            room.publication.payload,
            payload.id(),
            "another payload's room"
        );
        self.check_sealed_len(payload.len())?;
        let deadline = self.host.now_ns().saturating_add(nanos(timeout));
        self.resize_sealed(&mut room, payload.len(), payload.len(), deadline)?;
        self.publish_in(room, payload, deadline)
    }

    /// Refuses a sealed payload of `len` bytes above what this producer publishes.
    fn check_sealed_len(&self, len: u64) -> Result<(), ClaimError> {
        let max = self.max_sealed_len();
        if len > max {
            return Err(ClaimError::TooLarge {
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }

    /// Publishes `payload` on a ticket claimed by `deadline`, its bytes counted in `room`.
    fn publish_in(
        &self,
        room: SealedRoom<'_>,
        payload: &SealedPayload,
        deadline: u64,
    ) -> Result<Handle, ClaimError> {
        // `len <= max <= u32::MAX`, checked by the caller.
        let len = payload.len() as u32;
        loop {
            let ticket = self.claim_until(0, deadline)?;
            // Lost only to a reaper that judged the ticket's lease over between claim and
            // publish; nothing was written, so another claim is as good.
            if let Ok(handle) = ticket.publish_stamped(len, payload.crc()) {
                room.record(&handle);
                Counters::bump(&self.counters.sealed_publications);
                return Ok(handle);
            }
        }
    }

    /// The largest sealed payload this producer publishes: [`ProducerOptions::max_payload`],
    /// and no more than the whole budget or one peer's share could ever hold.
    pub(crate) fn max_sealed_len(&self) -> u64 {
        (self.options.max_payload as u64)
            .min(self.options.max_sealed_bytes)
            .min(self.options.sealed_share())
            .min(u64::from(u32::MAX))
    }

    /// Reserves room for publishing `bytes` of the payload `payload` for `peer`, waiting until
    /// `deadline` for earlier sealed publications to be redeemed, withdrawn or reclaimed.
    fn reserve_sealed(
        &self,
        payload: u64,
        bytes: u64,
        peer: Option<SealedPeer>,
        deadline: u64,
    ) -> Result<SealedRoom<'_>, ClaimError> {
        let publication = SealedPublication {
            payload,
            bytes,
            peer,
            ticket: None,
        };
        let (share, max) = (self.options.sealed_share(), self.options.max_sealed_bytes);
        // A place is taken on the first try that finds no room: until then this reservation
        // waits behind everyone of its peer already waiting.
        let mut place = Place {
            producer: self,
            place: None,
        };
        self.until_room(
            deadline,
            || {
                let mut sealed = self.lock_sealed();
                sealed.prune(&self.segment);
                let reserved = sealed.reserve(publication, place.or_last(), share, max);
                if reserved.is_err() && place.place.is_none() {
                    place.place = Some(sealed.enter(peer));
                }
                reserved.map(|()| SealedRoom {
                    producer: self,
                    publication,
                })
            },
            || true,
        )
    }

    /// Resizes `room` to `wanted` bytes if that fits now, otherwise to `needed`, waiting until
    /// `deadline` for room only while waiting can bring it ([`Producer::grow_sealed`]).
    fn resize_sealed(
        &self,
        room: &mut SealedRoom<'_>,
        needed: u64,
        wanted: u64,
        deadline: u64,
    ) -> Result<(), ClaimError> {
        let (share, max) = (self.options.sealed_share(), self.options.max_sealed_bytes);
        let publication = room.publication;
        let bytes = self.until_room(
            deadline,
            || {
                let mut sealed = self.lock_sealed();
                sealed.prune(&self.segment);
                let index = sealed
                    .being_made(&publication)
                    .expect("a room's publication is recorded until the room is dropped");
                (sealed.resize(index, wanted, share, max).map(|()| wanted))
                    .or_else(|_| sealed.resize(index, needed, share, max).map(|()| needed))
            },
            || {
                let more = needed.saturating_sub(publication.bytes);
                (self.lock_sealed()).could_make_room(publication.peer, more, share, max)
            },
        )?;
        room.publication.bytes = bytes;
        Ok(())
    }

    /// Tries `attempt` until it succeeds, reaping meanwhile as [`Producer::claim`] does (one
    /// more try after a reap that took something back, then the deadline and the backoff, so a
    /// reap that succeeds every time, as against a scribbler, cannot make this spin); gives up
    /// at `deadline`, or at once when `may_wait` says waiting cannot bring the room.
    fn until_room<T>(
        &self,
        deadline: u64,
        mut attempt: impl FnMut() -> Result<T, (u64, u64)>,
        may_wait: impl Fn() -> bool,
    ) -> Result<T, ClaimError> {
        let mut backoff = Duration::from_micros(10);
        loop {
            let (mut in_flight, mut max) = match attempt() {
                Ok(room) => return Ok(room),
                Err(full) => full,
            };
            if self.reap().total() > 0 {
                match attempt() {
                    Ok(room) => return Ok(room),
                    Err(full) => (in_flight, max) = full,
                }
            }
            let now = self.host.now_ns();
            if now >= deadline || !may_wait() {
                Counters::bump(&self.counters.claims_exhausted);
                return Err(ClaimError::BytesExhausted { in_flight, max });
            }
            self.host
                .sleep(backoff.min(Duration::from_nanos(deadline - now)));
            backoff = (backoff * 2).min(Duration::from_millis(1));
        }
    }

    fn lock_sealed(&self) -> sync::MutexGuard<'_, SealedTickets> {
        self.sealed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes of sealed publications still waiting for, or being redeemed by, their consumers,
    /// or being made; each payload's once.
    fn sealed_in_flight(&self) -> u64 {
        let mut sealed = self.lock_sealed();
        sealed.prune(&self.segment);
        sealed.bytes(|_| true)
    }

    /// Runs [`Producer::reap`] every `interval` on a background thread until the returned
    /// [`ReaperThread`] is dropped.
    pub fn spawn_reaper(self: &Arc<Self>, interval: Duration) -> io::Result<ReaperThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let producer = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("shmbridge-reaper".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    producer.reap();
                }
            })?;
        Ok(ReaperThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Takes back a publication nobody will redeem (its consumer said so, or went away), now
    /// rather than at the end of its TTL. Returns whether it was still waiting: a publication
    /// already redeemed, reaped or withdrawn is left alone, since its slot has moved on to
    /// another generation.
    pub fn withdraw(&self, slot: u32, generation: u64) -> bool {
        if slot >= self.segment.slot_count() {
            return false;
        }
        let ready = Word::new(generation, SlotState::Ready);
        let withdrawn = self
            .segment
            .descriptor(slot)
            .transition(ready, SlotState::Free)
            .is_ok();
        if withdrawn {
            Counters::bump(&self.counters.withdrawn);
            tracing::debug!(slot, generation, "publication withdrawn");
        }
        withdrawn
    }

    /// Whether the publication at `slot` and `generation` still waits for its consumer.
    pub fn is_unredeemed(&self, slot: u32, generation: u64) -> bool {
        slot < self.segment.slot_count()
            && self.segment.descriptor(slot).word() == Word::new(generation, SlotState::Ready)
    }

    /// Whether the publication at `slot` and `generation` still holds its slot: it waits for its
    /// consumer, or the consumer reads it (READING(generation + 1)) and has not released it.
    pub fn is_outstanding(&self, slot: u32, generation: u64) -> bool {
        if slot >= self.segment.slot_count() {
            return false;
        }
        let word = self.segment.descriptor(slot).word();
        word == Word::new(generation, SlotState::Ready)
            || word == Word::new(generation.wrapping_add(1), SlotState::Reading)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sealed_bytes_in_flight: self.sealed_in_flight(),
            ..self.counters.snapshot(&self.segment)
        }
    }
}

/// A reservation's place among those waiting for room, once it has waited; given up when it is
/// dropped (room taken, or the deadline passed).
struct Place<'a> {
    producer: &'a Producer,
    place: Option<u64>,
}

impl Place<'_> {
    /// Its place, or after everyone's while it has none.
    fn or_last(&self) -> u64 {
        self.place.unwrap_or(u64::MAX)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place {
            self.producer.lock_sealed().leave(place);
        }
    }
}

/// Sealed bytes reserved for one publication being made; recorded as a ticket once published,
/// given back if dropped unrecorded.
pub(crate) struct SealedRoom<'a> {
    producer: &'a Producer,
    publication: SealedPublication,
}

impl SealedRoom<'_> {
    /// The bytes it holds room for.
    pub(crate) fn bytes(&self) -> u64 {
        self.publication.bytes
    }

    /// Gives the publication being made the ticket of `handle`, under one lock so that its bytes
    /// are never counted twice nor not at all.
    fn record(self, handle: &Handle) {
        let mut sealed = self.producer.lock_sealed();
        if let Some(index) = sealed.being_made(&self.publication) {
            sealed.publications[index].ticket = Some((handle.slot, handle.generation));
        }
        drop(sealed);
        // Recorded: nothing to give back. The room holds only a reference and plain data.
        std::mem::forget(self);
    }
}

impl Drop for SealedRoom<'_> {
    fn drop(&mut self) {
        let mut sealed = self.producer.lock_sealed();
        if let Some(index) = sealed.being_made(&self.publication) {
            sealed.publications.swap_remove(index);
        }
    }
}

/// The periodic reaper of [`Producer::spawn_reaper`]; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct ReaperThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ReaperThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("segment", &self.segment)
            .field("owner", &self.owner)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A claimed slot being written. Write with [`io::Write`], then [`WriteGuard::publish`];
/// dropping it unpublished gives the slot back.
pub struct WriteGuard<'a> {
    producer: &'a Producer,
    slot: u32,
    /// The WRITING word this guard won; every later step checks the slot still holds it.
    held: Word,
    capacity: usize,
    written: usize,
    /// crc32 of the bytes as handed to `write`, computed from the caller's private buffer rather
    /// than re-read from shared memory, where a third process could have changed them.
    hasher: crc32fast::Hasher,
    finished: bool,
}

impl WriteGuard<'_> {
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn written(&self) -> usize {
        self.written
    }

    /// Whether this writer still holds its slot (the reaper has not taken it back).
    pub fn is_held(&self) -> bool {
        self.producer.segment.descriptor(self.slot).word() == self.held
    }

    fn reclaimed(&self) -> PublishError {
        Counters::bump(&self.producer.counters.writes_reclaimed);
        PublishError::Reclaimed {
            slot: self.slot,
            generation: self.held.generation(),
        }
    }

    /// The bytes written so far, read back from the slot and checked against the crc32 of what
    /// was written: a third process may have changed them meanwhile, and a changed byte must not
    /// travel on under a checksum computed over it. `None` when they changed or the slot was
    /// reclaimed.
    pub(crate) fn read_back(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        payload::load(
            self.producer.segment.payload(self.slot),
            self.written,
            &mut bytes,
        );
        (self.is_held() && crc32fast::hash(&bytes) == self.hasher.clone().finalize())
            .then_some(bytes)
    }

    /// Makes the written bytes available to whoever holds the returned handle.
    pub fn publish(self) -> Result<Handle, PublishError> {
        let crc = self.hasher.clone().finalize();
        let len = self.written as u32;
        self.publish_stamped(len, crc)
    }

    /// Publishes the slot with `len` and `crc` stamped: the bytes written into it, or a sealed
    /// payload's (a ticket, whose payload area is left alone).
    fn publish_stamped(mut self, len: u32, crc: u32) -> Result<Handle, PublishError> {
        self.finished = true;
        let producer = self.producer;
        let descriptor = producer.segment.descriptor(self.slot);
        let ready = self.held.next(SlotState::Ready);
        let ttl_end = producer
            .host
            .now_ns()
            .saturating_add(nanos(producer.options.ready_ttl));
        // Stamped before the exchange, so a READY slot is never seen unstamped; the exchange's
        // release covers the payload.
        descriptor.stamp_publication(self.held, len, crc, ttl_end);
        if descriptor.transition(self.held, SlotState::Ready).is_err() {
            return Err(self.reclaimed());
        }
        tracing::debug!(
            slot = self.slot,
            generation = ready.generation(),
            len,
            "slot published"
        );
        Ok(Handle {
            epoch: producer.segment.epoch(),
            slot: self.slot,
            generation: ready.generation(),
            len,
            crc,
        })
    }
}

impl io::Write for WriteGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.is_held() {
            return Err(io::Error::other(self.reclaimed()));
        }
        let room = self.capacity - self.written;
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("payload exceeds the {} bytes claimed", self.capacity),
            ));
        }
        let n = buf.len().min(room);
        // `written + n <= capacity <= slot_size`: inside the slot. A writer paused here past its
        // lease may land these bytes in the next publication, which then fails its crc32.
        payload::store(
            self.producer.segment.payload(self.slot),
            self.written,
            &buf[..n],
        );
        self.hasher.update(&buf[..n]);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let descriptor = self.producer.segment.descriptor(self.slot);
            if descriptor.transition(self.held, SlotState::Free).is_ok() {
                tracing::debug!(slot = self.slot, "unpublished slot given back");
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
