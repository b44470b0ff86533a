package shmbridge

// An attached segment: the received descriptor checked (seals for a memfd, owner and mode for a
// file), its header validated before anything is mapped, and the slot operations a consumer
// makes on the mapping (a transition, a holder's tagged stamp, a payload's private copy).

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

const (
	fGetSeals  = 1034 // F_GET_SEALS
	sealShrink = 0x2
	sealGrow   = 0x4
	sealWrite  = 0x8
)

type segment struct {
	mem    []byte
	header header
	// holderName is this process as the producer's reaper knows it, which the greeting told
	// (peerView.holderName): what it stamps in the slots it holds. In another PID namespace
	// than the producer's, that is not its own pid.
	holderName owner
}

// mapSegment checks the segment descriptor a producer handed over and maps it. It takes fd
// over: fd is closed on return, the mapping stays.
func mapSegment(fd int) (*segment, error) {
	defer syscall.Close(fd)
	seals, err := getSeals(fd)
	switch {
	case err == syscall.EINVAL:
		// Only memfds know seals: a file segment must be this user's alone.
		if err := checkSegmentFile(fd); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, &AttachError{Reason: "read the segment's seals", Err: err}
	case seals&(sealShrink|sealGrow) != sealShrink|sealGrow:
		return nil, &AttachError{Reason: "the segment memfd is not sealed against shrinking and growing"}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &AttachError{Reason: "stat the segment", Err: err}
	}
	raw := make([]byte, headerSize)
	if st.Size >= headerSize {
		if n, err := syscall.Pread(fd, raw, 0); err != nil || n != headerSize {
			return nil, &AttachError{Reason: "read the segment header", Err: err}
		}
	}
	h, err := parseHeader(raw, uint64(st.Size))
	if err != nil {
		return nil, err
	}
	mem, err := syscall.Mmap(fd, 0, int(h.totalSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, &AttachError{Reason: "map the segment", Err: err}
	}
	return &segment{mem: mem, header: h}, nil
}

func getSeals(fd int) (int, error) {
	seals, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), fGetSeals, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(seals), nil
}

func checkSegmentFile(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return &AttachError{Reason: "stat the segment file", Err: err}
	}
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
		return &AttachError{Reason: "the segment is not a regular file"}
	case st.Uid != uint32(syscall.Geteuid()):
		return &AttachError{Reason: "the segment file belongs to another user"}
	case st.Mode&0o077 != 0:
		return &AttachError{Reason: "the segment file is open to other users"}
	}
	return nil
}

func (s *segment) close() { syscall.Munmap(s.mem) }

// field is the 64-bit word at byte offset at of slot's descriptor. Every offset is a multiple of
// 8 within a page-aligned mapping, so the word is aligned for sync/atomic.
func (s *segment) field(slot uint32, at int) *uint64 {
	offset := headerSize + int(slot)*descriptorSize + at
	return (*uint64)(unsafe.Pointer(&s.mem[offset]))
}

// transition moves slot from exactly from to state at the next generation: one compare-and-swap
// (sequentially consistent in Go, so it is the acquire and release the hand-over needs).
func (s *segment) transition(slot uint32, from word, state uint8) (word, bool) {
	to := from.next(state)
	return to, atomic.CompareAndSwapUint64(s.field(slot, 0), uint64(from), uint64(to))
}

// stampHolder records this process, by its holderName, as slot's holder at held until deadlineNS,
// right after winning the exchange: each field by a compare-and-swap loop that stops once held is
// gone and leaves alone a value written for a later generation ("Tagged fields").
func (s *segment) stampHolder(slot uint32, held word, deadlineNS uint64) {
	who := s.holderName
	ino := who.pidfsIno
	if ino > taggedValueMax {
		ino = 0
	}
	start := who.startTime
	if start > taggedValueMax {
		start = taggedValueMax
	}
	deadlineMS := (deadlineNS + 999_999) / 1_000_000
	for _, f := range []struct {
		at    int
		value uint64
	}{{descOwnerPID, uint64(who.pid)}, {descOwnerStart, start}, {descOwnerPidfs, ino}, {descDeadlineMS, deadlineMS}} {
		if !s.storeTagged(slot, f.at, held, f.value) {
			return
		}
	}
}

func (s *segment) storeTagged(slot uint32, at int, held word, value uint64) bool {
	generation := held.generation()
	want := tagged(generation, value)
	field := s.field(slot, at)
	for {
		if atomic.LoadUint64(s.field(slot, 0)) != uint64(held) {
			return false
		}
		current := atomic.LoadUint64(field)
		if taggedAhead(current, generation) {
			return true
		}
		if atomic.CompareAndSwapUint64(field, current, want) {
			return true
		}
	}
}

// copyPayload copies the first n bytes of slot's payload into a new private buffer (see the
// package doc for why a plain copy followed by a crc32 over the copy is the safe read).
func (s *segment) copyPayload(slot uint32, n uint32) []byte {
	start := s.header.payloadOffset + uint64(slot)*uint64(s.header.slotSize)
	out := make([]byte, n)
	copy(out, s.mem[start:start+uint64(n)])
	return out
}
