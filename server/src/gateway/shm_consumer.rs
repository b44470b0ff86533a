//! The gateway's side of shared memory: attaching to users-service's segment through its
//! descriptor socket, re-attaching when the producer restarts (new epoch) or vanishes, and
//! redeeming a handle into verified bytes.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use shmbridge::{AcquireError, Consumer, ConsumerOptions, Handle, ReadError, attach_via_socket};

use crate::api_error::{ApiError, BadAnswer, ShmFault};
use crate::failpoints;

use super::upstream::Upstream;

/// One attached segment and the consumer redeeming handles against it.
pub struct Attachment {
    consumer: Consumer,
    socket: String,
}

impl Attachment {
    pub fn epoch(&self) -> u64 {
        self.consumer.segment().epoch()
    }

    /// Redeems `handle`: acquires its slot, copies the bytes out and verifies them against the
    /// handle's crc32 and length. A handle is redeemable once.
    pub fn redeem(&self, handle: &Handle) -> Result<Vec<u8>, ApiError> {
        let guard = self.consumer.acquire(handle).map_err(|error| match error {
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
        })?;
        failpoints::hit(failpoints::MID_READ);
        let bytes = guard.copy_out().map_err(|error| match error {
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
        })?;
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
    attached: RwLock<Option<Arc<Attachment>>>,
    /// Serializes attaching, so a burst of requests after a restart attaches once.
    attaching: tokio::sync::Mutex<()>,
    last_problem: Mutex<Option<String>>,
    /// How long a read may hold its slot (`--lease`).
    lease: Duration,
}

impl ShmClient {
    pub fn new(configured_socket: Option<String>, lease: Duration) -> ShmClient {
        ShmClient {
            configured_socket,
            lease,
            attached: RwLock::new(None),
            attaching: tokio::sync::Mutex::new(()),
            last_problem: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Option<Arc<Attachment>> {
        self.attached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Returns an attachment whose epoch is `wanted_epoch` (or any, if `None`), attaching anew
    /// when the current one does not match. `why` names the trigger in logs and metrics.
    pub async fn attachment(
        &self,
        upstream: &Upstream,
        wanted_epoch: Option<u64>,
        why: &'static str,
    ) -> Result<Arc<Attachment>, ApiError> {
        let matches = |attachment: &Arc<Attachment>| {
            wanted_epoch.is_none_or(|epoch| attachment.epoch() == epoch)
        };
        if let Some(current) = self.current().filter(matches) {
            return Ok(current);
        }
        let _attaching = self.attaching.lock().await;
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

    async fn attach(&self, upstream: &Upstream) -> Result<Attachment, ApiError> {
        let socket = match &self.configured_socket {
            Some(socket) => socket.clone(),
            None => upstream.segment_info().await?.socket,
        };
        let timeout = upstream.deadline();
        let name = socket.clone();
        let segment = tokio::task::spawn_blocking(move || attach_via_socket(&name, timeout))
            .await
            .map_err(|error| ApiError::Internal {
                reason: format!("attach task failed: {error}"),
            })?
            .map_err(|error| ApiError::ShmUnavailable {
                reason: format!("cannot attach via @{socket}: {error}"),
            })?;
        let consumer = Consumer::new(Arc::new(segment), ConsumerOptions { lease: self.lease })
            .map_err(|error| ApiError::Internal {
                reason: format!("cannot create a consumer: {error}"),
            })?;
        Ok(Attachment { consumer, socket })
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
