package shmbridge

// The greeting (transport/src/fdpass/greeting.rs): the one message a producer's socket sends a
// connecting peer, carrying the segment's descriptor and how the producer sees the peer, and the
// checks this side makes before it holds a slot: the producer sees this very process on this
// clock, and the producer is the segment's creator, running as a trusted uid.

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"time"
)

const (
	greetingLen    = 40
	visible        = 0
	absent         = 1
	unreadable     = 2
	clockAgreement = 10 * time.Second
)

var greetingMagic = [4]byte{'S', 'H', 'M', 'B'}

// peerView is the producer's view of this process, as the greeting carries it.
type peerView struct {
	pid           uint32
	visibility    uint32
	seen          owner
	producerNowNS uint64
}

// parseGreeting checks the version before the length, so that a producer of another layout
// version is reported as such whatever its greeting looks like.
func parseGreeting(b []byte) (peerView, error) {
	if len(b) < 8 || *(*[4]byte)(b[:4]) != greetingMagic {
		return peerView{}, &AttachError{Reason: "greeting is not SHMB"}
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[4:]); v != layoutVersion {
		return peerView{}, &VersionError{What: "segment layout", Found: uint64(v), Expected: layoutVersion}
	}
	if len(b) != greetingLen {
		return peerView{}, &AttachError{Reason: "greeting has the wrong length"}
	}
	view := peerView{
		pid:           le.Uint32(b[8:]),
		visibility:    le.Uint32(b[12:]),
		producerNowNS: le.Uint64(b[32:]),
	}
	view.seen = owner{pid: view.pid, startTime: le.Uint64(b[16:]), pidfsIno: le.Uint64(b[24:])}
	if view.visibility > unreadable {
		return peerView{}, &AttachError{Reason: "unknown peer visibility in greeting"}
	}
	return view, nil
}

// check refuses to attach where the producer's reaper would take this live process's slots for a
// dead holder's: another PID namespace, a /proc entry it cannot see, another start time, or
// another monotonic clock. A /proc entry it cannot read (hidepid=1) is accepted: the reaper then
// leaves this process's slots to their leases.
func (v peerView) check(own owner, ownNowNS uint64) error {
	switch {
	case v.pid != own.pid:
		return &AttachError{Reason: fmt.Sprintf(
			"the producer sees this process as pid %d, not %d (another PID namespace)", v.pid, own.pid)}
	case v.visibility == absent:
		return &AttachError{Reason: "the producer cannot see this process in its /proc"}
	case v.visibility == visible && !own.sameProcess(v.seen):
		return &AttachError{Reason: "the producer names this process differently (start time or pidfs inode)"}
	case ownNowNS < v.producerNowNS || ownNowNS-v.producerNowNS > uint64(clockAgreement):
		return &AttachError{Reason: "the producer's CLOCK_MONOTONIC is not this process's (a time namespace?)"}
	}
	return nil
}

// attach connects to socketName, receives the greeting and the segment, and makes every check
// both ways. It returns the control socket and the mapped segment.
func attach(socketName string, timeout time.Duration, trustedUIDs []uint32) (int, *segment, error) {
	deadline := time.Now().Add(timeout)
	fd, err := connectSeqpacket(socketName, timeout)
	if err != nil {
		return -1, nil, &AttachError{Reason: "connect to @" + socketName, Err: err}
	}
	seg, err := greet(fd, deadline, trustedUIDs)
	if err != nil {
		syscall.Close(fd)
		return -1, nil, err
	}
	return fd, seg, nil
}

func greet(fd int, deadline time.Time, trustedUIDs []uint32) (*segment, error) {
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return nil, &AttachError{Reason: "timed out before the greeting", Err: ErrTimeout}
	}
	if err := setTimeout(fd, syscall.SO_RCVTIMEO, remaining); err != nil {
		return nil, &AttachError{Reason: "set the receive timeout", Err: err}
	}
	buf := make([]byte, 2*greetingLen)
	msg, err := receiveMessage(fd, buf)
	receivedAt := monotonicNow()
	if err == syscall.EAGAIN {
		return nil, &AttachError{Reason: "no greeting before the timeout", Err: ErrTimeout}
	}
	if err != nil {
		return nil, &AttachError{Reason: "receive the greeting", Err: err}
	}
	if msg.n == 0 {
		if msg.fd >= 0 {
			syscall.Close(msg.fd)
		}
		return nil, &AttachError{Reason: "the producer closed the connection unanswered (this uid is not allowed)"}
	}
	if err := setTimeout(fd, syscall.SO_RCVTIMEO, 0); err != nil {
		syscall.Close(msg.fd)
		return nil, &AttachError{Reason: "clear the receive timeout", Err: err}
	}
	view, err := parseGreeting(buf[:msg.n])
	if err == nil && msg.fd < 0 {
		err = &AttachError{Reason: "the greeting carried no segment descriptor"}
	}
	if err != nil {
		if msg.fd >= 0 {
			syscall.Close(msg.fd)
		}
		return nil, err
	}
	cred, err := checkProducer(fd, view, receivedAt, trustedUIDs)
	if err != nil {
		syscall.Close(msg.fd)
		return nil, err
	}
	seg, err := mapSegment(msg.fd)
	if err != nil {
		return nil, err
	}
	if seg.header.creatorPID != uint32(cred.Pid) || seg.header.creatorUID != cred.Uid {
		seg.close()
		return nil, &AttachError{Reason: fmt.Sprintf(
			"the answering process (pid %d, uid %d) is not the segment's creator (pid %d, uid %d)",
			cred.Pid, cred.Uid, seg.header.creatorPID, seg.header.creatorUID)}
	}
	return seg, nil
}

// checkProducer checks how the producer sees this process, and that it runs as a trusted uid;
// it returns the producer's credentials (SO_PEERCRED).
func checkProducer(fd int, view peerView, receivedAt uint64, trustedUIDs []uint32) (*syscall.Ucred, error) {
	own, err := currentOwner()
	if err != nil {
		return nil, &AttachError{Reason: "read /proc/self/stat", Err: err}
	}
	if err := view.check(own, receivedAt); err != nil {
		return nil, err
	}
	cred, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return nil, &AttachError{Reason: "read the producer's credentials", Err: err}
	}
	if cred.Uid == uint32(syscall.Geteuid()) {
		return cred, nil
	}
	for _, uid := range trustedUIDs {
		if cred.Uid == uid {
			return cred, nil
		}
	}
	return nil, &AttachError{Reason: fmt.Sprintf("the producer runs as uid %d, which is not trusted", cred.Uid)}
}
