//! The greeting: the one message a producer's socket sends a connecting peer, with the segment's
//! descriptor attached, and what the peer checks in it before it attaches.
//!
//! # Greeting (40 bytes, little-endian; its layout changes with [`LAYOUT_VERSION`])
//!
//! | offset | size | field             | meaning                                                    |
//! |-------:|-----:|-------------------|------------------------------------------------------------|
//! | 0      | 4    | `magic`           | `b"SHMB"`                                                  |
//! | 4      | 4    | `layout_version`  | [`LAYOUT_VERSION`]; a peer refuses any other               |
//! | 8      | 4    | `peer_pid`        | the connecting process's pid in the producer's PID namespace (`SO_PEERCRED`); 0: it lies outside that namespace |
//! | 12     | 4    | `peer_visibility` | 0: the producer's `/proc` shows `peer_pid`; 1: no such entry (`hidepid=2`, or gone); 2: an entry it cannot read (`hidepid=1`) |
//! | 16     | 8    | `peer_start_time` | `/proc/peer_pid/stat` field 22 as the producer reads it; 0 unless visible |
//! | 24     | 8    | `peer_pidfs_ino`  | pidfs inode number of `peer_pid` as the producer sees it; 0 unless visible and known |
//! | 32     | 8    | `producer_now_ns` | the producer's `CLOCK_MONOTONIC` just before sending       |
//!
//! # What a writable peer checks before it holds a slot
//!
//! In this order; any failure closes the connection and every descriptor received:
//!
//! 1. The greeting: magic, then `layout_version` (before the length, so that another version is
//!    named as such), then exactly 40 bytes, a `peer_visibility` of 0, 1 or 2, and exactly one
//!    descriptor on the message (`SCM_RIGHTS`; a message with none, more, or `MSG_CTRUNC` is
//!    refused). A zero-length read is the producer closing unanswered: this uid is not allowed.
//! 2. The producer's clock: `producer_now_ns` is at most 10 s behind this process's
//!    `CLOCK_MONOTONIC` read after receiving, and not ahead of it (else another time namespace,
//!    in which every lease would be misread).
//! 3. The producer, by `SO_PEERCRED`: its uid is this process's effective uid or one the peer
//!    was told to trust.
//! 4. The descriptor, before it is mapped: a memfd must carry at least `F_SEAL_SHRINK |
//!    F_SEAL_GROW` (`F_GET_SEALS`); anything that answers `F_GET_SEALS` with `EINVAL` (not a
//!    memfd) must be a regular file owned by this process's effective uid with no group or other
//!    permission bits. Then its header, read with `pread` before mapping, passes every check of
//!    [`crate::layout`]'s header table, and `fstat`'s size equals `total_size`.
//! 5. The header's `creator_uid` equals the answering process's uid, and its `creator_pid` names
//!    the answering process (`SO_PEERCRED`): the same pid, or, for a producer in a PID namespace
//!    below this process's, the pid the last `NSpid` entry of its `/proc/PID/status` gives. A
//!    producer outside this process's PID namespace (`SO_PEERCRED` pid 0) cannot be named so:
//!    only its uid is checked, and the attach says so in a warning. A process squatting on the
//!    socket name therefore cannot hand over someone else's segment as its own, except across
//!    PID namespaces, where only the uid stands between them.
//!
//! # How a peer names itself in the slots it holds
//!
//! Liveness is judged by the producer's reaper, in the producer's PID namespace, through its
//! `/proc` and on its clock: a holder stamps a pid, start time, pidfs inode and a
//! `CLOCK_MONOTONIC` deadline, and the reaper looks that pid up (see "Holder identity" in
//! [`crate::layout`]). A peer in another PID namespace (a sidecar container) has another pid
//! there than its own `getpid()`, and may not be visible there at all. So the greeting tells the
//! peer how the producer sees it, and the peer stamps that name ([`PeerView::holder_name`]):
//!
//! | the producer's view                                   | the peer stamps            |
//! |-------------------------------------------------------|----------------------------|
//! | visible, and names this process (both pidfs inodes known and equal; else equal start times) | the view: pid, start time and pidfs inode as the producer reads them |
//! | visible, but names another process (a `/proc` of another PID namespace than the producer's) | [`Owner::LEASE_ONLY`] |
//! | an entry it cannot read (`hidepid=1`)                 | the producer's pid for it, with this process's start time and pidfs inode (what the reaper would read, could it) |
//! | outside its PID namespace (`peer_pid` 0), or no entry (`hidepid=2`) | [`Owner::LEASE_ONLY`] |
//!
//! `SO_PEERCRED` translates the peer's pid into the producer's namespace, and the peer is alive
//! and connected while the producer reads its `/proc`, so a visible view is the reaper's own name
//! for this process. A lease-only holder is never taken for dead while its lease runs, only
//! reclaimed late once dead; the attach logs that degradation as a warning. Inspectors
//! ([`attach_via_socket_read_only`]) hold no slots and skip all this.
//!
//! This protects an honest peer from losing its slots while alive; it is no defence against a
//! hostile same-uid process, which can write the segment anyway.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, setsockopt,
    sockopt::{PeerCredentials, ReceiveTimeout},
};

