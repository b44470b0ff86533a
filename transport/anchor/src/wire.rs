//! What the parent (client) and the child (server) agree on: the names of their sockets and
//! services, the payload both hold, how a request names a size, the control bytes of the side
//! channel, and the two system calls both make (pinning to a CPU, a `SOCK_SEQPACKET` socket).

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result, bail};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType, accept_with,
    bind, connect, listen, recv, send, socket_with,
};
use rustix::thread::{CpuSet, sched_setaffinity};

/// Bytes of the kernel floor's message each way: the fixed part of shmbridge's published answer
/// frame (`PUBLISHED_FIXED_LEN` in `transport/src/control/frame/mod.rs`), the least an answer
/// naming a handle carries.
pub const FLOOR_LEN: usize = 56;

/// Side-channel command: start the iceoryx2 busy-polling server.
pub const CTL_SPIN: u8 = b'S';
/// Side-channel command: stop it (back to sleeping).
pub const CTL_IDLE: u8 = b'I';
/// Side-channel reply: the command took effect.
pub const CTL_DONE: u8 = b'K';

/// The line the child prints on stdout once every server is up.
pub const READY_LINE: &str = "ready";

/// The names one run uses, all derived from one base unique to the parent process.
#[derive(Clone, Debug)]
pub struct Names {
    base: String,
}

impl Names {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// shmbridge's control socket (abstract).
    pub fn shmbridge_socket(&self) -> String {
        format!("{}-shm", self.base)
    }

    /// The side channel and the floor's socket (abstract, `SOCK_SEQPACKET`).
    pub fn side_socket(&self) -> String {
        format!("{}-side", self.base)
    }

    /// iceoryx2 request-response service answered by a busy-polling server.
    pub fn iceoryx_spin(&self) -> String {
        format!("{}/rr-spin", self.base)
    }

    /// iceoryx2 request-response service answered by a server woken by events.
    pub fn iceoryx_event(&self) -> String {
        format!("{}/rr-event", self.base)
    }

    /// iceoryx2 event service: "a request is waiting" (client → server).
    pub fn iceoryx_request_event(&self) -> String {
        format!("{}/ev-request", self.base)
    }

    /// iceoryx2 event service: "a response is waiting" (server → client).
    pub fn iceoryx_response_event(&self) -> String {
        format!("{}/ev-response", self.base)
    }
}

/// The payload both processes hold: `len` deterministic, incompressible-looking bytes
/// (xorshift64*), generated once per process, so that a body's bytes can be checked anywhere.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A request: the size of the body asked for, 8 bytes little-endian.
pub fn encode_request(size: usize) -> [u8; 8] {
    (size as u64).to_le_bytes()
}

/// The size a request asks for, at most `max`.
pub fn decode_request(request: &[u8], max: usize) -> Result<usize> {
    let bytes: [u8; 8] = request
        .try_into()
        .with_context(|| format!("a request of {} bytes, expected 8", request.len()))?;
    let size = u64::from_le_bytes(bytes);
    match usize::try_from(size) {
        Ok(size) if size <= max => Ok(size),
        _ => bail!("a request for {size} bytes, above the payload's {max}"),
    }
}

/// Checks a received body's length and its first and last 8 bytes against the payload (the
/// crc32 check before this has already read every byte).
pub fn check_body(body: &[u8], expected: &[u8]) -> Result<()> {
    if body.len() != expected.len() {
        bail!(
            "a body of {} bytes, expected {}",
            body.len(),
            expected.len()
        );
    }
    let edge = body.len().min(8);
    if body[..edge] != expected[..edge]
        || body[body.len() - edge..] != expected[body.len() - edge..]
    {
        bail!(
            "a body of {} bytes whose edges differ from the payload",
            body.len()
        );
    }
    Ok(())
}

/// Pins the calling thread (and every thread it starts afterwards) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).with_context(|| format!("pin this process to CPU {cpu}"))
}

fn seqpacket() -> Result<OwnedFd> {
    socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("create a SOCK_SEQPACKET socket")
}

fn abstract_address(name: &str) -> Result<SocketAddrUnix> {
    SocketAddrUnix::new_abstract_name(name.as_bytes())
        .with_context(|| format!("abstract socket name {name:?}"))
}

/// A listening `SOCK_SEQPACKET` socket bound to the abstract `name`.
pub fn listen_seqpacket(name: &str) -> Result<OwnedFd> {
    let socket = seqpacket()?;
    bind(&socket, &abstract_address(name)?).with_context(|| format!("bind @{name}"))?;
    listen(&socket, 4).with_context(|| format!("listen on @{name}"))?;
    Ok(socket)
}

/// Accepts one connection on `listener`.
pub fn accept_seqpacket(listener: impl AsFd) -> Result<OwnedFd> {
    accept_with(listener, SocketFlags::CLOEXEC).context("accept a side connection")
}

/// Connects a `SOCK_SEQPACKET` socket to the abstract `name`.
pub fn connect_seqpacket(name: &str) -> Result<OwnedFd> {
    let socket = seqpacket()?;
    connect(&socket, &abstract_address(name)?).with_context(|| format!("connect to @{name}"))?;
    Ok(socket)
}

/// Sends one message.
pub fn send_message(socket: impl AsFd, message: &[u8]) -> Result<()> {
    let sent = send(socket, message, SendFlags::NOSIGNAL).context("send on a side socket")?;
    if sent != message.len() {
        bail!("sent {sent} of {} bytes", message.len());
    }
    Ok(())
}

/// Receives one message into `buf`; `Ok(None)` when the peer closed the connection (neither
/// side ever sends an empty message).
pub fn receive_message(socket: impl AsFd, buf: &mut [u8]) -> Result<Option<usize>> {
    let (len, _) = recv(socket, buf, RecvFlags::empty()).context("receive on a side socket")?;
    Ok((len != 0).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_prefix_stable() {
        assert_eq!(payload(100), payload(1000)[..100]);
        assert_ne!(payload(64)[..8], payload(64)[8..16]);
    }

    #[test]
    fn requests_round_trip_and_are_bounded() {
        assert_eq!(decode_request(&encode_request(4096), 4096).ok(), Some(4096));
        assert!(decode_request(&encode_request(4097), 4096).is_err());
        assert!(decode_request(b"4096", 4096).is_err());
    }

    #[test]
    fn body_edges_are_checked() {
        let expected = payload(100);
        assert!(check_body(&expected, &expected).is_ok());
        let mut changed = expected.clone();
        changed[99] ^= 1;
        assert!(check_body(&changed, &expected).is_err());
        assert!(check_body(&expected[..99], &expected).is_err());
    }
}
