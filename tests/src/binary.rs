//! Where the workspace's binaries are: the profile directory the running test was built into.
//! Cargo sets `CARGO_BIN_EXE_<name>` only for a package's own binaries, and the binaries these
//! tests start (users-service, gateway, shmbridge-chaos) belong to the other members. The root
//! `cargo test --workspace` builds them with every member's integration tests, before any test
//! runs; `cargo test -p shmbridge-system-tests` alone does not, so build them first.

use std::path::PathBuf;

/// The path of the workspace binary `name` beside this test's own profile directory
/// (`target/<profile>/<name>`). Panics, saying how to build it, if it is not there.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable lives in <target>/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is not built: run `cargo test --workspace`, or `cargo build --workspace --bins` \
         (with the same profile) before testing this package alone",
        binary.display()
    );
    binary
}
