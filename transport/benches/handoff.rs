//! Full hand-off (claim, write, publish, acquire, copy out, verify, release) against the work it
//! cannot avoid: two memcpy and two crc32 passes over the same bytes.
//!
//! `cargo bench -p shmbridge --bench handoff` prints criterion's statistics for both, then, for
//! each size, the ratio of their medians measured interleaved in the same run (so a noisy
//! neighbour slows both alike). Target at 256,873 bytes: ratio ≤ 1.25.

use std::hint::black_box;
use std::io::Write;
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
}

impl Bench {
    fn new(len: usize) -> Self {
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
    }
    group.finish();
}

/// Median nanoseconds per operation of `handoff` and `inherent`, timed in alternating batches.
fn interleaved_medians(bench: &mut Bench, rounds: usize, batch: u32) -> (f64, f64) {
    let mut time = |op: fn(&mut Bench)| {
        let start = Instant::now();
        for _ in 0..batch {
            op(bench);
        }
        start.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    let (mut handoff, mut inherent) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        handoff.push(time(Bench::handoff));
        inherent.push(time(Bench::inherent));
    }
    (median(&mut handoff), median(&mut inherent))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion);
    criterion.final_summary();

    println!("\nhand-off / inherent work (2 memcpy + 2 crc32), medians of interleaved batches:");
    println!(
        "{:>10} {:>14} {:>14} {:>7}",
        "bytes", "handoff µs", "inherent µs", "ratio"
    );
    for len in SIZES {
        let mut bench = Bench::new(len);
        let batch = (4_000_000 / len).clamp(4, 1000) as u32;
        let (handoff, inherent) = interleaved_medians(&mut bench, 301, batch);
        println!(
            "{len:>10} {:>14.2} {:>14.2} {:>7.3}",
            handoff / 1e3,
            inherent / 1e3,
            handoff / inherent
        );
    }
}
