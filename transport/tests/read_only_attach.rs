//! Read-only attach for inspectors: the same validation, a PROT_READ mapping, slot inspection
//! while a producer publishes, and producers and consumers refusing the segment.
#![cfg(not(loom))]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmbridge::{
    Consumer, ConsumerOptions, ControlServer, Producer, ProducerOptions, Segment, SegmentConfig,
    SlotCounts, SlotState, attach_via_socket_read_only,
};

const CONFIG: SegmentConfig = SegmentConfig {
    slot_count: 4,
    slot_size: 4096,
};

#[test]
fn a_read_only_file_attach_is_mapped_prot_read_and_sees_publications() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let segment = Arc::new(Segment::create_file(&path, &CONFIG).unwrap());
    let producer =
        Arc::new(Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap());

    let inspector = Segment::attach_file_read_only(&path).unwrap();
    assert!(!inspector.is_writable());
    assert_eq!(inspector.header(), segment.header());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let shown = path.display().to_string();
    assert!(
        maps.lines()
            .any(|line| line.ends_with(&shown) && line.split_whitespace().nth(1) == Some("r--s")),
        "no read-only shared mapping of {shown}:\n{maps}"
    );

    // A producer publishes on another thread while the inspector reads every descriptor.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let producer = Arc::clone(&producer);
        let stop = Arc::clone(&stop);
        move || {
            let mut published = Vec::new();
            while !stop.load(Ordering::Relaxed) && published.len() < CONFIG.slot_count as usize {
                let mut slot = producer.claim(5, Duration::from_millis(100)).unwrap();
                slot.write_all(b"hello").unwrap();
                published.push(slot.publish().unwrap());
            }
            published
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while SlotCounts::scan(&inspector).ready < CONFIG.slot_count {
        assert!(
            Instant::now() < deadline,
            "publications never became visible"
        );
        for slot in 0..CONFIG.slot_count {
            let view = inspector.inspect(slot).unwrap();
            assert!(view.state.is_some(), "{view:?}");
        }
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    for handle in published {
        let view = inspector.inspect(handle.slot).unwrap();
        assert_eq!(view.state, Some(SlotState::Ready));
        assert_eq!(view.generation, handle.generation);
        assert_eq!((view.len, view.crc), (handle.len, handle.crc));
    }
    assert_eq!(inspector.inspect(CONFIG.slot_count), None);
}

#[test]
fn producers_and_consumers_refuse_a_read_only_segment() {
    let segment = Arc::new(Segment::create(&CONFIG).unwrap());
    let name = format!(
        "shmbridge-read-only-test-{}-{:016x}",
        std::process::id(),
        segment.epoch()
    );
    let _server = ControlServer::spawn(Arc::clone(&segment), &name).unwrap();
    let inspector = Arc::new(attach_via_socket_read_only(&name, Duration::from_secs(5)).unwrap());
    assert!(!inspector.is_writable());
    assert_eq!(inspector.epoch(), segment.epoch());
    assert_eq!(SlotCounts::scan(&inspector).free, CONFIG.slot_count);

    let error = Producer::new(Arc::clone(&inspector), ProducerOptions::default()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(error.to_string().contains("attached read-only"), "{error}");
    let error = Consumer::new(inspector, ConsumerOptions::default()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
}
