use std::io::Write;
use std::os::fd::AsFd;

use nix::sys::socket::{
    AddressFamily, ControlMessage, SockFlag, SockType, recv, sendmsg, socketpair,
};

use super::*;
use crate::control::frame::{MAX_REQUEST_FRAME_LEN, RefusalCode};
use crate::fdpass::send_message;
use crate::producer::{Producer, ProducerOptions};
use crate::sealed::SealedPayload;
use crate::segment::SegmentConfig;

const SLOT_SIZE: u32 = 64;

/// A client over one end of a socket pair, driven by hand; the other end plays the producer's
/// socket, and a real producer on the client's segment makes the publications it answers with.
struct Rig {
    socket: OwnedFd,
    producer: Producer,
    client: ControlClient,
    reader: AnswerReader,
}

type Answers = mpsc::Receiver<Result<Publication, RequestError>>;

fn result(answers: &Answers) -> Result<Publication, RequestError> {
    answers.try_recv().expect("the requester was answered")
}

impl Rig {
    fn new() -> Self {
        let (socket, client_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let segment = Arc::new(
            Segment::create(&SegmentConfig {
                slot_count: 2,
                slot_size: SLOT_SIZE,
            })
            .unwrap(),
        );
        let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
        let consumer = Consumer::new(segment, ConsumerOptions::default()).unwrap();
        let (client, reader) = ControlClient::over(client_end, consumer);
        Self {
            socket,
            producer,
            client,
            reader,
        }
    }

    /// Sends a publish request; returns its id, as the producer reads it, and where its
    /// answer goes.
    fn request(&self) -> (u64, Answers) {
        self.request_bytes(b"GET /users?count=1 HTTP/1.1")
    }

    /// [`Rig::request`] of `bytes`, which must reach the producer exactly.
    fn request_bytes(&self, bytes: &[u8]) -> (u64, Answers) {
        let (answered, answers) = mpsc::channel();
        let id = self
            .client
            .request_with(bytes, u64::MAX, move |result| {
                let _ = answered.send(result);
            })
            .unwrap();
        let frame = self.next_frame().expect("a publish frame");
        let Ok(Request::Publish {
            id: read,
            deadline_ns,
            request,
        }) = Request::decode(&frame)
        else {
            panic!("{frame:02x?}")
        };
        assert_eq!((read, deadline_ns), (id, u64::MAX));
        assert!(request == bytes, "the request's bytes changed on the way");
        (id, answers)
    }

    /// Sends a board request; returns its id, as the producer reads it, and where the epoch
    /// of the board it is answered with goes.
    fn ask_board(&self) -> (u64, mpsc::Receiver<Result<u64, RequestError>>) {
        let (answered, answer) = mpsc::channel();
        let id = self
            .client
            .board_with(move |result| {
                let _ = answered.send(result.map(|view| view.epoch()));
            })
            .unwrap();
        let frame = self.next_frame().expect("a board request");
        assert_eq!(Request::decode(&frame), Ok(Request::Board { id }));
        (id, answer)
    }

    /// The next frame the client sent, if one is waiting.
    fn next_frame(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_REQUEST_FRAME_LEN + 1];
        let len = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
        buf.truncate(len);
        Some(buf)
    }

    /// A handle of the client's segment that names nothing published.
    fn handle(&self, len: u32) -> Handle {
        Handle {
            epoch: self.client.segment().epoch(),
            slot: 1,
            generation: 7,
            len,
            crc: 0,
        }
    }

    /// `bytes` published in a slot of the segment.
    fn slot(&self, bytes: &[u8]) -> Handle {
        let mut slot = self.producer.claim(bytes.len(), Duration::ZERO).unwrap();
        slot.write_all(bytes).unwrap();
        slot.publish().unwrap()
    }

    /// `bytes` published as a sealed payload.
    fn sealed(&self, bytes: &[u8]) -> (Handle, SealedPayload) {
        let payload = SealedPayload::from_bytes(bytes).unwrap();
        let handle = self
            .producer
            .publish_sealed(&payload, Duration::ZERO)
            .unwrap();
        (handle, payload)
    }

