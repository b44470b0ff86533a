//! The services in separate Linux namespaces, as two containers run them: the gateway in a PID,
//! IPC and mount namespace of its own (sharing only the network, it finds users-service's
//! abstract socket), and users-service in a network, PID, IPC and mount namespace of its own
//! (reachable only through a socket path in a shared directory). Every body is compared byte for
//! byte with the dataset, on every tier. Both need root (`unshare`); elsewhere each test says
//! why and returns.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use reqwest::StatusCode;
use shmbridge_server::blobs::{BlobPattern, BlobQuery, blob_bytes};
use shmbridge_server::dataset::users_json;
use shmbridge_server::transport_header::TRANSPORT_HEADER;
use shmbridge_system_tests::binary::workspace_binary;
use shmbridge_system_tests::process::{ServiceProcess, client, start, users_service};

/// A PID, IPC and mount namespace with a `/proc` of its own: what a container has that its
/// sidecar does not share. `--kill-child`: the service dies with the `unshare` the test stops.
const OWN_PID_IPC_MOUNT: &[&str] = &[
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--mount-proc",
    "--ipc",
];

/// Why this machine cannot build the namespaces, if it cannot.
fn namespaces_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (to create namespaces)".into());
    }
    let probe = Command::new("unshare")
        .args(OWN_PID_IPC_MOUNT)
        .args(["--net", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "unshare failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run unshare: {error}")),
    }
}

/// `binary` with `args`, started by `unshare` in namespaces of its own (`namespaces`).
async fn contained(
    name: &'static str,
    binary: &Path,
    namespaces: &[&str],
    args: &[&str],
) -> ServiceProcess {
    let binary = binary.to_str().expect("a UTF-8 path");
    let command: Vec<&str> = namespaces
        .iter()
        .copied()
        .chain(["--", binary])
        .chain(args.iter().copied())
        .collect();
    start(name, "unshare", &command, &[]).await
}

/// The pid, here, of the one process `unshare --fork` started.
fn forked_child(unshare: &ServiceProcess) -> Pid {
    let pid = unshare.pid().expect("unshare runs");
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let child = children
        .split_whitespace()
        .next()
        .expect("unshare has forked");
    Pid::from_raw(child.parse().unwrap())
}

/// Asks the gateway for one body of every tier (inline, slot, sealed) over shared memory, and
/// checks each is exactly the dataset's, carried by the tier named.
async fn every_tier_arrives_whole(gateway: &ServiceProcess) {
    let http = client();
    let users = |count: u32| {
        (
            format!("/api/users-via-shm?count={count}&seed=7"),
            users_json(count, 7),
        )
    };
    let cases = [
        (users(1), "shm-inline"),
        (users(700), "shm-slot"),
        (users(20_000), "shm-sealed"),
        (
            (
                "/via-shm/blobs?size=3000000&pattern=random&seed=9".to_owned(),
                blob_bytes(&BlobQuery {
                    size: 3_000_000,
                    pattern: BlobPattern::Random,
                    seed: 9,
                }),
            ),
            "shm-sealed",
        ),
    ];
    for ((route, expected), tier) in cases {
        let response = http
            .get(format!("{}{route}", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{route}");
        let carried = response.headers()[TRANSPORT_HEADER].to_str().unwrap();
        assert_eq!(carried, tier, "{route}");
        let body = response.bytes().await.unwrap();
        assert!(body == expected, "{route}: body differs from the dataset");
    }
}

/// The gateway sees users-service's pid, users-service sees the gateway under another pid
/// than the gateway's own: the gateway holds slots under users-service's name for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_in_its_own_pid_ipc_and_mount_namespace_serves_every_tier() {
    if let Some(why) = namespaces_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let users = users_service(&["--listen", "127.0.0.1:0"]).await;
    let upstream = users.url();
    let gateway = contained(
        "gateway",
        &workspace_binary("gateway"),
        OWN_PID_IPC_MOUNT,
        &["--listen", "127.0.0.1:0", "--upstream", upstream.as_str()],
    )
    .await;
    every_tier_arrives_whole(&gateway).await;
}

/// users-service in a network namespace of its own: no abstract name reaches it, a socket file
/// in a shared directory does. It cannot see the gateway at all (the gateway holds by lease
/// alone), and the gateway knows it as the first process of its PID namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_service_in_its_own_network_namespace_is_reached_through_a_socket_path() {
    if let Some(why) = namespaces_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let shared = tempfile::Builder::new()
        .prefix("shmbridge-containers-")
        .tempdir()
        .unwrap();
    let socket = shared.path().join("users.sock");
    let socket = socket.to_str().unwrap();
    let own_network = [OWN_PID_IPC_MOUNT, &["--net"]].concat();
    let users = contained(
        "users-service",
        &workspace_binary("users-service"),
        &own_network,
        &["--listen", "127.0.0.1:0", "--shm-socket", socket],
    )
    .await;
    // users-service's HTTP port lies in its own network namespace: nothing answers here, so
    // every body below came over the socket path.
    let gateway = shmbridge_system_tests::process::gateway(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        users.url().as_str(),
        "--shm-socket",
        socket,
    ])
    .await;
    every_tier_arrives_whole(&gateway).await;
    drop(gateway);
    // SIGTERM to `unshare` would wait for its child; the service itself drains and exits.
    kill(forked_child(&users), Signal::SIGTERM).unwrap();
    let mut users = users;
    let exit = users.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    assert!(
        !Path::new(socket).exists(),
        "users-service left its socket file behind"
    );
}
