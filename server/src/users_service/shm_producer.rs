//! users-service's side of shared memory: the segment it creates at start-up (a sealed memfd, or
//! a file at `--shm-path`), the control socket that hands it to gateways and answers their
//! publish frames, publishing one payload into a slot, the transport's reaper thread that takes
//! back slots whose handle was never redeemed, and the slot metrics.
//!
//! Execution policy on the control channel: each connection's own threads read its frames and
//! do the work of each frame they read — making the body and copying it into the slot — so the
//! request goes from the socket to its work without changing threads, and no async worker ever
//! runs it. A stalled publication holds one of those threads; the connection starts another to
//! read the frames behind it ([`shmbridge::control`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shmbridge::control::frame::MAX_INLINE_LEN;
use shmbridge::control::{
    ChannelOptions, DEFAULT_INLINE_THRESHOLD, Handler, PeerLedger, PublicationLimits,
};
use shmbridge::layout::{DEFAULT_BOARD_ENTRIES, GeometryError};
use shmbridge::{
    ClaimError, ControlServer, CreateError, Handle, Producer, ProducerOptions, ReaperThread,
    ReclaimReason, Reclaims, Segment, SegmentConfig, Stats, VersionBoard,
};

use crate::api_error::{ApiError, ShmFault};
use crate::failpoints;
use crate::segment_info::{SegmentInfo, ShmStatsInfo};
use crate::slot_deadline::{self, SlotDeadlineError};

use super::stale_segment;

/// Shared-memory options of users-service.
#[derive(clap::Args, Clone, Debug)]
pub struct ShmArgs {
    /// Slots in the segment: how many payloads can be in flight at once.
    #[arg(long, env = "SHMBRIDGE_SLOT_COUNT", default_value_t = SegmentConfig::default().slot_count)]
    pub slot_count: u32,
    /// Bytes per slot (a multiple of 64). Larger bodies travel as sealed payloads on the control
    /// channel (`--max-payload`); the HTTP-signalled path refuses them with 507.
    #[arg(long, env = "SHMBRIDGE_SLOT_SIZE", default_value_t = SegmentConfig::default().slot_size)]
    pub slot_size: u32,
    /// Unix socket that serves the segment descriptor and the control channel to gateways: an
    /// abstract name, or a path when it holds a `/` (for a gateway in another network namespace,
    /// through a shared directory). Default: the abstract `shmbridge-users-PID-EPOCH`, announced
    /// on `GET /shm/segment`.
    #[arg(long, env = "SHMBRIDGE_SHM_SOCKET")]
    pub shm_socket: Option<String>,
    /// Create the segment as a file at this path (e.g. on a tmpfs) instead of a sealed memfd; it
    /// is handed to gateways over the socket all the same and removed on a clean exit. A file
    /// left there by a dead run, or of another layout version, is replaced; one whose creator
    /// still runs is refused.
    #[arg(long, env = "SHMBRIDGE_SHM_PATH")]
    pub shm_path: Option<PathBuf>,
    /// How long a publication waits for a free slot before answering 503.
    #[arg(long, env = "SHMBRIDGE_CLAIM_TIMEOUT", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub claim_timeout: Duration,
    /// How long a publication may hold its slot while writing it before the reaper takes it
    /// back (more than 0, at most 1h).
    #[arg(long, env = "SHMBRIDGE_LEASE", default_value = "1s", value_parser = slot_deadline::parse)]
    pub lease: Duration,
    /// How long a published slot waits for its gateway before the reaper takes it back (more
    /// than 0, at most 1h).
    #[arg(long, env = "SHMBRIDGE_READY_TTL", default_value = "5s", value_parser = slot_deadline::parse)]
    pub ready_ttl: Duration,
    /// A uid, besides this process's own, whose processes may connect to the control socket
    /// (repeat for several). Everyone else is closed unanswered.
    #[arg(
        long = "allow-uid",
        env = "SHMBRIDGE_ALLOW_UIDS",
        value_delimiter = ','
    )]
    pub allow_uids: Vec<u32>,
    /// Publications one peer may hold (a control connection, or the HTTP-signalled path as a
    /// whole), counted until their slot is given back: waiting to be redeemed, or being read;
    /// more answer "busy". Default: half the slots.
    #[arg(long, env = "SHMBRIDGE_MAX_UNREDEEMED_PER_PEER")]
    pub max_unredeemed_per_peer: Option<u32>,
    /// Publications the whole segment may hold, waiting or being read; more answer "busy".
    /// Default: three quarters of the slots.
    #[arg(long, env = "SHMBRIDGE_MAX_UNREDEEMED")]
    pub max_unredeemed: Option<u32>,
    /// Largest body published through shared memory, as a sealed payload when it is above a
    /// slot; a larger one is refused (the gateway answers 413 naming this limit).
    #[arg(long, env = "SHMBRIDGE_MAX_PAYLOAD", default_value_t = ProducerOptions::default().max_payload as u64)]
    pub max_payload: u64,
    /// Bytes of sealed payloads published and not yet redeemed, in all; past it a publication
    /// waits (within the claim timeout) and is then refused as exhausted.
    #[arg(long, env = "SHMBRIDGE_MAX_SEALED_BYTES", default_value_t = ProducerOptions::default().max_sealed_bytes)]
    pub max_sealed_bytes: u64,
    /// Of those, the bytes one control connection's unredeemed sealed payloads may hold; past
    /// it that peer's publication waits, then is refused as exhausted, while other peers' go on.
    /// Default: half of `--max-sealed-bytes`, but at least one `--max-payload`.
    #[arg(long, env = "SHMBRIDGE_MAX_SEALED_BYTES_PER_PEER")]
    pub max_sealed_bytes_per_peer: Option<u64>,
    /// Bodies up to this many bytes travel inline in the channel's answer, holding no slot
    /// (at most 65536; 0 sends every body through a slot or sealed).
    #[arg(long, env = "SHMBRIDGE_INLINE_THRESHOLD", default_value_t = DEFAULT_INLINE_THRESHOLD, value_parser = parse_inline_threshold)]
    pub inline_threshold: usize,
}

