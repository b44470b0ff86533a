use super::*;
use crate::handle::Handle;
use crate::layout::MAX_GENERATION;

fn handle() -> Handle {
    Handle {
        epoch: 0x9f86_d081_884c_7d65,
        slot: 3,
        generation: 0x1a,
        len: 256_873,
        crc: 0x5d41_402a,
    }
}

fn head() -> ResponseHead {
    let mut head = ResponseHead::default();
    head.set_content_type("application/json").unwrap();
    head.add_header("x-payload-crc32", "5d41402a").unwrap();
    head
}

#[test]
fn every_frame_round_trips() {
    let requests = [
        Request::Publish {
            id: 7,
            deadline_ns: 123_456_789,
            request: b"GET /blobs?size=3\r\n\r\n",
        },
        Request::Publish {
            id: 8,
            deadline_ns: 1,
            request: &[0xff; MAX_REQUEST_LEN],
        },
        Request::Release {
            id: u64::MAX,
            slot: 63,
            generation: MAX_GENERATION,
        },
        Request::Board { id: 5 },
    ];
    for request in requests {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
    let inline = vec![7u8; MAX_INLINE_LEN];
    let mut answers = vec![
        Answer::Published {
            id: 9,
            head: head(),
            placement: Placement::Slot(handle()),
            object: None,
        },
        Answer::Published {
            id: 9,
            head: ResponseHead::default(),
            placement: Placement::Sealed(handle()),
            object: None,
        },
        Answer::Published {
            id: 10,
            head: head(),
            placement: Placement::Inline {
                body: &inline,
                crc: 1,
            },
            object: None,
        },
    ];
    answers.push(Answer::Published {
        id: 11,
        head: head(),
        placement: Placement::Sealed(handle()),
        object: Some(ObjectVersion {
            key: 0,
            version: u64::MAX,
        }),
    });
    answers.push(Answer::Board {
        id: 12,
        epoch: 3,
        entry_count: 4096,
    });
    answers.extend(RefusalCode::ALL.map(|code| Answer::Refused {
        id: 1,
        refusal: Refusal::new(code, 32),
    }));
    for answer in answers {
        assert_eq!(Answer::decode(&answer.encode()), Ok(answer));
    }
}

#[test]
fn the_published_frame_matches_the_documented_layout() {
    let frame = Answer::Published {
        id: 0x0102_0304_0506_0708,
        head: head(),
        placement: Placement::Slot(handle()),
        object: Some(ObjectVersion {
            key: 0x1122_3344_5566_7788,
            version: 0x2a,
        }),
    }
    .encode();
    let mut head_bytes = Vec::new();
    head_bytes.extend_from_slice(&16u16.to_le_bytes());
    head_bytes.extend_from_slice(b"application/json");
    head_bytes.extend_from_slice(&1u16.to_le_bytes());
    head_bytes.extend_from_slice(&15u16.to_le_bytes());
    head_bytes.extend_from_slice(b"x-payload-crc32");
    head_bytes.extend_from_slice(&8u16.to_le_bytes());
    head_bytes.extend_from_slice(b"5d41402a");
    let expected: Vec<u8> = [
        &b"SHMC"[..],
        &[4, 3, 0, 0],
        &0x0102_0304_0506_0708u64.to_le_bytes(),
        &[2, 0],
        &200u16.to_le_bytes(),
        &(head_bytes.len() as u32).to_le_bytes(),
        &0x9f86_d081_884c_7d65u64.to_le_bytes(),
        &3u32.to_le_bytes(),
        &256_873u32.to_le_bytes(),
        &0x1au64.to_le_bytes(),
        &0x5d41_402au32.to_le_bytes(),
        &[0; 4],
        &0x1122_3344_5566_7788u64.to_le_bytes(),
        &0x2au64.to_le_bytes(),
        &head_bytes,
    ]
    .concat();
    assert_eq!(frame, expected);
}

#[test]
fn malformed_frames_are_named() {
    let publish = Request::Publish {
        id: 1,
        deadline_ns: 1,
        request: b"abc",
    }
    .encode();
    assert_eq!(
        Request::decode(&publish[..10]),
        Err(FrameError::Short { len: 10 })
    );
    assert_eq!(
        Request::decode(&publish[..34]),
        Err(FrameError::Length {
            kind: PUBLISH,
            len: 34,
            expected: 35
        })
    );
    let mut bad = publish.clone();
    bad[0] = b'X';
    assert_eq!(Request::decode(&bad), Err(FrameError::BadMagic));
    let mut bad = publish.clone();
    bad[4] = 1;
    assert_eq!(Request::decode(&bad), Err(FrameError::Version { found: 1 }));
    assert_eq!(other_version_id(&bad), Some(1));
    assert_eq!(other_version_id(&publish), None);
    let mut bad = publish.clone();
    bad[29] = 1;
    assert_eq!(Request::decode(&bad), Err(FrameError::Reserved));
    let mut bad = publish.clone();
    bad[5] = 9;
    assert_eq!(
        Request::decode(&bad),
        Err(FrameError::UnknownKind { kind: 9 })
    );
    let mut bad = publish.clone();
    bad[24..28].copy_from_slice(&(MAX_REQUEST_LEN as u32 + 1).to_le_bytes());
    assert_eq!(
        Request::decode(&bad),
        Err(FrameError::Bound {
            field: "request",
            len: MAX_REQUEST_LEN + 1,
            max: MAX_REQUEST_LEN
        })
    );
    assert_eq!(
        Answer::decode(&publish),
        Err(FrameError::WrongDirection { kind: PUBLISH })
    );
    let mut refused = Answer::Refused {
        id: 1,
        refusal: Refusal::new(RefusalCode::Exhausted, 0),
    }
    .encode();
    refused[16] = 99;
    assert_eq!(
        Answer::decode(&refused),
        Err(FrameError::UnknownRefusal { code: 99 })
    );
}

#[test]
fn malformed_answers_are_named() {
    let inline = Answer::Published {
        id: 1,
        head: head(),
        placement: Placement::Inline {
            body: b"hello",
            crc: 5,
        },
        object: None,
    }
    .encode();
    let mut bad = inline.clone();
    bad[16] = 4;
    assert_eq!(
        Answer::decode(&bad),
        Err(FrameError::UnknownTier { tier: 4 })
    );
    let mut bad = inline.clone();
    bad[32] = 1;
    assert_eq!(Answer::decode(&bad), Err(FrameError::InlineHandle));
    let mut bad = inline.clone();
    bad[36..40].copy_from_slice(&(MAX_INLINE_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        Answer::decode(&bad),
        Err(FrameError::Bound {
            field: "inline body",
            ..
        })
    ));
    let mut bad = inline.clone();
    bad[20..24].copy_from_slice(&(MAX_HEAD_LEN as u32 + 1).to_le_bytes());
    assert!(matches!(
        Answer::decode(&bad),
        Err(FrameError::Bound { field: "head", .. })
    ));
    assert!(matches!(
        Answer::decode(&inline[..inline.len() - 1]),
        Err(FrameError::Length { .. })
    ));
    let mut bad = inline.clone();
    bad[18..20].copy_from_slice(&7u16.to_le_bytes());
    assert_eq!(
        Answer::decode(&bad),
        Err(FrameError::Head(HeadError::Status(7)))
    );
    let mut bad = inline.clone();
    bad[17] = 1;
    assert_eq!(Answer::decode(&bad), Err(FrameError::Reserved));
}

#[test]
fn an_object_key_without_a_version_and_odd_board_frames_are_refused() {
    let mut frame = Answer::Published {
        id: 1,
        head: head(),
        placement: Placement::Slot(handle()),
        object: None,
    }
    .encode();
    frame[56] = 1;
    assert_eq!(Answer::decode(&frame), Err(FrameError::KeyWithoutVersion));

    let mut board = Answer::Board {
        id: 2,
        epoch: 3,
        entry_count: 8,
    }
    .encode();
    board[30] = 1;
    assert_eq!(Answer::decode(&board), Err(FrameError::Reserved));
    board.push(0);
    assert!(matches!(
        Answer::decode(&board),
        Err(FrameError::Length { .. })
    ));

    let mut ask = Request::Board { id: 4 }.encode();
    ask.push(0);
    assert!(matches!(
        Request::decode(&ask),
        Err(FrameError::Length { .. })
    ));
    let ask = Request::Board { id: 4 }.encode();
    assert!(matches!(
        Answer::decode(&ask),
        Err(FrameError::WrongDirection { kind: 5 })
    ));
}
