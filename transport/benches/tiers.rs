//! Where the inline threshold belongs: a request's whole round trip over a real
//! [`ControlServer`] and [`ControlClient`] in one process (the client's thread asks, the
//! connection's thread runs the handler, the client's reader thread receives, the asking thread
//! redeems and verifies), for bodies of 256 B to 64 KiB, once with every body inline
//! (`inline_threshold` = 64 KiB, the largest) and once with every body in a slot
//! (`inline_threshold` = 0). The slots are 64 KiB, so both channels carry every size.
//!
//! - **inline**: the handler's bytes go into a buffer (crc32 as written), travel in the answer
//!   message itself (one more copy through the socket), and are checked against the crc on
//!   arrival: no slot claimed, published, acquired or released, no release frame.
//! - **slot**: the handler's bytes go straight into a claimed slot (`expect_len`, crc32 as
//!   written), the answer carries the handle, the client acquires, copies out and verifies, and
//!   releases the slot.
//!
//! The handler says its length first (`expect_len`) in both, as a handler that knows it does.
//!
//! `cargo bench -p shmbridge --bench tiers -- --warm-up-time 1 --measurement-time 3` prints
//! criterion's statistics, then, per size, the medians of batches timed alternately in the same
//! run (a noisy neighbour slows both alike) and their ratio inline/slot: below 1, inline wins.
//! `DEFAULT_INLINE_THRESHOLD` is set from where that ratio crosses 1.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use shmbridge::control::frame::MAX_INLINE_LEN;
use shmbridge::control::{ChannelOptions, ClientOptions, HandlerError, ResponseWriter, Tier};
use shmbridge::{ControlClient, ControlServer, Producer, ProducerOptions, Segment, SegmentConfig};

const SIZES: [usize; 7] = [256, 1 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10];
/// As large as the largest size, so the slot channel carries every one.
const SLOT_SIZE: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A producer serving a channel with `inline_threshold`, and a client connected to it.
struct Channel {
    tier: Tier,
    client: ControlClient,
    _server: ControlServer,
}

impl Channel {
    fn new(tier: Tier, inline_threshold: usize, body: &Arc<Vec<u8>>) -> Self {
        let segment = Segment::create(&SegmentConfig {
            slot_count: 8,
            slot_size: SLOT_SIZE as u32,
        })
        .expect("create segment");
        let producer =
            Arc::new(Producer::new(Arc::new(segment), ProducerOptions::default()).unwrap());
        let options = ChannelOptions {
            inline_threshold,
            ..ChannelOptions::for_segment(producer.segment())
        };
        // The request is the body's length; the handler writes that much of a body made once.
        let handler = {
            let body = Arc::clone(body);
            move |request: &[u8], response: &mut ResponseWriter<'_>| -> Result<(), HandlerError> {
                let len = u32::from_le_bytes(request.try_into()?) as usize;
                response.expect_len(len as u64)?;
                response.write_all(&body[..len])?;
                Ok(())
            }
        };
        let name = format!(
            "shmbridge-bench-tiers-{}-{}-{:016x}",
            tier.as_str(),
            std::process::id(),
            fastrand::u64(..)
        );
        let server =
            ControlServer::spawn_channel(producer, Arc::new(handler), options, &name).unwrap();
        let client = ControlClient::connect(
            &name,
            &ClientOptions {
                timeout: TIMEOUT,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        Self {
            tier,
            client,
            _server: server,
        }
    }

    /// One request, its response redeemed and verified (crc32 for both tiers).
    fn round_trip(&self, len: usize) {
        let response = self
            .client
            .request(&(len as u32).to_le_bytes(), TIMEOUT)
            .expect("a response");
        assert_eq!(response.body.tier(), self.tier);
        assert_eq!(response.body.len(), len);
        black_box(&response.body[..]);
    }
}

fn channels(body: &Arc<Vec<u8>>) -> [Channel; 2] {
    [
        Channel::new(Tier::Inline, MAX_INLINE_LEN, body),
        Channel::new(Tier::Slot, 0, body),
    ]
}

fn criterion_groups(c: &mut Criterion, channels: &[Channel; 2]) {
    let mut group = c.benchmark_group("round_trip");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        for channel in channels {
            group.bench_function(BenchmarkId::new(channel.tier.as_str(), len), |b| {
                b.iter(|| channel.round_trip(len))
            });
        }
    }
    group.finish();
}

/// Median nanoseconds per round trip of each channel, timed in alternating batches (which
/// channel goes first alternates too).
fn interleaved_medians(channels: &[Channel; 2], len: usize, rounds: usize, batch: u32) -> [f64; 2] {
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..rounds {
        for index in [round % 2, 1 - round % 2] {
            let start = Instant::now();
            for _ in 0..batch {
                channels[index].round_trip(len);
            }
            samples[index].push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    samples.map(|mut times| median(&mut times))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let body: Arc<Vec<u8>> = Arc::new((0..SLOT_SIZE).map(|i| (i * 31 % 251) as u8).collect());
    let channels = channels(&body);
    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion, &channels);
    criterion.final_summary();

    println!(
        "\nmedians of interleaved batches of request -> verified response round trips \
         (one process, threads); inline = every body in the answer, slot = every body in a \
         {SLOT_SIZE}-byte slot:"
    );
    println!(
        "{:>8} {:>11} {:>11} {:>12}",
        "bytes", "inline µs", "slot µs", "inline/slot"
    );
    let mut stops_winning = None;
    for len in SIZES {
        let [inline, slot] = interleaved_medians(&channels, len, 3001, 10);
        let ratio = inline / slot;
        if ratio >= 1.0 && stops_winning.is_none() {
            stops_winning = Some(len);
        }
        println!(
            "{len:>8} {:>11.2} {:>11.2} {ratio:>12.3}",
            inline / 1e3,
            slot / 1e3
        );
    }
    match stops_winning {
        Some(len) => {
            println!("inline stops winning at {len} bytes (the first size with inline/slot >= 1)")
        }
        None => println!("inline wins at every size measured"),
    }
}
