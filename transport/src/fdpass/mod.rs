//! Handing a segment's descriptor to consumers over a Unix socket (SCM_RIGHTS), and checking on
//! both ends who is at the other.
//!
//! A socket name with a `/` in it is a path: the socket is a file, reachable from every process
//! that sees it, in any network namespace (containers sharing a volume); a leftover one is
//! replaced ([`listener`]). Any other name is abstract (`@name`): no file on disk, nothing left
//! behind after `kill -9`, but reachable only within one network namespace. The socket is
//! `SOCK_SEQPACKET` (messages arrive whole). The server
//! (`ControlServer`, in the control module) answers each connection from an allowed uid
//! with one message, the greeting ([`greeting`]), carrying the descriptor; other uids are closed
//! unanswered ([`AttachError::Refused`]). The connection then stays open as the control channel
//! ([`crate::control`]). A writable attach checks the answering process in turn: it must be the
//! segment's creator, running as a trusted uid ([`AttachError::UntrustedProducer`],
//! [`AttachError::NotTheCreator`]). Connecting and receiving are bounded by the caller's timeout
//! ([`AttachError::TimedOut`]).
//!
//! [`socket`] holds the primitives every message of the crate goes through (what a name stands
//! for, connect within a deadline, send and receive one message with at most one descriptor);
//! [`listener`] the producer's bound socket; [`greeting`] the
//! greeting's bytes, the producer's view of the peer they carry, and attaching through them.
//!
//! [`AttachError::Refused`]: crate::AttachError::Refused
//! [`AttachError::UntrustedProducer`]: crate::AttachError::UntrustedProducer
//! [`AttachError::NotTheCreator`]: crate::AttachError::NotTheCreator
//! [`AttachError::TimedOut`]: crate::AttachError::TimedOut

mod greeting;
mod listener;
mod socket;

pub(crate) use greeting::{PeerView, greet, send_fd};
pub use greeting::{attach_via_socket, attach_via_socket_read_only};
pub(crate) use listener::Listener;
pub(crate) use socket::{ReceiveError, connect_within, receive_message, send_message, timeval};
pub use socket::{display_socket, is_socket_path};
