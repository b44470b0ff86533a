//! Peers the producer's reaper could not judge alive are refused at attach, with real namespaces
//! (this test binary, re-executed as a child): a peer in another PID namespace
//! (`unshare --pid`), and a peer the producer's `/proc` hides (`hidepid=invisible` on a private
//! `/proc` in a mount namespace, the producer without CAP_SYS_PTRACE, the peer not dumpable).
//! Inspectors (read-only attach) still get in. Both need root to build the namespaces; elsewhere
//! they say why and return.
#![cfg(not(loom))]

mod child_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use child_support::{line, start_until};
use shmbridge::{
    ControlServer, Segment, SegmentConfig, attach_via_socket, attach_via_socket_read_only,
};

const CHILD_ROLE: &str = "SHMBRIDGE_TEST_PEER_ROLE";
const CHILD_SOCKET: &str = "SHMBRIDGE_TEST_PEER_SOCKET";
const CHILD_NOT_DUMPABLE: &str = "SHMBRIDGE_TEST_PEER_NOT_DUMPABLE";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Entry point of the child processes; ignored in a normal run.
#[test]
#[ignore = "entry point for child processes, run by the tests below"]
fn peer_child() {
    let (Ok(role), Ok(socket)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_SOCKET)) else {
        return;
    };
    let mut stdout = std::io::stdout();
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
            let writable = attach_via_socket(&socket, TIMEOUT).map(|segment| segment.epoch());
            let read_only =
                attach_via_socket_read_only(&socket, TIMEOUT).map(|segment| segment.epoch());
            // libtest has printed "test peer_child ... " without a newline: start afresh.
            writeln!(stdout).unwrap();
            writeln!(stdout, "pid {}", std::process::id()).unwrap();
            writeln!(stdout, "writable: {writable:?}").unwrap();
            writeln!(stdout, "read-only: {read_only:?}").unwrap();
            writeln!(stdout, "child done").unwrap();
            stdout.flush().unwrap();
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

#[test]
fn a_peer_in_another_pid_namespace_is_refused_and_may_still_inspect() {
    const PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];
    let probe = [PID_NAMESPACE, &["true"]].concat();
    if let Some(why) = namespaces_unavailable(&probe) {
        eprintln!("skipped: {why}");
        return;
    }
    let segment = Arc::new(Segment::create(&small()).unwrap());
    let socket = unique_socket("pidns");
    let _server = ControlServer::spawn(Arc::clone(&segment), &socket).unwrap();

    let (_child, lines) = start_until(
        child_command(PID_NAMESPACE, "attach", &socket),
        "child done",
    );
    // `--fork` makes the child the first process of its namespace.
    assert_eq!(line(&lines, "pid "), "1", "{lines:?}");
    let writable = line(&lines, "writable: ");
    assert!(
        writable.starts_with("Err(ForeignPidNamespace { seen_by_producer: ")
            && writable.ends_with(", own: 1 })")
            && !writable.contains("seen_by_producer: 1,")
            && !writable.contains("seen_by_producer: 0,"),
        "{writable}"
    );
    assert_eq!(
        line(&lines, "read-only: "),
        format!("Ok({})", segment.epoch())
    );
}

#[test]
fn a_peer_hidden_by_hidepid_is_refused_and_a_visible_one_attaches() {
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
    // Dumpable and of the producer's uid: hidepid shows it, so it attaches.
    let (_visible, lines) = start_until(child_command(PEER, "attach", &socket), "child done");
    let writable = line(&lines, "writable: ");
    assert!(writable.starts_with("Ok("), "{writable}");

    // Not dumpable: the producer's /proc hides it, and its reaper would take it for dead.
    let mut hidden = child_command(PEER, "attach", &socket);
    hidden.env(CHILD_NOT_DUMPABLE, "1");
    let (_hidden, lines) = start_until(hidden, "child done");
    let pid = line(&lines, "pid ");
    assert_eq!(
        line(&lines, "writable: "),
        format!("Err(InvisibleToProducer {{ pid: {pid} }})")
    );
    assert!(line(&lines, "read-only: ").starts_with("Ok("), "{lines:?}");
}
