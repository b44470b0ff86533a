//! Impostors on a producer's socket name, for tests of what a gateway refuses: a listener that
//! greets in a layout version nobody speaks.

use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept, bind, listen, send,
    socket,
};

/// Serves `connections` connections on `@name` with a greeting of layout version `version`,
/// from a background thread, then stops listening.
pub fn serve_layout_version(name: &str, version: u32, connections: usize) {
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let addr = UnixAddr::new_abstract(name.as_bytes()).expect("socket name");
    bind(listener.as_raw_fd(), &addr).expect("bind");
    listen(&listener, Backlog::new(8).expect("backlog")).expect("listen");
    let mut greeting = b"SHMB".to_vec();
    greeting.extend_from_slice(&version.to_le_bytes());
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok(connection) = accept(listener.as_raw_fd()) else {
                return;
            };
            let _ = send(connection, &greeting, MsgFlags::MSG_NOSIGNAL);
            let _ = nix::unistd::close(connection);
        }
    });
}
