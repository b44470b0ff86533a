package shmbridge

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestMalformedAnswersAreRefusedBeforeUse(t *testing.T) {
	le := binary.LittleEndian
	good := func() []byte { return published(7, TierSlot, handle{epoch: 1, slot: 2, len: 3, generation: 4, crc: 5}) }
	if a, err := decodeAnswer(good()); err != nil || a.id != 7 || a.tier != TierSlot || a.head.Status != 200 {
		t.Fatalf("a good answer: %v %+v", err, a)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":              func(b []byte) []byte { return b[:10] },
		"magic":              func(b []byte) []byte { b[0] = 'X'; return b },
		"reserved header":    func(b []byte) []byte { b[6] = 1; return b },
		"reserved tail":      func(b []byte) []byte { b[53] = 1; return b },
		"unknown tier":       func(b []byte) []byte { b[answerTierAt] = 4; return b },
		"unknown kind":       func(b []byte) []byte { b[5] = 9; return b },
		"a consumer's frame": func(b []byte) []byte { b[5] = kindPublish; return b },
		"status":             func(b []byte) []byte { le.PutUint16(b[answerStatusAt:], 99); return b },
		"head too long":      func(b []byte) []byte { le.PutUint32(b[answerHeadLenAt:], maxHeadLen+1); return b },
		"length":             func(b []byte) []byte { return append(b, 0) },
		"generation":         func(b []byte) []byte { le.PutUint64(b[answerGenerationAt:], maxGeneration+1); return b },
		"head trailing":      func(b []byte) []byte { le.PutUint16(b[publishedFixedLen:], 1); return b },
		"key, no version":    func(b []byte) []byte { le.PutUint64(b[answerObjectKeyAt:], 1); return b },
		"a board":            func(b []byte) []byte { b[5] = kindBoard; return b },
		"inline handle": func(b []byte) []byte {
			b[answerTierAt] = tierInline
			le.PutUint32(b[answerLenAt:], 0)
			return b
		},
	} {
		var protocol *ProtocolError
		if _, err := decodeAnswer(mutate(good())); !errors.As(err, &protocol) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
	object := good()
	le.PutUint64(object[answerObjectKeyAt:], 9)
	le.PutUint64(object[answerVersionAt:], 2)
	if _, err := decodeAnswer(object); err != nil {
		t.Errorf("an answer naming an object version: %v", err)
	}
	other := good()
	other[4] = 1
	var version *VersionError
	if _, err := decodeAnswer(other); !errors.As(err, &version) || version.Found != 1 {
		t.Errorf("another control version: %v", err)
	}
	refused := frameHeader(kindRefused, 3, refusedLen)
	le.PutUint16(refused[16:], uint16(RefusedPeerBusy))
	le.PutUint64(refused[24:], 32)
	if a, err := decodeAnswer(refused); err != nil || a.refusal.Code != RefusedPeerBusy || a.refusal.Detail != 32 {
		t.Errorf("a refusal: %v %+v", err, a)
	}
	le.PutUint16(refused[16:], 99)
	if _, err := decodeAnswer(refused); err == nil {
		t.Error("an unknown refusal code was accepted")
	}
}

func TestAHeadCarriesItsContentTypeAndHeadersInOrder(t *testing.T) {
	var head []byte
	field := func(s string) {
		head = binary.LittleEndian.AppendUint16(head, uint16(len(s)))
		head = append(head, s...)
	}
	field("application/json")
	head = binary.LittleEndian.AppendUint16(head, 2)
	field("x-a")
	field("1")
	field("x-b")
	field("two words")
	got, err := decodeHead(201, head)
	if err != nil || got.ContentType != "application/json" || len(got.Headers) != 2 ||
		got.Headers[1] != [2]string{"x-b", "two words"} {
		t.Fatalf("%v %+v", err, got)
	}
	bad := append([]byte(nil), head...)
	bad[len(bad)-1] = '\n'
	if _, err := decodeHead(200, bad); err == nil {
		t.Error("a control character in a header value was accepted")
	}
}
