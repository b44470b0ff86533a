//! Another crate can embed both services' `Args` as (hidden) subcommands of its own CLI and
//! run them, as the chaos harness does when it re-executes itself as each service.

use clap::{Parser, Subcommand};
use shmbridge_server::{gateway, users_service};

#[derive(Parser)]
struct Harness {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(hide = true)]
    UsersService(users_service::Args),
    #[command(hide = true)]
    Gateway(gateway::Args),
}

#[test]
fn service_args_parse_as_subcommands() {
    let harness = Harness::try_parse_from([
        "harness",
        "users-service",
        "--listen",
        "127.0.0.1:0",
        "--slot-count",
        "8",
        "--cache",
    ])
    .unwrap();
    let Command::UsersService(args) = harness.command else {
        panic!("parsed the wrong subcommand");
    };
    assert_eq!(args.listen.port(), 0);
    assert_eq!(args.shm.slot_count, 8);
    assert!(args.cache);

    let harness = Harness::try_parse_from([
        "harness",
        "gateway",
        "--upstream",
        "http://127.0.0.1:9",
        "--deadline",
        "750ms",
        "--shm-fallback-to-api",
    ])
    .unwrap();
    let Command::Gateway(args) = harness.command else {
        panic!("parsed the wrong subcommand");
    };
    assert_eq!(args.deadline, std::time::Duration::from_millis(750));
    assert!(args.shm_fallback_to_api);
    assert_eq!(args.upstream.as_str(), "http://127.0.0.1:9/");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let error = Harness::try_parse_from(["harness", "gateway", "--upstream", "https://x"])
        .err()
        .expect("https is refused");
    assert!(error.to_string().contains("scheme must be http"), "{error}");
    let error = Harness::try_parse_from(["harness", "gateway", "--deadline", "soon"])
        .err()
        .expect("a non-duration is refused");
    assert!(error.to_string().contains("--deadline"), "{error}");
}
