//! Writes the users body of COUNT users from SEED to stdout and prints its length, crc32 and
//! the time taken to stderr: `stream` writes it with `write_users_json` as it is generated,
//! `whole` builds it in memory first (`users_json`), as the in-memory paths do. For measuring
//! time and peak memory, e.g.
//! `/usr/bin/time -v target/release/examples/users_body stream 262144 28 > /dev/null`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use shmbridge_server::dataset::{users_json, write_users_json};
use shmbridge_server::payload::Checksummed;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [mode, count, seed] => count
            .parse::<u32>()
            .ok()
            .zip(seed.parse::<u64>().ok())
            .map(|(count, seed)| (mode.as_str(), count, seed)),
        _ => None,
    };
    let Some((mode, count, seed)) = parsed else {
        eprintln!("usage: users_body stream|whole COUNT SEED");
        return ExitCode::FAILURE;
    };
    let start = Instant::now();
    let mut out = Checksummed::new(io::stdout().lock());
    let written = match mode {
        "stream" => write_users_json(count, seed, &mut out).map(drop),
        "whole" => out.write_all(&users_json(count, seed)),
        _ => {
            eprintln!("mode must be stream or whole, got {mode}");
            return ExitCode::FAILURE;
        }
    }
    .and_then(|()| out.flush());
    if let Err(error) = written {
        eprintln!("writing the body failed: {error}");
        return ExitCode::FAILURE;
    }
    let summary = out.summary();
    eprintln!(
        "{mode}: {count} users, seed {seed}: {} bytes, crc32 {:08x}, {:.3} s",
        summary.len,
        summary.crc32,
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
