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
//! - **sealed memfd, pages allocated ahead** (`sealed_ahead`): the same, into a memfd whose
//!   pages a pool made beforehand (`fallocate` of the body's length, zeroed pages allocated off
//!   the request path): the first candidate for issue 22's "fresh large bodies on warm pages". A
//!   sealed memfd cannot be reused, so this moves the allocation and zeroing elsewhere (a
//!   background thread), it does not save them: the table prints the preparation's own time
//!   beside it.
//! - **the same, freed elsewhere** (`sealed_ahead_freed_later`): and the consumer's mapping and
//!   descriptor, the last references to the pages, are dropped after the timed batch, as the
//!   gateway drops a large one off its request path: what is left is the copy, the two crc32
//!   passes and the descriptor's trip.
//!
//! Each of them also computes the producer's crc32 of the body (the handle carries it), so
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

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
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
    /// Memfds with the body's pages allocated, for `sealed_ahead`: what a pool would hold.
    ahead: Vec<File>,
    /// Redeemed mappings whose pages `sealed_ahead_freed_later` frees after its batch.
    freed_later: Vec<Mmap>,
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
            ahead: Vec::new(),
            freed_later: Vec::new(),
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
        drop(self.sealed_in(sealable_memfd()));
    }

    fn sealed_ahead(&mut self) {
        let memfd = self.ahead.pop().expect("a memfd allocated ahead");
        drop(self.sealed_in(memfd));
    }

    fn sealed_ahead_freed_later(&mut self) {
        let memfd = self.ahead.pop().expect("a memfd allocated ahead");
        let map = self.sealed_in(memfd);
        self.freed_later.push(map);
    }

    /// Makes `count` memfds with the body's pages allocated, for `sealed_ahead`.
    fn allocate_ahead(&mut self, count: u32) {
        let len = self.source.len();
        self.ahead.extend((0..count).map(|_| allocated_memfd(len)));
    }

    /// The sealed hand-off of the body through `memfd`, a new memfd (its pages allocated or
    /// not); returns the consumer's verified mapping, the pages' last reference.
    fn sealed_in(&mut self, memfd: File) -> Mmap {
        let len = self.source.len();
        let written = crc32fast::hash(&self.source);
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
        map
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

fn sealable_memfd() -> File {
    File::from(
        memfd_create(
            c"large-designs-sealed",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .expect("memfd_create"),
    )
}

/// A sealable memfd of `len` bytes whose pages are allocated (and zeroed) now, so that writing
/// the body into it faults nothing in.
fn allocated_memfd(len: usize) -> File {
    let memfd = sealable_memfd();
    fallocate(&memfd, FallocateFlags::empty(), 0, len as i64).expect("allocate the pages");
    memfd
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
const OPS: [(&str, Op); 5] = [
    ("page_run", Bench::page_run),
    ("page_run_punched", Bench::page_run_punched),
    ("sealed", Bench::sealed),
    ("sealed_ahead", Bench::sealed_ahead),
    ("sealed_ahead_freed_later", Bench::sealed_ahead_freed_later),
];
/// [`OPS`]' index of `sealed_ahead`; it and the ops after it use memfds made before their
/// batches are timed.
const AHEAD: usize = 3;

fn criterion_groups(c: &mut Criterion) {
    let mut group = c.benchmark_group("large");
    group.sampling_mode(SamplingMode::Flat);
    for len in SIZES {
        let mut bench = Bench::new(len);
        group.throughput(Throughput::Bytes(len as u64));
        for (name, op) in &OPS[..AHEAD] {
            group.bench_function(BenchmarkId::new(*name, len), |b| b.iter(|| op(&mut bench)));
        }
        // criterion drops what a batched routine returns after timing it: `sealed_ahead` frees
        // its pages inside the timed routine, `sealed_ahead_freed_later` outside.
        group.bench_function(BenchmarkId::new(OPS[AHEAD].0, len), |b| {
            b.iter_batched(
                || allocated_memfd(len),
                |memfd| drop(bench.sealed_in(memfd)),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new(OPS[AHEAD + 1].0, len), |b| {
            b.iter_batched(
                || allocated_memfd(len),
                |memfd| bench.sealed_in(memfd),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Median nanoseconds per operation of each of [`OPS`], timed in alternating batches; then that
/// of allocating the memfds ahead, and of freeing the mappings freed later (each untimed in its
/// op's own figure).
fn interleaved_medians(bench: &mut Bench, rounds: usize, batch: u32) -> [f64; 7] {
    let mut samples: [Vec<f64>; 7] = Default::default();
    let per_op = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(batch);
    for _ in 0..rounds {
        for (index, (_, op)) in OPS.iter().enumerate() {
            if index >= AHEAD {
                let start = Instant::now();
                bench.allocate_ahead(batch);
                samples[OPS.len()].push(per_op(start));
            }
            let start = Instant::now();
            for _ in 0..batch {
                op(bench);
            }
            samples[index].push(per_op(start));
        }
        let start = Instant::now();
        bench.freed_later.clear();
        samples[OPS.len() + 1].push(per_op(start));
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
         b = sealed memfd, c = sealed memfd with its pages allocated ahead, d = c with its \
         pages freed after the batch; off the request path: c+ = allocating a memfd's pages \
         ahead, d+ = freeing them later:"
    );
    println!(
        "{:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>6}",
        "bytes",
        "a µs",
        "a' µs",
        "b µs",
        "c µs",
        "d µs",
        "c+ µs",
        "d+ µs",
        "b/a",
        "c/b",
        "d/b",
        "d/a"
    );
    for len in SIZES {
        let mut bench = Bench::new(len);
        let batch = (4_000_000 / len).clamp(1, 1000) as u32;
        let [
            warm,
            punched,
            sealed,
            ahead,
            freed_later,
            allocating,
            freeing,
        ] = interleaved_medians(&mut bench, 31, batch);
        let us = |ns: f64| ns / 1e3;
        println!(
            "{len:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6.2} {:>6.2} \
             {:>6.2} {:>6.2}",
            us(warm),
            us(punched),
            us(sealed),
            us(ahead),
            us(freed_later),
            us(allocating),
            us(freeing),
            sealed / warm,
            ahead / sealed,
            freed_later / sealed,
            freed_later / warm
        );
    }
}
