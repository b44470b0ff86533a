//! Loom models of the slot protocol: every interleaving of two threads racing on one slot, run
//! on the real `Producer`, `Consumer` and reaper code (their atomics come from `sync.rs`, which
//! is loom's under `--cfg loom`). Leases and TTLs of zero plus a one-nanosecond clock step let the
//! reaper fire at any point of the other thread's work.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p shmbridge --release --test loom_slot`
#![cfg(loom)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use loom::sync::atomic::{AtomicU64, Ordering::Relaxed};
use loom::thread;
use shmbridge::testing::ManualHost;
use shmbridge::{
    Consumer, ConsumerOptions, Handle, Producer, ProducerOptions, ReadError, ReclaimReason,
    Segment, SegmentConfig, SlotState,
};

const ONE_SLOT: SegmentConfig = SegmentConfig {
    slot_count: 1,
    slot_size: 64,
};
const LONG: Duration = Duration::from_secs(60);

fn producer(
    segment: &Arc<Segment>,
    host: &Arc<ManualHost>,
    process: u32,
    lease: Duration,
    ttl: Duration,
) -> Arc<Producer> {
    Arc::new(Producer::with_host(
        Arc::clone(segment),
        ProducerOptions {
            lease,
            ready_ttl: ttl,
            ..ProducerOptions::default()
        },
        ManualHost::process(process),
        host.clone(),
    ))
}

fn consumer(
    segment: &Arc<Segment>,
    host: &Arc<ManualHost>,
    process: u32,
    lease: Duration,
) -> Arc<Consumer> {
    Arc::new(Consumer::with_host(
        Arc::clone(segment),
        ConsumerOptions {
            lease,
            ..ConsumerOptions::default()
        },
        ManualHost::process(process),
        host.clone(),
    ))
}

fn publish(producer: &Producer, bytes: &[u8]) -> Option<Handle> {
    let mut slot = producer.claim(bytes.len(), Duration::ZERO).ok()?;
    slot.write_all(bytes).ok()?;
    slot.publish().ok()
}

fn state(segment: &Segment) -> Option<SlotState> {
    segment.inspect(0).unwrap().state
}

/// The hand-off itself, across threads: the reader learns the handle through a relaxed mailbox,
/// so only the slot's state word orders the payload between writer and reader (the payload words
/// are loom atomics, whose stale values loom explores). The reader must get exactly the published
/// bytes. With the hand-over's Release or Acquire taken away (`--cfg shmbridge_mutant=...`, run by
/// `.ci/run`) loom finds the run where the reader sees the payload as it was before the write.
#[test]
fn a_publication_is_seen_whole_by_a_reader_in_another_thread() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let writer = producer(&segment, &host, 1, LONG, LONG);
        let reader = consumer(&segment, &host, 2, LONG);
        let mailbox = Arc::new(AtomicU64::new(0));
        let posted = Arc::clone(&mailbox);
        let write = thread::spawn(move || {
            let handle = publish(&writer, b"payload").expect("the only writer gets the slot");
            posted.store(handle.generation, Relaxed);
        });
        let generation = loop {
            match mailbox.load(Relaxed) {
                0 => thread::yield_now(),
                generation => break generation,
            }
        };
        let handle = Handle {
            epoch: segment.epoch(),
            slot: 0,
            generation,
            len: 7,
            crc: crc32fast::hash(b"payload"),
        };
        let read = reader.acquire(&handle).expect("published").copy_out();
        assert_eq!(read, Ok(b"payload".to_vec()));
        write.join().unwrap();
    });
}

/// Two processes claim the only slot at once: exactly one gets it.
#[test]
fn two_claimers_race_for_one_slot() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let claimers: Vec<_> = (1..=2)
            .map(|process| {
                let producer = producer(&segment, &host, process, LONG, LONG);
                thread::spawn(move || publish(&producer, &[process as u8; 8]))
            })
            .collect();
        let handles: Vec<_> = claimers
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(handles.len(), 1);
        assert_eq!(state(&segment), Some(SlotState::Ready));
    });
}

/// A publish races the reaper reclaiming the writer's expired lease: either the publish wins and
/// the slot stays READY, or the reclaim wins and the publish fails. Never both, never neither.
#[test]
fn publish_races_lease_expiry() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let writer = producer(&segment, &host, 1, Duration::ZERO, LONG);
        let reaper = Arc::clone(&writer);
        let write = thread::spawn(move || publish(&writer, b"payload"));
        let clock = host.clone();
        let reap = thread::spawn(move || {
            clock.advance(Duration::from_nanos(1));
            reaper.reap()
        });
        let handle = write.join().unwrap();
        let reclaims = reap.join().unwrap();
        let reclaimed = reclaims.get(ReclaimReason::LeaseExpired) == 1;
        assert_ne!(handle.is_some(), reclaimed);
        let expected = if reclaimed {
            SlotState::Free
        } else {
            SlotState::Ready
        };
        assert_eq!(state(&segment), Some(expected));
    });
}

