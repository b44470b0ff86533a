//! The gateway binary: parses flags and environment, then runs the service.

use clap::Parser;
use shmbridge_server::gateway::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await
}
