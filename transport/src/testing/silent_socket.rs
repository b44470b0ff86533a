//! A descriptor socket nobody answers: bound and listening on a fresh abstract name, never
//! accepting, as a producer that is stopped, starved or still starting looks to a consumer.
//! For the tests of how attaching gives up, here and in the gateway's.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};

/// A listener on a fresh abstract name (built from `test`, this process's id and a random
/// number) with a backlog of `backlog`, and that name. A connect to it succeeds while the
/// backlog has room, and no greeting ever comes. The name is gone when the descriptor closes.
pub fn silent_listener(test: &str, backlog: i32) -> (OwnedFd, String) {
    let name = format!(
        "shmbridge-test-{test}-{}-{:016x}",
        std::process::id(),
        getrandom::u64().expect("the kernel's random numbers")
    );
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("a Unix socket");
    let addr = UnixAddr::new_abstract(name.as_bytes()).expect("a short abstract name");
    bind(fd.as_raw_fd(), &addr).expect("a fresh abstract name is free");
    listen(&fd, Backlog::new(backlog).expect("a valid backlog")).expect("listen");
    (fd, name)
}
