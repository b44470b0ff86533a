//! The producer's listening socket, at an abstract name or at a path.
//!
//! An abstract name leaves nothing behind, but reaches only processes of the same network
//! namespace. A path reaches every process that sees the file, whatever its network namespace:
//! two containers sharing a directory (a volume), not a network. A path socket is a file, so it
//! outlives a producer killed with `kill -9`: binding a path that holds a socket nobody listens
//! on replaces it, while one a live producer listens on is refused (`AddrInUse`) and anything
//! that is not a socket is left alone (`AlreadyExists`). Dropping the listener removes the file
//! if the path still names the socket it bound.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, bind, listen, socket};

use super::socket::{connect_within, is_socket_path, socket_address};
use crate::error::AttachError;

/// How long binding waits to learn whether a producer still listens on a leftover path.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A bound, listening `SOCK_SEQPACKET` socket.
pub(crate) struct Listener {
    fd: OwnedFd,
    /// The socket file this listener bound, named by path, device and inode: removed on drop
    /// only while the path still names that very file.
    file: Option<(PathBuf, u64, u64)>,
}

impl Listener {
    /// Binds and listens on `socket_name`. A socket file is made readable and writable by its
    /// owner only, or by everyone when `other_uids_allowed` (connecting to a socket file takes
    /// write permission; the greeting's uid check still closes every uid not allowed).
    pub(crate) fn bind(socket_name: &str, other_uids_allowed: bool) -> io::Result<Self> {
        let fd = bound(socket_name).or_else(|error| {
            if error.raw_os_error() == Some(Errno::EADDRINUSE as i32) && is_socket_path(socket_name)
            {
                remove_if_abandoned(socket_name)?;
                bound(socket_name)
            } else {
                Err(error)
            }
        })?;
        let file = if is_socket_path(socket_name) {
            let mode = if other_uids_allowed { 0o666 } else { 0o600 };
            fs::set_permissions(socket_name, fs::Permissions::from_mode(mode))?;
            let metadata = fs::symlink_metadata(socket_name)?;
            Some((PathBuf::from(socket_name), metadata.dev(), metadata.ino()))
        } else {
            None
        };
        listen(&fd, Backlog::new(128)?)?;
        Ok(Self { fd, file })
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some((path, dev, ino)) = &self.file else {
            return;
        };
        // Another producer may have replaced the file since (this one's listener was gone from
        // its point of view): leave its socket alone.
        if fs::symlink_metadata(path).is_ok_and(|now| now.dev() == *dev && now.ino() == *ino) {
            let _ = fs::remove_file(path);
        }
    }
}

fn bound(socket_name: &str) -> io::Result<OwnedFd> {
    let addr = socket_address(socket_name)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// Removes the socket file at `path` when no process listens on it any more (its producer died
/// without removing it); refuses when one does, or when the path is not a socket.
fn remove_if_abandoned(path: &str) -> io::Result<()> {
    if !fs::symlink_metadata(path)?.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{path} exists and is not a socket"),
        ));
    }
    match connect_within(path, Instant::now() + PROBE_TIMEOUT, PROBE_TIMEOUT) {
        Err(AttachError::Io { source, .. })
            if source.raw_os_error() == Some(Errno::ECONNREFUSED as i32) =>
        {
            fs::remove_file(path)
        }
        Ok(_) | Err(AttachError::TimedOut { .. }) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a producer already listens on {path}"),
        )),
        Err(other) => Err(io::Error::other(format!(
            "cannot tell whether a producer still listens on {path}: {other}"
        ))),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn scratch_dir(test: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("shmbridge-listener-{test}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn a_socket_file_is_private_and_removed_on_drop() {
        let dir = scratch_dir("drop");
        let path = dir.path().join("producer.sock");
        let name = path.to_str().unwrap();
        let listener = Listener::bind(name, false).unwrap();
        let metadata = fs::symlink_metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        connect_within(name, Instant::now() + PROBE_TIMEOUT, PROBE_TIMEOUT).unwrap();
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn a_socket_file_nobody_listens_on_is_replaced_and_a_live_one_refused() {
        let dir = scratch_dir("stale");
        let path = dir.path().join("producer.sock");
        let name = path.to_str().unwrap();
        // A producer killed with `kill -9`: its socket file stays, nobody listens.
        drop(bound(name).unwrap());
        assert!(path.exists());
        let listener = Listener::bind(name, true).unwrap();
        let mode = fs::symlink_metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);

        let refused = Listener::bind(name, false).err().unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::AddrInUse, "{refused}");
        // The refused bind left the live producer's socket where it was.
        connect_within(name, Instant::now() + PROBE_TIMEOUT, PROBE_TIMEOUT).unwrap();
        drop(listener);
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_left_alone() {
        let dir = scratch_dir("file");
        let path = dir.path().join("data");
        fs::write(&path, b"precious").unwrap();
        let refused = Listener::bind(path.to_str().unwrap(), false).err().unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists, "{refused}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn a_replaced_file_is_not_removed_by_the_listener_that_bound_the_first() {
        let dir = scratch_dir("replaced");
        let path = dir.path().join("producer.sock");
        let name = path.to_str().unwrap();
        let first = Listener::bind(name, false).unwrap();
        fs::remove_file(&path).unwrap();
        let second = Listener::bind(name, false).unwrap();
        drop(first);
        assert!(
            path.exists(),
            "the first listener removed the second's socket"
        );
        drop(second);
        assert!(!path.exists());
    }
}
