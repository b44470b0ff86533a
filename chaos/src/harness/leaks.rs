//! The leaked-slot check at the end of a scenario: once the load has stopped and both
//! services are healthy, the harness attaches read-only to users-service's live segment and
//! polls its slot table (`inspect`) until every slot is free; a slot still held when the
//! settle time runs out is leaked.

use std::time::Duration;

use crate::inspect::{SlotRow, wait_until_all_free};
use crate::process::supervisor::Supervisor;
use crate::segment::{SegmentError, segment_info};

/// A published slot waits up to users-service's 5 s ready TTL for its reader, a held one up to
/// its 1 s lease, then the reaper (every 250 ms) takes it back: a slot still held after this
/// long is leaked.
pub const LEAK_SETTLE: Duration = Duration::from_secs(8);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The slots still held after `LEAK_SETTLE`.
pub async fn leaked_slots(supervisor: &Supervisor) -> Result<Vec<SlotRow>, SegmentError> {
    let info = segment_info(&supervisor.users_url(), ATTACH_TIMEOUT).await?;
    let segment =
        shmbridge::attach_via_socket_read_only(&info.socket, ATTACH_TIMEOUT).map_err(|source| {
            SegmentError::Attach {
                socket: info.socket.clone(),
                source,
            }
        })?;
    let snapshot = wait_until_all_free(&segment, LEAK_SETTLE).await;
    Ok(snapshot.held().cloned().collect())
}
