package shmbridge

// The control channel's consumer end: one connection to a producer, requests in flight matched
// to their answers by id, answers redeemed into verified bodies, abandoned publications released.

import (
	"context"
	"sync"
	"syscall"
	"time"
)

// Options tunes a Client; the zero value is usable.
type Options struct {
	// ConnectTimeout bounds connecting and the greeting (default 2 s).
	ConnectTimeout time.Duration
	// Timeout is a request's deadline when its context has none (default 2 s).
	Timeout time.Duration
	// Lease is how long a slot being read may stay READING before the producer's reaper takes it
	// back (default 1 s).
	Lease time.Duration
	// TrustedUIDs are uids besides this process's own that a producer may run as.
	TrustedUIDs []uint32
}

func (o Options) withDefaults() Options {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = time.Second
	}
	return o
}

// Response is a producer's answer: its head, the tier its body travelled in, and the body,
// verified against the crc32 the producer computed. A sealed body is the read-only mapping of the
// producer's sealed memfd itself, valid until Close; call Close when done with any Response.
type Response struct {
	Head
	Tier Tier
	Body []byte
	// CRC32 is the body's crc32 (IEEE), as the producer computed it and this side checked it.
	CRC32 uint32

	mapping []byte
}

// Close releases the body's memory (unmaps a sealed body); Body must not be used afterwards.
func (r *Response) Close() error {
	if r.mapping == nil {
		return nil
	}
	mapping := r.mapping
	r.mapping, r.Body = nil, nil
	return syscall.Munmap(mapping)
}

// Client is one attached control channel. It is safe for concurrent use.
type Client struct {
	options    Options
	seg        *segment
	readerDone chan struct{}

	// life guards the socket and the mapping: every use holds it shared, Close exclusively,
	// so that neither is closed or unmapped under a request.
	life   sync.RWMutex
	fd     int
	closed bool

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan delivery
	failure error // set once the channel is gone: every later request fails with it
}

// delivery is what the reader hands a waiting request: an answer and its descriptor, or why
// there will be none.
type delivery struct {
	answer answer
	fd     int
	err    error
}

// Connect attaches to the producer listening on socketName: a socket file when the name holds a
// '/' (/run/shmbridge/users.sock, which reaches a producer in another network namespace through a
// directory both see), else an abstract socket (@socketName). The client holds slots under the
// name the producer's reaper knows this process by, whatever PID namespace either runs in.
func Connect(socketName string, options Options) (*Client, error) {
	options = options.withDefaults()
	fd, seg, err := attach(socketName, options.ConnectTimeout, options.TrustedUIDs)
	if err != nil {
		return nil, err
	}
	c := &Client{
		options:    options,
		seg:        seg,
		fd:         fd,
		pending:    make(map[uint64]chan delivery),
		readerDone: make(chan struct{}),
	}
	go c.read()
	return c, nil
}

// Close ends the channel: requests in flight fail with ErrClosed, the socket is closed and the
// segment unmapped once no request uses them. Bodies already returned stay valid.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	// Wakes the reader's blocking receive with end-of-file.
	syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	<-c.readerDone
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.seg.close()
	return syscall.Close(c.fd)
}

// Err is why the channel is gone (ErrClosed, or the protocol error that ended it), or nil while
// it is usable.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failure
}

// Do sends request (opaque to the channel; for an HTTP service, see Transport) and returns the
// verified response. The deadline is ctx's, or Options.Timeout from now; it travels to the
// producer, which refuses a request it reads too late.
func (c *Client) Do(ctx context.Context, request []byte) (*Response, error) {
	if len(request) > MaxRequestLen {
		return nil, &RefusedError{Code: RefusedRequestTooLarge, Detail: MaxRequestLen}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.options.Timeout)
	}
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return nil, ErrTimeout
	}
	id, answered, err := c.register()
	if err != nil {
		return nil, err
	}
	frame := encodePublish(id, monotonicNow()+uint64(remaining), request)
	if err := c.send(frame); err != nil {
		c.forget(id)
		return nil, err
	}
	timer := time.NewTimer(remaining)
	defer timer.Stop()
	select {
	case d := <-answered:
		return c.redeem(d)
	case <-timer.C:
		c.abandon(id, answered)
		return nil, ErrTimeout
	case <-ctx.Done():
		c.abandon(id, answered)
		if ctx.Err() == context.DeadlineExceeded {
			return nil, ErrTimeout
		}
		return nil, ctx.Err()
	}
}

