//! Peers in other PID namespaces, and peers the producer's `/proc` hides, with real namespaces
//! (this test binary, re-executed as a child): each attaches and holds slots under the name the
//! producer's reaper knows it by, so that a live holder is never reclaimed and a dead one is.
//! A peer in a child PID namespace (`unshare --pid`) holds under the pid the producer sees; a
//! peer the producer cannot see (a hidden `/proc` entry: `hidepid=invisible` on a private
//! `/proc` in a mount namespace, the producer without CAP_SYS_PTRACE, the peer not dumpable; a
//! producer in a PID namespace of its own) holds by lease only. All need root to build the
//! namespaces; elsewhere they say why and return.
#![cfg(not(loom))]

mod child_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use child_support::{line, start_until};
use shmbridge::{
    Consumer, ConsumerOptions, ControlServer, Handle, Owner, Producer, ProducerOptions,
    ReclaimReason, Segment, SegmentConfig, SlotState, attach_via_socket,
    attach_via_socket_read_only,
};

const CHILD_ROLE: &str = "SHMBRIDGE_TEST_PEER_ROLE";
const CHILD_SOCKET: &str = "SHMBRIDGE_TEST_PEER_SOCKET";
const CHILD_NOT_DUMPABLE: &str = "SHMBRIDGE_TEST_PEER_NOT_DUMPABLE";
const CHILD_HANDLE: &str = "SHMBRIDGE_TEST_PEER_HANDLE";
const TIMEOUT: Duration = Duration::from_secs(5);
/// A lease longer than any test here waits: a holder reclaimed in one was judged dead.
const LONG_LEASE: Duration = Duration::from_secs(600);

/// Entry point of the child processes; ignored in a normal run.
#[test]
#[ignore = "entry point for child processes, run by the tests below"]
fn peer_child() {
    let (Ok(role), Ok(socket)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_SOCKET)) else {
        return;
    };
    let mut stdout = std::io::stdout();
    // libtest has printed "test peer_child ... " without a newline: start afresh.
    writeln!(stdout).unwrap();
    match role.as_str() {
        // A producer: serves a segment until killed.
        "serve" => {
            let segment = Arc::new(Segment::create(&small()).unwrap());
            let _server = ControlServer::spawn(segment, &socket).unwrap();
            writeln!(stdout, "child ready").unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        // A peer: attaches both ways and reports each outcome on one line.
        "attach" => {
            if std::env::var_os(CHILD_NOT_DUMPABLE).is_some() {
                nix::sys::prctl::set_dumpable(false).unwrap();
            }
            let writable = attach_via_socket(&socket, TIMEOUT);
            let read_only =
                attach_via_socket_read_only(&socket, TIMEOUT).map(|segment| segment.epoch());
            writeln!(stdout, "pid {}", std::process::id()).unwrap();
            if let Ok(segment) = &writable {
                let holder = segment.holder_name().unwrap();
                writeln!(stdout, "holder pid {}", holder.pid).unwrap();
            }
            let writable = writable.map(|segment| segment.epoch());
            writeln!(stdout, "writable: {writable:?}").unwrap();
            writeln!(stdout, "read-only: {read_only:?}").unwrap();
            writeln!(stdout, "child done").unwrap();
            stdout.flush().unwrap();
        }
        // A consumer: redeems the publication it is given and holds it until killed.
        "hold" => {
            let handle: Handle = std::env::var(CHILD_HANDLE).unwrap().parse().unwrap();
            let segment = Arc::new(attach_via_socket(&socket, TIMEOUT).unwrap());
            let consumer = Consumer::new(
                segment,
                ConsumerOptions {
                    lease: LONG_LEASE,
                    ..ConsumerOptions::default()
                },
            )
            .unwrap();
            let holding = consumer.acquire(&handle).unwrap();
            writeln!(stdout, "pid {}", std::process::id()).unwrap();
            let holder = consumer.segment().holder_name().unwrap();
            writeln!(stdout, "holder pid {}", holder.pid).unwrap();
            writeln!(stdout, "child holding").unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(holding);
        }
        other => panic!("unknown child role {other}"),
    }
}

fn small() -> SegmentConfig {
    SegmentConfig {
        slot_count: 2,
        slot_size: 4096,
    }
}

fn unique_socket(test: &str) -> String {
    format!(
        "shmbridge-test-peers-{test}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Why these tests cannot build their namespaces here, if they cannot.
fn namespaces_unavailable(probe: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (to create PID and mount namespaces)".into());
    }
    match Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`{}` failed: {}",
            probe.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run {}: {error}", probe[0])),
    }
}