use super::socket::{
    ReceiveError, connect_within, receive_message, remaining_until, send_message, timeval,
};
use crate::error::AttachError;
use crate::host::{Owner, ProcView, innermost_pid, monotonic_now_ns, observe};
use crate::layout::LAYOUT_VERSION;
use crate::segment::Segment;

const GREETING_MAGIC: [u8; 4] = *b"SHMB";
/// Bytes in a greeting.
const GREETING_LEN: usize = 40;
/// How far ahead of the producer's clock, read just before it sent the greeting, a peer's clock
/// may read just after receiving it. The true gap is a wake-up (microseconds); this much allows
/// for a peer descheduled mid-attach on a loaded machine, while the offsets of a time namespace
/// (another machine's uptime, a checkpoint's age) are almost always far larger. A peer's clock
/// reading *behind* the producer's is never a delay, and is refused at any size.
const CLOCK_AGREEMENT: Duration = Duration::from_secs(10);

/// `peer_visibility` values.
const VISIBLE: u32 = 0;
const ABSENT: u32 = 1;
const UNREADABLE: u32 = 2;

/// The producer's view of a connecting peer, as the greeting carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerView {
    /// The peer's pid in the producer's PID namespace; 0 when it lies outside.
    pub(crate) pid: u32,
    /// What the producer's `/proc` shows under `pid`.
    pub(crate) proc: ProcView,
    producer_now_ns: u64,
}

impl PeerView {
    /// How this process sees the peer with `pid` (from `SO_PEERCRED`), now.
    pub(crate) fn of_peer(pid: i32) -> Self {
        let pid = u32::try_from(pid).unwrap_or(0);
        let proc = if pid == 0 {
            ProcView::Absent
        } else {
            observe(pid)
        };
        Self {
            pid,
            proc,
            producer_now_ns: monotonic_now_ns(),
        }
    }

