package shmbridge

// The greeting (transport/src/fdpass/greeting.rs): the one message a producer's socket sends a
// connecting peer, carrying the segment's descriptor and how the producer sees the peer; the name
// that view gives this side to hold slots under, so that the producer's reaper recognises it from
// whatever PID namespace; and the checks this side makes before it holds a slot: the producer
// runs on this clock, and is the segment's creator, running as a trusted uid.

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

// holderName is the name this process stamps in the slots it holds, so that the producer's
// reaper, which judges holders in the producer's PID namespace through its /proc, recognises it
// as the live process it is (greeting.rs, "How a peer names itself in the slots it holds"),
// given own, this process's own name, and ownNowNS, its clock read on receiving the view. Only
// another clock is refused: leases would be misread whatever name is stamped. The Rust peer warns
// when it holds by lease only; this package logs nothing, so that degradation is silent here.
func (v peerView) holderName(own owner, ownNowNS uint64) (owner, error) {
	if ownNowNS < v.producerNowNS || ownNowNS-v.producerNowNS > uint64(clockAgreement) {
		return owner{}, &AttachError{Reason: "the producer's CLOCK_MONOTONIC is not this process's (a time namespace?)"}
	}
	switch v.visibility {
	case visible:
		// SO_PEERCRED gave the producer this process's pid in its PID namespace, and pidfs
		// inodes (else start times) are the same in every PID namespace: the reaper's rule says
		// whether the view is this process.
		if v.seen.sameProcess(own) {
			return v.seen, nil
		}
		// The producer's /proc is not its PID namespace's: it reads another process there.
		return leaseOnly, nil
	case unreadable:
		// hidepid=1: the reaper leaves the slot to its lease, but this is what it would read.
		return owner{pid: v.pid, startTime: own.startTime, pidfsIno: own.pidfsIno}, nil
	}
	// Outside the producer's PID namespace (pid 0), or hidden from its /proc (hidepid=2).
	return leaseOnly, nil
}

// attach connects to socketName, receives the greeting and the segment, and makes every check
// both ways. It returns the control socket and the mapped segment.
func attach(socketName string, timeout time.Duration, trustedUIDs []uint32) (int, *segment, error) {
	deadline := time.Now().Add(timeout)
	fd, err := connectSeqpacket(socketName, timeout)
	if err != nil {
		return -1, nil, &AttachError{Reason: "connect to " + displaySocket(socketName), Err: err}
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
	holder, cred, err := checkProducer(fd, view, receivedAt, trustedUIDs)
	if err != nil {
		syscall.Close(msg.fd)
		return nil, err
	}
	seg, err := mapSegment(msg.fd)
	if err != nil {
		return nil, err
	}
	if err := checkCreator(cred, seg.header); err != nil {
		seg.close()
		return nil, err
	}
	seg.holderName = holder
	return seg, nil
}

// checkProducer learns from view the name the producer's reaper knows this process by, and
// checks that the producer runs on this clock as a trusted uid; it returns that name and the
// producer's credentials (SO_PEERCRED).
func checkProducer(fd int, view peerView, receivedAt uint64, trustedUIDs []uint32) (owner, *syscall.Ucred, error) {
	own, err := currentOwner()
	if err != nil {
		return owner{}, nil, &AttachError{Reason: "read /proc/self/stat", Err: err}
	}
	holder, err := view.holderName(own, receivedAt)
	if err != nil {
		return owner{}, nil, err
	}
	cred, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return owner{}, nil, &AttachError{Reason: "read the producer's credentials", Err: err}
	}
	if cred.Uid == uint32(syscall.Geteuid()) {
		return holder, cred, nil
	}
	for _, uid := range trustedUIDs {
		if cred.Uid == uid {
			return holder, cred, nil
		}
	}
	return owner{}, nil, &AttachError{Reason: fmt.Sprintf("the producer runs as uid %d, which is not trusted", cred.Uid)}
}

// checkCreator refuses a producer (cred, from SO_PEERCRED) that did not create the segment it
// hands over, so that a process squatting on the socket name cannot pass someone else's segment
// off as its own: its uid must be the creator's, and its pid the creator's, as this process sees
// it or, for a producer in a PID namespace below this one, as the producer sees itself (the
// last NSpid entry). A producer outside this process's PID namespace (pid 0) cannot be named
// at all: its uid alone is checked, the one thing then standing between it and a squatter.
func checkCreator(cred *syscall.Ucred, h header) error {
	if cred.Uid == h.creatorUID {
		if cred.Pid == 0 || uint32(cred.Pid) == h.creatorPID {
			return nil
		}
		if inner, err := innermostPid(uint32(cred.Pid)); err == nil && inner == h.creatorPID {
			return nil
		}
	}
	return &AttachError{Reason: fmt.Sprintf(
		"the answering process (pid %d, uid %d) is not the segment's creator (pid %d, uid %d)",
		cred.Pid, cred.Uid, h.creatorPID, h.creatorUID)}
}
