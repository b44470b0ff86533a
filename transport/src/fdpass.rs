//! Handing a segment's descriptor to consumers over an abstract Unix socket (SCM_RIGHTS).
//!
//! An abstract socket has no file on disk, so nothing is left behind after `kill -9`. The server
//! answers each connection with an 8-byte greeting (`b"SHMB"` and the layout version, LE) carrying
//! the descriptor, and only to peers running under its own uid.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    connect, getsockopt, recvmsg, sendmsg, setsockopt, socket,
    sockopt::{PeerCredentials, SendTimeout},
};
use nix::sys::time::TimeVal;

use crate::error::AttachError;
use crate::layout::LAYOUT_VERSION;
use crate::segment::Segment;

const GREETING_MAGIC: [u8; 4] = *b"SHMB";
/// How long dropping an [`FdServer`] waits to connect to its own socket to wake its thread.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn greeting() -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&GREETING_MAGIC);
    bytes[4..].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    bytes
}

/// Serves a segment's descriptor on an abstract socket from a background thread until dropped.
pub struct FdServer {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdServer {
    /// Binds `@socket_name` and starts answering connections.
    pub fn spawn(segment: Arc<Segment>, socket_name: &str) -> io::Result<Self> {
        if segment.fd().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "segment has no descriptor to serve",
            ));
        }
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(socket_name)?)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("shmbridge-fd-server".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || serve(&listener, &segment, &stop)
            })?;
        Ok(Self {
            name: socket_name.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn socket_name(&self) -> &str {
        &self.name
    }
}

impl Drop for FdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept; if the connect fails the thread is already gone, or busy
        // accepting a full backlog, after which it sees `stop` anyway.
        let _ = connect_within(&self.name, Instant::now() + WAKE_TIMEOUT, WAKE_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &UnixListener, segment: &Segment, stop: &AtomicBool) {
    let euid = nix::unistd::geteuid().as_raw();
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let result = stream.and_then(|stream| {
            let peer = getsockopt(&stream, PeerCredentials).map_err(io::Error::from)?;
            if peer.uid() != euid {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("peer uid {} is not {euid}", peer.uid()),
                ));
            }
            stream.set_write_timeout(Some(Duration::from_secs(1)))?;
            let fd = segment.fd().map(|fd| fd.as_raw_fd());
            send_fd(&stream, fd.expect("checked in spawn"))
        });
        if let Err(error) = result {
            tracing::warn!(%error, "descriptor not handed out");
        }
    }
}

fn send_fd(stream: &UnixStream, fd: RawFd) -> io::Result<()> {
    let greeting = greeting();
    let fds = [fd];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&greeting)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Connects to `@socket_name`, receives the segment descriptor and attaches to it, waiting at
/// most `timeout` for the answer.
pub fn attach_via_socket(socket_name: &str, timeout: Duration) -> Result<Segment, AttachError> {
    Segment::attach_fd(fetch_fd(socket_name, timeout)?)
}

/// [`attach_via_socket`] for inspectors: the same validation, mapped `PROT_READ`, so the caller
/// can read headers and descriptors ([`Segment::inspect`], [`SlotCounts::scan`]) but never write.
///
/// [`SlotCounts::scan`]: crate::SlotCounts::scan
pub fn attach_via_socket_read_only(
    socket_name: &str,
    timeout: Duration,
) -> Result<Segment, AttachError> {
    Segment::attach_fd_read_only(fetch_fd(socket_name, timeout)?)
}

/// Connects to `@socket_name` and receives the segment descriptor; connecting and receiving
/// together take at most `timeout`.
fn fetch_fd(socket_name: &str, timeout: Duration) -> Result<OwnedFd, AttachError> {
    let deadline = Instant::now() + timeout;
    let stream = connect_within(socket_name, deadline, timeout)?;
    let remaining = remaining_until(deadline).ok_or(AttachError::TimedOut {
        op: "receive the segment descriptor",
        timeout,
    })?;
    stream
        .set_read_timeout(Some(remaining))
        .map_err(|source| AttachError::Io {
            op: "set socket timeout",
            source,
        })?;
    receive_fd(&stream, timeout)
}

/// The time left until `deadline`, at least 1 ms (a zero socket timeout would mean "forever"),
/// or `None` once it has passed.
fn remaining_until(deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (!left.is_zero()).then(|| left.max(Duration::from_millis(1)))
}

/// Connects to `@socket_name`, giving up at `deadline`.
///
/// A blocking `connect` to a Unix socket whose listener does not accept waits, without limit,
/// for room in the listener's backlog; a non-blocking one fails at once with EAGAIN and gives
/// nothing to poll for. `SO_SNDTIMEO` is what bounds that wait (Linux `unix_stream_connect`
/// sleeps at most the send timeout, then fails with EAGAIN), so the socket gets one first.
fn connect_within(
    socket_name: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<UnixStream, AttachError> {
    let io_error = |op| {
        move |source: Errno| AttachError::Io {
            op,
            source: source.into(),
        }
    };
    let addr = UnixAddr::new_abstract(socket_name.as_bytes()).map_err(io_error("socket name"))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
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
            Ok(()) => return Ok(UnixStream::from(fd)),
            // A signal cut the wait short: wait out the rest.
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(timed_out),
            Err(errno) => return Err(io_error("connect to the descriptor server")(errno)),
        }
    }
}

fn timeval(duration: Duration) -> TimeVal {
    TimeVal::new(
        duration
            .as_secs()
            .try_into()
            .unwrap_or(nix::libc::time_t::MAX),
        duration.subsec_micros().into(),
    )
}

fn receive_fd(stream: &UnixStream, timeout: Duration) -> Result<OwnedFd, AttachError> {
    let mut buf = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|errno| match errno {
        // The read timeout ran out: the server accepted but never answered.
        Errno::EAGAIN => AttachError::TimedOut {
            op: "receive the segment descriptor",
            timeout,
        },
        errno => AttachError::Io {
            op: "receive descriptor",
            source: errno.into(),
        },
    })?;
    let received = message.bytes;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs().map_err(|errno| AttachError::Io {
        op: "read control message",
        source: errno.into(),
    })? {
        if let ControlMessageOwned::ScmRights(rights) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process for us; each
            // is owned by nobody else.
            fds.extend(
                rights
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(AttachError::Protocol("control message truncated"));
    }
    if received != 8 || buf[..4] != GREETING_MAGIC {
        return Err(AttachError::Protocol("greeting is not SHMB"));
    }
    let version = u32::from_le_bytes(buf[4..].try_into().expect("4 bytes"));
    if version != LAYOUT_VERSION {
        return Err(AttachError::VersionMismatch {
            found: version,
            expected: LAYOUT_VERSION,
        });
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(fd), None) => Ok(fd),
        _ => Err(AttachError::Protocol("expected exactly one descriptor")),
    }
}
