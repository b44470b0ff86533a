//! Attaching through the descriptor socket is bounded: a listener that accepts nothing, with
//! room in its backlog or with a full one, makes `attach_via_socket` fail with
//! `AttachError::TimedOut` instead of waiting forever.
//!
//! Each attach runs on its own thread and the test waits for its answer with a deadline far
//! beyond the attach timeout, so an unbounded wait fails the test instead of hanging it.
#![cfg(not(loom))]

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use shmbridge::testing::silent_listener;
use shmbridge::{AttachError, attach_via_socket, attach_via_socket_read_only};

/// What the tests give the attach.
const ATTACH_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a test waits for the attach to give up: an attach still waiting then is unbounded.
const VERDICT_WITHIN: Duration = Duration::from_secs(20);

/// Connects without blocking until the listener's backlog refuses more; returns the
/// connections, which must stay open to keep it full.
fn fill_backlog(name: &str) -> Vec<OwnedFd> {
    let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => queued.push(fd),
            Err(Errno::EAGAIN) => return queued,
            Err(errno) => panic!("filling the backlog: {errno}"),
        }
        assert!(queued.len() < 4096, "the backlog never filled");
    }
}

/// Runs `attach` on a thread and returns its result, or fails if it has none in time.
fn bounded<T: Send + 'static>(attach: impl FnOnce() -> T + Send + 'static) -> T {
    let (answer, verdict) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = answer.send(attach());
    });
    verdict
        .recv_timeout(VERDICT_WITHIN)
        .expect("attach still waiting long after its timeout: the wait is unbounded")
}

#[test]
fn a_full_backlog_makes_attach_time_out() {
    let (_listener, name) = silent_listener("full-backlog", 0);
    let _queued = fill_backlog(&name);
    let attach = {
        let name = name.clone();
        bounded(move || attach_via_socket(&name, ATTACH_TIMEOUT))
    };
    assert!(
        matches!(
            attach,
            Err(AttachError::TimedOut {
                op: "connect to the descriptor server",
                ..
            })
        ),
        "{attach:?}"
    );
    // Inspectors take the same path.
    let inspect = bounded(move || attach_via_socket_read_only(&name, ATTACH_TIMEOUT));
    assert!(
        matches!(inspect, Err(AttachError::TimedOut { .. })),
        "{inspect:?}"
    );
}

#[test]
fn a_listener_that_never_answers_makes_attach_time_out() {
    // Room in the backlog: the connect succeeds, and nothing ever arrives.
    let (_listener, name) = silent_listener("never-answers", 8);
    let attach = bounded(move || attach_via_socket(&name, ATTACH_TIMEOUT));
    assert!(
        matches!(
            attach,
            Err(AttachError::TimedOut {
                op: "receive the segment descriptor",
                ..
            })
        ),
        "{attach:?}"
    );
}

#[test]
fn no_listener_is_an_immediate_io_error() {
    let name = format!("shmbridge-test-nobody-{}", std::process::id());
    let attach = bounded(move || attach_via_socket(&name, ATTACH_TIMEOUT));
    let Err(AttachError::Io { source, .. }) = attach else {
        panic!("{attach:?}");
    };
    assert_eq!(source.raw_os_error(), Some(Errno::ECONNREFUSED as i32));
}
