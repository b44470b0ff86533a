//! The gateway's side of shared memory: connecting to users-service's control socket (which
//! hands over the segment and then carries requests), re-connecting when the producer restarts
//! (new epoch) or the connection closes, sending a request, and redeeming the answer's body from
//! whichever tier the producer chose into verified bytes.
//!
//! Attaching is bounded by `--attach-timeout` (default 250 ms), well inside a request's
//! deadline: the lookup of the socket's name, the connect and the greeting together, and the
//! wait of a request for another one's attach. A producer that accepts but does not greet
//! (stopped, starved, still starting) thus costs the requests that meet it a quick 503, not
//! every shared-memory request the whole deadline behind one attach.

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use humantime::format_duration;
use shmbridge::control::{
    AnswerReader, ClientOptions, Publication, RefusalCode, RequestError, Response, Tier,
};
use shmbridge::{
    AcquireError, BoardView, ConsumerOptions, ControlClient, Handle, ReadError, RedeemError,
    SealedError, monotonic_now_ns,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::api_error::{ApiError, BadAnswer, ShmFault};
use crate::failpoints;

use super::upstream::Upstream;

/// One connection to the control socket, with the segment it handed over and the consumer
/// redeeming its publications.
pub struct Attachment {
    channel: ControlClient,
    socket: String,
    /// The producer's version board, if it publishes one.
    board: Option<BoardView>,
}

/// A body redeemed from whichever tier carried it, with the crc32 it was verified against.
pub struct Redeemed {
    pub response: Response,
    pub crc32: u32,
}

impl Attachment {
    pub fn epoch(&self) -> u64 {
        self.channel.segment().epoch()
    }

    /// Whether the control connection is still up.
    pub fn is_open(&self) -> bool {
        self.channel.is_open()
    }

    /// The producer's version board, if it publishes one; still readable, as the producer left
    /// it, after the connection closed.
    pub fn board(&self) -> Option<&BoardView> {
        self.board.as_ref()
    }

    /// Sends `request` (opaque to the channel: the gateway's are HTTP requests in
    /// `shmbridge::http`'s encoding) and waits for the answer until `deadline`, which the
    /// producer is told too. `permit` (one of `--shm-max-in-flight`) comes back with the answer,
    /// to be held until the body is redeemed. If no answer comes by the deadline, or this future
    /// is dropped (client gone), the permit stays with the request until the producer answers
    /// (the answer's publication is then released) or [`LATE_ANSWER_GRACE`] after the deadline
    /// passes, when the request is abandoned: so the permits bound what the producer is still
    /// working on, not only what the gateway still waits for, and a producer that reads
    /// requests and never answers holds at most `--shm-max-in-flight` of them, each for a
    /// bounded time.
    pub async fn request(
        self: &Arc<Self>,
        request: &[u8],
        deadline: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Result<(Publication, OwnedSemaphorePermit), ApiError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let deadline_ns = monotonic_now_ns().saturating_add(budget.as_nanos() as u64);
        let (answered, answer) = tokio::sync::oneshot::channel();
        let id = self
            .channel
            .request_with(request, deadline_ns, move |result| {
                // The requester is gone: dropping the publication releases it.
                let _ = answered.send(result.map(|publication| (publication, permit)));
            })
            .map_err(|error| channel_error(error, budget))?;
        let mut waiting = Waiting {
            attachment: Arc::downgrade(self),
            id: Some(id),
            abandon_at: deadline + LATE_ANSWER_GRACE,
        };
        let result = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => {
                waiting.id = None;
                result
            }
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::TimedOut(budget)),
        };
        result.map_err(|error| channel_error(error, budget))
    }

    /// Redeems a publication from [`Attachment::request`] into its verified response: an inline
    /// body, a slot's copy or a sealed payload of at most a slot's size verified on the async
    /// worker (microseconds, and a payload kept verified is not checked again), a larger sealed
    /// payload's mapping checked on the blocking pool (a crc32 over megabytes is no work for an
    /// async worker, and the hop there costs two thread wakes, tens of microseconds, that a
    /// small one need not pay). A sealed body is served from the mapping itself: no copy.
    pub async fn redeem(&self, publication: Publication) -> Result<Redeemed, ApiError> {
        let expected_len = publication.len();
        let slot_size = u64::from(self.channel.segment().slot_size());
        // A slot's or sealed payload's crc32 is its handle's; an inline body's travels in the
        // answer and is checked by `redeem`, which does not hand it out: it is computed again
        // below, over at most the inline threshold's bytes.
        let handle_crc = publication.handle().map(|handle| handle.crc);
        let response = if publication.tier() == Tier::Sealed && expected_len > slot_size {
            // Moved into the task: if this future is dropped, the redemption still completes
            // and releases the ticket, and the mapping is dropped with the task's result.
            tokio::task::spawn_blocking(move || publication.redeem())
                .await
                .map_err(|error| ApiError::Internal {
                    reason: format!("redeeming task failed: {error}"),
                })?
        } else {
            // The fault point of a slot's read, as before the channel's one `redeem`: now just
            // before the read lease is taken, since `redeem` acquires and copies in one call.
            if publication.tier() == Tier::Slot {
                failpoints::hit(failpoints::MID_READ);
            }
            publication.redeem()
        }
        .map_err(redeem_error)?;
        if response.body.len() as u64 != expected_len {
            metrics::counter!("checksum_failures_total", "transport" => "shm").increment(1);
            return Err(ApiError::ShmCorrupt {
                reason: ShmFault::Length {
                    read: response.body.len(),
                    expected: u32::try_from(expected_len).unwrap_or(u32::MAX),
                },
            });
        }
        let crc32 = handle_crc.unwrap_or_else(|| crc32fast::hash(&response.body));
        Ok(Redeemed { response, crc32 })
    }

    /// Redeems `handle` from the HTTP signal (always a slot's: descriptors cannot travel over
    /// HTTP): acquires its slot, copies the bytes out and verifies them against the handle's
    /// crc32 and length. A handle is redeemable once.
    pub fn redeem_handle(&self, handle: &Handle) -> Result<Vec<u8>, ApiError> {
        let guard = self
            .channel
            .consumer()
            .acquire(handle)
            .map_err(acquire_error)?;
        failpoints::hit(failpoints::MID_READ);
        let bytes = guard.copy_out().map_err(read_error)?;
        if bytes.len() != handle.len as usize {
            metrics::counter!("checksum_failures_total", "transport" => "shm").increment(1);
            return Err(ApiError::ShmCorrupt {
                reason: ShmFault::Length {
                    read: bytes.len(),
                    expected: handle.len,
                },
            });
        }
        Ok(bytes)
    }
}

