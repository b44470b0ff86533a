use shmbridge_server::dataset::{users, write_json_array};
use std::io::Write;
use std::time::Instant;
fn time(name: &str, mut f: impl FnMut(&mut Vec<u8>)) {
    let mut v = Vec::with_capacity(300_000);
    let mut times = vec![];
    for _ in 0..3000 {
        v.clear();
        let t = Instant::now();
        f(&mut v);
        times.push(t.elapsed().as_nanos());
    }
    times.sort();
    println!(
        "{name}: p50 {} us p10 {} us, {} bytes crc {:08x}",
        times[1500] / 1000,
        times[300] / 1000,
        v.len(),
        crc32fast::hash(&v)
    );
}
fn main() {
    let u = users(708, 28);
    time("current", |v| {
        write_json_array(u.iter(), v).unwrap();
    });
    time("serde to vec direct", |v| {
        serde_json::to_writer(&mut *v, &u).unwrap();
    });
    time("per-user vec then bufwriter", |v| {
        let mut w = std::io::BufWriter::with_capacity(65536, v);
        let mut one = Vec::with_capacity(1024);
        w.write_all(b"[").unwrap();
        for (i, user) in u.iter().enumerate() {
            one.clear();
            if i > 0 {
                one.push(b',');
            }
            serde_json::to_writer(&mut one, user).unwrap();
            w.write_all(&one).unwrap();
        }
        w.write_all(b"]").unwrap();
        w.flush().unwrap();
    });
}