/// Kills the child on drop, so a failing test leaves no process behind.
/// `wrapper` followed by this test binary running the child entry point in `role`.
fn child_command(wrapper: &[&str], role: &str, socket: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(exe)
        .args([
            "--exact",
            "peer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_SOCKET, socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

const PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];

/// A consumer in a child PID namespace (pid 1 there) holds a slot under the pid the producer
/// sees it by: the producer's reaper leaves the slot to it while it lives, and takes it back as
/// soon as it is killed, long before its lease ends. Stamped with its own pid, the reaper would
/// have looked up this machine's pid 1 and taken the slot from the live holder.
#[test]
fn a_peer_in_a_child_pid_namespace_holds_slots_under_the_producers_name_for_it() {
    let probe = [PID_NAMESPACE, &["true"]].concat();
    if let Some(why) = namespaces_unavailable(&probe) {
        eprintln!("skipped: {why}");
        return;
    }
    let segment = Arc::new(Segment::create(&small()).unwrap());
    let producer = Producer::new(Arc::clone(&segment), ProducerOptions::default()).unwrap();
    let mut slot = producer.claim(5, Duration::ZERO).unwrap();
    slot.write_all(b"held!").unwrap();
    let handle = slot.publish().unwrap();
    let socket = unique_socket("pidns");
    let _server = ControlServer::spawn(Arc::clone(&segment), &socket).unwrap();

    let mut holder = child_command(PID_NAMESPACE, "hold", &socket);
    holder.env(CHILD_HANDLE, handle.to_string());
    let (child, lines) = start_until(holder, "child holding");
    // `--fork` makes the child the first process of its namespace.
    assert_eq!(line(&lines, "pid "), "1", "{lines:?}");
    let seen: u32 = line(&lines, "holder pid ").parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{seen}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NSpid:", &*seen.to_string(), "1"])),
        "pid {seen} is not the child's pid here: {status}"
    );
    let state = |segment: &Segment| segment.inspect(handle.slot).unwrap().state;
    assert_eq!(state(&segment), Some(SlotState::Reading));
    assert_eq!(producer.reap().total(), 0, "a live holder was reclaimed");

    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reclaimed = producer.reap();
    while reclaimed.total() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        reclaimed = producer.reap();
    }
    assert_eq!(reclaimed.get(ReclaimReason::DeadOwner), 1, "{reclaimed:?}");
    assert_eq!(state(&segment), Some(SlotState::Free));
}

/// A producer in a PID namespace of its own: it cannot see this process (lease-only holder),
/// and this process checks it against the segment's creator by the pid it has in its own
/// namespace (`NSpid`), which is 1.
#[test]
fn a_producer_in_its_own_pid_namespace_is_attached_to_by_lease_only() {
    let probe = [PID_NAMESPACE, &["true"]].concat();
    if let Some(why) = namespaces_unavailable(&probe) {
        eprintln!("skipped: {why}");
        return;
    }
    let socket = unique_socket("producer-pidns");
    let (_producer, _) = start_until(
        child_command(PID_NAMESPACE, "serve", &socket),
        "child ready",
    );
    let segment = attach_via_socket(&socket, TIMEOUT).unwrap();
    assert_eq!(segment.header().creator_pid, 1);
    assert_eq!(segment.holder_name().unwrap(), Owner::LEASE_ONLY);
}

#[test]
fn a_peer_hidden_by_hidepid_holds_by_lease_only_and_a_visible_one_as_itself() {
    // The producer: a private /proc mounted hidepid=invisible, and neither of what lets a
    // process see through hidepid: CAP_SYS_PTRACE (dropped) and membership of the mount's
    // exempt group (gid=, which defaults to root's group 0). The `sh` after setpriv is what
    // mounts; `$0 "$@"` is the test binary and its arguments.
    const HIDING_PRODUCER: &[&str] = &[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--inh-caps=-sys_ptrace",
        "--",
        "sh",
        "-c",
        r#"mount -t proc -o hidepid=invisible,gid=65534 proc /proc && exec "$0" "$@""#,
    ];
    let probe = [HIDING_PRODUCER, &["true"]].concat();
    if let Some(why) = namespaces_unavailable(&probe) {
        eprintln!("skipped: {why}");
        return;
    }
    let socket = unique_socket("hidepid");
    let (_producer, _) = start_until(
        child_command(HIDING_PRODUCER, "serve", &socket),
        "child ready",
    );

    // Peers with no capability the producer lacks (else the kernel's ptrace check, which
    // hidepid applies, hides them from it whatever they do).
    const PEER: &[&str] = &[
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--inh-caps=-sys_ptrace",
        "--",
    ];
    // Dumpable and of the producer's uid: hidepid shows it, so it holds under its own name.
    let (_visible, lines) = start_until(child_command(PEER, "attach", &socket), "child done");
    assert!(line(&lines, "writable: ").starts_with("Ok("), "{lines:?}");
    assert_eq!(line(&lines, "holder pid "), line(&lines, "pid "));

    // Not dumpable: the producer's /proc hides it, so its reaper could not look it up.
    let mut hidden = child_command(PEER, "attach", &socket);
    hidden.env(CHILD_NOT_DUMPABLE, "1");
    let (_hidden, lines) = start_until(hidden, "child done");
    assert!(line(&lines, "writable: ").starts_with("Ok("), "{lines:?}");
    assert_eq!(line(&lines, "holder pid "), "0");
    assert!(line(&lines, "read-only: ").starts_with("Ok("), "{lines:?}");
}
