//! The control channel between real processes (this test binary, re-executed as a child): a
//! consumer killed with publications it never redeemed (in slots, or sealed with their bytes
//! counted) gives them back as soon as its socket closes; a process of another uid is refused by the producer; and the consumer refuses a
//! process that answers on the socket name with a segment it did not create.
#![cfg(not(loom))]

mod channel_support;
mod child_support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmbridge::control::{ChannelOptions, ClientOptions, PublicationLimits, Tier};
use shmbridge::{
    AttachError, ControlClient, ControlServer, Producer, Segment, SegmentConfig, SlotCounts,
    attach_via_socket,
};

use channel_support::{
    Ask, SLOT_LEN, Served, TIMEOUT, assert_answers, channel_options, client_options, producer,
    publication, send_ask, unique_socket, wait_until,
};
use child_support::{CHILD_WITHIN, line, start_until};

const CHILD_ROLE: &str = "SHMBRIDGE_TEST_CHANNEL_ROLE";
const CHILD_SOCKET: &str = "SHMBRIDGE_TEST_CHANNEL_SOCKET";
const CHILD_SEGMENT_FILE: &str = "SHMBRIDGE_TEST_CHANNEL_SEGMENT_FILE";
/// Bytes in each publication the killed consumer holds.
const CHILD_BODY_LEN: &str = "SHMBRIDGE_TEST_CHANNEL_BODY_LEN";
/// A uid the producer trusts besides its own, handed to a child that may connect anyway.
const CHILD_PRODUCER_UID: &str = "SHMBRIDGE_TEST_CHANNEL_PRODUCER_UID";
/// How many publications the killed consumer holds.
const HELD: u32 = 4;
/// The bound on giving back a dead consumer's publications, from its socket closing.
const GIVEN_BACK_WITHIN: Duration = Duration::from_millis(100);
/// `nobody`, the uid and gid of the child that is refused.
const NOBODY: u32 = 65534;

