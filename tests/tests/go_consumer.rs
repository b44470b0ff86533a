//! The Go package (`transport/go`) against the Rust producer: `transport/go/ci.sh` installs Go
//! from Debian's `golang-go` when it is missing, then runs `go vet` and `go test -race`, whose
//! tests start this workspace's users-service and compare every tier's bytes with its REST
//! answer. Here so that the README's test command runs the Go tests too.

use std::path::Path;
use std::process::Command;

use shmbridge_system_tests::binary::workspace_binary;

#[test]
fn the_go_consumer_passes_vet_and_its_race_checked_tests_against_users_service() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transport/go/ci.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env(
            "SHMBRIDGE_USERS_SERVICE_BIN",
            workspace_binary("users-service"),
        )
        .status()
        .expect("bash runs transport/go/ci.sh");
    assert!(status.success(), "transport/go/ci.sh failed: {status}");
}
