//! Full hand-off (claim, write, publish, acquire, copy out, verify, release) against the work it
//! cannot avoid: two memcpy and two crc32 passes over the same bytes; and against moving the
//! same bytes the way the REST path does, through a loopback TCP connection, checksummed on both
//! sides as users-service and the gateway do.
//!
//! `cargo bench -p shmbridge --bench handoff` prints criterion's statistics, then, for each size,
//! the ratios of their medians measured interleaved in the same run (so a noisy neighbour slows
//! all alike). Target at 256,873 bytes: hand-off / inherent ≤ 1.25. All three run on one thread,
//! so the comparison is of the work each transport does, without the thread wake-ups both pay
//! between processes.

use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use shmbridge::{Consumer, ConsumerOptions, Producer, ProducerOptions, Segment, SegmentConfig};

const SIZES: [usize; 3] = [1024, 256_873, 4 << 20];

struct Bench {
    producer: Producer,
    consumer: Consumer,
    source: Vec<u8>,
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
                slot_size: 4 << 20,
            })
            .expect("create segment"),
        );
        Self {
            producer: Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap(),
            consumer: Consumer::new(segment, ConsumerOptions::default()).unwrap(),
            source: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
            slot_stand_in: vec![0; len],
            destination: Vec::with_capacity(len),
            tcp_sender,
            tcp_receiver,
            received: vec![0; len],
        }
    }

    fn handoff(&mut self) {
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
    let mut group = c.benchmark_group("transfer");
    for len in SIZES {
        let mut bench = Bench::new(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("handoff", len), |b| {
            b.iter(|| bench.handoff())
        });
        group.bench_function(BenchmarkId::new("inherent", len), |b| {
            b.iter(|| bench.inherent())
        });
        group.bench_function(BenchmarkId::new("loopback_tcp", len), |b| {
            b.iter(|| bench.loopback_tcp())
        });
    }
    group.finish();
}

/// Median nanoseconds per operation of `handoff`, `inherent` and `loopback_tcp`, timed in
/// alternating batches.
fn interleaved_medians(bench: &mut Bench, rounds: usize, batch: u32) -> (f64, f64, f64) {
    let mut time = |op: fn(&mut Bench)| {
        let start = Instant::now();
        for _ in 0..batch {
            op(bench);
        }
        start.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    let (mut handoff, mut inherent, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        handoff.push(time(Bench::handoff));
        inherent.push(time(Bench::inherent));
        tcp.push(time(Bench::loopback_tcp));
    }
    (
        median(&mut handoff),
        median(&mut inherent),
        median(&mut tcp),
    )
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
        "\nmedians of interleaved batches; inherent = 2 memcpy + 2 crc32, tcp = loopback TCP + 2 crc32:"
    );
    println!(
        "{:>10} {:>12} {:>12} {:>10} {:>17} {:>13}",
        "bytes", "handoff µs", "inherent µs", "tcp µs", "handoff/inherent", "tcp/handoff"
    );
    for len in SIZES {
        let mut bench = Bench::new(len);
        let batch = (4_000_000 / len).clamp(4, 1000) as u32;
        let (handoff, inherent, tcp) = interleaved_medians(&mut bench, 301, batch);
        println!(
            "{len:>10} {:>12.2} {:>12.2} {:>10.2} {:>17.3} {:>13.3}",
            handoff / 1e3,
            inherent / 1e3,
            tcp / 1e3,
            handoff / inherent,
            tcp / handoff
        );
    }
}
