// Package shmbridge is a consumer of shmbridge, written in Go with the standard library only,
// from the two written specifications every peer implements: the segment layout
// (transport/src/layout.rs) and the control channel (transport/src/control/frame/mod.rs, with
// the greeting in transport/src/fdpass/greeting.rs and the HTTP request convention in
// transport/src/http.rs). It links no Rust: it is the second, independent reading of those
// specifications.
//
// A Client attaches to a producer through its Unix socket: an abstract name, or a path when the
// name holds a '/' (containers that share a directory but no network namespace). The greeting
// hands it the segment's descriptor and says how the producer sees this process; the client holds
// slots under that name, so that the producer's reaper judges it rightly from another PID
// namespace too (by its lease alone where the producer cannot see it). The client checks that the
// producer runs on its clock and is the segment's creator, running as a trusted uid, and the
// connection stays open as the control channel. Client.Do sends an opaque request with a deadline
// and returns the producer's response head and the body, verified, from whichever tier the
// producer chose: inline in the answer, a slot of the segment, or a sealed memfd. Every refusal
// and every failed check is a typed error (see errors.go); a request whose deadline passes is
// abandoned, and a publication that arrives for it later is released.
//
// Transport wraps a Client as an http.RoundTripper, so httputil.ReverseProxy or any http.Client
// can fetch over shared memory unchanged.
//
// # Reading shared memory from Go
//
// The state word of a slot is read and changed only with sync/atomic on the mapping (Go's atomics
// are sequentially consistent, at least as strong as the acquire/release pairs the layout asks
// for). A slot's payload is another matter: a producer paused mid-write, then reclaimed, may still
// be writing into it while this process copies it out, and Go's memory model has no word for a
// racing copy of memory another process writes. So the copy is made safe by what is done with it,
// not by how it is read: the payload is copied once, with copy(), into a private buffer that no
// other process can reach; the crc32 is computed over that private copy and compared with the
// handle's (not the segment's); and the slot is released with a compare-and-swap that fails if the
// slot was reclaimed during the copy. Only a private copy that passed both checks is returned.
// The mapping holds no Go pointers, so a torn read yields wrong bytes at worst, which the crc
// rejects, never a corrupted Go heap. A sealed body needs no copy: the kernel forbids every write
// to a sealed memfd, so the crc checked over its read-only mapping holds for every later read.
package shmbridge