/// What a client is told for a request the channel could not serve.
fn channel_error(error: RequestError, deadline: Duration) -> ApiError {
    match error {
        RequestError::Refused(refusal) => match refusal.code {
            RefusalCode::TooLarge => ApiError::PayloadTooLarge {
                limit: refusal.detail,
            },
            RefusalCode::Exhausted => ApiError::SlotsExhausted,
            RefusalCode::PeerBusy | RefusalCode::SegmentBusy => ApiError::ShmBusy { refusal },
            RefusalCode::DeadlineExceeded => ApiError::ShmDeadline { deadline },
            RefusalCode::RequestTooLarge => ApiError::RequestTooLarge {
                limit: usize::try_from(refusal.detail).unwrap_or(usize::MAX),
            },
            // A publication that lost its slot mid-write: a fresh one may succeed.
            RefusalCode::Internal => ApiError::ShmStale {
                reason: ShmFault::Channel(error),
            },
            RefusalCode::HandlerFailed | RefusalCode::Version | RefusalCode::NoBoard => {
                ApiError::BadUpstream {
                    reason: BadAnswer::Refused(refusal),
                }
            }
        },
        RequestError::RequestTooLarge { .. } => ApiError::RequestTooLarge {
            limit: shmbridge::control::frame::MAX_REQUEST_LEN,
        },
        RequestError::TimedOut(_) => ApiError::UpstreamDeadline { deadline },
        // The connection is gone or stuck: the retry re-connects.
        RequestError::Closed | RequestError::Congested | RequestError::Send(_) => {
            ApiError::ShmStale {
                reason: ShmFault::Channel(error),
            }
        }
        RequestError::Redeem(error) => redeem_error(error),
        RequestError::ForeignHandle { .. } | RequestError::Protocol(_) | RequestError::Board(_) => {
            ApiError::BadUpstream {
                reason: BadAnswer::Channel(error),
            }
        }
    }
}

