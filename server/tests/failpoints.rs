//! The fault points fire where they say: a panic armed at MID_COPY unwinds out of `publish` and
//! the slot goes back, and `return` kills a real users-service with SIGKILL mid-write.
#![cfg(feature = "failpoints")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmbridge_server::failpoints;
use shmbridge_server::shm_producer::{ShmArgs, ShmProducer};

const CLAIM_TIMEOUT: Duration = Duration::from_millis(20);

fn shm_args() -> ShmArgs {
    ShmArgs {
        slot_count: 2,
        slot_size: 65536,
        shm_socket: None,
        shm_path: None,
        claim_timeout: CLAIM_TIMEOUT,
        ready_ttl: Duration::from_secs(5),
    }
}

#[test]
fn a_panic_armed_mid_copy_unwinds_out_of_publish_and_frees_the_slot() {
    let producer = ShmProducer::start(&shm_args()).unwrap();
    failpoints::configure(&format!("{}=1*panic(armed by test)", failpoints::MID_COPY)).unwrap();
    let body = vec![b'x'; 1000];
    let panic =
        std::panic::catch_unwind(AssertUnwindSafe(|| producer.publish(&body, CLAIM_TIMEOUT)))
            .expect_err("the armed point must fire inside publish");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default();
    assert!(message.contains("armed by test"), "{message}");
    assert_eq!(
        producer.stats().slots.free,
        2,
        "the unwound write guard gives its slot back"
    );
    // `1*` fires once: the next publication goes through.
    let handle = producer.publish(&body, CLAIM_TIMEOUT).unwrap();
    assert_eq!(handle.len, 1000);
}

#[test]
fn return_mid_copy_kills_users_service_with_sigkill() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_users-service"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--slot-count",
            "2",
            "--slot-size",
            "65536",
        ])
        .env(
            failpoints::ENV_VAR,
            format!("{}=1*return", failpoints::MID_COPY),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let address = first_line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();

    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /shm/users?count=5 HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // The process dies mid-request: the connection closes (or resets) without an answer.
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("users-service did not die at the armed point");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32)
    );
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("fault point users-service::mid-copy: crashing with SIGKILL"),
        "{log}"
    );
}
