//! The Python users-service (`server/python/users_service.py`, standard-library Python over the
//! `shmbridge` package) as a service program: a virtual environment under `target/`, with the
//! package built and installed from this checkout (`transport/python/install.sh`) each time, so
//! it always matches the Rust side it is measured against.

use std::path::PathBuf;

use serde::Deserialize;

use super::service::ServiceProgram;
use super::{checkout, run_build_script};

/// The implementations of users-service the harness can start.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UsersServiceKind {
    /// This program's own (server/src/users_service).
    #[default]
    Rust,
    /// `server/python/users_service.py` over the `shmbridge` package: no fail points.
    Python,
}

/// Why the Python users-service cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(
        "the Python users-service is run from the source checkout this program was built in \
         ({0}), which is not there"
    )]
    NoCheckout(PathBuf),
    #[error("cannot run transport/python/install.sh: {0}")]
    Spawn(std::io::Error),
    #[error(
        "installing the shmbridge Python package failed ({0}); it needs python3 with venv, pip \
         and the package registry"
    )]
    Install(std::process::ExitStatus),
}

/// Builds the package into a fresh virtual environment and returns the program that runs the
/// Python users-service in it.
pub async fn users_service() -> Result<ServiceProgram, PythonError> {
    let root = checkout();
    let script = root.join("server/python/users_service.py");
    if !script.is_file() {
        return Err(PythonError::NoCheckout(root));
    }
    let venv = root.join("target/python-venv");
    eprintln!(
        "building the shmbridge Python package into {}",
        venv.display()
    );
    let status = run_build_script(&root.join("transport/python/install.sh"), &venv)
        .await
        .map_err(PythonError::Spawn)?;
    if !status.success() {
        return Err(PythonError::Install(status));
    }
    Ok(ServiceProgram::Script {
        interpreter: venv.join("bin/python"),
        script,
    })
}
