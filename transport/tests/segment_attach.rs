//! Attaching validates everything: each way a segment can be wrong gives its own typed error,
//! and the descriptor-passing path hands over a working segment.
#![cfg(not(loom))]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shmbridge::layout::LAYOUT_VERSION;
use shmbridge::{
    AttachError, Consumer, ConsumerOptions, ControlServer, CreateError, Producer, ProducerOptions,
    Segment, SegmentConfig, attach_via_socket,
};

const SMALL: SegmentConfig = SegmentConfig {
    slot_count: 2,
    slot_size: 4096,
};

/// Makes a segment file and returns a copy of its bytes at `copy`, which outlives the creator.
fn segment_image(dir: &Path) -> (Segment, PathBuf) {
    let segment = Segment::create_file(&dir.join("segment"), &SMALL).unwrap();
    let copy = dir.join("copy");
    fs::copy(segment.path().unwrap(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).unwrap();
    (segment, copy)
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn an_untouched_copy_attaches() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, copy) = segment_image(dir.path());
    let attached = Segment::attach_file(&copy).unwrap();
    assert_eq!(attached.header(), segment.header());
}

#[test]
fn another_layout_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_segment, copy) = segment_image(dir.path());
    overwrite(&copy, 8, &7u32.to_le_bytes());
    let error = Segment::attach_file(&copy).unwrap_err();
    assert!(matches!(
        error,
        AttachError::VersionMismatch {
            found: 7,
            expected: LAYOUT_VERSION
        }
    ));
    assert_eq!(
        error.to_string(),
        format!("layout version 7, expected {LAYOUT_VERSION}")
    );
}

#[test]
fn bad_magic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_segment, copy) = segment_image(dir.path());
    overwrite(&copy, 0, b"NOTSHM!!");
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::BadMagic { found, .. } if &found == b"NOTSHM!!"
    ));
}

#[test]
fn a_changed_header_field_fails_the_header_crc() {
    let dir = tempfile::tempdir().unwrap();
    let (_segment, copy) = segment_image(dir.path());
    overwrite(&copy, 32, &3u32.to_le_bytes());
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::HeaderCorrupt { .. }
    ));
}

#[test]
fn a_file_of_the_wrong_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, copy) = segment_image(dir.path());
    let expected = segment.header().total_size;
    OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(expected + 4096)
        .unwrap();
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::SizeMismatch { found, expected: e } if found == expected + 4096 && e == expected
    ));
    fs::write(&copy, b"tiny").unwrap();
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::SizeMismatch {
            found: 4,
            expected: 128
        }
    ));
}

#[test]
fn a_file_other_users_can_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_segment, copy) = segment_image(dir.path());
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::InsecureMode { found: 0o644 }
    ));
}

#[test]
fn a_file_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_segment, copy) = segment_image(dir.path());
    nix::unistd::chown(&copy, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    assert!(matches!(
        Segment::attach_file(&copy).unwrap_err(),
        AttachError::WrongOwner {
            found: 65534,
            expected: 0
        }
    ));
}

#[test]
fn creating_over_a_leftover_file_fails_instead_of_reusing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leftover");
    fs::write(&path, b"stale").unwrap();
    let error = Segment::create_file(&path, &SMALL).unwrap_err();
    assert!(
        matches!(&error, CreateError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        b"stale",
        "the leftover is untouched"
    );
}

#[test]
fn invalid_configurations_are_refused() {
    for config in [
        SegmentConfig {
            slot_count: 0,
            slot_size: 64,
        },
        SegmentConfig {
            slot_count: 1,
            slot_size: 65,
        },
    ] {
        assert!(matches!(
            Segment::create(&config).unwrap_err(),
            CreateError::InvalidConfig(_)
        ));
    }
}

/// A full filesystem fails at creation with ENOSPC (no SIGBUS later) and leaves no file behind.
#[test]
fn a_full_tmpfs_fails_creation_with_no_space() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("skipped: this machine refused the tmpfs mount");
        return;
    }
    let path = dir.path().join("segment");
    let result = Segment::create_file(&path, &SegmentConfig::default());
    let exists = path.exists();
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
    assert!(
        matches!(result, Err(CreateError::NoSpace { .. })),
        "{result:?}"
    );
    assert!(!exists, "a failed creation removes its file");
}

#[test]
fn descriptor_passing_hands_over_a_working_segment() {
    let segment = Arc::new(Segment::create(&SMALL).unwrap());
    let name = format!("shmbridge-test-{}-pass", std::process::id());
    let server = ControlServer::spawn(Arc::clone(&segment), &name).unwrap();
    let attached = Arc::new(attach_via_socket(&name, Duration::from_secs(2)).unwrap());
    assert_eq!(attached.epoch(), segment.epoch());

    let producer = Producer::new(segment, ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(attached, ConsumerOptions::default()).unwrap();
    let mut slot = producer.claim(3, Duration::ZERO).unwrap();
    slot.write_all(b"fd!").unwrap();
    let handle = slot.publish().unwrap();
    assert_eq!(
        consumer.acquire(&handle).unwrap().copy_out().unwrap(),
        b"fd!"
    );

    drop(server);
    assert!(
        attach_via_socket(&name, Duration::from_millis(200)).is_err(),
        "a dropped server stops answering"
    );
}

/// The segment_attach fuzz seed was built from the layout spec alone (by a Python script, as a
/// peer in another language would): it must attach and its READY slot must read back.
#[test]
fn an_image_built_from_the_spec_alone_attaches_and_reads() {
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/segment_attach/two_slots_one_ready"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image");
    fs::write(&path, &image).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let segment = Arc::new(Segment::attach_file(&path).unwrap());
    let view = segment.inspect(0).unwrap();
    let handle = shmbridge::Handle {
        epoch: segment.epoch(),
        slot: 0,
        generation: view.generation,
        len: view.len,
        crc: view.crc,
    };
    let consumer = Consumer::new(segment, ConsumerOptions::default()).unwrap();
    assert_eq!(
        consumer.acquire(&handle).unwrap().copy_out().unwrap(),
        br#"{"users":[]}"#
    );
}
