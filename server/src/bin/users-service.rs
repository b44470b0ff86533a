//! The users-service binary: parses flags and environment, then runs the service.

use std::process::ExitCode;

use clap::Parser;
use shmbridge_server::users_service::{Args, run};

/// Exits 1 with the error and its causes on one line (`error: ...: ...`); a refused start-up
/// (a bad flag value, `FAILPOINTS` in a build without fault points) reads as a sentence, not
/// as a debug dump or a backtrace.
#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
