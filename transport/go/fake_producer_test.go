package shmbridge

// A scripted producer, in this test process, for what the real one never does: a squatter on the
// socket, a sealed answer whose memfd is unsealed or of the wrong size, a slot whose bytes fail
// their crc, a descriptor where none belongs, an answer that arrives after its deadline; and for
// what the real one does only across PID namespaces: seeing this process under another name.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

const (
	fakeSlots    = 4
	fakeSlotSize = 4096
	fAddSeals    = 1033
	sealSeal     = 0x1
)

func memfd(t *testing.T, size int) int {
	t.Helper()
	name := []byte("fake\x00")
	const cloexecAllowSealing = 0x1 | 0x2
	// Go 1.19's syscall package predates memfd_create's constant.
	sysMemfdCreate, known := map[string]uintptr{"amd64": 319, "arm64": 279, "riscv64": 279}[runtime.GOARCH]
	if !known {
		t.Fatalf("memfd_create's number on %s is not known here", runtime.GOARCH)
	}
	fd, _, errno := syscall.Syscall(sysMemfdCreate, uintptr(unsafe.Pointer(&name[0])), cloexecAllowSealing, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if err := syscall.Ftruncate(int(fd), int64(size)); err != nil {
		t.Fatal(err)
	}
	return int(fd)
}

func seal(t *testing.T, fd, seals int) {
	t.Helper()
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), fAddSeals, uintptr(seals)); errno != 0 {
		t.Fatal(errno)
	}
}

// fakeProducer is a segment created by this process and a socket that greets one consumer.
type fakeProducer struct {
	t        *testing.T
	name     string
	segFD    int
	mem      []byte
	epoch    uint64
	listener int
	conn     int
	// seesPeer is the view of the consumer the greeting reports: by default the consumer as it
	// is, this very process.
	seesPeer peerView
}

// newFakeProducer lays out a segment whose header names creatorPID as its creator.
func newFakeProducer(t *testing.T, creatorPID uint32) *fakeProducer {
	t.Helper()
	payloadOffset := uint64(4096)
	total := payloadOffset + fakeSlots*fakeSlotSize
	fd := memfd(t, int(total))
	mem, err := syscall.Mmap(fd, 0, int(total), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	copy(mem, segmentMagic[:])
	le.PutUint32(mem[8:], layoutVersion)
	le.PutUint32(mem[12:], headerSize)
	le.PutUint64(mem[16:], 0xfeed)
	le.PutUint32(mem[32:], fakeSlots)
	le.PutUint32(mem[36:], fakeSlotSize)
	le.PutUint64(mem[40:], headerSize)
	le.PutUint64(mem[48:], payloadOffset)
	le.PutUint64(mem[56:], total)
	le.PutUint32(mem[64:], creatorPID)
	le.PutUint32(mem[68:], uint32(syscall.Geteuid()))
	le.PutUint32(mem[80:], crc32.ChecksumIEEE(mem[:headerCRCCovers]))
	for slot := 0; slot < fakeSlots; slot++ {
		le.PutUint64(mem[headerSize+slot*descriptorSize:], uint64(makeWord(0, stateFree)))
	}
	seal(t, fd, sealShrink|sealGrow)
	self, err := currentOwner()
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProducer{t: t, segFD: fd, mem: mem, epoch: 0xfeed,
		name:     fmt.Sprintf("shmbridge-go-fake-%d-%d", os.Getpid(), time.Now().UnixNano()),
		seesPeer: peerView{pid: self.pid, visibility: visible, seen: self}}
	p.listener, err = syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(p.listener, &syscall.SockaddrUnix{Name: "@" + p.name}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(p.listener, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Close(p.listener)
		if p.conn > 0 {
			syscall.Close(p.conn)
		}
		syscall.Munmap(mem)
		syscall.Close(fd)
	})
	return p
}

// greetOne accepts a consumer and greets it as the real producer would: how it sees the peer
// (seesPeer), its clock, the segment's descriptor.
func (p *fakeProducer) greetOne() {
	conn, _, err := syscall.Accept4(p.listener, syscall.SOCK_CLOEXEC)
	if err != nil {
		p.t.Error(err)
		return
	}
	p.conn = conn
	setTimeout(conn, syscall.SO_RCVTIMEO, 5*time.Second)
	g := make([]byte, greetingLen)
	copy(g, greetingMagic[:])
	le := binary.LittleEndian
	le.PutUint32(g[4:], layoutVersion)
	le.PutUint32(g[8:], p.seesPeer.pid)
	le.PutUint32(g[12:], p.seesPeer.visibility)
	le.PutUint64(g[16:], p.seesPeer.seen.startTime)
	le.PutUint64(g[24:], p.seesPeer.seen.pidfsIno)
	le.PutUint64(g[32:], monotonicNow())
	if err := syscall.Sendmsg(conn, g, syscall.UnixRights(p.segFD), nil, 0); err != nil {
		p.t.Error(err)
	}
}

// connectToFake connects a client while the fake greets it.
func connectToFake(t *testing.T, p *fakeProducer) (*Client, error) {
	greeted := make(chan struct{})
	go func() { p.greetOne(); close(greeted) }()
	client, err := Connect(p.name, Options{ConnectTimeout: 5 * time.Second})
	<-greeted
	if client != nil {
		t.Cleanup(func() { client.Close() })
	}
	return client, err
}

// nextFrame reads the consumer's next frame: its kind, id and bytes.
func (p *fakeProducer) nextFrame() (uint8, uint64, []byte) {
	buf := make([]byte, 1<<17)
	n, _, _, _, err := syscall.Recvmsg(p.conn, buf, nil, 0)
	if err != nil {
		p.t.Errorf("fake producer receive: %v", err)
		return 0, 0, nil
	}
	return buf[5], binary.LittleEndian.Uint64(buf[8:]), buf[:n]
}

func (p *fakeProducer) state(slot int) word {
	return word(atomic.LoadUint64((*uint64)(unsafe.Pointer(&p.mem[headerSize+slot*descriptorSize]))))
}

// field is the 64-bit word at byte offset at of slot's descriptor.
func (p *fakeProducer) field(slot, at int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&p.mem[headerSize+slot*descriptorSize+at])))
}

