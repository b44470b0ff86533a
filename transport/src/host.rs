//! What the slot protocol needs from the machine: a clock shared by all processes, and a way to
//! tell whether the process holding a slot still exists.
//!
//! The protocol code takes these through the [`Host`] trait so that loom models, fuzz targets and
//! tests can run it on a manual clock with simulated processes (`crate::testing`).

use std::fs;
use std::io;
use std::time::Duration;

/// A process, named so that a reused pid is not mistaken for it: the pid, the process start time
/// in clock ticks since boot (`/proc/PID/stat` field 22), and, where the kernel has pidfs
/// (Linux >= 6.9), the inode number of a pidfd for it.
///
/// The start time alone is not enough: it has 10 ms granularity, and a process that gets a dead
/// one's pid within the same tick gets its start time too. A pidfs inode number is never reused
/// while the machine runs, so when both sides have one it settles the question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub pid: u32,
    pub start_time: u64,
    /// The pidfs inode number of the process, or 0 when unknown (no pidfs, or a peer that does
    /// not record it): then pid and start time alone name the process.
    pub pidfs_ino: u64,
}

impl Owner {
    /// The name a holder stamps when the producer's reaper cannot look it up (it lies outside
    /// the producer's PID namespace, or the producer's `/proc` hides it): no process has pid 0,
    /// so the reaper judges such a holder by its lease alone (see "Holder identity" in
    /// [`crate::layout`]). A dead holder's slot then comes back at the end of its lease rather
    /// than at the next pass.
    pub const LEASE_ONLY: Self = Self {
        pid: 0,
        start_time: 0,
        pidfs_ino: 0,
    };

    /// Whether the reaper can ask the process table about this holder at all.
    pub(crate) fn can_be_looked_up(&self) -> bool {
        self.pid != 0
    }

    /// The calling process, with the pid it has in its own PID namespace.
    pub fn current() -> io::Result<Self> {
        let pid = std::process::id();
        // `/proc/self`, not `/proc/PID`: a process in a child PID namespace that still sees its
        // parent's `/proc` would read another process's stat under its own pid.
        let stat = parse_stat_file("/proc/self/stat")?;
        Ok(Self {
            pid,
            start_time: stat.start_time,
            // Without pidfs (or pidfd_open) the process is still named, only less precisely.
            pidfs_ino: pidfs_ino(pid).ok().flatten().unwrap_or(0),
        })
    }

    /// Whether `self` and `live`, two names for processes that held the same pid, name the same
    /// process: by pidfs inode where both know one, else by start time. This is the rule
    /// [`SystemHost::is_alive`] judges holders by.
    pub(crate) fn same_process(&self, live: &Owner) -> bool {
        if self.pidfs_ino != 0 && live.pidfs_ino != 0 {
            self.pidfs_ino == live.pidfs_ino
        } else {
            self.start_time == live.start_time
        }
    }
}

/// What this process's `/proc` shows under a pid: what [`SystemHost::is_alive`] finds when it
/// looks for a holder with that pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcView {
    /// A process, named as the reaper names it.
    Visible(Owner),
    /// No entry: no such process here, or one `/proc` hides (`hidepid=2`, or a process that is
    /// not dumpable under it). The reaper takes a holder with this pid for dead.
    Absent,
    /// An entry that cannot be read (`hidepid=1`): the reaper leaves such a holder's slot to its
    /// lease, so a dead one is noticed late, a live one is never mistaken for dead.
    Unreadable,
}

