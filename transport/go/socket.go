package shmbridge

// The socket primitives every message goes through: what a socket name stands for, connecting to
// a SOCK_SEQPACKET socket, and sending or receiving one whole message with at most one descriptor
// (SCM_RIGHTS).

import (
	"strings"
	"syscall"
	"time"
)

// isSocketPath tells whether name is a socket file (it holds a '/': /run/shmbridge/users.sock,
// ./users.sock) rather than an abstract socket, the rule of transport/src/fdpass/socket.rs. A
// path reaches a producer in another network namespace through a directory both see; an
// abstract name does not cross network namespaces.
func isSocketPath(name string) bool {
	return strings.Contains(name, "/")
}

// displaySocket is name as people read it: an abstract name with its conventional '@', a path as
// it is.
func displaySocket(name string) string {
	if isSocketPath(name) {
		return name
	}
	return "@" + name
}

// socketAddress is the address name stands for (isSocketPath).
func socketAddress(name string) *syscall.SockaddrUnix {
	switch {
	case !isSocketPath(name):
		// A leading '@' makes Go's SockaddrUnix an abstract name.
		return &syscall.SockaddrUnix{Name: "@" + name}
	case strings.HasPrefix(name, "@"):
		// A relative path: the same file, without the '@' Go would take for abstract.
		return &syscall.SockaddrUnix{Name: "./" + name}
	}
	return &syscall.SockaddrUnix{Name: name}
}

// connectSeqpacket connects to the socket name stands for, with connecting bounded by timeout
// (a Unix connect waits while the listener's backlog is full, for at most SO_SNDTIMEO).
func connectSeqpacket(name string, timeout time.Duration) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := setTimeout(fd, syscall.SO_SNDTIMEO, timeout); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Connect(fd, socketAddress(name)); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// setTimeout sets SO_SNDTIMEO or SO_RCVTIMEO; zero means wait forever, as for the socket option.
func setTimeout(fd, option int, timeout time.Duration) error {
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	if timeout > 0 && tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1
	}
	return syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, option, &tv)
}

// sendMessage sends b as one message, failing rather than raising SIGPIPE when the peer is gone.
func sendMessage(fd int, b []byte) error {
	return syscall.Sendmsg(fd, b, nil, nil, syscall.MSG_NOSIGNAL)
}

// message is one received message: how many bytes of the buffer it filled, and the descriptor it
// carried, or -1.
type message struct {
	n  int
	fd int
}

// receiveMessage receives one message into buf, with room for one descriptor, which arrives
// close-on-exec. A message whose descriptors did not fit, or that carried more than one, is a
// protocol error, and every descriptor that did arrive is closed. n == 0 is the peer closing.
func receiveMessage(fd int, buf []byte) (message, error) {
	oob := make([]byte, syscall.CmsgSpace(4))
	for {
		n, oobn, flags, _, err := syscall.Recvmsg(fd, buf, oob, syscall.MSG_CMSG_CLOEXEC)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return message{fd: -1}, err
		}
		fds, parseErr := receivedFDs(oob[:oobn])
		switch {
		case parseErr != nil:
			closeAll(fds)
			return message{fd: -1}, &ProtocolError{Reason: "unreadable control message"}
		case flags&syscall.MSG_CTRUNC != 0:
			closeAll(fds)
			return message{fd: -1}, &ProtocolError{Reason: "descriptors truncated (MSG_CTRUNC)"}
		case flags&syscall.MSG_TRUNC != 0:
			closeAll(fds)
			return message{fd: -1}, &ProtocolError{Reason: "a message longer than any frame"}
		case len(fds) > 1:
			closeAll(fds)
			return message{fd: -1}, &ProtocolError{Reason: "more than one descriptor on a message"}
		case len(fds) == 1:
			return message{n: n, fd: fds[0]}, nil
		}
		return message{n: n, fd: -1}, nil
	}
}

func receivedFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	messages, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range messages {
		rights, err := syscall.ParseUnixRights(&messages[i])
		if err != nil {
			return fds, err
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}