/// Entry point of the child processes; ignored in a normal run.
#[test]
#[ignore = "entry point for child processes, run by the tests below"]
fn channel_child() {
    let (Ok(role), Ok(socket)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_SOCKET)) else {
        return;
    };
    let mut stdout = std::io::stdout();
    // libtest has printed "test channel_child ... " without a newline: start afresh.
    writeln!(stdout).unwrap();
    match role.as_str() {
        // A consumer: takes publications, never redeems them, and waits to be killed.
        "hold" => {
            let len: usize = std::env::var(CHILD_BODY_LEN).unwrap().parse().unwrap();
            let client = ControlClient::connect(&socket, &client_options()).unwrap();
            let held: Vec<_> = (0..HELD)
                .map(|seed| publication(&client, &Ask::new(len, seed.into()).encode()).unwrap())
                .collect();
            writeln!(stdout, "holding {}", held.len()).unwrap();
            writeln!(stdout, "child ready").unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(CHILD_WITHIN);
        }
        // A consumer of another uid: reports how connecting went.
        "connect" => {
            let producer_uids: Vec<u32> = std::env::var(CHILD_PRODUCER_UID)
                .map(|uid| vec![uid.parse().unwrap()])
                .unwrap_or_default();
            let options = ClientOptions {
                producer_uids,
                ..client_options()
            };
            let connected =
                ControlClient::connect(&socket, &options).map(|client| client.segment().epoch());
            writeln!(stdout, "uid {}", nix::unistd::geteuid()).unwrap();
            writeln!(stdout, "connected: {connected:?}").unwrap();
            writeln!(stdout, "child done").unwrap();
            stdout.flush().unwrap();
        }
        // A squatter: serves a segment file someone else created.
        "squat" => {
            let path = std::env::var_os(CHILD_SEGMENT_FILE).unwrap();
            let segment = Arc::new(Segment::attach_file(Path::new(&path)).unwrap());
            let _server = ControlServer::spawn(segment, &socket).unwrap();
            writeln!(stdout, "child ready").unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(CHILD_WITHIN);
        }
        // An honest producer: creates its segment and serves a channel on it.
        "produce" => {
            let producer = producer(4);
            let options = channel_options(&producer);
            let _server = ControlServer::spawn_channel(
                Arc::clone(&producer),
                Arc::new(channel_support::TestHandler),
                options,
                &socket,
            )
            .unwrap();
            writeln!(stdout, "child ready").unwrap();
            stdout.flush().unwrap();
            std::thread::sleep(CHILD_WITHIN);
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Kills the child on drop, so a failing test leaves no process behind.
/// `exe` running the child entry point in `role`.
fn child_command(exe: &Path, role: &str, socket: &str) -> Command {
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "channel_child",
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

fn this_binary() -> PathBuf {
    std::env::current_exe().unwrap()
}

#[test]
fn a_killed_consumers_publications_come_back_within_100_ms_of_its_socket_closing() {
    killed_consumer_gives_back(SLOT_LEN);
}

/// Sealed publications (bodies above the 4 KiB slots) come back the same way, and their bytes
/// stop counting against the producer's budget.
#[test]
fn a_killed_consumers_sealed_publications_come_back_with_their_bytes() {
    killed_consumer_gives_back(64 << 10);
}

/// A child holds [`HELD`] publications of `len` bytes (above the inline threshold: slot or
/// sealed) and is killed.
fn killed_consumer_gives_back(len: usize) {
    // Only the channel can free what the child holds: a 1 h TTL and no reaper.
    let producer = producer(8);
    let options = ChannelOptions {
        limits: PublicationLimits {
            per_peer: HELD,
            segment: 8,
        },
        ..channel_options(&producer)
    };
    let served = Served::new("killed", Arc::clone(&producer), options);
    let server = &served.server;
    let ready = || SlotCounts::scan(producer.segment()).ready;

    let mut command = child_command(&this_binary(), "hold", server.socket_name());
    command.env(CHILD_BODY_LEN, len.to_string());
    let (mut child, lines) = start_until(command, "child ready");
    assert_eq!(line(&lines, "holding "), HELD.to_string());
    assert_eq!(ready(), HELD);
    let sealed = if len > producer.segment().slot_size() as usize {
        u64::from(HELD) * len as u64
    } else {
        0
    };
    assert_eq!(producer.stats().sealed_bytes_in_flight, sealed);

    let pid = Pid::from_raw(child.0.id() as i32);
    let killed_at = Instant::now();
    kill(pid, Signal::SIGKILL).unwrap();
    // The kernel closes a process's descriptors before it can be reaped: from here on its
    // socket is closed, and the clock runs.
    child.0.wait().unwrap();
    let reaped_after = killed_at.elapsed();
    let given_back = wait_until(
        "the killed consumer's publications given back",
        TIMEOUT,
        || ready() == 0,
    );
    eprintln!(
        "publications given back {given_back:?} after the consumer was reaped \
         ({reaped_after:?} from SIGKILL to reaped)"
    );
    assert!(
        given_back <= GIVEN_BACK_WITHIN,
        "given back {given_back:?} after the socket closed, more than {GIVEN_BACK_WITHIN:?}"
    );
    assert_eq!(producer.stats().withdrawn, u64::from(HELD));
    assert_eq!(producer.stats().sealed_bytes_in_flight, 0);
    assert_eq!(SlotCounts::scan(producer.segment()).free, 8);
    served.assert_nothing_leaked();
}

/// The test binary as a process running as `nobody` can execute it: this one if every
/// directory above it and the file itself let others in, else a copy in `dir` (mode 755).
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let exe = this_binary();
    let others_may = |path: &Path, bits: u32| {
        std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & bits == bits)
    };
    let reachable = exe
        .ancestors()
        .skip(1)
        .all(|directory| others_may(directory, 0o001));
    if reachable && others_may(&exe, 0o005) {
        return exe;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("control_peers");
    std::fs::copy(&exe, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    eprintln!(
        "{} is not reachable by others: running a copy",
        exe.display()
    );
    copy
}

/// A same-uid client gets its response redeemed: the server still serves.
fn round_trip(socket: &str) {
    let client = ControlClient::connect(socket, &client_options()).unwrap();
    let ask = Ask::new(SLOT_LEN, 7);
    assert_answers(&send_ask(&client, &ask).unwrap(), &ask, Tier::Slot);
}

#[test]
fn a_process_of_another_uid_is_refused_and_same_uid_clients_are_still_served() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the refused client as uid {NOBODY})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = binary_for_nobody(dir.path());
    let as_nobody = |socket: &str| {
        let mut command = child_command(&exe, "connect", socket);
        command.uid(NOBODY).gid(NOBODY).current_dir(dir.path());
        command
    };
    let own_uid = nix::unistd::geteuid().as_raw();
    let serve = |test: &str, allowed_uids: Vec<u32>| -> (Arc<Producer>, ControlServer) {
        let producer = producer(4);
        let options = ChannelOptions {
            allowed_uids,
            ..channel_options(&producer)
        };
        let served = Served::new(test, producer, options);
        (served.producer, served.server)
    };

    let (producer, server) = serve("other-uid", Vec::new());
    let (_child, lines) = start_until(as_nobody(server.socket_name()), "child done");
    assert_eq!(line(&lines, "uid "), NOBODY.to_string(), "{lines:?}");
    assert_eq!(line(&lines, "connected: "), "Err(Refused)", "{lines:?}");
    assert_eq!(server.peers(), 0);
    round_trip(server.socket_name());
    assert_eq!(SlotCounts::scan(producer.segment()).free, 4);

    // The same child gets in where its uid is allowed (and it trusts the producer's): it was
    // refused for its uid, not for failing to reach the socket.
    let (_producer, allowing) = serve("allowed-uid", vec![NOBODY]);
    let mut command = as_nobody(allowing.socket_name());
    command.env(CHILD_PRODUCER_UID, own_uid.to_string());
    let (_child, lines) = start_until(command, "child done");
    assert!(line(&lines, "connected: ").starts_with("Ok("), "{lines:?}");
}

#[test]
fn a_squatter_serving_a_segment_it_did_not_create_is_refused_and_its_creator_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let segment = Segment::create_file(
        &path,
        &SegmentConfig {
            slot_count: 2,
            slot_size: 4096,
        },
    )
    .unwrap();

    let squatted = unique_socket("squatter");
    let mut command = child_command(&this_binary(), "squat", &squatted);
    command.env(CHILD_SEGMENT_FILE, &path);
    let (squatter, _) = start_until(command, "child ready");
    let squatter_pid = squatter.0.id();
    let uid = nix::unistd::geteuid().as_raw();
    let expected = |refused: &AttachError| {
        matches!(
            refused,
            AttachError::NotTheCreator { answering, creator }
                if *answering == (squatter_pid, uid)
                    && *creator == (std::process::id(), uid)
        )
    };
    let Err(refused) = ControlClient::connect(&squatted, &client_options()) else {
        panic!("the client attached through a squatter");
    };
    assert!(expected(&refused), "{refused:?}");
    let Err(refused) = attach_via_socket(&squatted, TIMEOUT) else {
        panic!("attached through a squatter");
    };
    assert!(expected(&refused), "{refused:?}");

    let honest = unique_socket("creator");
    let (_creator, _) = start_until(
        child_command(&this_binary(), "produce", &honest),
        "child ready",
    );
    round_trip(&honest);
    attach_via_socket(&honest, TIMEOUT).unwrap();
    drop(segment);
    assert!(!path.exists());
}