fn parse_inline_threshold(value: &str) -> Result<usize, String> {
    let bytes: usize = value.parse().map_err(|error| format!("{error}"))?;
    if bytes > MAX_INLINE_LEN {
        return Err(format!(
            "at most {MAX_INLINE_LEN} bytes travel inline, got {bytes}"
        ));
    }
    Ok(bytes)
}

impl ShmArgs {
    fn producer_options(&self) -> ProducerOptions {
        ProducerOptions {
            lease: self.lease,
            ready_ttl: self.ready_ttl,
            max_payload: usize::try_from(self.max_payload).unwrap_or(usize::MAX),
            max_sealed_bytes: self.max_sealed_bytes,
            max_sealed_bytes_per_peer: self.max_sealed_bytes_per_peer,
        }
    }

    fn limits(&self) -> PublicationLimits {
        let defaults = PublicationLimits::for_slots(self.slot_count);
        PublicationLimits {
            per_peer: self.max_unredeemed_per_peer.unwrap_or(defaults.per_peer),
            segment: self.max_unredeemed.unwrap_or(defaults.segment),
        }
    }
}

/// How often the reaper looks for slots whose holder died, overran its lease, or whose handle
/// was never redeemed within the TTL.
const REAP_INTERVAL: Duration = Duration::from_millis(250);

/// Why [`ShmProducer::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The segment could not be created (no space, no memory, an unwritable directory):
    /// users-service still serves REST and answers 503 on its shared-memory routes.
    #[error("cannot create the shared-memory segment{}: {cause}", location(path.as_deref()))]
    Create {
        /// The segment file's path (`--shm-path`), or `None` for a memfd.
        path: Option<PathBuf>,
        cause: CreateError,
    },
    /// `--lease` or `--ready-ttl` outside its bounds (the flags' parser refuses these already;
    /// this catches `ShmArgs` built in code).
    #[error("{flag}: {source}")]
    BadDeadline {
        flag: &'static str,
        source: SlotDeadlineError,
    },
    /// The file at `--shm-path` belongs to a live segment, or is not ours to replace.
    #[error(transparent)]
    Leftover(#[from] stale_segment::StaleSegmentError),
    /// `--slot-count` and `--slot-size` make no valid segment.
    #[error("invalid segment configuration: {0}")]
    InvalidGeometry(GeometryError),
    /// The control socket could not take its name (already taken, or no such abstract socket
    /// support).
    #[error("cannot serve the segment on socket {}: {error}", shmbridge::display_socket(.socket))]
    Socket {
        socket: String,
        error: std::io::Error,
    },
    /// The producer or its reaper thread could not start.
    #[error(transparent)]
    Producer(std::io::Error),
    /// The version board's memfd could not be made.
    #[error("cannot create the version board: {0}")]
    Board(shmbridge::BoardError),
}

