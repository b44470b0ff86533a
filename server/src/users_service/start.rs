//! Starting users-service's state: the bodies, the shared-memory segment and its control
//! channel. The channel answers with the app's own routes ([`super::app::routes`]), so the state
//! and the channel refer to each other; this wiring is the one place that knows both, which
//! keeps the routes (in `app`) and the channel (in `channel_routes`) from importing each other.

use std::sync::Arc;

use super::app::{AppState, Args, Shared};
use super::bodies::Bodies;
use super::channel_routes::ChannelRoutes;
use super::sealed_bodies::SealedBodies;
use super::shm_producer::{ShmProducer, StartError};
use crate::memory_budget::{BudgetKind, MemoryBudget};
use crate::telemetry;
use crate::waiting_room::WaitingRoom;

impl AppState {
    /// Creates the shared-memory segment and starts serving its descriptor. A segment that
    /// cannot be created (no space, no memory) is logged once and leaves users-service serving
    /// REST only; a setting it must not start with is an error.
    pub fn new(args: &Args) -> Result<AppState, StartError> {
        let bodies = Arc::new(Bodies::new(args.cache));
        let runtime = tokio::runtime::Handle::current();
        // The channel answers with the app's own routes, so it refers back to the state that
        // owns it: weakly, so that dropping the state drops the channel.
        let inner = Arc::new_cyclic(|state| {
            let routes = ChannelRoutes::new(state.clone(), runtime);
            Shared {
                bodies,
                sealed: SealedBodies::new(args.cache, args.shm.max_payload),
                http_signal: args.http_signal,
                making: WaitingRoom::new(MemoryBudget::new(BudgetKind::Making, args.making_budget)),
                making_wait: args.making_wait,
                max_blob_size: args.shm.max_payload,
                shm: ShmProducer::start(&args.shm, Arc::new(routes)).map(Arc::new),
                metrics: telemetry::metrics_handle(),
            }
        });
        match &inner.shm {
            Err(error @ StartError::Create { .. }) => tracing::error!(
                reason = error.to_string(),
                "starting without shared memory: no control socket; POST /shm/users, GET \
                 /shm/segment and /readyz answer 503"
            ),
            Err(_) => {
                let Err(error) = Arc::into_inner(inner).expect("not shared yet").shm else {
                    unreachable!("matched an error")
                };
                return Err(error);
            }
            Ok(_) => {}
        }
        Ok(AppState::from_shared(inner))
    }
}
