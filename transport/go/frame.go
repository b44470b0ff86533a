package shmbridge

// The control channel's frames (transport/src/control/frame/mod.rs): the publish and release
// frames this side sends, and the published and refused answers it reads, every length checked
// against its bound and against the message before it is used. This client does not read the
// version board yet: it checks a published frame's object fields and otherwise ignores them, and
// never sends a board request, so a board frame is a protocol error here.

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

const (
	controlVersion     = 4
	kindPublish        = 1
	kindRelease        = 2
	kindPublished      = 3
	kindRefused        = 4
	kindBoardRequest   = 5
	kindBoard          = 6
	frameHeaderLen     = 16
	publishFixedLen    = 32
	publishedFixedLen  = 72
	releaseLen         = 32
	refusedLen         = 32
	tierInline         = 1
	tierSlot           = 2
	tierSealed         = 3
	maxHeaders         = 64
	maxHeaderNameLen   = 256
	maxHeaderValueLen  = 4096
	maxHeadLen         = 16 * 1024
	maxInlineLen       = 64 * 1024
	maxAnswerFrameLen  = publishedFixedLen + maxHeadLen + maxInlineLen
	statusMin          = 100
	statusMax          = 999
	publishRequestAt   = 32
	answerTierAt       = 16
	answerStatusAt     = 18
	answerHeadLenAt    = 20
	answerEpochAt      = 24
	answerSlotAt       = 32
	answerLenAt        = 36
	answerGenerationAt = 40
	answerCRCAt        = 48
	answerObjectKeyAt  = 56
	answerVersionAt    = 64
)

// MaxRequestLen is the longest request a publish frame carries.
const MaxRequestLen = 64 * 1024

var frameMagic = []byte("SHMC")

// Tier is where a body travelled.
type Tier uint8

const (
	TierInline Tier = tierInline
	TierSlot   Tier = tierSlot
	TierSealed Tier = tierSealed
)

func (t Tier) String() string {
	switch t {
	case TierInline:
		return "inline"
	case TierSlot:
		return "slot"
	case TierSealed:
		return "sealed"
	}
	return fmt.Sprintf("tier %d", uint8(t))
}

// Head is a response head: a status, a content type ("" for none) and header pairs in order.
type Head struct {
	Status      int
	ContentType string
	Headers     [][2]string
}

// handle names one publication in a segment.
type handle struct {
	epoch      uint64
	slot       uint32
	len        uint32
	generation uint64
	crc        uint32
}

// answer is a decoded producer frame: a published head and body placement, or a refusal.
type answer struct {
	id      uint64
	refusal *RefusedError
	head    Head
	tier    Tier
	handle  handle // len and crc for every tier; the rest zero for inline
	inline  []byte // the body of an inline answer, sharing the receive buffer
}

func frameHeader(kind uint8, id uint64, length int) []byte {
	b := make([]byte, length)
	copy(b, frameMagic)
	b[4] = controlVersion
	b[5] = kind
	binary.LittleEndian.PutUint64(b[8:], id)
	return b
}

func encodePublish(id, deadlineNS uint64, request []byte) []byte {
	b := frameHeader(kindPublish, id, publishFixedLen+len(request))
	binary.LittleEndian.PutUint64(b[16:], deadlineNS)
	binary.LittleEndian.PutUint32(b[24:], uint32(len(request)))
	copy(b[publishRequestAt:], request)
	return b
}

func encodeRelease(id uint64, slot uint32, generation uint64) []byte {
	b := frameHeader(kindRelease, id, releaseLen)
	binary.LittleEndian.PutUint32(b[16:], slot)
	binary.LittleEndian.PutUint64(b[24:], generation)
	return b
}

