//! Stale-segment faults (class 7): the adapter to `inject::stale`. users-service runs with a
//! segment file (`--shm-path`); it is killed, a stale segment of the planned kind is planted at
//! its path, and it is started again. A dead creator's segment, another layout version's or
//! garbage must be replaced and users-service must come up ready; a segment whose creator
//! still runs (the harness itself, holding the file's lock) must be refused with a clear error
//! (two producers never share a path), after which the harness drops its segment, which removes
//! the file, and starts users-service normally.

use shmbridge::SegmentConfig;

use super::{FaultContext, FaultError, Injected, Role};
use crate::compare::services::ServiceError;
use crate::harness::supervisor::SupervisorError;
use crate::inject::InjectError;
use crate::inject::stale::{StaleKind, plant};

/// What users-service's refusal must say.
const REFUSAL: &str = "in use by pid";

pub async fn inject(
    context: &mut FaultContext<'_>,
    kind: StaleKind,
) -> Result<Injected, FaultError> {
    let path = context.segment_path.clone().ok_or_else(|| {
        InjectError::Refused("users-service runs without --shm-path: nothing to plant over".into())
    })?;
    context.supervisor.kill(Role::UsersService).await?;
    let live = plant(&path, kind, &SegmentConfig::default())?;
    context
        .supervisor
        .watch(context.restart_delay, None)
        .await?;
    let (note, violation) = if kind == StaleKind::LiveCreator {
        let outcome = match context
            .supervisor
            .launch_refused(Role::UsersService, &[])
            .await
        {
            Ok((status, output)) if output.contains(REFUSAL) && !status.success() => {
                (format!("refused ({status})"), None)
            }
            Ok((status, output)) => (
                format!("exited ({status})"),
                Some(format!(
                    "users-service exited ({status}) without saying the segment is {REFUSAL}: {output}"
                )),
            ),
            Err(SupervisorError::NotRefused { .. }) => {
                context.supervisor.stop(Role::UsersService).await?;
                (
                    "started".to_owned(),
                    Some("users-service took over a segment whose creator is alive".to_owned()),
                )
            }
            Err(error) => return Err(error.into()),
        };
        // The live creator ends: its drop removes the file it created.
        drop(live);
        outcome
    } else {
        match context.supervisor.launch(Role::UsersService, None).await {
            Ok(_) => ("replaced".to_owned(), None),
            Err(SupervisorError::Service(ServiceError::ExitedEarly { status, output, .. })) => {
                std::fs::remove_file(&path).map_err(|error| {
                    InjectError::io(format!("remove {}", path.display()), error)
                })?;
                (
                    format!("not replaced ({status})"),
                    Some(format!(
                        "users-service would not start over a stale {kind:?} segment: {output}"
                    )),
                )
            }
            Err(error) => return Err(error.into()),
        }
    };
    let back = if context.supervisor.is_running(Role::UsersService) {
        tokio::time::Instant::now()
    } else {
        context.supervisor.launch(Role::UsersService, None).await?
    };
    Ok(Injected {
        back: Some(back),
        note: Some(format!("{kind:?}: {note}")),
        violation,
    })
}
