//! `inspect`: attach to a live segment and print its header and every slot's state, generation,
//! holder, lease and length — for operators, and for the harness's end-of-scenario leak check.

use std::path::PathBuf;
use std::time::Duration;

use shmbridge::{Segment, SlotState, attach_via_socket_read_only, monotonic_now_ns};
use url::Url;

use crate::segment::{SegmentError, segment_info};

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct InspectArgs {
    /// Abstract socket name serving the segment (users-service prints it at start-up).
    #[arg(long)]
    pub socket: Option<String>,
    /// users-service's base URL: asks it which socket serves its segment now.
    #[arg(long)]
    pub users_service: Option<Url>,
    /// A named-file segment (users-service `--shm-path`).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// List free slots too.
    #[arg(long)]
    pub all: bool,
}

/// How long attaching may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// One slot as read, with its lease expressed relative to now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotRow {
    pub slot: u32,
    /// `free`, `writing`, `ready`, `reading`, or `unknown` for a scribbled state byte.
    pub state: String,
    pub generation: u64,
    pub owner_pid: u32,
    pub owner_start_time: u64,
    /// 0 when the holder recorded none (no pidfs, or an older peer).
    pub owner_pidfs_ino: u64,
    /// Milliseconds until the lease (writing, reading) or TTL (ready) ends; negative once past.
    pub deadline_in_ms: i64,
    pub len: u32,
    pub crc: String,
}

impl SlotRow {
    pub fn is_free(&self) -> bool {
        self.state == "free"
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SegmentSnapshot {
    pub epoch: String,
    pub layout_version: u32,
    pub slot_count: u32,
    pub slot_size: u32,
    pub total_size: u64,
    pub creator_pid: u32,
    pub slots: Vec<SlotRow>,
}

impl SegmentSnapshot {
    pub fn take(segment: &Segment) -> SegmentSnapshot {
        let header = segment.header();
        let now = i128::from(monotonic_now_ns());
        let slots = (0..segment.slot_count())
            .filter_map(|slot| segment.inspect(slot))
            .map(|view| SlotRow {
                slot: view.slot,
                state: match view.state {
                    Some(SlotState::Free) => "free".to_owned(),
                    Some(SlotState::Writing) => "writing".to_owned(),
                    Some(SlotState::Ready) => "ready".to_owned(),
                    Some(SlotState::Reading) => "reading".to_owned(),
                    None => "unknown".to_owned(),
                },
                generation: view.generation,
                owner_pid: view.owner.pid,
                owner_start_time: view.owner.start_time,
                owner_pidfs_ino: view.owner.pidfs_ino,
                deadline_in_ms: i64::try_from((i128::from(view.deadline_ns) - now) / 1_000_000)
                    .unwrap_or(i64::MAX),
                len: view.len,
                crc: format!("{:08x}", view.crc),
            })
            .collect();
        SegmentSnapshot {
            epoch: format!("{:016x}", header.epoch),
            layout_version: header.layout_version,
            slot_count: header.slot_count,
            slot_size: header.slot_size,
            total_size: header.total_size,
            creator_pid: header.creator_pid,
            slots,
        }
    }

    /// Slots somebody holds (or that hold an unknown state).
    pub fn held(&self) -> impl Iterator<Item = &SlotRow> {
        self.slots.iter().filter(|row| !row.is_free())
    }

    /// The header, then one row per slot that is not free (all rows with `all_slots`).
    pub fn to_markdown(&self, all_slots: bool) -> String {
        let mut text = format!(
            "segment epoch {} · layout v{} · {} slots × {} B · {} B total · created by pid {}\n\n",
            self.epoch,
            self.layout_version,
            self.slot_count,
            self.slot_size,
            self.total_size,
            self.creator_pid
        );
        let held = self.held().count();
        text.push_str(&format!(
            "{} free, {held} held\n\n| slot | state | generation | owner pid | owner start | owner pidfs ino | deadline in (ms) | len | crc |\n|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
            self.slots.len() - held
        ));
        for row in self.slots.iter().filter(|row| all_slots || !row.is_free()) {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.slot,
                row.state,
                row.generation,
                row.owner_pid,
                row.owner_start_time,
                row.owner_pidfs_ino,
                row.deadline_in_ms,
                row.len,
                row.crc
            ));
        }
        text
    }
}

/// Attaches read-only as `args` says: an inspector can never write to the segment.
pub async fn attach(args: &InspectArgs) -> Result<Segment, SegmentError> {
    if let Some(path) = &args.path {
        return Segment::attach_file_read_only(path).map_err(|source| SegmentError::Attach {
            socket: path.display().to_string(),
            source,
        });
    }
    let socket = match (&args.socket, &args.users_service) {
        (Some(socket), _) => socket.clone(),
        (None, Some(url)) => segment_info(url, ATTACH_TIMEOUT).await?.socket,
        (None, None) => unreachable!("clap requires one of --socket, --users-service, --path"),
    };
    attach_via_socket_read_only(&socket, ATTACH_TIMEOUT)
        .map_err(|source| SegmentError::Attach { socket, source })
}

/// Polls the segment until no slot is held or `timeout` passes, and returns the last snapshot:
/// a slot still held then is leaked.
pub async fn wait_until_all_free(segment: &Segment, timeout: Duration) -> SegmentSnapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snapshot = SegmentSnapshot::take(segment);
        if snapshot.held().next().is_none() || tokio::time::Instant::now() >= deadline {
            return snapshot;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
