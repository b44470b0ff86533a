//! Faults from real processes (this test binary, re-executed as a child). A child is SIGKILLed
//! mid-write and mid-read: the producer's reaper takes its slots back, every slot ends FREE, and
//! stale handles are refused. A live process that merely reuses a dead owner's pid keeps nothing,
//! even one that got the same start time (told apart by its pidfs inode).
//! A child damages a segment in use, scribbling random bytes anywhere or punching whole pages out
//! of it (`fallocate(FALLOC_FL_PUNCH_HOLE)`, which the memfd's shrink and grow seals do not stop;
//! the child reaches a memfd through `/proc/PID/fd/N`): every read is then the exact published
//! bytes or a typed error, and after punches every slot comes back and the header is restored.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{FallocateFlags, fallocate};
use shmbridge::layout::{DESCRIPTOR_SIZE, HEADER_SIZE, Header, PAYLOAD_ALIGN};
use shmbridge::{
    AcquireError, Consumer, ConsumerOptions, Handle, Owner, Producer, ProducerOptions,
    ReclaimReason, Segment, SegmentConfig, SlotState, SystemHost,
};

const CHILD_ROLE: &str = "SHMBRIDGE_TEST_CHILD_ROLE";
const CHILD_SEGMENT: &str = "SHMBRIDGE_TEST_CHILD_SEGMENT";
const CHILD_HANDLE: &str = "SHMBRIDGE_TEST_CHILD_HANDLE";

/// Entry point of the child processes; ignored in a normal run.
#[test]
#[ignore = "entry point for child processes, run by the tests below"]
fn child_process() {
    let (Ok(role), Ok(path)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_SEGMENT)) else {
        return;
    };
    let attach = || Arc::new(Segment::attach_file(Path::new(&path)).unwrap());
    let mut stdout = std::io::stdout();
    match role.as_str() {
        "write" => {
            let producer = Producer::new(attach(), ProducerOptions::default()).unwrap();
            let mut slot = producer.claim(1000, Duration::from_secs(1)).unwrap();
            slot.write_all(&[7; 500]).unwrap();
            writeln!(stdout, "child ready: holding slot {}", slot.slot()).unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "read" => {
            let consumer = Consumer::new(attach(), ConsumerOptions::default()).unwrap();
            let handle: Handle = std::env::var(CHILD_HANDLE).unwrap().parse().unwrap();
            let _reading = consumer.acquire(&handle).unwrap();
            writeln!(stdout, "child ready: holding slot {}", handle.slot).unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "scribble" => damage(&path, Damage::ScribbleAndPunch),
        "punch" => damage(&path, Damage::Punch),
        other => panic!("unknown child role {other}"),
    }
}

/// What a damaging child does to the segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A random byte at a random offset every 20 µs, and one page in 64 strikes punched out.
    ScribbleAndPunch,
    /// A page punched out every millisecond, nothing else.
    Punch,
}

/// The unit a child punches: whole pages are what the kernel frees (and zeroes).
const PAGE: u64 = PAYLOAD_ALIGN;

/// The pages of a segment, by what they hold.
struct Pages {
    /// Pages holding descriptors; the first is the header's page.
    descriptors: std::ops::RangeInclusive<u64>,
    payload: std::ops::Range<u64>,
}

impl Pages {
    fn of(header: &Header) -> Self {
        let descriptors_end =
            header.descriptors_offset + u64::from(header.slot_count) * DESCRIPTOR_SIZE;
        Self {
            descriptors: 0..=(descriptors_end - 1) / PAGE,
            payload: header.payload_offset / PAGE..header.total_size.div_ceil(PAGE),
        }
    }

    /// The header's page, a descriptor page or a payload page, each a third of the time.
    fn pick(&self, random: &mut fastrand::Rng) -> u64 {
        match random.u8(..3) {
            0 => 0,
            1 => random.u64(self.descriptors.clone()),
            _ => random.u64(self.payload.clone()),
        }
    }
}

