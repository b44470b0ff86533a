package shmbridge

// Turning an answer into verified bytes, one place for every tier: an inline body checked
// against its crc32; a slot taken by its handle (READY -> READING), copied out, checked and
// given back (READING -> FREE); a sealed ticket taken the same way while its memfd's seals, size
// and crc32 are checked over a read-only mapping, then given back.

import (
	"fmt"
	"hash/crc32"
	"syscall"
)

func (c *Client) redeem(d delivery) (*Response, error) {
	if d.err != nil {
		return nil, d.err
	}
	a := d.answer
	if a.refusal != nil {
		return nil, a.refusal
	}
	response := &Response{Head: a.head, Tier: a.tier, CRC32: a.handle.crc}
	switch a.tier {
	case TierInline:
		if crc32.ChecksumIEEE(a.inline) != a.handle.crc {
			return nil, &RedeemError{Reason: "inline body fails its crc32"}
		}
		response.Body = a.inline
		return response, nil
	case TierSlot:
		body, err := c.copySlot(a.handle)
		if err != nil {
			return nil, err
		}
		response.Body = body
		return response, nil
	default:
		mapping, err := c.redeemSealed(a.handle, d.fd)
		if err != nil {
			return nil, err
		}
		response.Body, response.mapping = mapping, mapping
		return response, nil
	}
}

// take moves h's slot from READY at exactly h's generation to READING, and stamps this process
// (as the producer's reaper knows it) as its holder until the lease ends. A handle is redeemable
// once: a second take finds the generation moved on.
func (c *Client) take(h handle) (word, error) {
	hdr := c.seg.header
	if h.epoch != hdr.epoch {
		return 0, &RedeemError{Slot: h.slot, Reason: fmt.Sprintf("handle of segment epoch %d, attached to %d", h.epoch, hdr.epoch)}
	}
	if h.slot >= hdr.slotCount {
		return 0, &RedeemError{Slot: h.slot, Reason: fmt.Sprintf("slot out of range (%d slots)", hdr.slotCount)}
	}
	held, won := c.seg.transition(h.slot, makeWord(h.generation, stateReady), stateReading)
	if !won {
		return 0, &RedeemError{Slot: h.slot, Reason: fmt.Sprintf("stale handle: generation %d is no longer READY", h.generation)}
	}
	c.seg.stampHolder(h.slot, held, monotonicNow()+uint64(c.options.Lease))
	return held, nil
}

// whileHeld takes h's slot (or ticket), reads it with read while holding it, and gives it
// back whatever read found. If the give-back fails, the reaper took the slot during the read,
// so what was read may belong to a later publication: it is discarded (discard, when read gave
// one, frees it) and the redeem fails.
func (c *Client) whileHeld(h handle, read func() (body []byte, discard func(), err error)) ([]byte, error) {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	held, err := c.take(h)
	if err != nil {
		return nil, err
	}
	body, discard, readErr := read()
	if _, released := c.seg.transition(h.slot, held, stateFree); !released {
		if discard != nil {
			discard()
		}
		return nil, &RedeemError{Slot: h.slot, Reason: "reclaimed during the read"}
	}
	return body, readErr
}

func (c *Client) copySlot(h handle) ([]byte, error) {
	return c.whileHeld(h, func() ([]byte, func(), error) {
		body := c.seg.copyPayload(h.slot, h.len)
		if found := crc32.ChecksumIEEE(body); found != h.crc {
			return nil, nil, &RedeemError{Slot: h.slot, Reason: fmt.Sprintf("crc32 %08x, the handle says %08x", found, h.crc)}
		}
		return body, nil, nil
	})
}

// redeemSealed verifies the memfd fd (closed on return) while holding the ticket, and returns
// the verified read-only mapping.
func (c *Client) redeemSealed(h handle, fd int) ([]byte, error) {
	defer syscall.Close(fd)
	return c.whileHeld(h, func() ([]byte, func(), error) {
		mapping, err := verifySealed(fd, h)
		return mapping, func() {
			if mapping != nil {
				syscall.Munmap(mapping)
			}
		}, err
	})
}

// verifySealed checks a sealed payload before trusting a byte: write, shrink and grow seals,
// the size the handle names, and the crc32 over a read-only mapping made through the descriptor
// reopened read-only (kernels before 6.7 refuse a read-only shared mapping of a write-sealed
// memfd through the writable descriptor that was received).
func verifySealed(fd int, h handle) ([]byte, error) {
	fail := func(reason string) ([]byte, error) {
		return nil, &RedeemError{Slot: h.slot, Reason: "sealed payload: " + reason}
	}
	seals, err := getSeals(fd)
	if err != nil {
		return fail("not a memfd with seals")
	}
	if required := sealWrite | sealShrink | sealGrow; seals&required != required {
		return fail(fmt.Sprintf("seals %#x lack write, shrink or grow", seals))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fail("stat failed")
	}
	if uint64(st.Size) != uint64(h.len) {
		return fail(fmt.Sprintf("%d bytes, the handle says %d", st.Size, h.len))
	}
	mapFD := fd
	if reopened, err := syscall.Open(fmt.Sprintf("/proc/self/fd/%d", fd), syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
		defer syscall.Close(reopened)
		mapFD = reopened
	}
	mapping, err := syscall.Mmap(mapFD, 0, int(h.len), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return fail("map failed: " + err.Error())
	}
	if found := crc32.ChecksumIEEE(mapping); found != h.crc {
		syscall.Munmap(mapping)
		return fail(fmt.Sprintf("crc32 %08x, the handle says %08x", found, h.crc))
	}
	return mapping, nil
}