func (p *fakeProducer) setReady(slot int, generation uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&p.mem[headerSize+slot*descriptorSize])), uint64(makeWord(generation, stateReady)))
}

// published is a published answer with an empty head (status 200, no content type).
func published(id uint64, tier Tier, h handle) []byte {
	b := frameHeader(kindPublished, id, publishedFixedLen+4)
	le := binary.LittleEndian
	b[answerTierAt] = byte(tier)
	le.PutUint16(b[answerStatusAt:], 200)
	le.PutUint32(b[answerHeadLenAt:], 4)
	le.PutUint64(b[answerEpochAt:], h.epoch)
	le.PutUint32(b[answerSlotAt:], h.slot)
	le.PutUint32(b[answerLenAt:], h.len)
	le.PutUint64(b[answerGenerationAt:], h.generation)
	le.PutUint32(b[answerCRCAt:], h.crc)
	return b
}

// answerWith serves one request with frame, and fd attached when it is not -1.
func (p *fakeProducer) answerWith(frame func(id uint64) []byte, fd int) {
	_, id, _ := p.nextFrame()
	var rights []byte
	if fd >= 0 {
		rights = syscall.UnixRights(fd)
	}
	if err := syscall.Sendmsg(p.conn, frame(id), rights, nil, 0); err != nil {
		p.t.Error(err)
	}
}

func TestASquatterThatDidNotCreateTheSegmentIsRefused(t *testing.T) {
	p := newFakeProducer(t, 1)
	_, err := connectToFake(t, p)
	var attach *AttachError
	if !errors.As(err, &attach) || !strings.Contains(attach.Reason, "creator") {
		t.Fatalf("a squatter: %v", err)
	}
}

