//! The evidence behind issue 14's choice of mechanism for bodies larger than a slot: the
//! candidates' hand-offs measured side by side, per size (64 KiB, 1 MiB, 8 MiB, 64 MiB), in one
//! run and on one thread, so the comparison is of the work each mechanism makes both sides do.
//!
//! - **page-run arena, warm** (`page_run`): a `MAP_SHARED` memfd region, faulted in once at
//!   start. The producer copies the body in; the consumer copies it out into a private `Vec`
//!   and checks its crc32 there. The private copy cannot be skipped: the region stays writable by
//!   every peer, so a checksum over the shared bytes proves nothing about what is read after it.
//! - **page-run arena, punched** (`page_run_punched`): the same, and afterwards the run's pages go
//!   back to the kernel with `fallocate(FALLOC_FL_PUNCH_HOLE)`, which is what "memory proportional
//!   to what is in flight" costs an arena: every use faults its pages in again.
//! - **sealed memfd** (`sealed`): `memfd_create`, `write(2)` of the body, `F_ADD_SEALS(WRITE |
//!   SHRINK | GROW | SEAL)`, the descriptor sent over a `SOCK_SEQPACKET` socket pair with
//!   `SCM_RIGHTS` (the producer closes its copy), received, `fstat` size and `F_GET_SEALS`
//!   checked, mapped read-only, crc32 over the mapping, unmapped and closed. No private copy:
//!   `F_SEAL_WRITE` makes the bytes immutable for everyone, so the checksum holds for the reads
//!   after it. The kernel frees the pages at the last close.
//!
//! Each of the three also computes the producer's crc32 of the body (the handle carries it), so
//! all do two crc32 passes; the arenas add two copies, the sealed memfd one `write(2)` and the
//! cost of a fresh file, a descriptor pass and a mapping. Bookkeeping both would need (a ticket's
//! state word, an arena's free map) is left out: it is the same few atomics per body.
//!
//! `cargo bench -p shmbridge --bench large_designs` prints criterion's statistics (kept short: 10
//! flat samples; `-- --quick` shortens them further), then per size the medians of batches timed
//! alternately in the same run (a noisy neighbour slows all alike) and their ratios.

use std::fs::File;
use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use memmap2::{Mmap, MmapMut, MmapOptions};
use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag, fallocate, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::stat::fstat;

const SIZES: [usize; 4] = [64 << 10, 1 << 20, 8 << 20, 64 << 20];
const PAGE: usize = 4096;

/// A page-run arena reduced to the one run a body of this size occupies: a shared mapping of a
/// memfd, faulted in when created.
struct Arena {
    file: File,
    map: MmapMut,
}

impl Arena {
    fn new(len: usize) -> Self {
        let file = File::from(
            memfd_create(c"large-designs-arena", MFdFlags::MFD_CLOEXEC).expect("memfd_create"),
        );
        file.set_len(len.next_multiple_of(PAGE) as u64)
            .expect("size the arena");
        // SAFETY: the memfd is private to this process and never truncated while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.expect("map the arena");
        map.fill(0);
        Self { file, map }
    }

    /// Gives the run's pages back to the kernel; the next write faults in fresh zeroed pages.
    fn punch(&self) {
        fallocate(
            &self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            self.map.len() as i64,
        )
        .expect("punch the arena's pages out");
    }
}

struct Bench {
    source: Vec<u8>,
    warm: Arena,
    punched: Arena,
    private: Vec<u8>,
    /// The control channel stand-in: a connected `SOCK_SEQPACKET` pair, as the transport uses.
    sender: OwnedFd,
    receiver: OwnedFd,
}

impl Bench {
    fn new(len: usize) -> Self {
        let (sender, receiver) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        Self {
            source: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
            warm: Arena::new(len),
            punched: Arena::new(len),
            private: Vec::with_capacity(len),
            sender,
            receiver,
        }
    }

    fn page_run(&mut self) {
        copy_through(&self.source, &mut self.warm.map, &mut self.private);
    }

    fn page_run_punched(&mut self) {
        copy_through(&self.source, &mut self.punched.map, &mut self.private);
        self.punched.punch();
    }