/// How [`StartError::Create`] names where the segment was to be: ` at PATH` or ` (memfd)`.
fn location(path: Option<&Path>) -> String {
    path.map_or_else(
        || " (memfd)".to_owned(),
        |path| format!(" at {}", path.display()),
    )
}

/// The segment, its control socket, the producer writing into it and its reaper. Dropping it
/// stops the reaper and the control socket; a memfd disappears with the last mapping and a
/// segment file is removed, so nothing is left on disk.
pub struct ShmProducer {
    producer: Arc<Producer>,
    info: SegmentInfo,
    claim_timeout: Duration,
    /// The HTTP-signalled path's publications, held to the same limits as one channel peer.
    http_peer: PeerLedger,
    /// Reclaims already logged, so each report logs only the new ones.
    reported_reclaims: Mutex<Reclaims>,
    /// Header repairs already logged.
    reported_header_repairs: AtomicU64,
    /// The version board the channel hands gateways: kept bodies are named object versions on
    /// it ([`super::channel_routes`]), and `POST /shm/invalidate` bumps them.
    board: Arc<VersionBoard>,
    _reaper: ReaperThread,
    _control: ControlServer,
}

impl ShmProducer {
    /// Creates the segment and serves it, answering the channel's requests with `handler`.
    pub fn start(args: &ShmArgs, handler: Arc<dyn Handler>) -> Result<ShmProducer, StartError> {
        for (flag, value) in [("--lease", args.lease), ("--ready-ttl", args.ready_ttl)] {
            slot_deadline::check(value)
                .map_err(|source| StartError::BadDeadline { flag, source })?;
        }
        let config = SegmentConfig {
            slot_count: args.slot_count,
            slot_size: args.slot_size,
        };
        let created = match &args.shm_path {
            Some(path) => {
                stale_segment::clear_leftover(path)?;
                Segment::create_file(path, &config)
            }
            None => Segment::create(&config),
        };
        let segment = Arc::new(created.map_err(|error| match error {
            CreateError::InvalidConfig(geometry) => StartError::InvalidGeometry(geometry),
            cause => StartError::Create {
                path: args.shm_path.clone(),
                cause,
            },
        })?);
        let epoch = segment.epoch();
        let socket = args
            .shm_socket
            .clone()
            .unwrap_or_else(|| format!("shmbridge-users-{}-{epoch:016x}", std::process::id()));
        let producer = Arc::new(
            Producer::new(segment, args.producer_options()).map_err(StartError::Producer)?,
        );
        let board =
            Arc::new(VersionBoard::create(DEFAULT_BOARD_ENTRIES).map_err(StartError::Board)?);
        let channel = ChannelOptions {
            allowed_uids: args.allow_uids.clone(),
            limits: args.limits(),
            inline_threshold: args.inline_threshold,
            board: Some(Arc::clone(&board)),
            ..ChannelOptions::for_segment(producer.segment())
        };
        let control =
            ControlServer::spawn_channel(Arc::clone(&producer), handler, channel, &socket)
                .map_err(|error| StartError::Socket {
                    socket: socket.clone(),
                    error,
                })?;
        let reaper = producer
            .spawn_reaper(REAP_INTERVAL)
            .map_err(StartError::Producer)?;
        let info = SegmentInfo {
            socket,
            epoch: format!("{epoch:016x}"),
            layout_version: shmbridge::layout::LAYOUT_VERSION,
            slot_count: config.slot_count,
            slot_size: config.slot_size,
        };
        tracing::info!(
            socket = %info.socket,
            epoch = %info.epoch,
            slot_count = info.slot_count,
            slot_size = info.slot_size,
            path = args.shm_path.as_ref().map(|path| path.display().to_string()),
            "shared-memory segment created"
        );
        Ok(ShmProducer {
            producer,
            info,
            claim_timeout: args.claim_timeout,
            http_peer: PeerLedger::new(args.limits()),
            reported_reclaims: Mutex::new(Reclaims::default()),
            reported_header_repairs: AtomicU64::new(0),
            board,
            _reaper: reaper,
            _control: control,
        })
    }

