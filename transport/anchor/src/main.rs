//! The cross-process anchor benchmark (issue 22, item 3): request → verified bytes between two
//! processes pinned to different CPUs, for shmbridge's control channel, iceoryx2's
//! request-response with the same payload and the same crc32 on both sides, and the kernel floor
//! (a `SOCK_SEQPACKET` ping-pong of a handle-sized message), interleaved in one run; plus the
//! inherent work (one copy, two crc32 passes) measured in-process. Prints Markdown.
//!
//! ```sh
//! cargo run --release --manifest-path transport/anchor/Cargo.toml
//! ```
//!
//! What each transport does per round trip: [`bench`]. The results: `docs/cross-process.md`.

mod bench;
mod ice;
mod report;
mod serve;
mod wire;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    about = "Request → verified bytes across two processes: shmbridge, iceoryx2, the kernel floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Body sizes (bytes, or with a k/KiB or m/MiB suffix), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4KiB,256KiB,4MiB")]
    sizes: Vec<usize>,
    /// What to measure, comma-separated (all of them for the ratios and the targets; fewer to
    /// profile one).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "shmbridge,iceoryx-spin,iceoryx-event,floor,inherent"
    )]
    transports: Vec<bench::Transport>,
    /// Measured round trips per transport for each size below --large-from.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Measured round trips per transport for each size from --large-from on.
    #[arg(long, default_value_t = 5_000)]
    large_iterations: usize,
    /// Sizes from this on count as large.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    large_from: usize,
    /// Unmeasured warm-up round trips per transport and size, as a fraction of the measured ones.
    #[arg(long, default_value_t = 0.1)]
    warmup_fraction: f64,
    /// Round trips of one transport in a row before the next takes its turn.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The CPU of this (the client) process.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,
    /// The CPU of the child (server) process.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// The child server; started by the benchmark itself.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        max_size: usize,
        #[arg(long)]
        cpu: usize,
    },
}

fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let scale = match unit.trim() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?} (use k/KiB or m/MiB)")),
    };
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    match number.checked_mul(scale) {
        Some(0) | None => Err(format!("{text:?} is not a positive size")),
        Some(size) => Ok(size),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Serve {
        name,
        max_size,
        cpu,
    }) = cli.command
    {
        return serve::serve(&wire::Names::new(&name), max_size, cpu);
    }
    if !(0.0..=10.0).contains(&cli.warmup_fraction) {
        bail!("--warmup-fraction must be between 0 and 10");
    }
    let mut transports = Vec::new();
    for transport in cli.transports {
        if !transports.contains(&transport) {
            transports.push(transport);
        }
    }
    let plan = bench::Plan {
        sizes: cli.sizes,
        transports,
        iterations: cli.iterations,
        large_iterations: cli.large_iterations,
        large_from: cli.large_from,
        warmup_fraction: cli.warmup_fraction,
        batch: cli.batch,
        client_cpu: cli.client_cpu,
        server_cpu: cli.server_cpu,
    };
    let results = bench::run(&plan)?;
    print!("{}", report::markdown(&results));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("256k"), Ok(262_144));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4GiB").is_err());
    }
}