/// How `/proc` shows `pid` to this process.
pub(crate) fn observe(pid: u32) -> ProcView {
    match read_stat(pid) {
        Ok(stat) => ProcView::Visible(Owner {
            pid,
            start_time: stat.start_time,
            pidfs_ino: pidfs_ino(pid).ok().flatten().unwrap_or(0),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => ProcView::Absent,
        Err(_) => ProcView::Unreadable,
    }
}

/// The clock and process table the protocol consults.
pub trait Host: Send + Sync {
    /// Monotonic nanoseconds, comparable between processes on this machine.
    fn now_ns(&self) -> u64;
    /// Whether `owner` still exists (and is not a zombie).
    fn is_alive(&self, owner: Owner) -> bool;
    /// Waits `duration` (a manual clock advances instead).
    fn sleep(&self, duration: Duration);
}

/// The real machine: CLOCK_MONOTONIC and `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn now_ns(&self) -> u64 {
        monotonic_now_ns()
    }

    fn is_alive(&self, owner: Owner) -> bool {
        // The stat is read before the pidfd is opened: if the pidfd then names the owner, the
        // owner already held this pid when the stat was read, so the stat (zombie or not) is its.
        let stat = match read_stat(owner.pid) {
            Ok(stat) => stat,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return false,
            // Unreadable but present (permissions, a malformed line): do not reclaim on a guess;
            // the lease still bounds how long the slot can be held.
            Err(_) => return true,
        };
        if stat.is_zombie {
            return false;
        }
        let live_pidfs_ino = if owner.pidfs_ino == 0 {
            0
        } else {
            match pidfs_ino(owner.pid) {
                Ok(Some(live)) => live,
                // Gone since the stat was read.
                Err(error) if error.kind() == io::ErrorKind::NotFound => return false,
                // No pidfs here, or no pidfd to be had (descriptor limit): the start time decides.
                Ok(None) | Err(_) => 0,
            }
        };
        owner.same_process(&Owner {
            pid: owner.pid,
            start_time: stat.start_time,
            pidfs_ino: live_pidfs_ino,
        })
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the one clock whose values every process on the machine shares.
pub fn monotonic_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    (now.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec() as u64)
}

/// `duration` in the clock's nanoseconds, saturating: a lease or timeout too long to count in a
/// u64 of nanoseconds (585 years) ends never rather than early.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `statfs.f_type` of pidfs (`PID_FS_MAGIC`). On kernels without pidfs, pidfds are anonymous
/// inodes that all share one inode number, which names no process.
const PID_FS_MAGIC: u64 = 0x5049_4446;

/// The pidfs inode number of the process now holding `pid`; `Ok(None)` when pidfds on this kernel
/// do not live in pidfs. A pid with no process is `NotFound`.
fn pidfs_ino(pid: u32) -> io::Result<Option<u64>> {
    let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or(io::ErrorKind::NotFound)?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(
        |errno| match errno {
            rustix::io::Errno::SRCH => io::Error::from(io::ErrorKind::NotFound),
            other => io::Error::from(other),
        },
    )?;
    // `f_type` is a signed or unsigned word depending on the architecture.
    if u64::try_from(rustix::fs::fstatfs(&pidfd)?.f_type) != Ok(PID_FS_MAGIC) {
        return Ok(None);
    }
    Ok(Some(rustix::fs::fstat(&pidfd)?.st_ino))
}

/// The pid that the process this process sees as `pid` has in its own PID namespace: the last
/// entry of the `NSpid` line of `/proc/PID/status` (the first is `pid` itself).
pub(crate) fn innermost_pid(pid: u32) -> io::Result<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_innermost_pid(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no NSpid line in /proc status"))
}

fn parse_innermost_pid(status: &str) -> Option<u32> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}

struct ProcStat {
    is_zombie: bool,
    start_time: u64,
}

fn read_stat(pid: u32) -> io::Result<ProcStat> {
    parse_stat_file(&format!("/proc/{pid}/stat"))
}

fn parse_stat_file(path: &str) -> io::Result<ProcStat> {
    let text = fs::read_to_string(path)?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat"))
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    let state = fields.next()?;
    // Field 3 is the state; field 22 (starttime) is 19 fields further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat {
        is_zombie: matches!(state, "Z" | "X" | "x"),
        start_time,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let line = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.start_time, 987654);
        assert!(!stat.is_zombie);
    }

    #[test]
    fn the_innermost_pid_is_the_last_of_nspid() {
        let nested = "Name:\tusers-service\nTgid:\t4321\nNSpid:\t4321\t17\t1\nNSpgid:\t4321\n";
        assert_eq!(parse_innermost_pid(nested), Some(1));
        assert_eq!(parse_innermost_pid("NSpid:\t88\n"), Some(88));
        assert_eq!(parse_innermost_pid("Name:\tx\n"), None);
        let own = std::process::id();
        assert_eq!(innermost_pid(own).unwrap(), own);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let line = "99 (x) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert!(parse_stat(line).unwrap().is_zombie);
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert!(parse_stat("1 (x) S 1 2").is_none());
        assert!(parse_stat("no parenthesis").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_different_start_time_is_not() {
        let me = Owner::current().unwrap();
        assert!(SystemHost.is_alive(me));
        // As an older peer names it, without a pidfs inode: the start time decides.
        let named_by_start_time = Owner { pidfs_ino: 0, ..me };
        assert!(SystemHost.is_alive(named_by_start_time));
        let reused = Owner {
            start_time: me.start_time + 1,
            ..named_by_start_time
        };
        assert!(!SystemHost.is_alive(reused));
    }

    #[test]
    fn a_different_pidfs_inode_is_another_process_even_with_the_same_start_time() {
        let me = Owner::current().unwrap();
        if pidfs_ino(me.pid).unwrap().is_none() {
            eprintln!("skipped: this kernel has no pidfs");
            return;
        }
        assert_ne!(me.pidfs_ino, 0);
        // A process that got this pid within the same clock tick as us: same pid and start time.
        let same_tick_reuse = Owner {
            pidfs_ino: me.pidfs_ino + 1,
            ..me
        };
        assert!(!SystemHost.is_alive(same_tick_reuse));
    }

    #[test]
    fn pidfs_inodes_differ_between_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let child_ino = pidfs_ino(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(child_ino) = child_ino.unwrap() else {
            eprintln!("skipped: this kernel has no pidfs");
            return;
        };
        assert_ne!(Owner::current().unwrap().pidfs_ino, child_ino);
    }

    #[test]
    fn this_process_observed_through_proc_is_itself() {
        let me = Owner::current().unwrap();
        let ProcView::Visible(seen) = observe(me.pid) else {
            panic!("this process is not in /proc");
        };
        assert_eq!(seen, me);
        assert!(me.same_process(&seen));
    }

    #[test]
    fn a_pid_no_process_can_have_is_absent() {
        // Above the largest pid_max Linux allows (2^22).
        assert_eq!(observe(i32::MAX as u32), ProcView::Absent);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        let b = monotonic_now_ns();
        assert!(b >= a && a > 0);
    }
}