/// Damages the segment at `path` (its file, or `/proc/PID/fd/N` for a memfd) until killed.
/// Reports each punched page ("punched page N") or the refusal that stops it.
fn damage(path: &str, how: Damage) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut header = [0u8; HEADER_SIZE as usize];
    file.read_exact_at(&mut header, 0).unwrap();
    let pages = Pages::of(&Header::from_bytes(&header));
    let map = memmap2::MmapRaw::map_raw(&file).unwrap();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "child ready: damaging").unwrap();
    stdout.flush().unwrap();
    let mut random = fastrand::Rng::with_seed(u64::from(std::process::id()));
    for strike in 0u64.. {
        if how == Damage::Punch || strike % 64 == 0 {
            let page = pages.pick(&mut random);
            let punched = fallocate(
                &file,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                (page * PAGE) as i64,
                PAGE as i64,
            );
            match punched {
                Ok(()) => writeln!(stdout, "punched page {page}").unwrap(),
                Err(errno) => {
                    writeln!(stdout, "punch refused: {errno}").unwrap();
                    stdout.flush().unwrap();
                    return;
                }
            }
            stdout.flush().unwrap();
        }
        if how == Damage::Punch {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let offset = random.usize(..map.len());
        // SAFETY: offset < map.len(), inside the mapping.
        unsafe { map.as_mut_ptr().add(offset).write_volatile(random.u8(..)) };
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child in `role` and waits (at most 30 s) until it says it is ready.
fn spawn_child(role: &str, segment: &Path, handle: Option<Handle>) -> ChildGuard {
    spawn_child_with_lines(role, segment, handle).0
}

/// [`spawn_child`], also returning what the child says after it is ready.
fn spawn_child_with_lines(
    role: &str,
    segment: &Path,
    handle: Option<Handle>,
) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_SEGMENT, segment)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(handle) = handle {
        command.env(CHILD_HANDLE, handle.to_string());
    }
    let mut child = ChildGuard(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not report ready within 30 s");
        if line.contains("child ready") {
            return (child, received);
        }
    }
}

fn kill_and_wait(mut child: ChildGuard) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

fn new_segment(dir: &Path) -> Arc<Segment> {
    Arc::new(
        Segment::create_file(
            &dir.join("segment"),
            &SegmentConfig {
                slot_count: 4,
                slot_size: 4096,
            },
        )
        .unwrap(),
    )
}

fn all_free(segment: &Segment) -> bool {
    (0..segment.slot_count())
        .all(|slot| segment.inspect(slot).unwrap().state == Some(SlotState::Free))
}

#[test]
fn a_writer_killed_mid_write_loses_its_slot_to_the_reaper() {
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let child = spawn_child("write", segment.path().unwrap(), None);
    let held = (0..4)
        .map(|slot| segment.inspect(slot).unwrap())
        .find(|view| view.state == Some(SlotState::Writing))
        .expect("the child holds a slot");
    assert_eq!(producer.reap().total(), 0, "a live writer keeps its slot");

    kill_and_wait(child);
    assert_eq!(producer.reap().get(ReclaimReason::DeadOwner), 1);
    assert!(all_free(&segment));
    // The publication the writer never made cannot be redeemed either.
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let never_published = Handle {
        epoch: segment.epoch(),
        slot: held.slot,
        generation: held.generation + 1,
        len: 500,
        crc: crc32fast::hash(&[7; 500]),
    };
    assert!(matches!(
        consumer.acquire(&never_published),
        Err(AcquireError::Stale { .. })
    ));
}

