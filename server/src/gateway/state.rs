//! What the gateway's handlers share: the upstream over REST, the shared-memory client, the
//! forwarding policy and transport choice, the two caches of the measuring routes, and the
//! published answers.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use shmbridge::ConsumerOptions;

use crate::payload::Payload;
use crate::query_cache::QueryCache;
use crate::slot_deadline::{self, SlotDeadlineError};
use crate::telemetry;

use super::args::Args;
use super::body_cache::BodyCache;
use super::forward_policy::ForwardPolicy;
use super::published_objects::PublishedObjects;
use super::shm_consumer::ShmClient;
use super::transport_choice::TransportChoice;
use super::upstream::Upstream;
use crate::memory_budget::{BudgetKind, MemoryBudget};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(super) inner: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) upstream: Upstream,
    pub(super) shm: ShmClient,
    /// `--shm-fallback-to-api`, for the seed's `/api/users-via-shm*` routes.
    pub(super) fallback_to_api: bool,
    /// `--transport`, for forwarded requests and `/api/users`.
    pub(super) transport: TransportChoice,
    /// `--forward-prefix` and `--private-prefix`.
    pub(super) policy: ForwardPolicy,
    pub(super) http_signal: bool,
    /// `--memory-budget`: bytes of answers held for requests in flight.
    pub(super) budget: MemoryBudget,
    /// `/api/users-cached`: users bodies the gateway serialized itself.
    pub(super) cached_users: QueryCache<Payload>,
    /// `/via-cached/*`: the upstream's verified 200 answers, by path and query.
    pub(super) cached_bodies: BodyCache,
    /// Answers the producer published as object versions, served while its board says they
    /// are current (`/via-published/*`, and forwarded `GET`s over shared memory).
    pub(super) published: PublishedObjects,
    pub(super) metrics: PrometheusHandle,
}

/// Why [`AppState::new`] refused the arguments.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--lease` outside its bounds (the flag's parser refuses these already; this catches
    /// `Args` built in code).
    #[error("--lease: {0}")]
    BadLease(SlotDeadlineError),
    /// The HTTP client for users-service could not be built.
    #[error(transparent)]
    Client(reqwest::Error),
}

impl AppState {
    pub fn new(args: &Args) -> Result<AppState, StartError> {
        let lease = slot_deadline::check(args.lease).map_err(StartError::BadLease)?;
        let budget = MemoryBudget::new(BudgetKind::GatewayMemory, args.memory_budget);
        let upstream = Upstream::new(
            args.upstream.clone(),
            args.deadline,
            args.pool_max_idle,
            budget.clone(),
        )
        .map_err(StartError::Client)?;
        Ok(AppState {
            inner: Arc::new(Shared {
                upstream,
                shm: ShmClient::new(
                    args.shm_socket.clone(),
                    args.producer_uids.clone(),
                    ConsumerOptions {
                        lease,
                        keep_verified_bytes: args.keep_verified_bytes,
                    },
                    args.shm_max_in_flight,
                    args.attach_timeout,
                ),
                fallback_to_api: args.shm_fallback_to_api,
                transport: args.transport,
                policy: ForwardPolicy::new(
                    args.forward_prefixes.clone(),
                    args.private_prefixes.clone(),
                ),
                http_signal: args.http_signal,
                budget,
                cached_users: QueryCache::default(),
                cached_bodies: BodyCache::default(),
                published: PublishedObjects::new(args.stale_if_error),
                metrics: telemetry::metrics_handle(),
            }),
        })
    }
}

impl FromRef<AppState> for PrometheusHandle {
    fn from_ref(state: &AppState) -> PrometheusHandle {
        state.inner.metrics.clone()
    }
}
