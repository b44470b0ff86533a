//! The producer side: claim a free slot, write the payload into it, publish it as a [`Handle`].

use std::io;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
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
use crate::segment::Segment;
use crate::stats::{Counters, Reclaims, Stats};

/// How long a producer may hold what it claims. Both durations must stay within
/// [`MAX_DEADLINE_AHEAD`](crate::MAX_DEADLINE_AHEAD) (one hour): the reaper treats deadlines further
/// out as scribbled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerOptions {
    /// How long a claimed slot may stay WRITING before the reaper takes it back.
    pub lease: Duration,
    /// How long a published slot waits for its consumer before the reaper takes it back.
    pub ready_ttl: Duration,
}

impl Default for ProducerOptions {
    /// A hand-off takes well under a millisecond; a one-second lease only ever expires on a
    /// paused or hung writer. The TTL covers a consumer that is slow to redeem under load.
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(1),
            ready_ttl: Duration::from_secs(5),
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
    counters: Counters,
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
        let deadline = self.host.now_ns().saturating_add(nanos(timeout));
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
        reclaims
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

    pub fn stats(&self) -> Stats {
        self.counters.snapshot(&self.segment)
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

    /// Makes the written bytes available to whoever holds the returned handle.
    pub fn publish(mut self) -> Result<Handle, PublishError> {
        self.finished = true;
        let producer = self.producer;
        let descriptor = producer.segment.descriptor(self.slot);
        let ready = self.held.next(SlotState::Ready);
        let crc = self.hasher.clone().finalize();
        let len = self.written as u32;
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