    pub fn info(&self) -> &SegmentInfo {
        &self.info
    }

    /// The version board kept bodies are named on.
    pub fn board(&self) -> &VersionBoard {
        &self.board
    }

    /// Publishes `body` for the HTTP-signalled path (`POST /shm/users`), within the limits of
    /// one peer; the handle carries the crc32 the write guard computed over `body` as it
    /// copied. Blocks for up to the claim timeout when every slot is busy, so call it off the
    /// async workers.
    pub fn publish_for_http(&self, body: &[u8]) -> Result<Handle, ApiError> {
        let room = self
            .http_peer
            .reserve(&self.producer)
            .map_err(|refusal| ApiError::ShmBusy { refusal })?;
        let handle = write_publication(&self.producer, body, self.claim_timeout)?;
        room.record(&self.producer, &handle);
        metrics::counter!("shm_publications_total", "signal" => "http").increment(1);
        Ok(handle)
    }

    pub fn stats(&self) -> Stats {
        self.producer.stats()
    }

    /// What `GET /shm/stats` answers: the sealed figures of [`Producer::stats`], read now.
    pub fn stats_info(&self) -> ShmStatsInfo {
        let stats = self.producer.stats();
        ShmStatsInfo {
            sealed_publications: stats.sealed_publications,
            sealed_bytes_in_flight: stats.sealed_bytes_in_flight,
        }
    }

    /// Exports slot and reclaim metrics, and logs reclaims since the last report.
    pub fn report(&self) {
        let stats = self.producer.stats();
        let slots = stats.slots;
        for (state, count) in [
            ("free", slots.free),
            ("writing", slots.writing),
            ("ready", slots.ready),
            ("reading", slots.reading),
            ("unknown", slots.unknown),
        ] {
            metrics::gauge!("shm_slots", "state" => state).set(f64::from(count));
        }
        let mut reported = self
            .reported_reclaims
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for reason in ReclaimReason::ALL {
            let total = stats.reclaims.get(reason);
            metrics::counter!("shm_reclaims_total", "reason" => reason.as_str()).absolute(total);
            let new = total.saturating_sub(reported.get(reason));
            if new > 0 {
                tracing::info!(reason = reason.as_str(), slots = new, "reclaimed slots");
            }
        }
        *reported = stats.reclaims;
        metrics::counter!("shm_claims_exhausted_total").absolute(stats.claims_exhausted);
        metrics::counter!("shm_header_repairs_total").absolute(stats.header_repairs);
        let already = self
            .reported_header_repairs
            .swap(stats.header_repairs, Ordering::Relaxed);
        if stats.header_repairs > already {
            tracing::info!(
                repairs = stats.header_repairs - already,
                "restored the segment header after something overwrote it"
            );
        }
    }

    /// Reports every `interval` until the returned task is aborted or the runtime stops.
    pub fn spawn_reporter(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.report();
            }
        })
    }
}

