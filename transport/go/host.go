package shmbridge

// This process as the layout names a slot's holder (pid, start time, pidfs inode), another
// process by the pid it has in its own PID namespace, and the CLOCK_MONOTONIC clock that
// deadlines and leases are written in.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// owner names a process so that a reused pid is not mistaken for it ("Holder identity").
type owner struct {
	pid       uint32
	startTime uint64
	pidfsIno  uint64
}

// leaseOnly is the name a holder stamps when the producer's reaper cannot look it up (it lies
// outside the producer's PID namespace, or the producer's /proc hides it or shows another process
// under its pid): no process has pid 0, so the reaper judges such a holder by its lease alone, and
// a dead one's slot comes back at the end of its lease rather than at the next pass (Rust's
// Owner::LEASE_ONLY).
var leaseOnly = owner{pid: 0, startTime: 0, pidfsIno: 0}

// sameProcess is the reaper's rule: by pidfs inode where both are known, else by start time.
func (o owner) sameProcess(live owner) bool {
	if o.pidfsIno != 0 && live.pidfsIno != 0 {
		return o.pidfsIno == live.pidfsIno
	}
	return o.startTime == live.startTime
}

// currentOwner names this process. /proc/self, not /proc/PID: in a child PID namespace that
// still sees its parent's /proc, /proc/PID is another process.
func currentOwner() (owner, error) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return owner{}, err
	}
	start, err := parseStartTime(string(stat))
	if err != nil {
		return owner{}, err
	}
	pid := uint32(os.Getpid())
	return owner{pid: pid, startTime: start, pidfsIno: pidfsIno(pid)}, nil
}

// parseStartTime reads field 22 of /proc/PID/stat. The command name (field 2) can hold spaces
// and parentheses, so the fields are counted from the last ')'.
func parseStartTime(stat string) (uint64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("malformed /proc stat")
	}
	fields := strings.Fields(stat[end+1:])
	// fields[0] is field 3 (the state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("truncated /proc stat")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// innermostPid is the pid that the process this process sees as pid has in its own PID
// namespace: the last entry of the NSpid line of /proc/PID/status (the first is pid itself).
func innermostPid(pid uint32) (uint32, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseInnermostPid(string(status))
}

func parseInnermostPid(status string) (uint32, error) {
	for _, line := range strings.Split(status, "\n") {
		if !strings.HasPrefix(line, "NSpid:") {
			continue
		}
		pids := strings.Fields(strings.TrimPrefix(line, "NSpid:"))
		if len(pids) == 0 {
			break
		}
		pid, err := strconv.ParseUint(pids[len(pids)-1], 10, 32)
		return uint32(pid), err
	}
	return 0, fmt.Errorf("no NSpid line in /proc status")
}

const (
	sysPidfdOpen = 434 // the same number on every Linux architecture
	pidfsMagic   = 0x50494446
)

// pidfsIno is the pidfs inode number of pid, or 0 where the kernel has no pidfs (before 6.9,
// pidfds share one anonymous inode that names nothing) or pidfd_open fails.
func pidfsIno(pid uint32) uint64 {
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0
	}
	defer syscall.Close(int(fd))
	var fs syscall.Statfs_t
	if syscall.Fstatfs(int(fd), &fs) != nil || uint64(fs.Type) != pidfsMagic {
		return 0
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(fd), &st) != nil {
		return 0
	}
	return st.Ino
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds, the clock every deadline on the channel and
// in the segment is written in (Go's time package does not expose its monotonic reading).
func monotonicNow() uint64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	// clock_gettime(CLOCK_MONOTONIC) cannot fail with a valid pointer.
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}
