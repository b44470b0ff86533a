//! Full hand-off against the work it cannot avoid: two memcpy and two crc32 passes over the same
//! bytes; and against moving the same bytes the way the REST path does, through a loopback TCP
//! connection, checksummed on both sides as users-service and the gateway do. Sizes run from
//! 1 KiB to 64 MiB on a segment with the production slot size (512 KiB):
//!
//! - up to the slot size the hand-off is the slot path: claim, write, publish, acquire, copy out,
//!   verify, release;
//! - above it, the sealed path: a sealed payload made from the bytes (memfd, write(2) with the
//!   crc as it goes, seals), published on a ticket, redeemed (seals, size and crc checked over a
//!   read-only mapping, no private copy), the mapping dropped. The descriptor's trip to the
//!   consumer is stood in for by a `dup`; the control channel's message is left out on both
//!   paths. `cached` is the same with the payload made once and published again and again, as
//!   users-service does under `--cache`.
//!
//! `cargo bench -p shmbridge --bench handoff` prints criterion's statistics (few flat samples for
//! the sealed sizes), then, for each size, the ratios of their medians measured interleaved in the
//! same run (so a noisy neighbour slows all alike). Target at every size >= 64 KiB: hand-off /
//! inherent <= 1.25. All run on one thread, so the comparison is of the work each transport does,
//! without the thread wake-ups both pay between processes.

use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use shmbridge::{
    Consumer, ConsumerOptions, Producer, ProducerOptions, SealedPayload, Segment, SegmentConfig,
};

const SIZES: [usize; 7] = [
    1 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];
/// The production default, so sizes above it take the sealed path.
const SLOT_SIZE: usize = 512 << 10;

struct Bench {
    producer: Producer,
    consumer: Consumer,
    source: Vec<u8>,
    /// For sizes above a slot: `source` as a sealed payload, made once, for `cached`.
    cached: Option<SealedPayload>,
    slot_stand_in: Vec<u8>,
    destination: Vec<u8>,
    /// A connected loopback pair, both ends non-blocking so one thread can pump bytes through.
    tcp_sender: TcpStream,
    tcp_receiver: TcpStream,
    received: Vec<u8>,
}

impl Bench {
    fn new(len: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let tcp_sender = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (tcp_receiver, _) = listener.accept().expect("accept");
        for end in [&tcp_sender, &tcp_receiver] {
            end.set_nonblocking(true).unwrap();
        }
        let segment = Arc::new(
            Segment::create(&SegmentConfig {
                slot_count: 2,
                slot_size: SLOT_SIZE as u32,
            })
            .expect("create segment"),
        );
        let source: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        Self {
            producer: Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap(),
            consumer: Consumer::new(segment, ConsumerOptions::default()).unwrap(),
            cached: (len > SLOT_SIZE)
                .then(|| SealedPayload::from_bytes(&source).expect("sealed payload")),
            source,
            slot_stand_in: vec![0; len],
            destination: Vec::with_capacity(len),
            tcp_sender,
            tcp_receiver,
            received: vec![0; len],
        }
    }

    fn handoff(&mut self) {
        if self.source.len() > SLOT_SIZE {
            let payload = SealedPayload::from_bytes(&self.source).unwrap();
            self.sealed_handoff(&payload);
            return;
        }
        let mut slot = self
            .producer
            .claim(self.source.len(), Duration::ZERO)
            .unwrap();
        slot.write_all(&self.source).unwrap();
        let handle = slot.publish().unwrap();
        let guard = self.consumer.acquire(&handle).unwrap();
        guard.copy_into(&mut self.destination).unwrap();
        black_box(&self.destination);
    }

    /// Publishes `payload` on a ticket, hands its descriptor over and redeems it.
    fn sealed_handoff(&self, payload: &SealedPayload) {
        let handle = self
            .producer
            .publish_sealed(payload, Duration::ZERO)
            .unwrap();
        let received = payload.as_fd().try_clone_to_owned().unwrap();
        let bytes = self.consumer.redeem_sealed(&handle, received).unwrap();
        black_box(&bytes[..]);
    }

    fn cached(&mut self) {
        let payload = self.cached.as_ref().expect("a size above a slot");
        self.sealed_handoff(payload);
    }

    fn inherent(&mut self) {
        self.slot_stand_in.copy_from_slice(&self.source);
        let written = crc32fast::hash(&self.source);
        self.destination.clear();
        self.destination.extend_from_slice(&self.slot_stand_in);
        let read = crc32fast::hash(&self.destination);
        assert_eq!(black_box(written), black_box(read));
    }