    fn encode(&self) -> [u8; GREETING_LEN] {
        let (visibility, start_time, pidfs_ino) = match self.proc {
            ProcView::Visible(owner) => (VISIBLE, owner.start_time, owner.pidfs_ino),
            ProcView::Absent => (ABSENT, 0, 0),
            ProcView::Unreadable => (UNREADABLE, 0, 0),
        };
        let mut bytes = [0; GREETING_LEN];
        bytes[0..4].copy_from_slice(&GREETING_MAGIC);
        bytes[4..8].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.pid.to_le_bytes());
        bytes[12..16].copy_from_slice(&visibility.to_le_bytes());
        bytes[16..24].copy_from_slice(&start_time.to_le_bytes());
        bytes[24..32].copy_from_slice(&pidfs_ino.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.producer_now_ns.to_le_bytes());
        bytes
    }

    /// Parses a greeting. The version is checked before the length, so a server of another
    /// layout version is reported as such, whatever its greeting looks like.
    fn decode(bytes: &[u8]) -> Result<Self, AttachError> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if bytes.len() < 8 || bytes[..4] != GREETING_MAGIC {
            return Err(AttachError::Protocol("greeting is not SHMB"));
        }
        let version = u32_at(4);
        if version != LAYOUT_VERSION {
            return Err(AttachError::VersionMismatch {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        if bytes.len() != GREETING_LEN {
            return Err(AttachError::Protocol("greeting has the wrong length"));
        }
        let pid = u32_at(8);
        let proc = match u32_at(12) {
            VISIBLE => ProcView::Visible(Owner {
                pid,
                start_time: u64_at(16),
                pidfs_ino: u64_at(24),
            }),
            ABSENT => ProcView::Absent,
            UNREADABLE => ProcView::Unreadable,
            _ => return Err(AttachError::Protocol("unknown peer visibility in greeting")),
        };
        Ok(Self {
            pid,
            proc,
            producer_now_ns: u64_at(32),
        })
    }

    /// The name this process stamps in the slots it holds, so that the producer's reaper
    /// recognises it as the live process it is (module doc), given `own`, this process's own
    /// name, and `own_now_ns`, its clock read on receiving the view. Refused only when the
    /// clocks disagree: leases would be misread whatever name is stamped.
    pub(crate) fn holder_name(&self, own: Owner, own_now_ns: u64) -> Result<Owner, AttachError> {
        let ahead = own_now_ns.checked_sub(self.producer_now_ns);
        if ahead.is_none_or(|ahead| ahead > CLOCK_AGREEMENT.as_nanos() as u64) {
            return Err(AttachError::ClockMismatch {
                producer_ns: self.producer_now_ns,
                own_ns: own_now_ns,
            });
        }
        let lease_only = |why: &str| {
            tracing::warn!(
                pid = own.pid,
                producer_sees = self.pid,
                "{why}: the producer's reaper judges this process's slots by their lease alone, \
                 so if it dies holding one, the slot comes back only when the lease ends"
            );
            Owner::LEASE_ONLY
        };
        Ok(match self.proc {
            // `SO_PEERCRED` gave the producer this process's pid in its namespace, and pidfs inodes
            // (else start times) are the same in every PID namespace: the reaper's rule decides.
            ProcView::Visible(seen) if seen.same_process(&own) => seen,
            ProcView::Visible(_) => lease_only(
                "the producer reads another process under this process's pid (its /proc is \
                 not its PID namespace's)",
            ),
            ProcView::Unreadable => Owner {
                pid: self.pid,
                ..own
            },
            ProcView::Absent if self.pid == 0 => {
                lease_only("this process lies outside the producer's PID namespace")
            }
            ProcView::Absent => lease_only("the producer's /proc hides this process (hidepid=2)"),
        })
    }
}

pub(crate) fn send_fd(
    stream: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    view: &PeerView,
) -> io::Result<()> {
    send_message(stream, &view.encode(), Some(fd))
}

/// Connects to the producer's socket (`socket_name`: see [`crate::is_socket_path`]), receives the
/// segment descriptor and attaches to it, waiting at most `timeout` for the answer. Refuses when
/// the producer runs another monotonic clock (a time namespace), and when the process answering
/// is not the segment's creator, or runs as another uid (see [`Greeted::attach`]). The segment's
/// consumers hold slots under the name the producer knows this process by, whatever PID
/// namespace it lies in (module doc).
pub fn attach_via_socket(socket_name: &str, timeout: Duration) -> Result<Segment, AttachError> {
    greet(socket_name, timeout)?
        .attach(&[])
        .map(|(_, segment)| segment)
}

/// [`attach_via_socket`] for inspectors: mapped `PROT_READ`, so the caller can read headers and
/// descriptors ([`Segment::inspect`], [`SlotCounts::scan`]) but never write. Inspectors hold no
/// slots, so the greeting's view of this process is not checked.
///
/// [`SlotCounts::scan`]: crate::SlotCounts::scan
pub fn attach_via_socket_read_only(
    socket_name: &str,
    timeout: Duration,
) -> Result<Segment, AttachError> {
    Segment::attach_fd_read_only(greet(socket_name, timeout)?.segment_fd)
}

/// A connection to a producer's socket, just greeted.
pub(crate) struct Greeted {
    /// The connection, open for the control channel.
    pub(crate) socket: OwnedFd,
    segment_fd: OwnedFd,
    view: PeerView,
    /// This process's clock on receiving the greeting.
    received_at_ns: u64,
}

impl Greeted {
    /// Learns the name the producer's reaper knows this process by, checks that the process that
    /// answered runs as this process's uid or one of `producer_uids` and created the segment it
    /// hands out (steps 2 to 5 of the module doc), and maps the segment writable, its holders
    /// named as the producer sees them. Whoever squats the socket name is thereby refused, unless
    /// it created the segment it hands out and runs as a trusted uid (or, across PID namespaces,
    /// runs as the creator's uid).
    pub(crate) fn attach(self, producer_uids: &[u32]) -> Result<(OwnedFd, Segment), AttachError> {
        let own = Owner::current().map_err(|source| AttachError::Io {
            op: "read /proc/self/stat",
            source,
        })?;
        let holder_name = self.view.holder_name(own, self.received_at_ns)?;
        let producer =
            getsockopt(&self.socket, PeerCredentials).map_err(|errno| AttachError::Io {
                op: "read the producer's credentials",
                source: errno.into(),
            })?;
        let own_uid = nix::unistd::geteuid().as_raw();
        if producer.uid() != own_uid && !producer_uids.contains(&producer.uid()) {
            return Err(AttachError::UntrustedProducer {
                uid: producer.uid(),
                own: own_uid,
            });
        }
        let segment = Segment::attach_fd(self.segment_fd)?;
        let header = segment.header();
        let producer_pid = u32::try_from(producer.pid()).unwrap_or(0);
        let answering = (producer_pid, producer.uid());
        let not_the_creator = AttachError::NotTheCreator {
            answering,
            creator: (header.creator_pid, header.creator_uid),
        };
        if producer.uid() != header.creator_uid {
            return Err(not_the_creator);
        }
        if producer_pid == 0 {
            tracing::warn!(
                creator_pid = header.creator_pid,
                "the producer lies outside this process's PID namespace: only its uid could be \
                 checked against the segment's creator"
            );
        } else if producer_pid != header.creator_pid
            && innermost_pid(producer_pid).ok() != Some(header.creator_pid)
        {
            return Err(not_the_creator);
        }
        Ok((self.socket, segment.named_by_producer(holder_name)))
    }
}

/// Connects to `socket_name` and receives the greeting with the segment descriptor;
/// connecting and receiving together take at most `timeout`.
pub(crate) fn greet(socket_name: &str, timeout: Duration) -> Result<Greeted, AttachError> {
    let deadline = Instant::now() + timeout;
    let socket = connect_within(socket_name, deadline, timeout)?;
    let remaining = remaining_until(deadline).ok_or(AttachError::TimedOut {
        op: "receive the segment descriptor",
        timeout,
    })?;
    setsockopt(&socket, ReceiveTimeout, &timeval(remaining)).map_err(|errno| AttachError::Io {
        op: "set socket timeout",
        source: errno.into(),
    })?;
    let (segment_fd, view, received_at_ns) = receive_fd(socket.as_fd(), timeout)?;
    // The channel's reader waits for answers as long as the connection lives.
    setsockopt(&socket, ReceiveTimeout, &timeval(Duration::ZERO)).map_err(|errno| {
        AttachError::Io {
            op: "clear socket timeout",
            source: errno.into(),
        }
    })?;
    Ok(Greeted {
        socket,
        segment_fd,
        view,
        received_at_ns,
    })
}

/// Receives the greeting and its descriptor; also returns this process's clock read right after.
pub(crate) fn receive_fd(
    stream: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(OwnedFd, PeerView, u64), AttachError> {
    // Room for more than a greeting, so that a longer message is noticed, not cut to size.
    let mut buf = [0u8; 2 * GREETING_LEN];
    let (received, fd) = receive_message(stream, &mut buf, false).map_err(|error| match error {
        // The read timeout ran out: the server accepted but never answered.
        ReceiveError::Sys(Errno::EAGAIN) => AttachError::TimedOut {
            op: "receive the segment descriptor",
            timeout,
        },
        ReceiveError::Sys(errno) => AttachError::Io {
            op: "receive descriptor",
            source: errno.into(),
        },
        ReceiveError::Truncated => AttachError::Protocol("control message truncated"),
        ReceiveError::TooMany { .. } => AttachError::Protocol("expected exactly one descriptor"),
    })?;
    let received_at_ns = monotonic_now_ns();
    if received == 0 {
        return Err(AttachError::Refused);
    }
    let view = PeerView::decode(&buf[..received])?;
    let fd = fd.ok_or(AttachError::Protocol("expected exactly one descriptor"))?;
    Ok((fd, view, received_at_ns))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};

    use super::*;
    use crate::segment::SegmentConfig;

    fn me() -> Owner {
        Owner::current().unwrap()
    }

    fn view_of(owner: Owner, producer_now_ns: u64) -> PeerView {
        PeerView {
            pid: owner.pid,
            proc: ProcView::Visible(owner),
            producer_now_ns,
        }
    }

    #[test]
    fn greetings_round_trip() {
        let owner = Owner {
            pid: 4242,
            start_time: 77,
            pidfs_ino: 99,
        };
        for proc in [
            ProcView::Visible(owner),
            ProcView::Absent,
            ProcView::Unreadable,
        ] {
            let view = PeerView {
                pid: 4242,
                proc,
                producer_now_ns: 123_456_789,
            };
            assert_eq!(PeerView::decode(&view.encode()).unwrap(), view);
        }
    }

    #[test]
    fn another_version_is_named_before_the_length_is_judged() {
        let mut old = [0u8; 8];
        old[..4].copy_from_slice(&GREETING_MAGIC);
        old[4..].copy_from_slice(&(LAYOUT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            PeerView::decode(&old),
            Err(AttachError::VersionMismatch { found, expected })
                if found == LAYOUT_VERSION + 1 && expected == LAYOUT_VERSION
        ));
        let good = view_of(me(), 1).encode();
        assert!(matches!(
            PeerView::decode(&good[..GREETING_LEN - 1]),
            Err(AttachError::Protocol(_))
        ));
        let mut foreign = good;
        foreign[0] = b'X';
        assert!(matches!(
            PeerView::decode(&foreign),
            Err(AttachError::Protocol(_))
        ));
        let mut unknown = good;
        unknown[12] = 9;
        assert!(matches!(
            PeerView::decode(&unknown),
            Err(AttachError::Protocol(_))
        ));
    }

    #[test]
    fn a_peer_the_producer_sees_as_itself_stamps_its_own_name() {
        let own = me();
        let now = monotonic_now_ns();
        assert_eq!(
            view_of(own, now).holder_name(own, now + 1_000).unwrap(),
            own
        );
        // Unreadable is a degradation (dead holders come back at lease end), not a refusal: the
        // holder stamps the name the reaper would read, could it.
        let unreadable = PeerView {
            proc: ProcView::Unreadable,
            ..view_of(own, now)
        };
        assert_eq!(unreadable.holder_name(own, now).unwrap(), own);
    }

    #[test]
    fn a_peer_in_a_child_pid_namespace_stamps_the_producers_name_for_it() {
        let own = Owner {
            pid: 1,
            start_time: 500,
            pidfs_ino: 7,
        };
        let now = monotonic_now_ns();
        let as_the_producer_sees_it = Owner { pid: 4321, ..own };
        assert_eq!(
            view_of(as_the_producer_sees_it, now)
                .holder_name(own, now)
                .unwrap(),
            as_the_producer_sees_it
        );
        // Hidden by hidepid=1 there: the producer's pid, this process's start time and inode.
        let unreadable = PeerView {
            pid: 4321,
            proc: ProcView::Unreadable,
            producer_now_ns: now,
        };
        assert_eq!(
            unreadable.holder_name(own, now).unwrap(),
            as_the_producer_sees_it
        );
    }

    #[test]
    fn a_peer_the_reaper_cannot_look_up_holds_by_lease_only() {
        let own = me();
        let now = monotonic_now_ns();
        // Outside the producer's PID namespace (a sibling container): SO_PEERCRED reports 0.
        let outside = PeerView {
            pid: 0,
            proc: ProcView::Absent,
            producer_now_ns: now,
        };
        assert_eq!(outside.holder_name(own, now).unwrap(), Owner::LEASE_ONLY);
        // Hidden by hidepid=2.
        let hidden = PeerView {
            pid: own.pid,
            ..outside
        };
        assert_eq!(hidden.holder_name(own, now).unwrap(), Owner::LEASE_ONLY);
    }

    #[test]
    fn a_view_naming_another_process_is_not_stamped() {
        let own = Owner {
            pid: 10,
            start_time: 500,
            pidfs_ino: 0,
        };
        let now = monotonic_now_ns();
        // No pidfs: the start time decides, as in the reaper (a time namespace shifts it).
        let shifted = Owner {
            start_time: 900,
            ..own
        };
        assert_eq!(
            view_of(shifted, now).holder_name(own, now).unwrap(),
            Owner::LEASE_ONLY
        );
        // Both know a pidfs inode: it decides, whatever the start times say.
        let with_ino = Owner {
            pidfs_ino: 7,
            ..own
        };
        let seen = Owner {
            start_time: 900,
            ..with_ino
        };
        assert_eq!(view_of(seen, now).holder_name(with_ino, now).unwrap(), seen);
        let another = Owner {
            pidfs_ino: 8,
            ..own
        };
        assert_eq!(
            view_of(another, now).holder_name(with_ino, now).unwrap(),
            Owner::LEASE_ONLY
        );
    }

    #[test]
    fn another_monotonic_clock_is_refused() {
        let own = me();
        let producer_now = 50_000_000_000;
        let behind = producer_now - 1;
        let refusal = view_of(own, producer_now)
            .holder_name(own, behind)
            .unwrap_err();
        assert!(matches!(refusal, AttachError::ClockMismatch { .. }));
        assert!(refusal.to_string().contains("runs less than 1 s behind"));
        let far_ahead = producer_now + 3600 * 1_000_000_000 + 7;
        let refusal = view_of(own, producer_now)
            .holder_name(own, far_ahead)
            .unwrap_err();
        assert!(matches!(refusal, AttachError::ClockMismatch { .. }));
        assert!(refusal.to_string().contains("runs 3600 s ahead of"));
        let just_beyond = producer_now + CLOCK_AGREEMENT.as_nanos() as u64 + 1;
        assert!(matches!(
            view_of(own, producer_now).holder_name(own, just_beyond),
            Err(AttachError::ClockMismatch { .. })
        ));
        let slow_wake_up = producer_now + 2_000_000_000;
        view_of(own, producer_now)
            .holder_name(own, slow_wake_up)
            .unwrap();
    }

    /// The whole exchange over a socket pair: the greeting the server writes for a peer it sees
    /// under another pid reaches the peer, which stamps that pid.
    #[test]
    fn a_greeting_naming_another_pid_reaches_the_peer_through_a_socket() {
        let segment = Segment::create(&SegmentConfig {
            slot_count: 1,
            slot_size: 64,
        })
        .unwrap();
        let (server, peer) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let own = me();
        let seen = Owner {
            pid: own.pid + 1,
            ..own
        };
        let as_seen_from_a_parent_namespace = PeerView {
            pid: seen.pid,
            proc: ProcView::Visible(seen),
            producer_now_ns: monotonic_now_ns(),
        };
        send_fd(
            server.as_fd(),
            segment.fd().unwrap(),
            &as_seen_from_a_parent_namespace,
        )
        .unwrap();
        setsockopt(&peer, ReceiveTimeout, &timeval(Duration::from_secs(5))).unwrap();
        let (_fd, view, received_at) = receive_fd(peer.as_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(view, as_seen_from_a_parent_namespace);
        assert_eq!(view.holder_name(own, received_at).unwrap(), seen);
    }
}