    fn sealed(&mut self) {
        let len = self.source.len();
        let written = crc32fast::hash(&self.source);
        let memfd = File::from(
            memfd_create(
                c"large-designs-sealed",
                MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
            )
            .expect("memfd_create"),
        );
        (&memfd).write_all(&self.source).expect("write the body");
        let seal = || {
            fcntl(
                &memfd,
                FcntlArg::F_ADD_SEALS(
                    SealFlag::F_SEAL_WRITE
                        | SealFlag::F_SEAL_SHRINK
                        | SealFlag::F_SEAL_GROW
                        | SealFlag::F_SEAL_SEAL,
                ),
            )
        };
        // EBUSY while a page monitor holds a transient page reference, as `SealedWriter::finish`
        // (which retries the same way) explains.
        (0..3)
            .map(|_| seal())
            .find(|sealed| *sealed != Err(nix::errno::Errno::EBUSY))
            .unwrap_or(Err(nix::errno::Errno::EBUSY))
            .expect("seal the body");
        let mut handle = [0u8; 12];
        handle[..8].copy_from_slice(&(len as u64).to_le_bytes());
        handle[8..].copy_from_slice(&written.to_le_bytes());
        sendmsg::<()>(
            self.sender.as_raw_fd(),
            &[IoSlice::new(&handle)],
            &[ControlMessage::ScmRights(&[memfd.as_raw_fd()])],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("send the descriptor");
        drop(memfd);

        let (received, handle) = self.receive();
        let announced_len = u64::from_le_bytes(handle[..8].try_into().unwrap());
        let announced_crc = u32::from_le_bytes(handle[8..].try_into().unwrap());
        let stat = fstat(&received).expect("fstat");
        assert_eq!(stat.st_size as u64, announced_len);
        let seals = fcntl(&received, FcntlArg::F_GET_SEALS).expect("F_GET_SEALS");
        let required =
            (SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        assert_eq!(seals & required, required);
        // SAFETY: the file is sealed against writes, shrinking and growing, so the mapping's
        // bytes cannot change and no page of it can disappear (no SIGBUS).
        let map: Mmap = unsafe { MmapOptions::new().len(len).map(&received) }.expect("mmap");
        assert_eq!(black_box(crc32fast::hash(&map)), announced_crc);
    }

    /// One message from the socket pair: the descriptor it carries and its 12 bytes.
    fn receive(&self) -> (File, [u8; 12]) {
        let mut handle = [0u8; 12];
        let mut iov = [IoSliceMut::new(&mut handle)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let message = recvmsg::<()>(
            self.receiver.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("receive the descriptor");
        assert_eq!(message.bytes, 12);
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(rights) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process; nobody
                // else owns them.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        assert_eq!(fds.len(), 1, "one descriptor per message");
        (File::from(fds.pop().unwrap()), handle)
    }
}

/// The arena hand-off: crc32 of the body, copy into the shared run, copy out into a private
/// buffer, crc32 of the private copy.
fn copy_through(source: &[u8], run: &mut [u8], private: &mut Vec<u8>) {
    let len = source.len();
    let written = crc32fast::hash(source);
    run[..len].copy_from_slice(source);
    private.clear();
    private.extend_from_slice(&run[..len]);
    let read = crc32fast::hash(private);
    assert_eq!(black_box(written), black_box(read));
}

type Op = fn(&mut Bench);
const OPS: [(&str, Op); 3] = [
    ("page_run", Bench::page_run),
    ("page_run_punched", Bench::page_run_punched),
    ("sealed", Bench::sealed),
];

fn criterion_groups(c: &mut Criterion) {
    let mut group = c.benchmark_group("large");
    group.sampling_mode(SamplingMode::Flat);
    for len in SIZES {
        let mut bench = Bench::new(len);
        group.throughput(Throughput::Bytes(len as u64));
        for (name, op) in OPS {
            group.bench_function(BenchmarkId::new(name, len), |b| b.iter(|| op(&mut bench)));
        }
    }
    group.finish();
}

/// Median nanoseconds per operation of each of [`OPS`], timed in alternating batches.
fn interleaved_medians(bench: &mut Bench, rounds: usize, batch: u32) -> [f64; 3] {
    let mut samples: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for ((_, op), times) in OPS.iter().zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..batch {
                op(bench);
            }
            times.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    samples.map(|mut times| median(&mut times))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    criterion_groups(&mut criterion);
    criterion.final_summary();

    println!(
        "\nmedians of interleaved batches; a = page-run arena (warm), a' = punched after use, \
         b = sealed memfd:"
    );
    println!(
        "{:>10} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9}",
        "bytes", "a µs", "a' µs", "b µs", "a'/a", "b/a", "b/a'"
    );
    for len in SIZES {
        let mut bench = Bench::new(len);
        let batch = (4_000_000 / len).clamp(1, 1000) as u32;
        let [warm, punched, sealed] = interleaved_medians(&mut bench, 31, batch);
        println!(
            "{len:>10} {:>11.1} {:>11.1} {:>11.1} {:>9.3} {:>9.3} {:>9.3}",
            warm / 1e3,
            punched / 1e3,
            sealed / 1e3,
            punched / warm,
            sealed / warm,
            sealed / punched
        );
    }
}
