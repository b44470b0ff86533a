//! The leak checks at the end of a scenario, once the load has stopped and both services are
//! healthy: the harness attaches read-only to users-service's live segment and polls its slot
//! table (`inspect`) until every slot is free (a slot still held when the settle time runs out
//! is leaked); then it asks users-service for the sealed bytes its producer still counts in
//! flight (`GET /shm/stats`, which must fall to 0: a ticket that stays counted, or a
//! reservation never given back, wedges `--max-sealed-bytes` for good); and it counts the sealed
//! payload memfds each service still maps or holds open (`/proc/PID/maps`, `/proc/PID/fd`),
//! which must be none once every response is done and every publication is over.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use shmbridge::PAYLOAD_MEMFD_NAME;
use shmbridge_server::segment_info::ShmStatsInfo;
use tokio::time::Instant;

use crate::inspect::{SlotRow, wait_until_all_free};
use crate::process::role::Role;
use crate::process::supervisor::Supervisor;
use crate::segment::{SegmentError, segment_info};

/// A published slot waits up to users-service's 5 s ready TTL for its reader, a held one up to
/// its 1 s lease, then the reaper (every 250 ms) takes it back: a slot still held after this
/// long is leaked. The same time bounds the other checks, all counted from one start.
pub const LEAK_SETTLE: Duration = Duration::from_secs(8);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Where the leaked sealed bytes were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SealedBytesSource {
    /// users-service's `GET /shm/stats`: its producer's own count, reservations included.
    Producer,
    /// A users-service without `/shm/stats` (the Python one): the tagged lengths of the tickets
    /// (held descriptors longer than a slot) in the segment's slot table.
    SegmentTickets,
}

/// What the leak checks found.
#[derive(Clone, Debug)]
pub struct Leaks {
    /// The slots still held at the end.
    pub held: Vec<SlotRow>,
    /// Sealed payload bytes still counted in flight.
    pub sealed_bytes: u64,
    pub sealed_bytes_source: SealedBytesSource,
    /// Sealed publications users-service made in its last life, when it reports them: shows
    /// that the large bodies did travel sealed.
    pub sealed_publications: Option<u64>,
    /// Sealed payload memfds each service still maps or holds open, or why they could not be
    /// counted.
    pub payload_memfds: Result<Vec<PayloadMemfds>, String>,
}

/// One service's leftover sealed payloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PayloadMemfds {
    pub service: String,
    pub pid: i32,
    /// Lines of `/proc/PID/maps` mapping a payload memfd.
    pub mappings: u32,
    /// Entries of `/proc/PID/fd` that are payload memfds.
    pub descriptors: u32,
}

impl PayloadMemfds {
    pub fn total(&self) -> u32 {
        self.mappings + self.descriptors
    }
}

/// Runs the three checks, each polling until it reads nothing left or `LEAK_SETTLE` (counted
/// from the start of the first) has passed.
pub async fn check(supervisor: &Supervisor) -> Result<Leaks, SegmentError> {
    let deadline = Instant::now() + LEAK_SETTLE;
    let info = segment_info(&supervisor.users_url(), ATTACH_TIMEOUT).await?;
    let segment =
        shmbridge::attach_via_socket_read_only(&info.socket, ATTACH_TIMEOUT).map_err(|source| {
            SegmentError::Attach {
                socket: info.socket.clone(),
                source,
            }
        })?;
    let snapshot =
        wait_until_all_free(&segment, deadline.saturating_duration_since(Instant::now())).await;
    let held: Vec<SlotRow> = snapshot.held().cloned().collect();
    let producer = producer_stats(supervisor, deadline).await;
    let (sealed_bytes, sealed_bytes_source) = match producer {
        Some(stats) => (stats.sealed_bytes_in_flight, SealedBytesSource::Producer),
        None => (
            ticket_bytes(&held, info.slot_size),
            SealedBytesSource::SegmentTickets,
        ),
    };
    let payload_memfds = payload_memfds(supervisor, deadline).await;
    Ok(Leaks {
        held,
        sealed_bytes,
        sealed_bytes_source,
        sealed_publications: producer.map(|stats| stats.sealed_publications),
        payload_memfds,
    })
}