/// What a client is told for a handle that could not be acquired.
fn acquire_error(error: AcquireError) -> ApiError {
    match error {
        AcquireError::WrongEpoch { .. } | AcquireError::Stale { .. } => {
            metrics::counter!("shm_stale_handles_total").increment(1);
            ApiError::ShmStale {
                reason: ShmFault::Acquire(error),
            }
        }
        AcquireError::SlotOutOfRange { .. } | AcquireError::TooLarge { .. } => {
            ApiError::BadUpstream {
                reason: BadAnswer::HandleDoesNotFit(error),
            }
        }
    }
}

/// What a client is told for a slot's copy or an inline body that did not verify.
fn read_error(error: ReadError) -> ApiError {
    match error {
        ReadError::ChecksumMismatch { .. } => {
            metrics::counter!("checksum_failures_total", "transport" => "shm").increment(1);
            ApiError::ShmCorrupt {
                reason: ShmFault::Read(error),
            }
        }
        ReadError::Reclaimed { .. } => {
            metrics::counter!("shm_stale_handles_total").increment(1);
            ApiError::ShmStale {
                reason: ShmFault::Read(error),
            }
        }
    }
}

/// What a client is told for a publication that did not redeem.
fn redeem_error(error: RedeemError) -> ApiError {
    match error {
        RedeemError::Acquire(error) => acquire_error(error),
        RedeemError::Read(error) => read_error(error),
        RedeemError::Sealed(SealedError::ChecksumMismatch { .. }) => {
            metrics::counter!("checksum_failures_total", "transport" => "shm").increment(1);
            ApiError::ShmCorrupt {
                reason: ShmFault::Redeem(error),
            }
        }
        RedeemError::Reclaimed { .. } => {
            metrics::counter!("shm_stale_handles_total").increment(1);
            ApiError::ShmStale {
                reason: ShmFault::Redeem(error),
            }
        }
        RedeemError::Sealed(SealedError::Io { .. }) => ApiError::Internal {
            reason: error.to_string(),
        },
        // A descriptor that is not sealed, not the handle's size, or missing: users-service
        // sent what no correct producer sends.
        RedeemError::Sealed(_) => ApiError::BadUpstream {
            reason: BadAnswer::Sealed(error),
        },
    }
}

/// How long past its deadline a request keeps its in-flight permit while the producer has not
/// answered. The producer refuses a request whose deadline has passed at its handler's next
/// write (`DeadlineExceeded`), so a late answer normally comes within milliseconds; this bounds
/// the wait for one whose handler never writes again.
pub const LATE_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A request sent and not answered yet: dropped with its id still set (deadline passed, or the
/// requester gone), it abandons the request [`LATE_ANSWER_GRACE`] after its deadline, unless
/// the answer comes first.
struct Waiting {
    attachment: Weak<Attachment>,
    id: Option<u64>,
    abandon_at: Instant,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let attachment = self.attachment.clone();
        let abandon = move || {
            // A closed attachment failed its requests already, and dropped their permits.
            if let Some(attachment) = attachment.upgrade() {
                attachment.channel.abandon(id);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let abandon_at = self.abandon_at;
                runtime.spawn(async move {
                    tokio::time::sleep_until(abandon_at).await;
                    abandon();
                });
            }
            // Dropped outside the runtime (at shutdown): nothing waits for the permit any more.
            Err(_) => abandon(),
        }
    }
}

/// Receives the control channel's answers on the runtime's own event loop, as the socket becomes
/// readable, rather than on a thread that would then have to wake a worker: one thread wake less
/// per request. Runs until the connection closes (the [`ControlClient`] is dropped, or the
/// producer goes away).
fn receive_answers(answers: AnswerReader) -> std::io::Result<()> {
    // SAFETY: the reader owns a share of the socket, so the descriptor it returns stays open and
    // the same for as long as the AsyncFd holds the reader.
    let socket = unsafe { AsyncFd::register_with_interest(answers, Interest::READABLE) }
        .map_err(|error| error.into_parts().1)?;
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = socket.readable().await else {
                return;
            };
            if !ready.get_inner().receive_ready() {
                return;
            }
            ready.clear_ready();
        }
    });
    Ok(())
}

