use super::*;

#[test]
fn a_zeroed_state_word_is_no_state() {
    assert_eq!(Word(0).state(), None);
    assert_eq!(Word::new(0, SlotState::Free).state(), Some(SlotState::Free));
}

#[test]
fn a_tagged_value_counts_only_for_its_generation() {
    let field = Tagged::new(7, 1234);
    assert_eq!(field.value_for(7), Some(1234));
    assert_eq!(field.value_for(8), None);
    assert_eq!(
        field.value_for(7 + (1 << 24)),
        Some(1234),
        "tags are 24 bits"
    );
    assert_eq!(Tagged::new(1, TAGGED_VALUE_MAX).value(), TAGGED_VALUE_MAX);
}

#[test]
fn a_tag_is_ahead_only_within_half_the_tag_space() {
    assert!(Tagged::new(10, 0).is_ahead_of(9));
    assert!(!Tagged::new(10, 0).is_ahead_of(10));
    assert!(!Tagged::new(9, 0).is_ahead_of(10));
    assert!(Tagged::new(2, 0).is_ahead_of((1 << 24) - 1), "wraps");
    assert!(Tagged::new(GENERATION_JUMP + 5, 0).is_ahead_of(5));
    assert!(!Tagged::new(5 + (1 << 23), 0).is_ahead_of(5));
}

#[test]
fn every_transition_moves_the_generation() {
    let word = Word::new(41, SlotState::Ready);
    let next = word.next(SlotState::Reading);
    assert_eq!(next.generation(), 42);
    assert_eq!(next.state(), Some(SlotState::Reading));
    assert_ne!(word, next);
}

#[test]
fn generation_wraps_within_56_bits() {
    let last = Word::new(MAX_GENERATION, SlotState::Free);
    assert_eq!(last.generation(), MAX_GENERATION);
    assert_eq!(last.next(SlotState::Writing).generation(), 0);
}

#[test]
fn unknown_state_bits_decode_to_none() {
    assert_eq!(Word(0x1_47).state(), None);
}

#[test]
fn header_crc_changes_with_any_covered_byte() {
    let creator = Owner {
        pid: 1,
        start_time: 3,
        pidfs_ino: 0,
    };
    let header = Header::new(&Geometry::new(2, 64).unwrap(), 7, creator, 0);
    assert_eq!(header.header_crc, header.compute_crc());
    let mut changed = header;
    changed.slot_size = 128;
    assert_ne!(header.compute_crc(), changed.compute_crc());
    changed.refresh_crc();
    assert_eq!(changed.header_crc, changed.compute_crc());
    assert_eq!(Header::from_bytes(&header.to_bytes()), header);
}

#[test]
fn a_new_header_lays_out_the_geometry() {
    let geometry = Geometry::new(3, 128).unwrap();
    let creator = Owner {
        pid: 9,
        start_time: 4,
        pidfs_ino: 5,
    };
    let header = Header::new(&geometry, 11, creator, 1000);
    assert_eq!(header.magic, MAGIC);
    assert_eq!(header.layout_version, LAYOUT_VERSION);
    assert_eq!(header.descriptors_offset, HEADER_SIZE);
    assert_eq!(header.payload_offset, geometry.payload_offset);
    assert_eq!(header.total_size, geometry.total_size);
    assert_eq!((header.creator_pid, header.creator_uid), (9, 1000));
    assert_eq!(header.creator_start_time, 4);
    assert_eq!(header.reserved, [0; 44]);
}

#[test]
fn geometry_rejects_bad_configs() {
    assert!(Geometry::new(0, 64).is_err());
    assert!(Geometry::new(MAX_SLOT_COUNT + 1, 64).is_err());
    assert!(Geometry::new(1, 0).is_err());
    assert!(Geometry::new(1, 100).is_err());
    assert!(Geometry::new(1, MAX_SLOT_SIZE + 64).is_err());
}

#[test]
fn geometry_aligns_payload_to_a_page() {
    let geometry = Geometry::new(3, 128).unwrap();
    assert_eq!(geometry.payload_offset, 4096);
    assert_eq!(geometry.total_size, 4096 + 3 * 128);
    let geometry = Geometry::new(64, 512 * 1024).unwrap();
    assert_eq!(geometry.payload_offset, 8192);
}
