package shmbridge

// The segment layout, as transport/src/layout.rs specifies it: the header, the geometry it
// implies, the state word and tagged descriptor fields. Little-endian throughout.

import (
	"encoding/binary"
	"hash/crc32"
)

const (
	layoutVersion    = 2
	headerSize       = 128
	headerCRCCovers  = 80
	descriptorSize   = 64
	payloadAlign     = 4096
	slotAlign        = 64
	maxSlotCount     = 1 << 16
	maxSlotSize      = 1 << 30
	generationBits   = 56
	maxGeneration    = 1<<generationBits - 1
	tagBits          = 24
	tagMask          = 1<<tagBits - 1
	valueBits        = 40
	taggedValueMax   = 1<<valueBits - 1
	stateFree        = 1
	stateReady       = 3
	stateReading     = 4
	descOwnerPID     = 8
	descOwnerStart   = 16
	descOwnerPidfs   = 24
	descDeadlineMS   = 32
	headerEpochAt    = 16
	headerSlotsAt    = 32
	headerCreatorAt  = 64
	headerCRCAt      = 80
	headerTotalAt    = 56
	headerPayloadAt  = 48
	headerDescsAt    = 40
	headerVersionAt  = 8
	headerSizeAt     = 12
	headerSlotSizeAt = 36
)

var segmentMagic = [8]byte{'S', 'H', 'M', 'B', 'R', 'D', 'G', 0}

// header is the part of a segment header a consumer uses, copied out of the mapping once it was
// validated; nothing is re-read from shared memory for bounds afterwards.
type header struct {
	epoch         uint64
	slotCount     uint32
	slotSize      uint32
	payloadOffset uint64
	totalSize     uint64
	creatorPID    uint32
	creatorUID    uint32
}

// parseHeader checks every field of a header read from a file of fileSize bytes and the size
// arithmetic against what the file is, as the layout's header table says.
func parseHeader(b []byte, fileSize uint64) (header, error) {
	if len(b) < headerSize || fileSize < headerSize {
		return header{}, &AttachError{Reason: "segment smaller than its header"}
	}
	if *(*[8]byte)(b[:8]) != segmentMagic {
		return header{}, &AttachError{Reason: "segment does not start with SHMBRDG"}
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[headerVersionAt:]); v != layoutVersion {
		return header{}, &VersionError{What: "segment layout", Found: uint64(v), Expected: layoutVersion}
	}
	if got, want := le.Uint32(b[headerCRCAt:]), crc32.ChecksumIEEE(b[:headerCRCCovers]); got != want {
		return header{}, &AttachError{Reason: "segment header crc mismatch"}
	}
	h := header{
		epoch:         le.Uint64(b[headerEpochAt:]),
		slotCount:     le.Uint32(b[headerSlotsAt:]),
		slotSize:      le.Uint32(b[headerSlotSizeAt:]),
		payloadOffset: le.Uint64(b[headerPayloadAt:]),
		totalSize:     le.Uint64(b[headerTotalAt:]),
		creatorPID:    le.Uint32(b[headerCreatorAt:]),
		creatorUID:    le.Uint32(b[headerCreatorAt+4:]),
	}
	switch {
	case le.Uint32(b[headerSizeAt:]) != headerSize:
		return header{}, &AttachError{Reason: "segment header_size is not 128"}
	case h.epoch == 0:
		return header{}, &AttachError{Reason: "segment epoch is zero"}
	case h.slotCount == 0 || h.slotCount > maxSlotCount:
		return header{}, &AttachError{Reason: "segment slot_count out of bounds"}
	case h.slotSize == 0 || h.slotSize > maxSlotSize || h.slotSize%slotAlign != 0:
		return header{}, &AttachError{Reason: "segment slot_size out of bounds"}
	case le.Uint64(b[headerDescsAt:]) != headerSize:
		return header{}, &AttachError{Reason: "segment descriptors_offset is not 128"}
	}
	// Both factors are bounded, so none of this overflows a uint64.
	descriptorsEnd := uint64(headerSize) + uint64(h.slotCount)*descriptorSize
	payloadOffset := (descriptorsEnd + payloadAlign - 1) / payloadAlign * payloadAlign
	totalSize := payloadOffset + uint64(h.slotCount)*uint64(h.slotSize)
	switch {
	case h.payloadOffset != payloadOffset:
		return header{}, &AttachError{Reason: "segment payload_offset disagrees with its geometry"}
	case h.totalSize != totalSize:
		return header{}, &AttachError{Reason: "segment total_size disagrees with its geometry"}
	case fileSize != totalSize:
		return header{}, &AttachError{Reason: "segment file size disagrees with its header"}
	}
	return h, nil
}

// word is a slot's state word: generation << 8 | state.
type word uint64

func makeWord(generation uint64, state uint8) word {
	return word((generation&maxGeneration)<<8 | uint64(state))
}

func (w word) generation() uint64 { return uint64(w) >> 8 }
func (w word) state() uint8       { return uint8(w) }

// next is the word every transition out of w writes: the next generation, in state.
func (w word) next(state uint8) word { return makeWord(w.generation()+1, state) }

// tagged is value written for generation: tag << 40 | value, the tag the generation's low 24 bits.
func tagged(generation, value uint64) uint64 {
	return (generation&tagMask)<<valueBits | value&taggedValueMax
}

// taggedAhead reports whether the tagged word t was written for a generation after generation
// (within half the tag space), so that a writer for generation must leave it alone.
func taggedAhead(t, generation uint64) bool {
	distance := ((t >> valueBits) - generation) & tagMask
	return distance != 0 && distance < 1<<(tagBits-1)
}
