package shmbridge

// The greeting's rules as transport/src/fdpass/greeting.rs states them: the name this process
// holds slots under for every view a producer can report, and who is the segment's creator.

import (
	"os"
	"syscall"
	"testing"
)

// Every row of the table in greeting.rs ("How a peer names itself in the slots it holds").
func TestTheHolderNameIsTheProducersNameForThisProcess(t *testing.T) {
	own := owner{pid: 10, startTime: 500, pidfsIno: 7}
	ownWithoutPidfs := owner{pid: 10, startTime: 500}
	now := uint64(50e9)
	seenAs := func(seen owner) peerView {
		return peerView{pid: seen.pid, visibility: visible, seen: seen, producerNowNS: now}
	}
	notSeen := func(pid, visibility uint32) peerView {
		return peerView{pid: pid, visibility: visibility, producerNowNS: now}
	}
	// 4321: this process's pid in a parent PID namespace, where the producer runs.
	for _, c := range []struct {
		name string
		own  owner
		view peerView
		want owner
	}{
		{"seen as itself", own, seenAs(own), own},
		{"seen from a parent PID namespace", own,
			seenAs(owner{pid: 4321, startTime: 500, pidfsIno: 7}), owner{pid: 4321, startTime: 500, pidfsIno: 7}},
		{"the pidfs inodes name it, whatever the start times", own,
			seenAs(owner{pid: 4321, startTime: 900, pidfsIno: 7}), owner{pid: 4321, startTime: 900, pidfsIno: 7}},
		{"without the producer's pidfs inode the start times name it", own,
			seenAs(owner{pid: 4321, startTime: 500}), owner{pid: 4321, startTime: 500}},
		{"another process's pidfs inode (a /proc of another PID namespace)", own,
			seenAs(owner{pid: 10, startTime: 500, pidfsIno: 8}), leaseOnly},
		{"another start time, no pidfs", ownWithoutPidfs, seenAs(owner{pid: 10, startTime: 900}), leaseOnly},
		{"an entry the producer cannot read (hidepid=1)", own,
			notSeen(4321, unreadable), owner{pid: 4321, startTime: 500, pidfsIno: 7}},
		{"outside the producer's PID namespace", own, notSeen(0, absent), leaseOnly},
		{"hidden from the producer's /proc (hidepid=2)", own, notSeen(10, absent), leaseOnly},
	} {
		if got, err := c.view.holderName(c.own, now); err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestAnotherClockIsRefusedWhateverTheName(t *testing.T) {
	own := owner{pid: 10, startTime: 500, pidfsIno: 7}
	producerNow := uint64(50e9)
	view := peerView{pid: own.pid, visibility: visible, seen: own, producerNowNS: producerNow}
	for name, ownNow := range map[string]uint64{
		"behind the producer's":          producerNow - 1,
		"beyond the agreement":           producerNow + uint64(clockAgreement) + 1,
		"an hour ahead (time namespace)": producerNow + 3600e9,
	} {
		if _, err := view.holderName(own, ownNow); err == nil {
			t.Errorf("a clock %s was accepted", name)
		}
	}
	if _, err := view.holderName(own, producerNow+2e9); err != nil {
		t.Errorf("a slow wake-up was refused: %v", err)
	}
}

// The creator's uid always, and its pid where this process can name the producer: by the pid it
// sees, or by the producer's own (the last NSpid entry, which for a process of this PID namespace
// is the same). A producer outside this PID namespace (SO_PEERCRED pid 0) has no pid here.
func TestTheAnsweringProcessMustBeTheSegmentsCreator(t *testing.T) {
	pid, uid := int32(os.Getpid()), uint32(os.Geteuid())
	creator := header{creatorPID: uint32(pid), creatorUID: uid}
	for _, c := range []struct {
		name    string
		cred    syscall.Ucred
		creator bool
	}{
		{"the creator", syscall.Ucred{Pid: pid, Uid: uid}, true},
		{"a producer outside this PID namespace, of the creator's uid", syscall.Ucred{Pid: 0, Uid: uid}, true},
		{"another process", syscall.Ucred{Pid: int32(os.Getppid()), Uid: uid}, false},
		{"the creator's pid under another uid", syscall.Ucred{Pid: pid, Uid: uid + 1}, false},
		{"outside this PID namespace, under another uid", syscall.Ucred{Pid: 0, Uid: uid + 1}, false},
	} {
		if err := checkCreator(&c.cred, creator); (err == nil) != c.creator {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
