//! The fault classes, one file each: its `[fault.NAME]` table, how its faults are drawn, how
//! they are injected and what they check ([`class`] says what a class provides). To add a class,
//! write its file and add its `mod` and its line to the list below; nothing else names it.

pub mod channel;
pub mod class;
pub mod error;
pub mod fail_point;
pub mod spec;

pub mod kill;
pub mod pause;
pub mod pid_reuse;
pub mod pressure;
pub mod resize;
pub mod rogue;
pub mod scribble;
pub mod slow;
pub mod stale;
pub mod tmpfs;

use class::{Fault, FaultClass, fault_classes};

fault_classes! {
    ProducerKill(kill::ProducerKillSpec),
    GatewayKill(kill::GatewayKillSpec),
    Pause(pause::PauseSpec),
    SlowProducer(slow::SlowSpec),
    /// Bit flips and random bytes written into the live segment by a third process.
    Scribble(scribble::ScribbleSpec),
    Resize(resize::ResizeSpec),
    PidReuse(pid_reuse::PidReuseSpec),
    /// users-service restarted with its segment on a full tmpfs; each fault's `interval` is how
    /// long it runs degraded before the normal restart.
    FullTmpfs(tmpfs::FullTmpfsSpec),
    /// users-service (run with `--shm-path`) killed and restarted over a stale segment file.
    StaleSegment(stale::StaleSegmentSpec),
    /// A same-uid process that is not the gateway misbehaving on the control socket.
    RoguePeer(rogue::RoguePeerSpec),
    /// Rounds of the largest bodies at once, slow readers and a hog holding its sealed share,
    /// with the services under the budgets the table gives them.
    MemoryPressure(pressure::MemoryPressureSpec),
}