// A client holds a slot under the name the producer's greeting gave for it: the pid it has in a
// parent PID namespace, or pid 0 (by lease alone) where the producer cannot see it. Stamped with
// its own pid, the producer's reaper would look up another process, or none.
func TestARedeemedSlotIsStampedWithTheProducersNameForThisProcess(t *testing.T) {
	own, err := currentOwner()
	if err != nil {
		t.Fatal(err)
	}
	// No pidfs inode in the view: the start times name this process, and every stamped field
	// is small enough to check as it is.
	above := owner{pid: own.pid + 1000, startTime: own.startTime}
	for _, c := range []struct {
		name  string
		sees  peerView
		stamp owner
	}{
		{"from a parent PID namespace", peerView{pid: above.pid, visibility: visible, seen: above}, above},
		{"from outside its PID namespace", peerView{pid: 0, visibility: absent}, leaseOnly},
	} {
		p := newFakeProducer(t, uint32(os.Getpid()))
		p.seesPeer = c.sees
		client, err := connectToFake(t, p)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body := []byte("held under the producer's name")
		copy(p.mem[4096:], body)
		p.setReady(0, 2)
		h := handle{epoch: p.epoch, slot: 0, len: uint32(len(body)), generation: 2, crc: crc32.ChecksumIEEE(body)}
		go p.answerWith(func(id uint64) []byte { return published(id, TierSlot, h) }, -1)
		response, err := client.Do(context.Background(), get("/x"))
		if err != nil || string(response.Body) != string(body) {
			t.Fatalf("%s: %v", c.name, err)
		}
		// Generation 3 is the READING the client stamped; giving the slot back leaves the stamp.
		for _, f := range []struct {
			at   int
			want uint64
		}{{descOwnerPID, uint64(c.stamp.pid)}, {descOwnerStart, c.stamp.startTime}, {descOwnerPidfs, c.stamp.pidfsIno}} {
			if got := p.field(0, f.at); got != tagged(3, f.want) {
				t.Errorf("%s: descriptor field at %d is %#x, want %d tagged for generation 3", c.name, f.at, got, f.want)
			}
		}
	}
}

func TestSealedPayloadsThatFailTheirChecksAreRefusedAndTheTicketGivenBack(t *testing.T) {
	body := []byte(strings.Repeat("sealed bytes ", 1000))
	unsealed := memfd(t, len(body))
	syscall.Pwrite(unsealed, body, 0)
	wrongSize := memfd(t, len(body)+1)
	seal(t, wrongSize, sealWrite|sealShrink|sealGrow|sealSeal)
	wrongCRC := memfd(t, len(body))
	syscall.Pwrite(wrongCRC, body, 0)
	seal(t, wrongCRC, sealWrite|sealShrink|sealGrow)
	good := memfd(t, len(body))
	syscall.Pwrite(good, body, 0)
	seal(t, good, sealWrite|sealShrink|sealGrow)

	p := newFakeProducer(t, uint32(os.Getpid()))
	client, err := connectToFake(t, p)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		fd     int
		crc    uint32
		reason string
	}{
		{unsealed, crc32.ChecksumIEEE(body), "seals"},
		{wrongSize, crc32.ChecksumIEEE(body), "bytes, the handle says"},
		{wrongCRC, crc32.ChecksumIEEE(body) ^ 1, "crc32"},
		{good, crc32.ChecksumIEEE(body), ""},
	} {
		generation := uint64(10 * (i + 1))
		p.setReady(1, generation)
		h := handle{epoch: p.epoch, slot: 1, len: uint32(len(body)), generation: generation, crc: c.crc}
		go p.answerWith(func(id uint64) []byte { return published(id, TierSealed, h) }, c.fd)
		response, err := client.Do(context.Background(), get("/x"))
		if c.reason == "" {
			if err != nil || string(response.Body) != string(body) || response.Tier != TierSealed {
				t.Fatalf("a good sealed payload: %v", err)
			}
			response.Close()
		} else {
			var redeem *RedeemError
			if !errors.As(err, &redeem) || !strings.Contains(redeem.Reason, c.reason) {
				t.Errorf("case %d: %v, want a redeem error about %q", i, err, c.reason)
			}
		}
		if got, want := p.state(1), makeWord(generation+2, stateFree); got != want {
			t.Errorf("case %d: ticket left at %#x, want FREE at generation %d", i, uint64(got), generation+2)
		}
	}
}

// A sealed answer may carry a body a slot would hold (an immutable one its producer hands out
// again): its tier, not its length, says it is a ticket.
func TestASealedAnswerOfASlotsSizeOrLessIsRedeemed(t *testing.T) {
	p := newFakeProducer(t, uint32(os.Getpid()))
	client, err := connectToFake(t, p)
	if err != nil {
		t.Fatal(err)
	}
	for i, body := range [][]byte{[]byte("x"), bytes.Repeat([]byte{7}, fakeSlotSize)} {
		fd := memfd(t, len(body))
		syscall.Pwrite(fd, body, 0)
		seal(t, fd, sealWrite|sealShrink|sealGrow)
		generation := uint64(10 * (i + 1))
		p.setReady(1, generation)
		h := handle{epoch: p.epoch, slot: 1, len: uint32(len(body)), generation: generation, crc: crc32.ChecksumIEEE(body)}
		go p.answerWith(func(id uint64) []byte { return published(id, TierSealed, h) }, fd)
		response, err := client.Do(context.Background(), get("/x"))
		if err != nil || !bytes.Equal(response.Body, body) || response.Tier != TierSealed {
			t.Fatalf("a sealed body of %d bytes: %v", len(body), err)
		}
		response.Close()
		if got, want := p.state(1), makeWord(generation+2, stateFree); got != want {
			t.Errorf("%d bytes: ticket left at %#x, want FREE at generation %d", len(body), uint64(got), generation+2)
		}
	}
}

