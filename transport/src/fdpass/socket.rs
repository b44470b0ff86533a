//! The socket primitives every message of the crate goes through: what a socket name stands
//! for, connecting to a `SOCK_SEQPACKET` socket within a deadline, and sending or receiving one
//! whole message with at most one descriptor (SCM_RIGHTS) attached.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, connect, sendmsg,
    setsockopt, socket, sockopt::SendTimeout,
};
use nix::sys::time::TimeVal;

use crate::error::AttachError;

/// Whether `socket_name` names a socket file (it holds a `/`: `/run/shmbridge/users.sock`,
/// `./users.sock`) rather than an abstract socket.
pub fn is_socket_path(socket_name: &str) -> bool {
    socket_name.contains('/')
}

/// `socket_name` as people read it: an abstract name with its conventional `@`, a path as is.
pub fn display_socket(socket_name: &str) -> String {
    if is_socket_path(socket_name) {
        socket_name.to_owned()
    } else {
        format!("@{socket_name}")
    }
}

/// The address `socket_name` stands for ([`is_socket_path`]).
pub(crate) fn socket_address(socket_name: &str) -> nix::Result<UnixAddr> {
    if is_socket_path(socket_name) {
        UnixAddr::new(socket_name)
    } else {
        UnixAddr::new_abstract(socket_name.as_bytes())
    }
}

/// Sends `bytes` as one message, with `fd` attached as SCM_RIGHTS when given: the one way the
/// crate sends on its sockets (the greeting, and the control channel's answers). Fails rather
/// than raising SIGPIPE when the peer is gone.
pub(crate) fn send_message(
    stream: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let fds = fd.map(|fd| [fd.as_raw_fd()]);
    let rights: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|fds| ControlMessage::ScmRights(&fds[..]))
        .into_iter()
        .collect();
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Why [`receive_message`] returned no message.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// The receive itself failed (`EAGAIN` when nothing is waiting or the timeout ran out).
    Sys(Errno),
    /// The descriptors sent did not fit the room for one (`MSG_CTRUNC`); those that arrived
    /// are closed.
    Truncated,
    /// More than one descriptor arrived with the message; all are closed.
    TooMany { count: usize },
}

/// One message received into `buf`: its length and the one descriptor it carried, if any.
/// There is room for one descriptor; they arrive close-on-exec (`MSG_CMSG_CLOEXEC`), and every
/// descriptor of a message that is refused is closed before this returns, those the kernel
/// installed before it ran out of room included. `nonblocking`: `MSG_DONTWAIT`. The one way the
/// crate receives on its sockets.
pub(crate) fn receive_message(
    stream: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> Result<(usize, Option<OwnedFd>), ReceiveError> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let message = rustix::net::recvmsg(stream, &mut [IoSliceMut::new(buf)], &mut control, flags)
        .map_err(|errno| ReceiveError::Sys(Errno::from_raw(errno.raw_os_error())))?;
    // Owned from here: dropped, hence closed, on every refusal below.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = cmsg {
            fds.extend(rights);
        }
    }
    if message.flags.contains(ReturnFlags::CTRUNC) {
        return Err(ReceiveError::Truncated);
    }
    if fds.len() > 1 {
        return Err(ReceiveError::TooMany { count: fds.len() });
    }
    Ok((message.bytes, fds.pop()))
}

/// The time left until `deadline`, at least 1 ms (a zero socket timeout would mean "forever"),
/// or `None` once it has passed.
pub(crate) fn remaining_until(deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (!left.is_zero()).then(|| left.max(Duration::from_millis(1)))
}

/// Connects to the socket `socket_name` stands for, giving up at `deadline`.
///
/// A blocking `connect` to a Unix socket whose listener does not accept waits, without limit,
/// for room in the listener's backlog; a non-blocking one fails at once with EAGAIN and gives
/// nothing to poll for. `SO_SNDTIMEO` is what bounds that wait (Linux `unix_stream_connect`
/// sleeps at most the send timeout, then fails with EAGAIN), so the socket gets one first.
pub(crate) fn connect_within(
    socket_name: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<OwnedFd, AttachError> {
    let io_error = |op| {
        move |source: Errno| AttachError::Io {
            op,
            source: source.into(),
        }
    };
    let addr = socket_address(socket_name).map_err(io_error("socket name"))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_error("create socket"))?;
    let timed_out = AttachError::TimedOut {
        op: "connect to the descriptor server",
        timeout,
    };
    loop {
        let Some(remaining) = remaining_until(deadline) else {
            return Err(timed_out);
        };
        setsockopt(&fd, SendTimeout, &timeval(remaining))
            .map_err(io_error("set connect timeout"))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(fd),
            // A signal cut the wait short: wait out the rest.
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(timed_out),
            Err(errno) => return Err(io_error("connect to the descriptor server")(errno)),
        }
    }
}

pub(crate) fn timeval(duration: Duration) -> TimeVal {
    TimeVal::new(
        duration
            .as_secs()
            .try_into()
            .unwrap_or(nix::libc::time_t::MAX),
        duration.subsec_micros().into(),
    )
}