#[test]
fn a_reader_killed_mid_read_loses_its_slot_and_the_handle_stays_spent() {
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let mut slot = producer.claim(5, Duration::ZERO).unwrap();
    slot.write_all(b"bytes").unwrap();
    let handle = slot.publish().unwrap();

    let child = spawn_child("read", segment.path().unwrap(), Some(handle));
    assert_eq!(
        segment.inspect(handle.slot).unwrap().state,
        Some(SlotState::Reading)
    );
    kill_and_wait(child);
    assert_eq!(producer.reap().get(ReclaimReason::DeadOwner), 1);
    assert!(all_free(&segment));
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    assert!(matches!(
        consumer.acquire(&handle),
        Err(AcquireError::Stale { .. })
    ));
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_owners_slot_alive() {
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    // A live process now holds the pid; the slot's owner was an earlier process with that pid,
    // which had another start time.
    let mut stranger = ChildGuard(Command::new("sleep").arg("60").spawn().unwrap());
    let stranger_pid = stranger.0.id();
    let live = Owner {
        pid: stranger_pid,
        start_time: read_start_time(stranger_pid),
        pidfs_ino: 0,
    };
    let dead_predecessor = Owner {
        start_time: live.start_time.wrapping_sub(1),
        ..live
    };
    let impostor = Producer::with_host(
        Arc::clone(&segment),
        ProducerOptions::default(),
        dead_predecessor,
        Arc::new(SystemHost),
    );
    std::mem::forget(impostor.claim(1, Duration::ZERO).unwrap());
    let reaper = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    assert_eq!(reaper.reap().get(ReclaimReason::DeadOwner), 1);
    assert!(all_free(&segment));
    stranger.0.kill().unwrap();
}

/// The case the start time cannot settle: the pid was taken within the same clock tick, so the
/// live process has the dead owner's pid *and* start time. Only the pidfs inode tells them apart.
#[test]
fn a_reused_pid_with_the_same_start_time_is_told_apart_by_its_pidfs_inode() {
    let this_process = Owner::current().unwrap();
    if this_process.pidfs_ino == 0 {
        eprintln!("skipped: this kernel has no pidfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    let mut stranger = ChildGuard(Command::new("sleep").arg("60").spawn().unwrap());
    let stranger_pid = stranger.0.id();
    // Same pid and start time as the live stranger; the pidfs inode of another process (this
    // one), which cannot be the stranger's.
    let same_tick_predecessor = Owner {
        pid: stranger_pid,
        start_time: read_start_time(stranger_pid),
        pidfs_ino: this_process.pidfs_ino,
    };
    let holder = |owner: Owner| {
        Producer::with_host(
            Arc::clone(&segment),
            ProducerOptions::default(),
            owner,
            Arc::new(SystemHost),
        )
    };
    std::mem::forget(
        holder(same_tick_predecessor)
            .claim(1, Duration::ZERO)
            .unwrap(),
    );
    // The same holder as an older peer would stamp it (no pidfs inode): the start time matches,
    // so it must be left alone; this shows the inode is what decided the first reclaim.
    let unknown_inode = Owner {
        pidfs_ino: 0,
        ..same_tick_predecessor
    };
    std::mem::forget(holder(unknown_inode).claim(1, Duration::ZERO).unwrap());
    let reaper = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let reclaims = reaper.reap();
    assert_eq!(reclaims.get(ReclaimReason::DeadOwner), 1);
    let held: Vec<Owner> = (0..segment.slot_count())
        .filter_map(|slot| segment.inspect(slot))
        .filter(|view| view.state == Some(SlotState::Writing))
        .map(|view| view.owner)
        .collect();
    assert_eq!(held, [unknown_inode]);
    stranger.0.kill().unwrap();
}

/// What the hand-offs run under damage came to.
#[derive(Debug, Default)]
struct Tally {
    /// Reads that returned exactly the bytes their handle was published for.
    exact: u32,
    /// Publications or reads that failed with an error.
    refused: u32,
    /// Claims that found no free slot in time (not counted as refusals: they need no damage).
    no_slot: u32,
    /// Reads that returned other bytes: must stay 0.
    wrong: u32,
}

/// Runs hand-offs of random payloads for at least `at_least` and until both an exact read and
/// a refusal were seen (at most 30 s). Each handle is redeemed only after up to half as many
/// further publications as there are slots, so that damage also lands between publication and
/// redemption, and handles are redeemed after later publications were made.
fn handoffs_under_damage(producer: &Producer, consumer: &Consumer, at_least: Duration) -> Tally {
    let pipeline = producer.segment().slot_count() as usize / 2;
    let mut random = fastrand::Rng::with_seed(7);
    let mut tally = Tally::default();
    let mut waiting: VecDeque<(Handle, Vec<u8>)> = VecDeque::new();
    let redeem = |tally: &mut Tally, (handle, payload): (Handle, Vec<u8>)| match consumer
        .acquire(&handle)
        .map(|guard| guard.copy_out())
    {
        Ok(Ok(bytes)) if bytes == payload => tally.exact += 1,
        Ok(Ok(_)) => tally.wrong += 1,
        Ok(Err(_)) | Err(_) => tally.refused += 1,
    };
    let start = Instant::now();
    let give_up = start + Duration::from_secs(30);
    while (start.elapsed() < at_least || tally.exact == 0 || tally.refused == 0)
        && Instant::now() < give_up
    {
        let payload: Vec<u8> = (0..random.usize(1..=4096)).map(|_| random.u8(..)).collect();
        let Ok(mut slot) = producer.claim(payload.len(), Duration::from_millis(20)) else {
            tally.no_slot += 1;
            continue;
        };
        let published = slot
            .write_all(&payload)
            .map_err(drop)
            .and_then(|()| slot.publish().map_err(drop));
        match published {
            Ok(handle) => waiting.push_back((handle, payload)),
            Err(()) => tally.refused += 1,
        }
        if waiting.len() > pipeline {
            redeem(&mut tally, waiting.pop_front().expect("not empty"));
        }
    }
    for waiting in waiting {
        redeem(&mut tally, waiting);
    }
    tally
}

/// Kills a damaging child and returns the pages it reported punched.
fn stop_damage(child: ChildGuard, said: &mpsc::Receiver<String>) -> Vec<String> {
    kill_and_wait(child);
    // The child is gone, so its stdout closes and the reader thread hangs up soon.
    let mut punched = Vec::new();
    while let Ok(line) = said.recv_timeout(Duration::from_secs(10)) {
        assert!(!line.starts_with("punch refused"), "{line}");
        if line.starts_with("punched page") {
            punched.push(line);
        }
    }
    punched
}

#[test]
fn a_scribbling_process_never_makes_a_read_return_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let (scribbler, said) = spawn_child_with_lines("scribble", segment.path().unwrap(), None);
    let tally = handoffs_under_damage(&producer, &consumer, Duration::from_secs(2));
    let punched = stop_damage(scribbler, &said);
    eprintln!("{tally:?}, {} pages punched", punched.len());
    assert_eq!(tally.wrong, 0);
    assert!(tally.exact > 0, "no hand-off got through");
    assert!(
        tally.refused > 0,
        "the scribbler never hit anything: the test proves nothing"
    );
    assert!(!punched.is_empty(), "the scribbler punched no page");
}

/// The default backing: a sealed memfd, reached by the child as any same-uid process can,
/// through `/proc/PID/fd/N`. Punches land on the header page, on descriptor pages and on
/// payload pages while hand-offs run.
#[test]
fn a_hole_punching_process_never_makes_a_read_return_wrong_bytes_and_slots_come_back() {
    // 64 slots, as by default: page 0 holds the header and descriptors 0-61, page 1 the rest.
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 64,
            slot_size: PAGE as u32,
        })
        .unwrap(),
    );
    let producer = Arc::new(
        Producer::new(
            Arc::clone(&segment),
            ProducerOptions {
                // A producer that waits a lease before taking a damaged slot back does so soon.
                lease: Duration::from_millis(100),
                ready_ttl: Duration::from_secs(60),
                ..ProducerOptions::default()
            },
        )
        .unwrap(),
    );
    // As in users-service: the reaper runs on its own, repairing the header and taking slots
    // back while the hand-offs go on.
    let reaper = producer.spawn_reaper(Duration::from_millis(10)).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let through_proc = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        segment.fd().unwrap().as_raw_fd()
    );
    let (puncher, said) = spawn_child_with_lines("punch", Path::new(&through_proc), None);
    let tally = handoffs_under_damage(&producer, &consumer, Duration::from_secs(2));
    let punched = stop_damage(puncher, &said);
    eprintln!("{tally:?}, {} pages punched", punched.len());
    assert_eq!(tally.wrong, 0);
    assert!(tally.exact > 0, "no hand-off got through");
    assert!(
        tally.refused > 0,
        "no punch hit a hand-off: the test proves nothing"
    );
    // Page 0 holds the header, page 1 descriptors only, pages 2 and up payload.
    let pages: Vec<u64> = punched
        .iter()
        .map(|line| line["punched page ".len()..].parse().unwrap())
        .collect();
    assert!(pages.contains(&0), "the header page was never punched");
    assert!(pages.contains(&1), "the descriptor page was never punched");
    assert!(
        pages.iter().any(|&page| page >= 2),
        "no payload page was punched"
    );

    // Every slot comes back, and a new consumer can attach (the header is whole again).
    let reattach = || Segment::attach_fd(segment.fd().unwrap().try_clone_to_owned().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(all_free(&segment) && reattach().is_ok()) {
        assert!(
            Instant::now() < deadline,
            "5 s after the last punch: slots {:?}, attach {:?}",
            (0..segment.slot_count())
                .filter_map(|slot| segment.inspect(slot))
                .filter(|view| view.state != Some(SlotState::Free))
                .collect::<Vec<_>>(),
            reattach().map(|attached| attached.epoch())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reattach().unwrap().header(), segment.header());
    drop(reaper);
}

fn read_start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}