func TestASlotIsCheckedAgainstTheHandlesCRCAndAStaleHandleTakesNothing(t *testing.T) {
	p := newFakeProducer(t, uint32(os.Getpid()))
	client, err := connectToFake(t, p)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("slot bytes")
	copy(p.mem[4096+2*fakeSlotSize:], body)
	p.setReady(2, 4)
	h := handle{epoch: p.epoch, slot: 2, len: uint32(len(body)), generation: 4, crc: crc32.ChecksumIEEE(body) ^ 0xff}
	go p.answerWith(func(id uint64) []byte { return published(id, TierSlot, h) }, -1)
	_, err = client.Do(context.Background(), get("/x"))
	var redeem *RedeemError
	if !errors.As(err, &redeem) || !strings.Contains(redeem.Reason, "crc32") {
		t.Errorf("a wrong crc: %v", err)
	}
	if got := p.state(2); got != makeWord(6, stateFree) {
		t.Errorf("slot left at %#x", uint64(got))
	}
	// The same handle again: generation 4 is gone, so nothing is taken.
	go p.answerWith(func(id uint64) []byte { return published(id, TierSlot, h) }, -1)
	if _, err = client.Do(context.Background(), get("/x")); !errors.As(err, &redeem) || !strings.Contains(redeem.Reason, "stale") {
		t.Errorf("a stale handle: %v", err)
	}
	if got := p.state(2); got != makeWord(6, stateFree) {
		t.Errorf("a stale handle changed the slot to %#x", uint64(got))
	}
}

func TestADescriptorWhereNoneBelongsEndsTheChannel(t *testing.T) {
	p := newFakeProducer(t, uint32(os.Getpid()))
	client, err := connectToFake(t, p)
	if err != nil {
		t.Fatal(err)
	}
	stray := memfd(t, 10)
	defer syscall.Close(stray)
	inline := func(id uint64) []byte {
		b := published(id, TierInline, handle{})
		binary.LittleEndian.PutUint32(b[answerCRCAt:], crc32.ChecksumIEEE(nil))
		return b
	}
	go p.answerWith(inline, stray)
	_, err = client.Do(context.Background(), get("/x"))
	var protocol *ProtocolError
	if !errors.As(err, &protocol) {
		t.Fatalf("a descriptor on an inline answer: %v", err)
	}
	if _, err := client.Do(context.Background(), get("/x")); !errors.As(err, &protocol) {
		t.Errorf("after a protocol error the channel must stay closed: %v", err)
	}
}

func TestAnAnswerAfterTheDeadlineIsReleasedNotDelivered(t *testing.T) {
	p := newFakeProducer(t, uint32(os.Getpid()))
	client, err := connectToFake(t, p)
	if err != nil {
		t.Fatal(err)
	}
	p.setReady(3, 8)
	h := handle{epoch: p.epoch, slot: 3, len: 5, generation: 8, crc: crc32.ChecksumIEEE(make([]byte, 5))}
	released := make(chan []byte, 1)
	go func() {
		_, id, _ := p.nextFrame()
		time.Sleep(100 * time.Millisecond)
		syscall.Sendmsg(p.conn, published(id, TierSlot, h), nil, nil, 0)
		_, _, frame := p.nextFrame()
		released <- frame
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := client.Do(ctx, get("/x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a late answer: %v", err)
	}
	select {
	case frame := <-released:
		le := binary.LittleEndian
		if frame[5] != kindRelease || le.Uint32(frame[16:]) != 3 || le.Uint64(frame[24:]) != 8 {
			t.Errorf("expected a release of slot 3 generation 8, got % x", frame)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late publication was never released")
	}
}
