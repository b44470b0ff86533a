//! The third-process injectors against real segments: each does the damage it reports, and the
//! transport answers that damage with an error, never with wrong bytes. Tests that need root
//! (mounting, choosing pids) say so and return early elsewhere.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shmbridge::{
    AttachError, Consumer, ConsumerOptions, ControlServer, CreateError, Producer, ProducerOptions,
    ReadError, Segment, SegmentConfig, SlotState, attach_via_socket,
};
use shmbridge_chaos::harness::faults::pid_reuse::{self, HolderRole};
use shmbridge_chaos::harness::faults::resize;
use shmbridge_chaos::harness::faults::scribble::{ScribbleTarget, Scribbler};
use shmbridge_chaos::harness::faults::stale::{self, StaleKind};
use shmbridge_chaos::harness::faults::tmpfs::FullTmpfsMount;
use shmbridge_server::serve::{StartupLine, announced};

const TIMEOUT: Duration = Duration::from_secs(5);
const SMALL: SegmentConfig = SegmentConfig {
    slot_count: 4,
    slot_size: 4096,
};

/// A sealed-memfd segment served on a socket name unique to this test.
fn served_segment(test: &str) -> (Arc<Segment>, ControlServer, String) {
    let segment = Arc::new(Segment::create(&SMALL).unwrap());
    let socket = format!(
        "shmbridge-chaos-test-{test}-{}-{:016x}",
        std::process::id(),
        segment.epoch()
    );
    let server = ControlServer::spawn(Arc::clone(&segment), &socket).unwrap();
    (segment, server, socket)
}

#[test]
fn payload_strikes_hit_published_bytes_and_readers_reject_them() {
    let (segment, _server, socket) = served_segment("payload");
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(Arc::clone(&segment), ConsumerOptions::default()).unwrap();
    let scribbler = Scribbler::attach(&socket, TIMEOUT).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..50u32 {
        let body = vec![round as u8; 1000];
        let mut slot = producer.claim(body.len(), TIMEOUT).unwrap();
        slot.write_all(&body).unwrap();
        let handle = slot.publish().unwrap();
        let strike = scribbler.strike(ScribbleTarget::Payload, &mut rng);
        assert_ne!(strike.before, strike.after);
        let slot_start = segment.header().payload_offset + u64::from(handle.slot) * 4096;
        assert!(
            (slot_start..slot_start + 1000).contains(&strike.offset),
            "strike {strike:?} missed slot {} of the only ready payload",
            handle.slot
        );
        let read = consumer.acquire(&handle).unwrap().copy_out();
        assert!(
            matches!(read, Err(ReadError::ChecksumMismatch { .. })),
            "round {round}: {read:?}"
        );
    }
}

#[test]
fn descriptor_and_header_strikes_change_the_bytes_they_report() {
    let (segment, _server, socket) = served_segment("descriptor");
    let scribbler = Scribbler::attach(&socket, TIMEOUT).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let strike = scribbler.strike(ScribbleTarget::Header, &mut rng);
    assert!(strike.offset < 80);
    // A fresh attach validates the shared header, which no longer matches its crc.
    assert!(attach_via_socket(&socket, TIMEOUT).is_err());
    for _ in 0..20 {
        let strike = scribbler.strike(ScribbleTarget::Descriptor, &mut rng);
        assert!((128..128 + 4 * 64).contains(&strike.offset), "{strike:?}");
    }
    let changed = (0..4)
        .filter_map(|slot| segment.inspect(slot))
        .filter(|view| view.state != Some(SlotState::Free) || view.generation != 0 || view.len != 0)
        .count();
    assert!(
        changed > 0,
        "twenty descriptor strikes left every slot pristine"
    );
}

#[test]
fn a_sealed_segment_refuses_every_resize_and_keeps_its_size() {
    let (segment, _server, socket) = served_segment("resize");
    let (attempts, size) = resize::attempt_all(&socket, TIMEOUT).unwrap();
    assert_eq!(attempts.len(), 5);
    for attempt in &attempts {
        assert!(attempt.refused(), "{} succeeded", attempt.how);
    }
    assert_eq!(size, segment.header().total_size);
}

#[test]
fn stale_files_are_what_they_claim_to_be() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    for kind in StaleKind::ALL {
        let live = stale::plant(&path, kind, &SMALL).unwrap();
        assert_eq!(live.is_some(), kind == StaleKind::LiveCreator, "{kind:?}");
        assert_eq!(
            Segment::file_in_use(&path).unwrap(),
            kind == StaleKind::LiveCreator,
            "{kind:?}: only the live creator holds the file's lock"
        );
        let attached = Segment::attach_file(&path);
        match kind {
            StaleKind::DeadCreator => {
                let creator = attached.unwrap().header().creator_pid;
                assert!(!std::path::Path::new(&format!("/proc/{creator}")).exists());
            }
            StaleKind::LiveCreator => {
                assert_eq!(attached.unwrap().header().creator_pid, std::process::id());
                drop(live);
                assert!(!path.exists(), "the live creator removes its file");
            }
            StaleKind::OtherLayoutVersion => assert!(
                matches!(attached, Err(AttachError::VersionMismatch { .. })),
                "{:?}",
                attached.err()
            ),
            StaleKind::Garbage => assert!(attached.is_err()),
        }
    }
}

#[test]
fn a_full_tmpfs_refuses_a_segment_with_enospc() {
    if let Some(why) = FullTmpfsMount::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmpfs = FullTmpfsMount::mount().unwrap();
    let mount_point = tmpfs.path().to_owned();
    let created = Segment::create_file(&mount_point.join("segment"), &SMALL);
    assert!(
        matches!(created, Err(CreateError::NoSpace { .. })),
        "expected ENOSPC, got {:?}",
        created.map(|segment| segment.epoch())
    );
    drop(tmpfs);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mount_point.to_str().unwrap()));
    assert!(!mount_point.exists());
}

/// The whole round against a real users-service process: its reaper must free the dead
/// holder's slot although a live process now has the holder's pid.
#[tokio::test]
async fn a_squatter_on_a_dead_holders_pid_does_not_keep_its_slot() {
    if let Some(why) = pid_reuse::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shmbridge-chaos"));
    let mut service = Command::new(&program)
        .args(["serve-users-service", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut service);
    let stdout = std::io::BufReader::new(guard.0.stdout.take().unwrap());
    let address = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .find_map(|line| announced(&line, StartupLine::Public)?.ok())
        .expect("users-service announces its address");
    let url: url::Url = format!("http://{address}").parse().unwrap();
    let info = shmbridge_chaos::segment::segment_info(&url, TIMEOUT)
        .await
        .unwrap();
    for role in [HolderRole::Writer, HolderRole::Reader] {
        let round = pid_reuse::round(&program, guard.0.id(), &info.socket, role)
            .await
            .unwrap();
        // Equal start times (a squatter started within the holder's 10 ms tick) are the hard
        // case, not a broken round: the reaper must tell the two apart regardless.
        eprintln!(
            "{role:?}: holder and squatter start times {} and {} ({})",
            round.holder_start_time,
            round.squatter_start_time,
            if round.holder_start_time == round.squatter_start_time {
                "equal"
            } else {
                "different"
            }
        );
        let after = round
            .reclaimed_after
            .expect("the squatter kept the slot alive");
        assert!(after < pid_reuse::HOLDER_LEASE, "{round:?}");
    }
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
