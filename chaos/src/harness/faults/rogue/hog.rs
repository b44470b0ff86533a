//! The hog misbehaviours' verdicts and the `hog-kill` child: what a hog's refusal and its
//! withdrawal must look like, and the hidden `rogue-hog` subcommand that hogs in a process of its
//! own so that it can be SIGKILLed.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmbridge::attach_via_socket_read_only;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::WITHDRAW_TIMEOUT;
use super::peer::{Hog, HogEnd, HogReport, Withdrawal};
use crate::harness::faults::channel::blocking;
use crate::harness::faults::class::{ATTACH_TIMEOUT, FaultContext, Injected};
use crate::harness::faults::error::{FaultError, InjectError};
use crate::segment::SegmentError;

/// How long a `rogue-hog` child may take to connect, hog and report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `rogue-hog` child lives if nobody kills it: far longer than any hold.
const HOG_LIFETIME: Duration = Duration::from_secs(60);

/// The note and violation of a hog fault: the refusal must be the typed busy answer at the
/// limit, and every publication must be withdrawn once the connection closed.
pub fn judge_hog(report: &HogReport, withdrawal: Withdrawal) -> (String, Option<String>) {
    let taken = report.held.len();
    let mut violations = Vec::new();
    let refusal = match &report.end {
        HogEnd::PeerBusy { limit } => {
            if taken as u64 != *limit {
                violations.push(format!(
                    "refused as peer-busy after {taken} publications, but its limit is {limit}"
                ));
            }
            format!("refused peer-busy (limit {limit})")
        }
        HogEnd::SegmentBusy { limit } => format!("refused segment-busy (limit {limit})"),
        HogEnd::Exhausted => {
            violations.push(
                "the hog was refused exhausted (no room came free), not a busy answer".to_owned(),
            );
            "refused exhausted".to_owned()
        }
        HogEnd::Answered { status } => {
            violations.push(format!(
                "users-service answered the hog {status} instead of publishing the load's body"
            ));
            format!("answered {status}")
        }
        HogEnd::OtherRefusal { refusal } => {
            violations.push(format!(
                "the hog was refused with {refusal:?}, not a busy answer"
            ));
            format!("refused: {refusal}")
        }
        HogEnd::Failed { error } => {
            violations.push(format!("the hog's request failed unrefused: {error}"));
            format!("failed: {error}")
        }
        HogEnd::NeverRefused => {
            violations.push(format!(
                "the hog took {taken} publications, more than the segment has slots, and was never refused"
            ));
            "never refused".to_owned()
        }
    };
    let withdrawn = match withdrawal.after {
        Some(after) => format!(
            "{} withdrawn {:.1} ms after the close",
            withdrawal.at_close,
            after.as_secs_f64() * 1e3
        ),
        None => {
            violations.push(format!(
                "{} of the hog's {} publications still waited {WITHDRAW_TIMEOUT:?} after its connection closed",
                withdrawal.left, withdrawal.at_close
            ));
            format!(
                "{} of {} not withdrawn",
                withdrawal.left, withdrawal.at_close
            )
        }
    };
    let expired = taken - withdrawal.at_close.min(taken);
    let expired = if expired > 0 {
        format!(" ({expired} gone before the close)")
    } else {
        String::new()
    };
    (
        format!("took {taken} publications, {refusal}; {withdrawn}{expired}"),
        (!violations.is_empty()).then(|| violations.join("; ")),
    )
}

/// A hog fault's record: back from the moment it held its limit (see the module doc).
pub(super) fn hog_injected(
    report: &HogReport,
    withdrawal: Withdrawal,
    holding: tokio::time::Instant,
) -> Injected {
    let (note, violation) = judge_hog(report, withdrawal);
    Injected {
        back: Some(holding),
        note: Some(note),
        violation,
        pressure: None,
    }
}

/// Starts a `rogue-hog` child, lets it hold for `hold`, SIGKILLs it and watches its
/// publications be withdrawn.
pub(super) async fn hog_kill(
    program: &Path,
    socket: &str,
    hold: Duration,
    context: &mut FaultContext<'_>,
) -> Result<Injected, FaultError> {
    let segment = attach_via_socket_read_only(socket, ATTACH_TIMEOUT)
        .map_err(|source| SegmentError::Attach {
            socket: socket.to_owned(),
            source,
        })
        .map_err(InjectError::from)?;
    let mut child = Command::new(program)
        .args(["rogue-hog", "--socket", socket])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| InjectError::io("start the rogue-hog child", error))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::time::timeout(REPORT_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| InjectError::io("read the rogue-hog's report", io::ErrorKind::TimedOut))?
        .map_err(|error| InjectError::io("read the rogue-hog's report", error))?
        .ok_or_else(|| {
            InjectError::io(
                "read the rogue-hog's report",
                io::Error::other("it exited without one"),
            )
        })?;
    let report: HogReport = serde_json::from_str(&line)
        .map_err(|error| InjectError::io(format!("read the rogue-hog's report {line:?}"), error))?;
    let holding = tokio::time::Instant::now();
    context.supervisor.watch(hold, None).await?;
    let held = report.held.clone();
    // SIGKILL, then reap: the kernel closes the child's connection as it dies. The blocking
    // task must not reap it while the harness's runtime does, so it only sends the signal.
    let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let withdrawal = blocking("hog-kill withdrawal", move || {
        Ok(Withdrawal::close_and_wait(
            &segment,
            &held,
            || {
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            },
            WITHDRAW_TIMEOUT,
        ))
    })
    .await?;
    child
        .wait()
        .await
        .map_err(|error| InjectError::io("reap the rogue-hog", error))?;
    Ok(hog_injected(&report, withdrawal, holding))
}

/// The hidden `rogue-hog` subcommand: a hog in a process of its own, to be SIGKILLed.
#[derive(clap::Args, Debug)]
pub struct RogueHogArgs {
    /// Abstract socket serving the segment and its control channel.
    #[arg(long)]
    pub socket: String,
}

/// Takes what it can, prints its [`HogReport`] as one JSON line, and holds it until killed
/// (or [`HOG_LIFETIME`] passed).
pub async fn rogue_hog(args: RogueHogArgs) -> anyhow::Result<()> {
    let hog = tokio::task::spawn_blocking(move || Hog::take(&args.socket)).await??;
    println!("{}", serde_json::to_string(&hog.report())?);
    tokio::time::sleep(HOG_LIFETIME).await;
    drop(hog);
    Ok(())
}