/// The producer's sealed figures, polled until no byte is in flight or `deadline`; `None` when
/// users-service does not answer `GET /shm/stats` with them (one that has no such route).
async fn producer_stats(supervisor: &Supervisor, deadline: Instant) -> Option<ShmStatsInfo> {
    loop {
        let stats = match supervisor.get(Role::UsersService, "/shm/stats").await {
            Ok((200, body)) => serde_json::from_str::<ShmStatsInfo>(&body).ok()?,
            _ => return None,
        };
        if stats.sealed_bytes_in_flight == 0 || Instant::now() >= deadline {
            return Some(stats);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Bytes of the tickets among `held`: descriptors whose tagged length is above a slot, whose
/// bytes live in a sealed payload, not in the slot.
pub fn ticket_bytes(held: &[SlotRow], slot_size: u32) -> u64 {
    held.iter()
        .filter(|row| row.len > slot_size)
        .map(|row| u64::from(row.len))
        .sum()
}

/// Each service's payload memfds, polled until none is left or `deadline`.
async fn payload_memfds(
    supervisor: &Supervisor,
    deadline: Instant,
) -> Result<Vec<PayloadMemfds>, String> {
    loop {
        let mut found = Vec::new();
        for role in Role::ALL {
            let pid = supervisor
                .pid(role)
                .map_err(|error| error.to_string())?
                .as_raw();
            found.push(count_payload_memfds(role, pid)?);
        }
        if found.iter().all(|memfds| memfds.total() == 0) || Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn count_payload_memfds(role: Role, pid: i32) -> Result<PayloadMemfds, String> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let unreadable =
        |what: &str, error: std::io::Error| format!("{role} (pid {pid}): {what}: {error}");
    let maps = std::fs::read_to_string(proc_dir.join("maps"))
        .map_err(|error| unreadable("cannot read /proc/PID/maps", error))?;
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(proc_dir.join("fd"))
        .map_err(|error| unreadable("cannot list /proc/PID/fd", error))?
    {
        let entry = entry.map_err(|error| unreadable("cannot list /proc/PID/fd", error))?;
        // A descriptor closed between listing and reading is no longer held: skip it.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            targets.push(target.to_string_lossy().into_owned());
        }
    }
    Ok(PayloadMemfds {
        service: role.to_string(),
        pid,
        mappings: payload_memfd_count(maps.lines()),
        descriptors: payload_memfd_count(targets.iter().map(String::as_str)),
    })
}

/// How many of `entries` (lines of `/proc/PID/maps`, or `/proc/PID/fd` link targets) name a
/// sealed payload's memfd: `/memfd:shmbridge-payload`, `(deleted)` or not. The segment's own
/// memfd (`/memfd:shmbridge`) is not one.
pub fn payload_memfd_count<'a>(entries: impl Iterator<Item = &'a str>) -> u32 {
    let name = format!(
        "/memfd:{}",
        PAYLOAD_MEMFD_NAME
            .to_str()
            .expect("the payload memfd name is ASCII")
    );
    let count = entries
        .filter(|entry| {
            entry
                .split_once(&name)
                .is_some_and(|(_, rest)| rest.is_empty() || rest == " (deleted)")
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(slot: u32, state: &str, len: u32) -> SlotRow {
        SlotRow {
            slot,
            state: state.to_owned(),
            generation: 3,
            owner_pid: 10,
            owner_start_time: 0,
            owner_pidfs_ino: 0,
            deadline_in_ms: -5,
            len,
            crc: "00000000".to_owned(),
        }
    }

    #[test]
    fn ticket_bytes_count_only_descriptors_longer_than_a_slot() {
        let held = [
            row(0, "ready", 5_000_000),
            row(1, "reading", 524_288),
            row(2, "writing", 300),
            row(3, "ready", 7_000_001),
        ];
        assert_eq!(ticket_bytes(&held, 524_288), 12_000_001);
        assert_eq!(ticket_bytes(&held[1..3], 524_288), 0);
    }

    #[test]
    fn payload_memfds_are_told_from_the_segment_and_other_files() {
        let maps = "\
7f0000000000-7f0000080000 r--s 00000000 00:01 1234 /memfd:shmbridge (deleted)
7f0000100000-7f0000600000 r--s 00000000 00:01 1240 /memfd:shmbridge-payload (deleted)
7f0000700000-7f0000800000 r--s 00000000 00:01 1241 /memfd:shmbridge-payload (deleted)
7f0000900000-7f0000901000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6
7f0000a00000-7f0000a01000 rw-p 00000000 00:00 0 ";
        assert_eq!(payload_memfd_count(maps.lines()), 2);
        let fds = [
            "/memfd:shmbridge (deleted)",
            "/memfd:shmbridge-payload (deleted)",
            "/memfd:shmbridge-payload",
            "socket:[4321]",
            "/memfd:shmbridge-payload-other (deleted)",
            "/dev/null",
        ];
        assert_eq!(payload_memfd_count(fds.into_iter()), 2);
    }
}
