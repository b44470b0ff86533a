//! What the control-channel tests share: a publisher whose payload a test can predict from the
//! request alone, a producer whose publications only the channel can free (1 h TTL, no reaper),
//! unique socket names, and a bounded poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shmbridge::control::{PublishRequest, Published, Publisher, Refusal, publish_bytes};
use shmbridge::{Producer, ProducerOptions, Segment, SegmentConfig};

/// Connect, attach and answer timeouts: generous, since the tests never wait them out when
/// the code under test works.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `count` bytes drawn from `seed` and `count`: two requests that differ in either get different
/// bytes, so an answer delivered to the wrong request shows.
pub fn payload(count: u32, seed: u64) -> Vec<u8> {
    let mut random = fastrand::Rng::with_seed(seed.rotate_left(32) ^ u64::from(count));
    (0..count).map(|_| random.u8(..)).collect()
}

/// Publishes [`payload`]`(count, seed)`, the way an application's publisher would: in a slot
/// when it fits, sealed when it does not.
pub struct TestPublisher;

impl Publisher for TestPublisher {
    fn publish(
        &self,
        producer: &Producer,
        request: &PublishRequest,
        wait: Duration,
    ) -> Result<Published, Refusal> {
        publish_bytes(producer, &payload(request.count, request.seed), wait)
    }
}

/// A producer over a new memfd segment of `slots` 4 KiB slots whose publications wait an hour
/// for their consumer and which runs no reaper: a slot that comes back unredeemed was freed by
/// the channel, nothing else.
pub fn producer(slots: u32) -> Arc<Producer> {
    let segment = Segment::create(&SegmentConfig {
        slot_count: slots,
        slot_size: 4096,
    })
    .unwrap();
    let options = ProducerOptions {
        ready_ttl: Duration::from_secs(3600),
        ..ProducerOptions::default()
    };
    Arc::new(Producer::new(Arc::new(segment), options).unwrap())
}

/// An abstract socket name no other test or run uses.
pub fn unique_socket(test: &str) -> String {
    format!(
        "shmbridge-test-channel-{test}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Polls `done` about every millisecond until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