    /// The REST path's transfer: crc32 at the sender, bytes written into a loopback socket and
    /// read out of its peer, crc32 at the receiver. Writes and reads alternate, so payloads larger
    /// than the socket buffers flow without a second thread.
    fn loopback_tcp(&mut self) {
        let len = self.source.len();
        let written = crc32fast::hash(&self.source);
        let (mut sent, mut received) = (0, 0);
        while received < len {
            if sent < len {
                sent += would_block_as_zero(self.tcp_sender.write(&self.source[sent..]));
            }
            received += would_block_as_zero(self.tcp_receiver.read(&mut self.received[received..]));
        }
        let read = crc32fast::hash(&self.received);
        assert_eq!(black_box(written), black_box(read));
    }
}

fn would_block_as_zero(result: std::io::Result<usize>) -> usize {
    match result {
        Ok(n) => n,
        Err(error) if error.kind() == ErrorKind::WouldBlock => 0,
        Err(error) => panic!("loopback transfer failed: {error}"),
    }
}

fn criterion_groups(c: &mut Criterion) {
    let mut slots = c.benchmark_group("transfer");
    for len in SIZES.into_iter().filter(|&len| len <= SLOT_SIZE) {
        let mut bench = Bench::new(len);
        slots.throughput(Throughput::Bytes(len as u64));
        for (name, op) in OPS {
            slots.bench_function(BenchmarkId::new(name, len), |b| b.iter(|| op(&mut bench)));
        }
    }
    slots.finish();
    // Tens of milliseconds an iteration: a few flat samples, or the run takes many minutes.
    let mut sealed = c.benchmark_group("transfer_sealed");
    sealed
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for len in SIZES.into_iter().filter(|&len| len > SLOT_SIZE) {
        let mut bench = Bench::new(len);
        sealed.throughput(Throughput::Bytes(len as u64));
        for (name, op) in OPS.into_iter().chain([("cached", Bench::cached as Op)]) {
            sealed.bench_function(BenchmarkId::new(name, len), |b| b.iter(|| op(&mut bench)));
        }
    }
    sealed.finish();
}

type Op = fn(&mut Bench);
const OPS: [(&str, Op); 3] = [
    ("handoff", Bench::handoff),
    ("inherent", Bench::inherent),
    ("loopback_tcp", Bench::loopback_tcp),
];

/// Median nanoseconds per operation of `handoff`, `inherent`, `loopback_tcp` and, above a slot,
/// `cached`, timed in alternating batches.
fn interleaved_medians(bench: &mut Bench, rounds: usize, batch: u32) -> [Option<f64>; 4] {
    let sealed = bench.cached.is_some();
    let ops = OPS
        .into_iter()
        .chain(sealed.then_some(("cached", Bench::cached as Op)));
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        for ((_, op), times) in ops.clone().zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..batch {
                op(bench);
            }
            times.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    samples.map(|mut times| (!times.is_empty()).then(|| median(&mut times)))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion);
    criterion.final_summary();

    println!(
        "\nmedians of interleaved batches; inherent = 2 memcpy + 2 crc32, tcp = loopback TCP + \
         2 crc32; above {SLOT_SIZE} bytes the hand-off is sealed, cached = a sealed payload made once:"
    );
    println!(
        "{:>10} {:>6} {:>12} {:>12} {:>10} {:>17} {:>13} {:>10} {:>16}",
        "bytes",
        "path",
        "handoff µs",
        "inherent µs",
        "tcp µs",
        "handoff/inherent",
        "tcp/handoff",
        "cached µs",
        "cached/inherent"
    );
    for len in SIZES {
        let mut bench = Bench::new(len);
        let batch = (4_000_000 / len).clamp(1, 1000) as u32;
        // 301 rounds up to 256 KiB, fewer above (each one takes milliseconds), at least 21.
        let rounds = (301 * (256 << 10) / len).clamp(21, 301);
        let [handoff, inherent, tcp, cached] = interleaved_medians(&mut bench, rounds, batch);
        let (handoff, inherent, tcp) = (handoff.unwrap(), inherent.unwrap(), tcp.unwrap());
        let (path, cached, cached_ratio) = match cached {
            Some(cached) => (
                "sealed",
                format!("{:.2}", cached / 1e3),
                format!("{:.3}", cached / inherent),
            ),
            None => ("slot", "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{len:>10} {path:>6} {:>12.2} {:>12.2} {:>10.2} {:>17.3} {:>13.3} {cached:>10} \
             {cached_ratio:>16}",
            handoff / 1e3,
            inherent / 1e3,
            tcp / 1e3,
            handoff / inherent,
            tcp / handoff,
        );
    }
}
