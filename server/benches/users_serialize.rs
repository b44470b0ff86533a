//! Serializing the seed's body (708 users, seed 28, 256,873 bytes) in one process: the one
//! serializer (`write_json_array`, sonic-rs a record at a time) beside serde_json writing the
//! same records through the same 64 KiB buffer, as the serializer did before. Runs alternate
//! between the two (a noisy neighbour slows both alike); prints each one's median and p10 and
//! the ratio of the medians. The bodies are compared byte for byte first.
//!
//! `cargo bench -p shmbridge-server --bench users_serialize`

use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use shmbridge_server::dataset::{
    DEFAULT_COUNT, DEFAULT_SEED, User, WRITE_CHUNK_BYTES, users, write_json_array,
};

const RUNS: usize = 3_000;

fn with_serde_json(users: &[User], out: &mut Vec<u8>) {
    let mut buffered = BufWriter::with_capacity(WRITE_CHUNK_BYTES, out);
    buffered.write_all(b"[").unwrap();
    for (index, user) in users.iter().enumerate() {
        if index > 0 {
            buffered.write_all(b",").unwrap();
        }
        serde_json::to_writer(&mut buffered, user).unwrap();
    }
    buffered.write_all(b"]").unwrap();
    buffered.flush().unwrap();
}

fn with_write_json_array(users: &[User], out: &mut Vec<u8>) {
    write_json_array(users.iter(), out).unwrap();
}

fn timed(serialize: fn(&[User], &mut Vec<u8>), users: &[User], out: &mut Vec<u8>) -> Duration {
    out.clear();
    let started = Instant::now();
    serialize(black_box(users), out);
    started.elapsed()
}

fn quantile(times: &mut [Duration], q: f64) -> Duration {
    times.sort_unstable();
    times[((times.len() - 1) as f64 * q) as usize]
}

fn main() {
    let users = users(DEFAULT_COUNT, DEFAULT_SEED);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    with_write_json_array(&users, &mut ours);
    with_serde_json(&users, &mut theirs);
    assert_eq!(ours, theirs, "the two serializers disagree");
    let (mut ours_times, mut theirs_times) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours_times.push(timed(with_write_json_array, &users, &mut ours));
        theirs_times.push(timed(with_serde_json, &users, &mut theirs));
    }
    println!(
        "{DEFAULT_COUNT} users, {} bytes, {RUNS} alternating runs each",
        ours.len()
    );
    let ours_p50 = quantile(&mut ours_times, 0.5);
    let theirs_p50 = quantile(&mut theirs_times, 0.5);
    for (name, times, p50) in [
        ("write_json_array (sonic-rs)", &mut ours_times, ours_p50),
        ("serde_json, same buffer", &mut theirs_times, theirs_p50),
    ] {
        println!(
            "{name:28} median {:>7.1} us  p10 {:>7.1} us",
            p50.as_secs_f64() * 1e6,
            quantile(times, 0.1).as_secs_f64() * 1e6
        );
    }
    println!(
        "ratio of medians (sonic-rs / serde_json): {:.2}",
        ours_p50.as_secs_f64() / theirs_p50.as_secs_f64()
    );
}
