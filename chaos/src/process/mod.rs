//! The services (users-service and gateway) as child processes: one started, awaited, and
//! stopped ([`service`]), and both supervised through a chaos scenario ([`supervisor`]), each
//! named by its [`role`]; [`python`] prepares the Python users-service, [`go`] the Go gateway,
//! both from the checkout this binary was built in.

use std::path::{Path, PathBuf};

pub mod go;
pub mod python;
pub mod role;
pub mod service;
pub mod supervisor;

/// Runs `bash SCRIPT OUTPUT`: how a peer in another language is built into `output` before it
/// is started (`transport/python/install.sh`, `transport/go/build.sh`).
async fn run_build_script(
    script: &Path,
    output: &Path,
) -> std::io::Result<std::process::ExitStatus> {
    tokio::process::Command::new("bash")
        .arg(script)
        .arg(output)
        .status()
        .await
}

/// The checkout this binary was built from, where the peers in other languages live.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the chaos crate sits inside the workspace")
        .to_owned()
}
