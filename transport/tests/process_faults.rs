//! Faults from real processes (this test binary, re-executed as a child). A child is SIGKILLed
//! mid-write and mid-read: the producer's reaper takes its slots back, every slot ends FREE, and
//! stale handles are refused. A live process that merely reuses a dead owner's pid keeps nothing,
//! even one that got the same start time (told apart by its pidfs inode).
//! A child scribbles random bytes anywhere in a segment in use: every read is then the exact
//! published bytes or a typed error.
#![cfg(not(loom))]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

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
    let segment = Arc::new(Segment::attach_file(Path::new(&path)).unwrap());
    let mut stdout = std::io::stdout();
    match role.as_str() {
        "write" => {
            let producer = Producer::new(segment, ProducerOptions::default()).unwrap();
            let mut slot = producer.claim(1000, Duration::from_secs(1)).unwrap();
            slot.write_all(&[7; 500]).unwrap();
            writeln!(stdout, "child ready: holding slot {}", slot.slot()).unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "read" => {
            let consumer = Consumer::new(segment, ConsumerOptions::default()).unwrap();
            let handle: Handle = std::env::var(CHILD_HANDLE).unwrap().parse().unwrap();
            let _reading = consumer.acquire(&handle).unwrap();
            writeln!(stdout, "child ready: holding slot {}", handle.slot).unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "scribble" => scribble(&path),
        other => panic!("unknown child role {other}"),
    }
}

/// Writes random bytes at random offsets of the segment file's mapping until killed.
fn scribble(path: &str) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let map = memmap2::MmapRaw::map_raw(&file).unwrap();
    println!("child ready: scribbling");
    std::io::stdout().flush().unwrap();
    let mut random = fastrand::Rng::with_seed(u64::from(std::process::id()));
    loop {
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
            return child;
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

#[test]
fn a_scribbling_process_never_makes_a_read_return_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let segment = new_segment(dir.path());
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let scribbler = spawn_child("scribble", segment.path().unwrap(), None);
    let mut random = fastrand::Rng::with_seed(7);
    let (mut exact, mut refused, mut wrong) = (0u32, 0u32, 0u32);
    let stop = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < stop {
        let payload: Vec<u8> = (0..random.usize(1..=4096)).map(|_| random.u8(..)).collect();
        let Ok(mut slot) = producer.claim(payload.len(), Duration::from_millis(20)) else {
            refused += 1;
            continue;
        };
        let published = slot
            .write_all(&payload)
            .map_err(drop)
            .and_then(|()| slot.publish().map_err(drop));
        let read = published.and_then(|handle| {
            consumer
                .acquire(&handle)
                .map_err(drop)?
                .copy_out()
                .map_err(drop)
        });
        match read {
            Ok(bytes) if bytes == payload => exact += 1,
            Ok(_) => wrong += 1,
            Err(()) => refused += 1,
        }
    }
    kill_and_wait(scribbler);
    eprintln!("exact {exact}, refused {refused}, wrong {wrong}");
    assert_eq!(wrong, 0);
    assert!(exact > 0, "no hand-off got through");
    assert!(
        refused > 0,
        "the scribbler never hit anything: the test proves nothing"
    );
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
