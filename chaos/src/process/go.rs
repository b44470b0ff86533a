//! The Go gateway (`transport/go/cmd/gateway`, the seed's Go gateway rebuilt on the shmbridge Go
//! package) as a service program: built from this checkout into `target/go-gateway` each time
//! (`transport/go/build.sh`, which installs Go from Debian's `golang-go` when it is missing), so
//! it always matches the Rust side it is measured against.

use std::path::PathBuf;

use serde::Deserialize;

use super::service::ServiceProgram;
use super::{checkout, run_build_script};

/// The implementations of the gateway the harness can start.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// This program's own (server/src/gateway).
    #[default]
    Rust,
    /// `transport/go/cmd/gateway`: the seed's routes (`/api/users-via-api`,
    /// `/api/users-via-shm`) and any path under `/via-api/` or `/via-shm/`; no cached,
    /// HTTP-signalled or auto route, no fail points.
    Go,
}

/// Why the Go gateway cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error(
        "the Go gateway is built from the source checkout this program was built in ({0}), \
         which is not there"
    )]
    NoCheckout(PathBuf),
    #[error("cannot run transport/go/build.sh: {0}")]
    Spawn(std::io::Error),
    #[error("building the Go gateway failed ({0}); it needs Go ≥ 1.19 (Debian: golang-go)")]
    Build(std::process::ExitStatus),
}

/// Builds the Go gateway and returns the program that runs it.
pub async fn gateway() -> Result<ServiceProgram, GoError> {
    let root = checkout();
    let script = root.join("transport/go/build.sh");
    if !script.is_file() {
        return Err(GoError::NoCheckout(root));
    }
    let binary = root.join("target/go-gateway/gateway");
    eprintln!("building the Go gateway into {}", binary.display());
    let status = run_build_script(&script, &binary)
        .await
        .map_err(GoError::Spawn)?;
    if !status.success() {
        return Err(GoError::Build(status));
    }
    Ok(ServiceProgram::Binary(binary))
}
