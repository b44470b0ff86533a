//! Full-filesystem faults (class 6): the adapter to `inject::tmpfs`. users-service is
//! restarted with its segment file on a tiny, full tmpfs: creating the segment must fail with
//! a clear ENOSPC error and no SIGBUS, and users-service must stay up degraded (REST served,
//! shm answering 503, `/readyz` 503 naming the cause, `/healthz` 200) for the planned time,
//! after which it is restarted normally and the tmpfs unmounted.

use super::{FaultContext, FaultError, Injected, Role};
use crate::inject::tmpfs::FullTmpfs;

/// What `/readyz` must name while the segment cannot be created.
const EXPECTED_CAUSE: &str = "ENOSPC";

pub async fn inject(context: &mut FaultContext<'_>) -> Result<Injected, FaultError> {
    let tmpfs = FullTmpfs::mount()?;
    let segment = tmpfs.path().join("segment").display().to_string();
    context.supervisor.stop(Role::UsersService).await?;
    context
        .supervisor
        .launch_degraded(Role::UsersService, &["--shm-path".to_owned(), segment])
        .await?;
    let ready = context
        .supervisor
        .get(Role::UsersService, "/readyz")
        .await?;
    let health = context
        .supervisor
        .get(Role::UsersService, "/healthz")
        .await?;
    let mut problems = Vec::new();
    if ready.0 != 503 || !ready.1.contains(EXPECTED_CAUSE) {
        problems.push(format!(
            "/readyz answered {} {:?}, expected 503 naming {EXPECTED_CAUSE}",
            ready.0, ready.1
        ));
    }
    if health.0 != 200 {
        problems.push(format!("/healthz answered {}, expected 200", health.0));
    }
    let degraded_for = context.hold.min(context.remaining());
    context.supervisor.watch(degraded_for, None).await?;
    context.supervisor.stop(Role::UsersService).await?;
    drop(tmpfs);
    let back = context.supervisor.launch(Role::UsersService, None).await?;
    Ok(Injected {
        back: Some(back),
        note: Some(format!(
            "degraded for {degraded_for:?}; /readyz {} {}",
            ready.0,
            ready.1.trim()
        )),
        violation: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}
