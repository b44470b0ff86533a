package shmbridge

// Every way a request can fail, as a type a caller can match with errors.As or errors.Is.

import (
	"errors"
	"fmt"
)

var (
	// ErrTimeout: the request's deadline passed before its answer was redeemed. The request is
	// abandoned: a publication that arrives for it later is released, never delivered.
	ErrTimeout = &timeoutError{}
	// ErrClosed: the client was closed, or the producer closed the control channel (it exited,
	// or it refused a frame). A closed client stays closed; connect again.
	ErrClosed = errors.New("shmbridge: control channel closed")
)

type timeoutError struct{}

func (*timeoutError) Error() string   { return "shmbridge: deadline passed before the answer" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

// AttachError: attaching to a producer failed (the socket, the greeting, a check on either side,
// or the segment it handed over).
type AttachError struct {
	Reason string
	Err    error
}

func (e *AttachError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("shmbridge: attach: %s: %v", e.Reason, e.Err)
	}
	return "shmbridge: attach: " + e.Reason
}

func (e *AttachError) Unwrap() error { return e.Err }

// VersionError: the peer speaks another version of the segment layout or the control channel.
type VersionError struct {
	What            string
	Found, Expected uint64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("shmbridge: %s version %d, expected %d", e.What, e.Found, e.Expected)
}

// ProtocolError: the producer sent something the control channel's specification does not
// allow. The connection is closed, since nothing after a misread frame can be trusted.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "shmbridge: protocol error: " + e.Reason }

// RefusalCode is why a producer published nothing; the numbers are the wire values.
type RefusalCode uint16

const (
	RefusedTooLarge         RefusalCode = 1
	RefusedExhausted        RefusalCode = 2
	RefusedPeerBusy         RefusalCode = 3
	RefusedSegmentBusy      RefusalCode = 4
	RefusedDeadlineExceeded RefusalCode = 5
	RefusedInternal         RefusalCode = 6
	RefusedRequestTooLarge  RefusalCode = 7
	RefusedHandlerFailed    RefusalCode = 8
	RefusedVersion          RefusalCode = 9
	// RefusedNoBoard answers a board request; this client sends none.
	RefusedNoBoard RefusalCode = 10
)

var refusalNames = map[RefusalCode]string{
	RefusedTooLarge:         "payload too large",
	RefusedExhausted:        "every slot is busy",
	RefusedPeerBusy:         "this peer holds too many unredeemed publications",
	RefusedSegmentBusy:      "too many unredeemed publications in the segment",
	RefusedDeadlineExceeded: "deadline passed before the publication",
	RefusedInternal:         "the producer failed to publish",
	RefusedRequestTooLarge:  "request too large",
	RefusedHandlerFailed:    "the producer's handler failed",
	RefusedVersion:          "control channel version mismatch",
	RefusedNoBoard:          "the producer publishes no version board",
}

func (c RefusalCode) String() string {
	if name, ok := refusalNames[c]; ok {
		return name
	}
	return fmt.Sprintf("refusal %d", uint16(c))
}

// RefusedError: the producer answered with a refusal. Detail is the number the specification
// gives each code (a byte limit, a publication limit, the producer's version), or 0.
type RefusedError struct {
	Code   RefusalCode
	Detail uint64
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("shmbridge: refused: %s (detail %d)", e.Code, e.Detail)
}

// RedeemError: a published answer could not be turned into verified bytes: its handle was stale
// or of another segment, its slot was reclaimed during the read, the bytes failed their crc32, or
// a sealed payload's descriptor failed its checks. Nothing of such a body is returned.
type RedeemError struct {
	Slot   uint32
	Reason string
}

func (e *RedeemError) Error() string {
	return fmt.Sprintf("shmbridge: redeem slot %d: %s", e.Slot, e.Reason)
}