    fn answer(&self, answer: &Answer<'_>, fds: &[BorrowedFd<'_>]) {
        let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs = if raw.is_empty() { &[][..] } else { &rights[..] };
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[std::io::IoSlice::new(&answer.encode())],
            cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    /// Every slot free and no sealed byte counted: nothing the rig published leaked.
    fn assert_nothing_held(&self) {
        let stats = self.producer.stats();
        assert_eq!(stats.slots.free, 2, "{stats:?}");
        assert_eq!(stats.sealed_bytes_in_flight, 0, "{stats:?}");
    }
}

fn published(id: u64, placement: Placement<'_>) -> Answer<'_> {
    Answer::Published {
        id,
        head: ResponseHead::default(),
        placement,
        object: None,
    }
}

fn head() -> ResponseHead {
    let mut head = ResponseHead::default();
    head.set_status(201).unwrap();
    head.set_content_type("application/octet-stream").unwrap();
    head.add_header("x-request-id", "r-1").unwrap();
    head
}

fn bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// A pipe whose write end is sent: once every copy of it is closed, the read end reads
/// end-of-file, which shows the receiver closed the copy it got; while one is open, it
/// reads EAGAIN (non-blocking), so a leak fails the test instead of hanging it.
fn pipe() -> (OwnedFd, OwnedFd) {
    use nix::fcntl::OFlag;
    nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap()
}

fn closed_everywhere(read_end: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    nix::unistd::read(read_end, &mut byte) == Ok(0)
}

fn protocol_error(result: Result<Publication, RequestError>) -> ProtocolError {
    match result {
        Err(RequestError::Protocol(error)) => error,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_request_travels_byte_for_byte_up_to_its_bound() {
    let rig = Rig::new();
    let mut ids = std::collections::HashSet::new();
    for request in [
        Vec::new(),
        vec![0],
        b"POST /x\r\n\r\n\0\xff".to_vec(),
        bytes(MAX_REQUEST_LEN, 3),
    ] {
        let (id, _answers) = rig.request_bytes(&request);
        assert!(ids.insert(id), "id {id} given twice");
    }
    // One byte more is refused before anything is sent, and the callback is not called.
    let (answered, answers) = mpsc::channel::<()>();
    let refused = rig
        .client
        .request_with(&bytes(MAX_REQUEST_LEN + 1, 3), u64::MAX, move |_| {
            drop(answered)
        });
    assert!(
        matches!(refused, Err(RequestError::RequestTooLarge { len }) if len == MAX_REQUEST_LEN + 1),
        "{refused:?}"
    );
    assert_eq!(answers.try_recv(), Err(mpsc::TryRecvError::Disconnected));
    assert_eq!(rig.next_frame(), None, "an oversized request was sent");
    assert!(rig.client.is_open());
}

#[test]
fn a_sealed_answer_carries_its_descriptor_to_redeem_and_releases_unless_redeemed() {
    let rig = Rig::new();
    let body = bytes(100, 1);
    let (id, answers) = rig.request();
    let (handle, payload) = rig.sealed(&body);
    rig.answer(
        &Answer::Published {
            id,
            head: head(),
            placement: Placement::Sealed(handle),
            object: None,
        },
        &[payload.as_fd()],
    );
    assert!(rig.reader.receive_ready());
    let publication = result(&answers).unwrap();
    assert_eq!(publication.tier(), Tier::Sealed);
    assert_eq!(
        (publication.len(), publication.handle()),
        (100, Some(&handle))
    );
    assert_eq!(publication.head(), &head());
    let response = publication.redeem().unwrap();
    assert_eq!(response.head, head());
    assert_eq!(response.body.tier(), Tier::Sealed);
    assert_eq!(&response.body[..], &body[..]);
    assert_eq!(
        rig.next_frame(),
        None,
        "a redeemed publication was released"
    );

    // The same, dropped unredeemed: released by its handle, and its descriptor closed.
    let (id, answers) = rig.request();
    let (handle, payload) = rig.sealed(&bytes(200, 2));
    rig.answer(
        &published(id, Placement::Sealed(handle)),
        &[payload.as_fd()],
    );
    assert!(rig.reader.receive_ready());
    drop(result(&answers).unwrap());
    assert_eq!(
        Request::decode(&rig.next_frame().expect("a release")),
        Ok(Request::Release {
            id,
            slot: handle.slot,
            generation: handle.generation
        })
    );
    assert!(rig.producer.withdraw(handle.slot, handle.generation));
    drop((payload, response));
    rig.assert_nothing_held();
    assert!(rig.client.is_open());
}

#[test]
fn inline_and_slot_answers_redeem_to_their_bytes_and_a_bad_inline_crc_does_not_verify() {
    let rig = Rig::new();
    let body = bytes(40, 4);
    let (id, answers) = rig.request();
    let crc = crc32fast::hash(&body);
    rig.answer(
        &Answer::Published {
            id,
            head: head(),
            placement: Placement::Inline { body: &body, crc },
            object: None,
        },
        &[],
    );
    assert!(rig.reader.receive_ready());
    let publication = result(&answers).unwrap();
    assert_eq!(
        (publication.tier(), publication.handle()),
        (Tier::Inline, None)
    );
    let response = publication.redeem().unwrap();
    assert_eq!(
        (response.head, response.body.tier()),
        (head(), Tier::Inline)
    );
    assert_eq!(&response.body[..], &body[..]);

    let (id, answers) = rig.request();
    let handle = rig.slot(&body);
    rig.answer(&published(id, Placement::Slot(handle)), &[]);
    assert!(rig.reader.receive_ready());
    let publication = result(&answers).unwrap();
    assert_eq!(publication.tier(), Tier::Slot);
    let response = publication.redeem().unwrap();
    assert_eq!(response.body.tier(), Tier::Slot);
    assert_eq!(&response.body.into_bytes()[..], &body[..]);

    // An inline body whose crc does not match fails its redemption, not the connection; an
    // inline answer holds nothing, so nothing is released.
    let (id, answers) = rig.request();
    rig.answer(
        &published(
            id,
            Placement::Inline {
                body: &body,
                crc: crc ^ 1,
            },
        ),
        &[],
    );
    assert!(rig.reader.receive_ready());
    let redeemed = result(&answers).unwrap().redeem();
    assert!(
        matches!(
            redeemed,
            Err(RedeemError::Read(ReadError::ChecksumMismatch { expected, found }))
                if expected == crc ^ 1 && found == crc
        ),
        "{redeemed:?}"
    );
    assert_eq!(rig.next_frame(), None);
    assert!(rig.client.is_open());
    rig.assert_nothing_held();
}

#[test]
fn a_sealed_answer_without_its_descriptor_fails_and_closes() {
    let rig = Rig::new();
    let (id, answers) = rig.request();
    let (_, waiting) = rig.request();
    rig.answer(
        &published(id, Placement::Sealed(rig.handle(SLOT_SIZE + 1))),
        &[],
    );
    assert!(!rig.reader.receive_ready(), "the connection stayed open");
    assert!(!rig.client.is_open());
    // The requester it answered learns why; the waiting one that the connection closed.
    assert_eq!(
        protocol_error(result(&answers)),
        ProtocolError::MissingDescriptor { len: SLOT_SIZE + 1 }
    );
    assert!(matches!(result(&waiting), Err(RequestError::Closed)));
    assert!(matches!(
        rig.client.request_with(b"", u64::MAX, |_| {}),
        Err(RequestError::Closed)
    ));
}

#[test]
fn a_descriptor_on_an_inline_or_slot_answer_or_a_refusal_fails_closed() {
    let body = [7u8; 8];
    let candidates = |rig: &Rig, id| {
        [
            published(
                id,
                Placement::Inline {
                    body: &body,
                    crc: crc32fast::hash(&body),
                },
            ),
            published(id, Placement::Slot(rig.handle(SLOT_SIZE))),
            Answer::Refused {
                id,
                refusal: Refusal::new(RefusalCode::Exhausted, 0),
            },
        ]
    };
    for index in 0..3 {
        let rig = Rig::new();
        let (id, answers) = rig.request();
        let (_, waiting) = rig.request();
        let (read_end, write_end) = pipe();
        let answer = candidates(&rig, id)[index].clone();
        rig.answer(&answer, &[write_end.as_fd()]);
        drop(write_end);
        assert!(!rig.reader.receive_ready(), "{answer:?}: still open");
        assert!(!rig.client.is_open());
        assert_eq!(
            protocol_error(result(&answers)),
            ProtocolError::UnexpectedDescriptor,
            "{answer:?}"
        );
        assert!(matches!(result(&waiting), Err(RequestError::Closed)));
        assert!(closed_everywhere(&read_end), "{answer:?}: descriptor kept");
    }
}

#[test]
fn more_descriptors_than_one_close_the_connection_and_every_descriptor() {
    // Two fit the room for one (the control buffer is rounded up), three do not.
    for count in [2, 3] {
        let rig = Rig::new();
        let (id, answers) = rig.request();
        let (read_end, write_end) = pipe();
        let (handle, payload) = rig.sealed(&bytes(100, 5));
        let mut fds = vec![write_end.as_fd(); count];
        fds[0] = payload.as_fd();
        rig.answer(&published(id, Placement::Sealed(handle)), &fds);
        drop(write_end);
        assert!(
            !rig.reader.receive_ready(),
            "{count} descriptors: still open"
        );
        assert!(matches!(result(&answers), Err(RequestError::Closed)));
        assert!(
            closed_everywhere(&read_end),
            "{count} descriptors: one kept"
        );
    }
}

/// A slot answer longer than a slot breaks the protocol and closes the connection. A sealed
/// answer may carry a body of any length, a slot's worth or less included (an immutable body
/// its producer hands out again), and a slot answer of exactly the slot size is a slot's.
#[test]
fn a_slot_answer_above_the_slot_size_fails_and_closes_and_sealed_fits_any_length() {
    let rig = Rig::new();
    let (id, answers) = rig.request();
    rig.answer(
        &published(id, Placement::Slot(rig.handle(SLOT_SIZE + 1))),
        &[],
    );
    assert!(!rig.reader.receive_ready(), "the connection stayed open");
    assert_eq!(
        protocol_error(result(&answers)),
        ProtocolError::SlotTooLarge {
            len: SLOT_SIZE + 1,
            slot_size: SLOT_SIZE
        }
    );

    let rig = Rig::new();
    let (id, answers) = rig.request();
    let handle = rig.slot(&bytes(SLOT_SIZE as usize, 6));
    rig.answer(&published(id, Placement::Slot(handle)), &[]);
    assert!(rig.reader.receive_ready());
    let body = result(&answers).unwrap().redeem().unwrap().body;
    assert_eq!(&body[..], &bytes(SLOT_SIZE as usize, 6)[..]);
    for len in [0, 1, SLOT_SIZE, SLOT_SIZE + 1] {
        let (id, answers) = rig.request();
        let (handle, payload) = rig.sealed(&bytes(len as usize, 6));
        rig.answer(
            &published(id, Placement::Sealed(handle)),
            &[payload.as_fd()],
        );
        assert!(rig.reader.receive_ready());
        let body = result(&answers).unwrap().redeem().unwrap().body;
        assert_eq!(&body[..], &bytes(len as usize, 6)[..], "{len}");
    }
    assert!(rig.client.is_open());
}

/// A handle of another segment fails its own request and closes its descriptor; the
/// connection is not at fault for it and stays open.
#[test]
fn a_handle_of_another_segment_fails_only_its_request() {
    let rig = Rig::new();
    let (id, answers) = rig.request();
    let (read_end, write_end) = pipe();
    let foreign = Handle {
        epoch: rig.client.segment().epoch() ^ 1,
        ..rig.handle(SLOT_SIZE + 1)
    };
    rig.answer(
        &published(id, Placement::Sealed(foreign)),
        &[write_end.as_fd()],
    );
    drop(write_end);
    assert!(rig.reader.receive_ready());
    assert!(matches!(
        result(&answers),
        Err(RequestError::ForeignHandle { found, .. }) if found == foreign.epoch
    ));
    assert!(closed_everywhere(&read_end));
    assert!(rig.client.is_open());
}

#[test]
fn a_sealed_answer_for_an_abandoned_request_is_released_and_its_descriptor_closed() {
    let rig = Rig::new();
    let (id, _) = rig.request();
    rig.client.abandon(id);
    let (read_end, write_end) = pipe();
    // Not a sealed payload, but nothing looks at it before the abandoned answer is dropped.
    send_message(
        rig.socket.as_fd(),
        &published(id, Placement::Sealed(rig.handle(SLOT_SIZE * 2))).encode(),
        Some(write_end.as_fd()),
    )
    .unwrap();
    drop(write_end);
    assert!(rig.reader.receive_ready());
    assert!(closed_everywhere(&read_end));
    assert_eq!(
        Request::decode(&rig.next_frame().expect("a release")),
        Ok(Request::Release {
            id,
            slot: 1,
            generation: 7
        })
    );
}

/// A slot answer for an abandoned request is released too; an inline one holds nothing and
/// sends nothing.
#[test]
fn abandoned_slot_answers_are_released_and_inline_ones_need_not_be() {
    let rig = Rig::new();
    let (id, _) = rig.request();
    rig.client.abandon(id);
    let handle = rig.slot(&bytes(10, 7));
    rig.answer(&published(id, Placement::Slot(handle)), &[]);
    assert!(rig.reader.receive_ready());
    let frame = rig.next_frame().expect("a release");
    let Ok(Request::Release {
        slot, generation, ..
    }) = Request::decode(&frame)
    else {
        panic!("{frame:02x?}");
    };
    assert!(rig.producer.withdraw(slot, generation));

    let (id, _) = rig.request();
    rig.client.abandon(id);
    let body = [1u8; 3];
    rig.answer(
        &published(
            id,
            Placement::Inline {
                body: &body,
                crc: crc32fast::hash(&body),
            },
        ),
        &[],
    );
    assert!(rig.reader.receive_ready());
    assert_eq!(rig.next_frame(), None);
    assert!(rig.client.is_open());
    rig.assert_nothing_held();
}

#[test]
fn a_board_answer_without_its_descriptor_or_for_a_publish_request_fails_closed() {
    let rig = Rig::new();
    let (id, answer) = rig.ask_board();
    let board = Answer::Board {
        id,
        epoch: 1,
        entry_count: 8,
    };
    rig.answer(&board, &[]);
    assert!(!rig.reader.receive_ready());
    assert!(matches!(
        answer.try_recv().unwrap(),
        Err(RequestError::Protocol(
            ProtocolError::BoardWithoutDescriptor
        ))
    ));

    let rig = Rig::new();
    let (id, answers) = rig.request();
    let real = crate::board::VersionBoard::create(8).unwrap();
    let fd = real.share().unwrap();
    let board = Answer::Board {
        id,
        epoch: real.epoch(),
        entry_count: 8,
    };
    rig.answer(&board, &[fd.as_fd()]);
    assert!(!rig.reader.receive_ready());
    assert_eq!(
        protocol_error(result(&answers)),
        ProtocolError::AnswerMismatch
    );
}

#[test]
fn a_board_unlike_the_one_announced_is_refused_and_the_connection_kept() {
    let rig = Rig::new();
    let (id, answer) = rig.ask_board();
    let real = crate::board::VersionBoard::create(8).unwrap();
    let fd = real.share().unwrap();
    let board = Answer::Board {
        id,
        epoch: real.epoch() ^ 1,
        entry_count: 8,
    };
    rig.answer(&board, &[fd.as_fd()]);
    assert!(rig.reader.receive_ready());
    assert!(matches!(
        answer.try_recv().unwrap(),
        Err(RequestError::Board(BoardError::Header(_)))
    ));
    assert!(rig.client.is_open());
}
