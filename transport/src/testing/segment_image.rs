//! Attaching to arbitrary bytes as a segment: the engine behind the `segment_attach` fuzz target.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::consumer::{Consumer, ConsumerOptions};
use crate::handle::Handle;
use crate::segment::Segment;
use crate::testing::ManualHost;

/// Puts `image` in an anonymous file (a memfd, reached through `/proc/self/fd` so nothing is
/// left on disk), attaches to it as a named-file segment, and, when that succeeds, redeems a
/// handle built from every slot descriptor and reads its payload through the public API.
///
/// Attach must return a typed error or a valid segment, and no read may panic or read out of
/// bounds; a panic here is a bug.
pub fn check_segment_image(image: &[u8]) {
    let fd =
        nix::sys::memfd::memfd_create(c"shmbridge-image", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd_create");
    let mut file = File::from(fd);
    file.write_all(image).expect("write image");
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .expect("chmod image");
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ));
    let Ok(segment) = Segment::attach_file(&path) else {
        return;
    };
    let segment = Arc::new(segment);
    let consumer = Consumer::with_host(
        Arc::clone(&segment),
        ConsumerOptions::default(),
        ManualHost::process(1),
        Arc::new(ManualHost::new()),
    );
    for slot in 0..segment.slot_count() {
        let view = segment.inspect(slot).expect("slot in range");
        let handle = Handle {
            epoch: segment.epoch(),
            slot,
            generation: view.generation,
            len: view.len,
            crc: view.crc,
        };
        if let Ok(reader) = consumer.acquire(&handle) {
            let _ = reader.copy_out();
        }
    }
}