func protocolError(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// decodeAnswer parses one message a producer sent. A frame of another control version is a
// VersionError: the producer answers a frame it cannot read with a refusal in its own version.
func decodeAnswer(b []byte) (answer, error) {
	le := binary.LittleEndian
	if len(b) < frameHeaderLen {
		return answer{}, protocolError("a frame of %d bytes is shorter than its header", len(b))
	}
	if !bytes.Equal(b[:4], frameMagic) {
		return answer{}, protocolError("a frame that does not start with SHMC")
	}
	if b[4] != controlVersion {
		return answer{}, &VersionError{What: "control channel", Found: uint64(b[4]), Expected: controlVersion}
	}
	if !allZero(b[6:8]) {
		return answer{}, protocolError("reserved bytes of a frame header are not zero")
	}
	a := answer{id: le.Uint64(b[8:])}
	switch kind := b[5]; kind {
	case kindRefused:
		if len(b) != refusedLen {
			return answer{}, protocolError("a refused frame of %d bytes", len(b))
		}
		if !allZero(b[18:24]) {
			return answer{}, protocolError("reserved bytes of a refused frame are not zero")
		}
		code := RefusalCode(le.Uint16(b[16:]))
		if _, known := refusalNames[code]; !known {
			return answer{}, protocolError("unknown refusal code %d", code)
		}
		a.refusal = &RefusedError{Code: code, Detail: le.Uint64(b[24:])}
		return a, nil
	case kindPublished:
		return decodePublished(a, b)
	case kindPublish, kindRelease, kindBoardRequest, kindBoard:
		return answer{}, protocolError("frame kind %d is not expected from a producer", kind)
	default:
		return answer{}, protocolError("unknown frame kind %d", kind)
	}
}

func decodePublished(a answer, b []byte) (answer, error) {
	le := binary.LittleEndian
	if len(b) < publishedFixedLen {
		return answer{}, protocolError("a published frame of %d bytes", len(b))
	}
	if b[17] != 0 || !allZero(b[52:56]) {
		return answer{}, protocolError("reserved bytes of a published frame are not zero")
	}
	if le.Uint64(b[answerVersionAt:]) == 0 && le.Uint64(b[answerObjectKeyAt:]) != 0 {
		return answer{}, protocolError("an object key without a version")
	}
	a.tier = Tier(b[answerTierAt])
	if a.tier < TierInline || a.tier > TierSealed {
		return answer{}, protocolError("unknown tier %d", b[answerTierAt])
	}
	headLen := le.Uint32(b[answerHeadLenAt:])
	if headLen > maxHeadLen {
		return answer{}, protocolError("a head of %d bytes is above its bound", headLen)
	}
	a.handle = handle{
		epoch:      le.Uint64(b[answerEpochAt:]),
		slot:       le.Uint32(b[answerSlotAt:]),
		len:        le.Uint32(b[answerLenAt:]),
		generation: le.Uint64(b[answerGenerationAt:]),
		crc:        le.Uint32(b[answerCRCAt:]),
	}
	bodyLen := uint32(0)
	if a.tier == TierInline {
		if a.handle.len > maxInlineLen {
			return answer{}, protocolError("an inline body of %d bytes is above its bound", a.handle.len)
		}
		if a.handle.epoch != 0 || a.handle.slot != 0 || a.handle.generation != 0 {
			return answer{}, protocolError("an inline answer with a non-zero handle field")
		}
		bodyLen = a.handle.len
	} else if a.handle.generation > maxGeneration {
		return answer{}, protocolError("generation %d is beyond the largest a slot can have", a.handle.generation)
	}
	headEnd := publishedFixedLen + int(headLen)
	if len(b) != headEnd+int(bodyLen) {
		return answer{}, protocolError("a published frame of %d bytes, its fields make %d", len(b), headEnd+int(bodyLen))
	}
	head, err := decodeHead(int(le.Uint16(b[answerStatusAt:])), b[publishedFixedLen:headEnd])
	if err != nil {
		return answer{}, err
	}
	a.head = head
	a.inline = b[headEnd:]
	return a, nil
}

// decodeHead parses a response head: u16 content-type length and bytes, u16 header count, then
// per header u16 name length, name, u16 value length, value; nothing after the last header.
func decodeHead(status int, b []byte) (Head, error) {
	if status < statusMin || status > statusMax {
		return Head{}, protocolError("status %d outside 100..999", status)
	}
	head := Head{Status: status}
	r := headReader{rest: b}
	contentType, ok := r.field()
	if !ok || !isFieldValue(contentType) {
		return Head{}, protocolError("malformed content type in a response head")
	}
	head.ContentType = string(contentType)
	count, ok := r.u16()
	if !ok || count > maxHeaders {
		return Head{}, protocolError("malformed header count in a response head")
	}
	for i := 0; i < int(count); i++ {
		name, okName := r.field()
		value, okValue := r.field()
		if !okName || !okValue || !isToken(name) || !isFieldValue(value) {
			return Head{}, protocolError("malformed header %d in a response head", i)
		}
		head.Headers = append(head.Headers, [2]string{string(name), string(value)})
	}
	if len(r.rest) != 0 {
		return Head{}, protocolError("bytes after the last header of a response head")
	}
	return head, nil
}

type headReader struct{ rest []byte }

func (r *headReader) u16() (uint16, bool) {
	if len(r.rest) < 2 {
		return 0, false
	}
	v := binary.LittleEndian.Uint16(r.rest)
	r.rest = r.rest[2:]
	return v, true
}

func (r *headReader) field() ([]byte, bool) {
	n, ok := r.u16()
	if !ok || int(n) > len(r.rest) {
		return nil, false
	}
	v := r.rest[:n]
	r.rest = r.rest[n:]
	return v, true
}

// isToken: 1 to 256 bytes of an HTTP token (RFC 9110 tchar).
func isToken(b []byte) bool {
	if len(b) == 0 || len(b) > maxHeaderNameLen {
		return false
	}
	for _, c := range b {
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alnum && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) < 0 {
			return false
		}
	}
	return true
}

// isFieldValue: at most 4096 bytes of visible ASCII, space or tab.
func isFieldValue(b []byte) bool {
	if len(b) > maxHeaderValueLen {
		return false
	}
	for _, c := range b {
		if c != '\t' && (c < ' ' || c > '~') {
			return false
		}
	}
	return true
}
