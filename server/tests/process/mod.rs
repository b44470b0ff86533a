//! This package's service processes for its end-to-end tests: its own binaries (which have no
//! fault points) and the fault-point build the chaos harness uses, started, awaited and reaped by
//! the whole-system tests' process helpers (`shmbridge_system_tests::process`).

#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use shmbridge_chaos::harness::failpoint_build::{self, FailpointBinaries};
pub use shmbridge_system_tests::process::{ServiceProcess, client, start};

/// How long the fail-point build may take: from scratch on a busy 2-core machine it compiles
/// the whole dependency tree once.
const FAILPOINT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// This package's users-service, started with `args`.
pub async fn users_service(args: &[&str]) -> ServiceProcess {
    start(
        "users-service",
        env!("CARGO_BIN_EXE_users-service"),
        args,
        &[],
    )
    .await
}

/// This package's gateway, started with `args`.
pub async fn gateway(args: &[&str]) -> ServiceProcess {
    start("gateway", env!("CARGO_BIN_EXE_gateway"), args, &[]).await
}

/// Both services built with fault points, by the separate cargo invocation the chaos harness
/// uses (into `<target>/chaos-services`), once per test binary. This package's own binaries
/// (`CARGO_BIN_EXE_*`) have none.
pub fn failpoint_binaries() -> &'static FailpointBinaries {
    static BUILT: OnceLock<FailpointBinaries> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target =
            failpoint_build::target_dir_beside(Path::new(env!("CARGO_BIN_EXE_users-service")));
        failpoint_build::build(
            &target,
            !cfg!(debug_assertions),
            FAILPOINT_BUILD_TIMEOUT,
            true,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    })
}