func (c *Client) register() (uint64, chan delivery, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failure != nil {
		return 0, nil, c.failure
	}
	c.nextID++
	answered := make(chan delivery, 1)
	c.pending[c.nextID] = answered
	return c.nextID, answered, nil
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// abandon gives up a request: the reader releases a publication that arrives for it later, and
// one that arrived just now is released here.
func (c *Client) abandon(id uint64, answered chan delivery) {
	c.forget(id)
	select {
	case d := <-answered:
		c.discard(d)
	default:
	}
}

// discard releases what an answer nobody will redeem holds: its slot or ticket, its descriptor.
func (c *Client) discard(d delivery) {
	if d.fd >= 0 {
		syscall.Close(d.fd)
	}
	if d.err == nil && d.answer.refusal == nil && d.answer.tier != TierInline {
		h := d.answer.handle
		// Best effort: if the frame cannot go, the producer's TTL frees the slot.
		_ = c.send(encodeRelease(d.answer.id, h.slot, h.generation))
	}
}

func (c *Client) send(frame []byte) error {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if err := sendMessage(c.fd, frame); err != nil {
		if err == syscall.EAGAIN {
			return ErrTimeout
		}
		c.fail(ErrClosed)
		return ErrClosed
	}
	return nil
}

// fail ends the channel for every request in flight and every later one.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failure == nil {
		c.failure = err
	}
	for id, answered := range c.pending {
		answered <- delivery{fd: -1, err: c.failure}
		delete(c.pending, id)
	}
}

// read receives answers until the channel ends, handing each to its request, or releasing it
// when its request was abandoned. A frame that breaks the specification ends the channel.
func (c *Client) read() {
	defer close(c.readerDone)
	buf := make([]byte, maxAnswerFrameLen+1)
	for {
		msg, err := receiveMessage(c.fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || msg.n == 0 {
			if msg.fd >= 0 {
				syscall.Close(msg.fd)
			}
			if _, isProtocol := err.(*ProtocolError); isProtocol {
				c.fail(err)
			} else {
				c.fail(ErrClosed)
			}
			return
		}
		d, err := c.decode(buf[:msg.n], msg.fd)
		if err != nil {
			if msg.fd >= 0 {
				syscall.Close(msg.fd)
			}
			c.fail(err)
			syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
			return
		}
		c.mu.Lock()
		answered, waiting := c.pending[d.answer.id]
		delete(c.pending, d.answer.id)
		c.mu.Unlock()
		if waiting {
			answered <- d
		} else {
			c.discard(d)
		}
	}
}

// decode checks an answer against the specification's rules for descriptors and tiers, and
// copies an inline body out of the shared receive buffer.
func (c *Client) decode(b []byte, fd int) (delivery, error) {
	a, err := decodeAnswer(b)
	if err != nil {
		return delivery{}, err
	}
	sealed := a.refusal == nil && a.tier == TierSealed
	switch {
	case sealed && fd < 0:
		return delivery{}, protocolError("a sealed answer without its descriptor")
	case !sealed && fd >= 0:
		return delivery{}, protocolError("a descriptor on a frame that carries none")
	case a.refusal != nil:
	case a.tier == TierSlot && a.handle.len > c.seg.header.slotSize:
		return delivery{}, protocolError("a slot answer of %d bytes, above the slot size", a.handle.len)
	}
	a.inline = append([]byte(nil), a.inline...)
	return delivery{answer: a, fd: fd}, nil
}