/// The producer's version board, asked for once per attachment until `ends`: `None` when it
/// publishes none, and (logged) when it cannot hand one over in time; the attachment serves
/// without published objects then.
async fn ask_board(channel: &ControlClient, ends: Instant) -> Option<BoardView> {
    let (answered, answer) = tokio::sync::oneshot::channel();
    let id = channel
        .board_with(move |result| {
            let _ = answered.send(result);
        })
        .ok()?;
    match tokio::time::timeout_at(ends, answer).await {
        Ok(Ok(Ok(board))) => Some(board),
        Ok(Ok(Err(RequestError::Refused(refusal)))) if refusal.code == RefusalCode::NoBoard => None,
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "no version board from the producer");
            None
        }
        Ok(Err(_)) => None,
        Err(_) => {
            channel.abandon(id);
            tracing::warn!("the producer did not hand over its version board in time");
            None
        }
    }
}

/// Which segment the gateway is attached to, for the operators' `/status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachedTo {
    /// 16 lowercase hex digits, as in handles.
    pub epoch: String,
    /// The abstract socket it was received from (without the leading `@`).
    pub socket: String,
}

/// The gateway's current attachment, if any, and the last reason it could not attach.
pub struct ShmClient {
    /// `--shm-socket`; when absent the name is asked from users-service (`GET /shm/segment`)
    /// at each attach, so a restarted producer with a new name is found again.
    configured_socket: Option<String>,
    /// `--producer-uid`: uids trusted to answer on the socket besides the gateway's own.
    producer_uids: Vec<u32>,
    attached: RwLock<Option<Arc<Attachment>>>,
    /// Serializes attaching, so a burst of requests after a restart attaches once. Held at
    /// most `attach_timeout` by one attach, and waited for at most that long.
    attaching: tokio::sync::Mutex<()>,
    /// `--attach-timeout`: the bound on one attach, and on a request's wait for another's.
    attach_timeout: Duration,
    last_problem: Mutex<Option<String>>,
    /// How long a read may hold its slot (`--lease`), and how many verified sealed payloads
    /// stay mapped (`--keep-verified-bytes`), for each attachment's consumer (which its
    /// [`ControlClient`] owns).
    consumer: ConsumerOptions,
    /// `--shm-max-in-flight` permits, one per publication asked for and not yet redeemed.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl ShmClient {
    pub fn new(
        configured_socket: Option<String>,
        producer_uids: Vec<u32>,
        consumer: ConsumerOptions,
        max_in_flight: u32,
        attach_timeout: Duration,
    ) -> ShmClient {
        ShmClient {
            configured_socket,
            producer_uids,
            attach_timeout,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight as usize)),
            consumer,
            attached: RwLock::new(None),
            attaching: tokio::sync::Mutex::new(()),
            last_problem: Mutex::new(None),
        }
    }

    /// Waits, until `deadline` at most, for room to ask for one more publication.
    pub async fn in_flight_permit(
        &self,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let waited = Instant::now();
        match tokio::time::timeout_at(deadline, Arc::clone(&self.in_flight).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(ApiError::Internal {
                reason: format!("in-flight permits: {closed}"),
            }),
            Err(_) => Err(ApiError::UpstreamDeadline {
                deadline: waited.elapsed(),
            }),
        }
    }

    pub fn current(&self) -> Option<Arc<Attachment>> {
        self.attached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Returns an open attachment whose epoch is `wanted_epoch` (or any, if `None`), attaching
    /// anew when the current one is closed or does not match. `why` names the trigger in logs
    /// and metrics.
    pub async fn attachment(
        &self,
        upstream: &Upstream,
        wanted_epoch: Option<u64>,
        why: &'static str,
    ) -> Result<Arc<Attachment>, ApiError> {
        let matches = |attachment: &Arc<Attachment>| {
            attachment.is_open() && wanted_epoch.is_none_or(|epoch| attachment.epoch() == epoch)
        };
        if let Some(current) = self.current().filter(matches) {
            return Ok(current);
        }
        // The attach in progress ends within the same bound, so a request normally gets its
        // turn; one that does not (queued behind several) fails now rather than at its deadline.
        let bound = self.attach_bound(upstream);
        let Ok(_attaching) = tokio::time::timeout(bound, self.attaching.lock()).await else {
            return Err(ApiError::ShmUnavailable {
                reason: format!(
                    "other requests' attaches held the way for over {}",
                    format_duration(bound)
                ),
            });
        };
        // Another request may have attached while this one waited.
        if let Some(current) = self.current().filter(matches) {
            return Ok(current);
        }
        let previous = self.current();
        match self.attach(upstream).await {
            Ok(attachment) => {
                let attachment = Arc::new(attachment);
                let problem = self
                    .last_problem
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                match &previous {
                    Some(old) => {
                        let why = if old.is_open() {
                            why
                        } else {
                            "connection_closed"
                        };
                        metrics::counter!("shm_reattaches_total", "reason" => why).increment(1);
                        tracing::warn!(
                            reason = why,
                            old_epoch = format_args!("{:016x}", old.epoch()),
                            new_epoch = format_args!("{:016x}", attachment.epoch()),
                            socket = %attachment.socket,
                            "re-attached to the shared-memory segment"
                        );
                    }
                    None => tracing::info!(
                        epoch = format_args!("{:016x}", attachment.epoch()),
                        socket = %attachment.socket,
                        previous_problem = problem.as_deref(),
                        "attached to the shared-memory segment"
                    ),
                }
                *self
                    .attached
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&attachment));
                if !matches(&attachment) {
                    return Err(ApiError::ShmStale {
                        reason: ShmFault::EpochMoved {
                            handle: wanted_epoch.unwrap_or_default(),
                            serving: attachment.epoch(),
                        },
                    });
                }
                Ok(attachment)
            }
            Err(error) => {
                self.note_problem(&error);
                Err(error)
            }
        }
    }

    /// `--attach-timeout`, or the request deadline if that is shorter.
    fn attach_bound(&self, upstream: &Upstream) -> Duration {
        self.attach_timeout.min(upstream.deadline())
    }

    /// Looks up the socket's name (unless configured), connects and attaches, all within
    /// [`ShmClient::attach_bound`].
    async fn attach(&self, upstream: &Upstream) -> Result<Attachment, ApiError> {
        let bound = self.attach_bound(upstream);
        let ends = Instant::now() + bound;
        let socket = match &self.configured_socket {
            Some(socket) => socket.clone(),
            None => {
                tokio::time::timeout_at(ends, upstream.segment_info())
                    .await
                    .map_err(|_| ApiError::ShmUnavailable {
                        reason: format!(
                            "users-service did not name its segment's socket within the attach \
                         timeout of {}",
                            format_duration(bound)
                        ),
                    })??
                    .socket
            }
        };
        // What is left of the bound; connecting and the greeting each give up by then (socket
        // timeouts), so the blocking task below ends by then too.
        let timeout = ends.saturating_duration_since(Instant::now());
        let name = socket.clone();
        let options = ClientOptions {
            timeout,
            producer_uids: self.producer_uids.clone(),
            consumer: self.consumer,
        };
        let (channel, answers) =
            tokio::task::spawn_blocking(move || ControlClient::connect_driven(&name, &options))
                .await
                .map_err(|error| ApiError::Internal {
                    reason: format!("attach task failed: {error}"),
                })?
                .map_err(|error| ApiError::ShmUnavailable {
                    reason: format!(
                        "cannot attach via {}: {error}",
                        shmbridge::display_socket(&socket)
                    ),
                })?;
        receive_answers(answers).map_err(|error| ApiError::Internal {
            reason: format!("cannot watch the control socket: {error}"),
        })?;
        let board = ask_board(&channel, ends).await;
        Ok(Attachment {
            channel,
            socket,
            board,
        })
    }

    /// Logs a shared-memory failure once per distinct reason, and keeps it for the operators'
    /// `/status`.
    pub fn note_problem(&self, error: &ApiError) {
        let text = error.detailed();
        let mut last = self
            .last_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(text.as_str()) {
            tracing::warn!(problem = %text, "shared memory not attached");
            *last = Some(text);
        }
    }

    /// The last shared-memory problem noted, if any (cleared by the next successful attach).
    pub fn last_problem(&self) -> Option<String> {
        self.last_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The shared-memory part of readiness: attaches (or re-attaches to a restarted producer)
    /// if needed; the error says why not, with its internal detail (for logs and operators).
    pub async fn readiness(&self, upstream: &Upstream) -> Result<AttachedTo, ApiError> {
        // The epoch users-service serves now, so a restarted producer is noticed here too. With
        // `--shm-socket` the segment can still be checked when users-service cannot say.
        let wanted_epoch = match upstream.segment_info().await {
            Ok(info) => u64::from_str_radix(&info.epoch, 16).ok(),
            Err(error) if self.configured_socket.is_none() => return Err(error),
            Err(_) => None,
        };
        let attachment = self
            .attachment(upstream, wanted_epoch, "readiness_check")
            .await?;
        Ok(AttachedTo {
            epoch: format!("{:016x}", attachment.epoch()),
            socket: attachment.socket.clone(),
        })
    }
}