/// An acquire races the reaper expiring the unredeemed publication: the reader either gets the
/// exact bytes or a refusal, and the slot ends FREE either way.
#[test]
fn acquire_races_ttl_reclaim() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let producer = producer(&segment, &host, 1, LONG, Duration::ZERO);
        let handle = publish(&producer, b"payload").unwrap();
        let reader = consumer(&segment, &host, 2, LONG);
        let read = thread::spawn(move || reader.acquire(&handle).ok()?.copy_out().ok());
        let clock = host.clone();
        let reap = thread::spawn(move || {
            clock.advance(Duration::from_nanos(1));
            producer.reap()
        });
        let bytes = read.join().unwrap();
        let reclaims = reap.join().unwrap();
        match bytes {
            Some(bytes) => {
                assert_eq!(bytes, b"payload");
                assert_eq!(reclaims.total(), 0);
            }
            None => assert_eq!(reclaims.get(ReclaimReason::TtlExpired), 1),
        }
        assert_eq!(state(&segment), Some(SlotState::Free));
    });
}

/// One handle redeemed by two consumers at once: exactly one gets the bytes.
#[test]
fn one_handle_redeemed_twice_at_once() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let producer = producer(&segment, &host, 1, LONG, LONG);
        let handle = publish(&producer, b"once").unwrap();
        let readers: Vec<_> = (2..=3)
            .map(|process| {
                let reader = consumer(&segment, &host, process, LONG);
                thread::spawn(move || reader.acquire(&handle).ok()?.copy_out().ok())
            })
            .collect();
        let results: Vec<_> = readers
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results, vec![b"once".to_vec()]);
        assert_eq!(state(&segment), Some(SlotState::Free));
    });
}

/// A reader's lease expires mid-read, the reaper takes the slot and a writer rewrites it. The
/// reader must return the original bytes (it finished first) or an error, never the new bytes;
/// and if its slot was reclaimed it must return an error.
#[test]
fn reader_reclaimed_and_rewritten_mid_read() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let producer = producer(&segment, &host, 1, LONG, LONG);
        let first = publish(&producer, b"first").unwrap();
        let reader = consumer(&segment, &host, 2, Duration::ZERO);
        let read = thread::spawn(move || reader.acquire(&first).ok()?.copy_out().ok());
        let clock = host.clone();
        let rewrite = thread::spawn(move || {
            clock.advance(Duration::from_nanos(1));
            let reclaims = producer.reap();
            (reclaims, publish(&producer, b"other"))
        });
        let bytes = read.join().unwrap();
        let (reclaims, second) = rewrite.join().unwrap();
        if let Some(bytes) = &bytes {
            assert_eq!(bytes, b"first");
        }
        if reclaims.get(ReclaimReason::LeaseExpired) == 1 {
            assert!(bytes.is_none(), "a reclaimed reader returned bytes");
        }
        if second.is_some() {
            assert!(bytes.is_none() || reclaims.total() == 0);
        }
    });
}

/// A writer whose lease expired resumes after another process reclaimed and took its slot: it
/// must not publish. It may still have been mid-copy when the slot changed hands (loom finds this
/// at three preemptions), scribbling over the next publication; the reader then gets a checksum
/// error, never the wrong bytes.
#[test]
fn writer_resumed_after_reclaim_cannot_publish() {
    loom::model(|| {
        let host = Arc::new(ManualHost::new());
        let segment = Arc::new(Segment::in_memory(&ONE_SLOT));
        let late = producer(&segment, &host, 1, Duration::ZERO, LONG);
        let other = producer(&segment, &host, 2, LONG, LONG);
        let late_writer = thread::spawn(move || publish(&late, b"late"));
        let clock = host.clone();
        let other_writer = thread::spawn(move || {
            clock.advance(Duration::from_nanos(1));
            other.reap();
            publish(&other, b"next")
        });
        let late = late_writer.join().unwrap();
        let next = other_writer.join().unwrap();
        assert!(
            !(late.is_some() && next.is_some()),
            "two publications of one slot"
        );
        let reader = consumer(&segment, &host, 3, LONG);
        for (handle, bytes) in [(late, &b"late"[..]), (next, &b"next"[..])] {
            if let Some(handle) = handle {
                match reader.acquire(&handle).unwrap().copy_out() {
                    Ok(read) => assert_eq!(read, bytes),
                    Err(error) => assert!(matches!(error, ReadError::ChecksumMismatch { .. })),
                }
            }
        }
    });
}
