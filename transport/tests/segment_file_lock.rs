//! The named-file backing's ownership: the creator's lock is what marks a segment file as in
//! use (not the header, not a descriptor a consumer still holds), and a segment removes on drop
//! only the file it created, never whatever else has taken its path.
#![cfg(not(loom))]

use std::os::unix::fs::FileExt;
use std::path::Path;

use shmbridge::{Segment, SegmentConfig};

const SMALL: SegmentConfig = SegmentConfig {
    slot_count: 2,
    slot_size: 4096,
};

#[test]
fn a_live_segment_file_is_in_use_whatever_its_header_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let segment = Segment::create_file(&path, &SMALL).unwrap();
    assert!(Segment::file_in_use(&path).unwrap());
    // A scribbler zeroes the header: the file is still the live segment's.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0; 64], 0).unwrap();
    assert!(Segment::file_in_use(&path).unwrap());
    drop(segment);
    assert!(!path.exists(), "the creator removes its own file");
}

#[test]
fn a_consumer_holding_the_descriptor_does_not_keep_the_file_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let survivor = dir.path().join("survivor");
    let segment = Segment::create_file(&path, &SMALL).unwrap();
    // The descriptor a gateway receives over the socket, and a second name for the same file,
    // so that it can be probed after its creator is gone.
    let consumer = Segment::attach_fd(segment.fd().unwrap().try_clone_to_owned().unwrap()).unwrap();
    std::fs::hard_link(&path, &survivor).unwrap();
    assert!(Segment::file_in_use(&survivor).unwrap());
    drop(segment);
    assert!(
        !Segment::file_in_use(&survivor).unwrap(),
        "the creator is gone: a consumer's descriptor must not hold its lock"
    );
    drop(consumer);
}

#[test]
fn a_file_without_a_live_creator_is_not_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    std::fs::write(&path, b"leftover").unwrap();
    assert!(!Segment::file_in_use(&path).unwrap());
    assert!(Segment::file_in_use(&dir.path().join("missing")).is_err());
}

#[test]
fn drop_leaves_a_file_that_took_the_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let moved = dir.path().join("moved");
    let segment = Segment::create_file(&path, &SMALL).unwrap();
    std::fs::rename(&path, &moved).unwrap();
    std::fs::write(&path, b"someone else's file").unwrap();
    drop(segment);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"someone else's file",
        "a segment removes only the file it created"
    );
    assert!(moved.exists(), "and does not chase it under another name");
}

#[test]
fn creating_over_an_existing_file_fails_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let first = Segment::create_file(&path, &SMALL).unwrap();
    assert!(Segment::create_file(&path, &SMALL).is_err());
    assert_file_belongs_to(&path, &first);
    drop(first);
    assert!(!path.exists());
}

fn assert_file_belongs_to(path: &Path, segment: &Segment) {
    let attached = Segment::attach_file_read_only(path).unwrap();
    assert_eq!(attached.epoch(), segment.epoch());
}