/// Claims a slot, copies `body` in and publishes it, waiting at most `wait` for a free slot: the
/// one way users-service writes a publication, on either signalling path.
fn write_publication(producer: &Producer, body: &[u8], wait: Duration) -> Result<Handle, ApiError> {
    let mut slot = producer
        .claim(body.len(), wait)
        .map_err(|error| match error {
            ClaimError::TooLarge { len, max } => ApiError::TooLargeForSlot { len, max },
            ClaimError::Exhausted { .. } => ApiError::SlotsExhausted,
            error @ ClaimError::BytesExhausted { .. } => {
                unreachable!("claim answered {error}, which only sealed publishing does")
            }
        })?;
    failpoints::hit(failpoints::AFTER_CLAIM);
    // Two writes around MID_COPY, so a crash there leaves a half-written slot behind.
    let (first_half, second_half) = body.split_at(body.len() / 2);
    // A failed write (the reaper took the slot) drops the guard, which frees the slot.
    let write_failed = |error: std::io::Error| ApiError::ShmStale {
        reason: ShmFault::Write(error),
    };
    std::io::Write::write_all(&mut slot, first_half).map_err(write_failed)?;
    failpoints::hit(failpoints::MID_COPY);
    std::io::Write::write_all(&mut slot, second_half).map_err(write_failed)?;
    failpoints::hit(failpoints::BEFORE_PUBLISH);
    slot.publish().map_err(|error| ApiError::ShmStale {
        reason: ShmFault::Publish(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::query::UsersQuery;
    use clap::Parser;
    use shmbridge::control::RefusalCode;

    #[derive(clap::Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        shm: ShmArgs,
    }

    /// A channel that answers every request with an empty 200: these tests publish directly.
    fn no_routes() -> Arc<dyn Handler> {
        Arc::new(|_: &[u8], _: &mut shmbridge::control::ResponseWriter<'_>| Ok(()))
    }

    fn small_producer(extra: &[&str]) -> ShmProducer {
        let args = [
            "test",
            "--slot-count",
            "2",
            "--slot-size",
            "65536",
            "--claim-timeout",
            "20ms",
            // Above the slot count, so that the segment itself runs out first.
            "--max-unredeemed-per-peer",
            "3",
            "--max-unredeemed",
            "3",
        ];
        let cli = Cli::try_parse_from(args.iter().chain(extra)).unwrap();
        ShmProducer::start(&cli.shm, no_routes()).unwrap()
    }

    /// Each channel peer's share of the sealed bytes: half of `--max-sealed-bytes` unless
    /// `--max-sealed-bytes-per-peer` says otherwise.
    #[test]
    fn the_sealed_share_per_peer_is_half_the_budget_or_the_flag() {
        let share = |flags: &[&str]| {
            let args = ["test", "--max-sealed-bytes", "1000", "--max-payload", "100"];
            let cli = Cli::try_parse_from(args.iter().chain(flags)).unwrap();
            cli.shm.producer_options().sealed_share()
        };
        assert_eq!(share(&[]), 500);
        assert_eq!(share(&["--max-sealed-bytes-per-peer", "300"]), 300);
    }

    #[test]
    fn stats_info_counts_a_sealed_publication_until_it_is_withdrawn() {
        let producer = small_producer(&[]);
        let mut writer = shmbridge::SealedWriter::new().unwrap();
        std::io::Write::write_all(&mut writer, &[7u8; 100_000]).unwrap();
        let payload = writer.finish().unwrap();
        let handle = producer
            .producer
            .publish_sealed(&payload, Duration::from_millis(20))
            .unwrap();
        let info = producer.stats_info();
        assert_eq!(info.sealed_publications, 1);
        assert_eq!(info.sealed_bytes_in_flight, 100_000);
        assert!(producer.producer.withdraw(handle.slot, handle.generation));
        assert_eq!(producer.stats_info().sealed_bytes_in_flight, 0);
    }

    #[test]
    fn publish_returns_a_handle_with_the_payload_crc_and_len() {
        let producer = small_producer(&[]);
        let payload = Payload::generate(UsersQuery { count: 20, seed: 1 });
        let handle = producer.publish_for_http(&payload.bytes).unwrap();
        assert_eq!(handle.crc, payload.crc32);
        assert_eq!(handle.len as usize, payload.bytes.len());
        assert_eq!(format!("{:016x}", handle.epoch), producer.info().epoch);
    }

    #[test]
    fn too_large_and_exhausted_are_typed_errors() {
        let producer = small_producer(&[]);
        let big = Payload::generate(UsersQuery {
            count: 400,
            seed: 1,
        });
        assert!(matches!(
            producer.publish_for_http(&big.bytes),
            Err(ApiError::TooLargeForSlot { .. })
        ));
        let small = Payload::generate(UsersQuery { count: 1, seed: 1 });
        producer.publish_for_http(&small.bytes).unwrap();
        producer.publish_for_http(&small.bytes).unwrap();
        assert!(matches!(
            producer.publish_for_http(&small.bytes),
            Err(ApiError::SlotsExhausted)
        ));
    }

    #[test]
    fn the_http_path_is_held_to_the_per_peer_limit() {
        let producer = small_producer(&["--max-unredeemed-per-peer", "1"]);
        let small = Payload::generate(UsersQuery { count: 1, seed: 1 });
        producer.publish_for_http(&small.bytes).unwrap();
        let Err(ApiError::ShmBusy { refusal }) = producer.publish_for_http(&small.bytes) else {
            panic!("expected busy");
        };
        assert_eq!(refusal.code, RefusalCode::PeerBusy);
        assert_eq!(refusal.detail, 1);
        assert_eq!(producer.stats().slots.free, 1);
    }

    #[test]
    fn reaper_frees_unredeemed_slots_after_the_ttl() {
        let producer = small_producer(&["--ready-ttl", "10ms"]);
        let small = Payload::generate(UsersQuery { count: 1, seed: 1 });
        producer.publish_for_http(&small.bytes).unwrap();
        producer.publish_for_http(&small.bytes).unwrap();
        assert_eq!(producer.stats().slots.ready, 2);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while producer.stats().slots.free < 2 {
            assert!(std::time::Instant::now() < deadline, "reaper did not run");
            std::thread::sleep(Duration::from_millis(20));
        }
        let reclaimed = producer.stats().reclaims.get(ReclaimReason::TtlExpired);
        assert_eq!(reclaimed, 2);
        producer.report();
    }

    #[test]
    fn a_segment_file_is_created_at_the_path_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let producer = small_producer(&["--shm-path", path.to_str().unwrap()]);
        let attached = Segment::attach_file(&path).unwrap();
        assert_eq!(format!("{:016x}", attached.epoch()), producer.info().epoch);
        drop(attached);
        drop(producer);
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_directory_is_a_create_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("segment");
        let cli = Cli::try_parse_from(["test", "--shm-path", path.to_str().unwrap()]).unwrap();
        let Err(error @ StartError::Create { .. }) = ShmProducer::start(&cli.shm, no_routes())
        else {
            panic!("expected a create error");
        };
        let expected = format!(
            "cannot create the shared-memory segment at {}: create segment file failed: No such file or directory (os error 2)",
            path.display()
        );
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn an_invalid_geometry_refuses_to_start() {
        let cli = Cli::try_parse_from(["test", "--slot-size", "100"]).unwrap();
        let Err(error @ StartError::InvalidGeometry(_)) = ShmProducer::start(&cli.shm, no_routes())
        else {
            panic!("expected an invalid geometry");
        };
        assert_eq!(
            error.to_string(),
            "invalid segment configuration: slot size must be a positive multiple of 64, at most 1 GiB"
        );
    }

    #[test]
    fn lease_and_ttl_out_of_bounds_are_refused_naming_flag_and_bound() {
        for flag in ["--lease", "--ready-ttl"] {
            for (value, expected) in [
                ("2h", "2h is above the maximum of 1h"),
                ("0s", "must be more than 0 and at most 1h"),
            ] {
                let error = Cli::try_parse_from(["test", flag, value])
                    .err()
                    .unwrap_or_else(|| panic!("{flag} {value} was accepted"))
                    .to_string();
                assert!(error.contains(flag), "{error}");
                assert!(error.contains(expected), "{error}");
            }
            let at_bound = Cli::try_parse_from(["test", flag, "1h"]).unwrap();
            assert!(
                ShmProducer::start(&at_bound.shm, no_routes()).is_ok(),
                "{flag} 1h"
            );
        }
        // Arguments built in code are held to the same bounds.
        let mut args = Cli::try_parse_from(["test"]).unwrap().shm;
        args.ready_ttl = Duration::from_secs(7200);
        assert!(matches!(
            ShmProducer::start(&args, no_routes()),
            Err(StartError::BadDeadline {
                flag: "--ready-ttl",
                ..
            })
        ));
    }

    #[test]
    fn socket_names_are_unique_per_segment() {
        let first = small_producer(&[]);
        let second = small_producer(&[]);
        assert_ne!(first.info().socket, second.info().socket);
    }
}
