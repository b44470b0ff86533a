use super::*;
use crate::consumer::{Consumer, ConsumerOptions};
use crate::segment::SegmentConfig;

/// A ticket's bytes count while it waits (READY) and while its consumer verifies it
/// (READING), and stop counting when the consumer releases it.
#[test]
fn a_tickets_bytes_count_until_its_release() {
    let segment = Arc::new(
        Segment::create(&SegmentConfig {
            slot_count: 2,
            slot_size: 64,
        })
        .unwrap(),
    );
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let consumer = Consumer::new(segment, ConsumerOptions::default()).unwrap();
    let payload = SealedPayload::from_bytes(&[1; 100]).unwrap();
    let handle = producer.publish_sealed(&payload, Duration::ZERO).unwrap();
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    let reading = consumer.take(&handle).unwrap();
    assert!(reading.is_held());
    assert_eq!(producer.stats().sealed_bytes_in_flight, 100);
    drop(reading);
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    assert_eq!(producer.stats().sealed_publications, 1);
}
