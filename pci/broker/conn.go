package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// packetConn is one end of a SOCK_SEQPACKET session socket, used with
// blocking system calls rather than Go's netpoller: a blocked reader is
// woken by the kernel directly, which takes a scheduler hop out of every
// round trip (measured by `dmsandbox broker bench`). The cost is one
// thread per waiting session — one per domain. It owns the file.
//
// Close must not race a blocked Recv (closing an fd does not wake a
// reader): another goroutine calls Shutdown, the reader sees EOF and
// closes.
type packetConn struct {
	f   *os.File
	fd  int
	oob []byte // Recv's control-message buffer (one reader at a time)
}

func newPacketConn(f *os.File) *packetConn {
	// Fd puts the file in blocking mode, which is what we want.
	return &packetConn{f: f, fd: int(f.Fd()), oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred))}
}

// passCred asks the kernel to attach the sender's credentials to every
// frame received (SO_PASSCRED): who sent a request is then known per
// frame, from the kernel, whoever the fd was handed to.
func (c *packetConn) passCred() error {
	return unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}

// Recv reads one frame; a frame longer than buf is cut to len(buf).
// io.EOF when the peer hung up. cred is the sender's, when passCred is on.
func (c *packetConn) Recv(buf []byte) (n int, cred *unix.Ucred, err error) {
	oob := c.oob
	for {
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, nil, fmt.Errorf("broker: session receive: %w", err)
		case n == 0:
			return 0, nil, io.EOF
		}
		if oobn > 0 {
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for i := range msgs {
					if uc, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
						cred = uc
					}
				}
			}
		}
		return n, cred, nil
	}
}

// Send writes one frame. MSG_NOSIGNAL: a peer that hung up is an error,
// not a SIGPIPE.
func (c *packetConn) Send(b []byte) error {
	for {
		err := unix.Sendmsg(c.fd, b, nil, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("broker: session send: %w", err)
		}
		return nil
	}
}

// Shutdown wakes a blocked Recv with EOF.
func (c *packetConn) Shutdown() { unix.Shutdown(c.fd, unix.SHUT_RDWR) }

// Close closes the socket.
func (c *packetConn) Close() error { return c.f.Close() }

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
