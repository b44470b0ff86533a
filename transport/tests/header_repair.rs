//! A scribbled segment header is restored by the producer's reaper pass, so a consumer that
//! attaches afterwards (a restarted gateway) validates it again instead of failing forever.
#![cfg(not(loom))]

use std::sync::Arc;

use shmbridge::layout::HEADER_SIZE;
use shmbridge::{AttachError, Producer, ProducerOptions, Segment, SegmentConfig};

#[test]
fn the_reaper_writes_a_scribbled_header_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let segment = Arc::new(
        Segment::create_file(
            &path,
            &SegmentConfig {
                slot_count: 2,
                slot_size: 4096,
            },
        )
        .unwrap(),
    );
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    producer.reap();
    assert_eq!(
        producer.stats().header_repairs,
        0,
        "an intact header is left alone"
    );

    // A second, independent mapping of the file, as a scribbling process would have.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: the test owns the file; the other mapping only ever reads the header through
    // volatile reads and atomics, which tolerate this concurrent write.
    let mut scribbler = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let original = scribbler[..HEADER_SIZE as usize].to_vec();
    // The epoch, the magic, and a reserved byte the header crc does not cover: all restored.
    for offset in [20, 0, HEADER_SIZE as usize - 1] {
        scribbler[offset] ^= 0x5A;
        if offset < 20 + 8 {
            assert!(matches!(
                Segment::attach_file(&path),
                Err(AttachError::HeaderCorrupt { .. } | AttachError::BadMagic { .. })
            ));
        }
        producer.reap();
        assert_eq!(&scribbler[..HEADER_SIZE as usize], &original[..]);
        let attached = Segment::attach_file(&path).unwrap();
        assert_eq!(attached.header(), segment.header());
    }
    assert_eq!(producer.stats().header_repairs, 3);
    producer.reap();
    assert_eq!(producer.stats().header_repairs, 3, "nothing more to repair");
}
