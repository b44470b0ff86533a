//! The version board over a real [`ControlServer`] and [`ControlClient`]: a consumer asks for
//! the producer's board, answers name the object versions their handlers observed, a version
//! stays current until its key is invalidated, an invalidation that overtakes a handler leaves
//! its answer naming none, and a producer without a board refuses the request and names no
//! versions.
//!
//! [`ControlServer`]: shmbridge::ControlServer
//! [`ControlClient`]: shmbridge::ControlClient
#![cfg(not(loom))]

mod channel_support;

use std::io::Write;
use std::sync::{Arc, mpsc};

use shmbridge::control::{
    ChannelOptions, HandlerError, RefusalCode, RequestError, ResponseWriter, Tier,
};
use shmbridge::{ProducerOptions, VersionBoard};

use channel_support::{Served, TIMEOUT, producer_with};

/// A handler that names each answer a version of the object its request's first byte names,
/// and writes `len` bytes (the second byte, in KiB) of that byte; a third byte asks it to
/// invalidate its own key between observing it and answering, as a data change would.
fn object_handler(
    board: Option<Arc<VersionBoard>>,
) -> impl Fn(&[u8], &mut ResponseWriter<'_>) -> Result<(), HandlerError> + Send + Sync + 'static {
    move |request: &[u8], response: &mut ResponseWriter<'_>| {
        let key = u64::from(request[0]);
        let observed = response.observe_object(key);
        assert_eq!(observed, board.is_some());
        if request.get(2) == Some(&1)
            && let Some(board) = &board
        {
            board.invalidate(key);
        }
        let len = usize::from(request[1]) * 1024;
        response.write_all(&vec![request[0]; len])?;
        Ok(())
    }
}

fn served(test: &str, board: Option<Arc<VersionBoard>>) -> Served {
    let producer = producer_with(4, 8192, ProducerOptions::default());
    let options = ChannelOptions {
        board: board.clone(),
        ..ChannelOptions::for_segment(producer.segment())
    };
    Served::with_handler(test, producer, Arc::new(object_handler(board)), options)
}

#[test]
fn an_answer_names_a_version_that_stays_current_until_its_key_is_invalidated() {
    let board = Arc::new(VersionBoard::create(64).unwrap());
    let served = served("board-current", Some(Arc::clone(&board)));
    let client = served.connect();
    let view = client.board(TIMEOUT).unwrap();
    assert_eq!(view.epoch(), board.epoch());
    // Inline, slot and sealed bodies all name their object.
    for (key, kib, tier) in [
        (1u8, 1u8, Tier::Inline),
        (2, 6, Tier::Slot),
        (3, 20, Tier::Sealed),
    ] {
        let response = client.request(&[key, kib], TIMEOUT).unwrap();
        assert_eq!(response.body.tier(), tier);
        assert_eq!(&response.body[..], &vec![key; usize::from(kib) * 1024][..]);
        let object = response.object.expect("the handler observed its key");
        assert_eq!(object.key, u64::from(key));
        assert!(view.is_current(view.epoch(), object.key, object.version));
        board.invalidate(object.key);
        assert!(!view.is_current(view.epoch(), object.key, object.version));
        let again = client.request(&[key, kib], TIMEOUT).unwrap();
        let newer = again.object.unwrap();
        assert_ne!(newer.version, object.version);
        assert!(view.is_current(view.epoch(), newer.key, newer.version));
    }
    // Two consumers share the one board.
    let other = served.connect().board(TIMEOUT).unwrap();
    assert_eq!(other.epoch(), view.epoch());
    served.assert_nothing_leaked();
}

#[test]
fn an_invalidation_that_overtakes_the_handler_leaves_its_answer_naming_no_version() {
    let board = Arc::new(VersionBoard::create(64).unwrap());
    let served = served("board-overtaken", Some(Arc::clone(&board)));
    let client = served.connect();
    let response = client.request(&[9, 1, 1], TIMEOUT).unwrap();
    assert_eq!(&response.body[..], &[9; 1024][..]);
    assert_eq!(response.object, None);
    served.assert_nothing_leaked();
}

#[test]
fn a_producer_without_a_board_refuses_the_request_and_names_no_versions() {
    let served = served("board-none", None);
    let client = served.connect();
    match client.board(TIMEOUT) {
        Err(RequestError::Refused(refusal)) => assert_eq!(refusal.code, RefusalCode::NoBoard),
        other => panic!("{:?}", other.map(|view| view.epoch())),
    }
    assert!(
        client.is_open(),
        "a refused board request keeps the connection"
    );
    let response = client.request(&[4, 1], TIMEOUT).unwrap();
    assert_eq!(response.object, None);
    // The asynchronous form answers the same way.
    let (answered, answer) = mpsc::channel();
    client
        .board_with(move |result| {
            let _ = answered.send(result.map(|view| view.epoch()));
        })
        .unwrap();
    assert!(matches!(
        answer.recv_timeout(TIMEOUT).unwrap(),
        Err(RequestError::Refused(_))
    ));
    served.assert_nothing_leaked();
}
