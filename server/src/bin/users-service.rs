//! The users-service binary: parses flags and environment, then runs the service.

use clap::Parser;
use shmbridge_server::users_service::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await
}
