package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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
	return &packetConn{f: f, fd: int(f.Fd()), oob: make([]byte, oobSize)}
}

// oobSize holds the sender's credentials and one fd (an open_file reply)
// with room for a few more, so a peer that sends extra fds has them
// delivered, and closed, rather than cut off unseen.
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4*4)

// passCred asks the kernel to attach the sender's credentials to every
// frame received (SO_PASSCRED): who sent a request is then known per
// frame, from the kernel, whoever the fd was handed to.
func (c *packetConn) passCred() error {
	return unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}

// Recv reads one frame; a frame longer than buf is cut to len(buf).
// io.EOF when the peer hung up. cred is the sender's, when passCred is on.
// Any fd that came with the frame is closed: the broker takes no fds, and
// a client that did not ask for one must not collect them.
func (c *packetConn) Recv(buf []byte) (n int, cred *unix.Ucred, err error) {
	n, cred, fds, err := c.recv(buf)
	closeFds(fds)
	return n, cred, err
}

// RecvFile reads one frame and the fd it carries, if any (an open_file
// reply); extra fds are closed. name names the *os.File.
func (c *packetConn) RecvFile(buf []byte, name string) (int, *os.File, error) {
	n, _, fds, err := c.recv(buf)
	if err != nil || len(fds) == 0 {
		closeFds(fds)
		return n, nil, err
	}
	closeFds(fds[1:])
	return n, os.NewFile(uintptr(fds[0]), name), nil
}

func (c *packetConn) recv(buf []byte) (n int, cred *unix.Ucred, fds []int, err error) {
	oob := c.oob
	for {
		// MSG_CMSG_CLOEXEC: a received fd never leaks into an exec.
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, nil, nil, fmt.Errorf("broker: session receive: %w", err)
		}
		if oobn > 0 {
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for i := range msgs {
					if uc, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
						cred = uc
					} else if rights, err := unix.ParseUnixRights(&msgs[i]); err == nil {
						fds = append(fds, rights...)
					}
				}
			}
		}
		if n == 0 {
			closeFds(fds)
			return 0, nil, nil, io.EOF
		}
		return n, cred, fds, nil
	}
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Send writes one frame. MSG_NOSIGNAL: a peer that hung up is an error,
// not a SIGPIPE.
func (c *packetConn) Send(b []byte) error { return c.SendFile(b, nil) }

// SendFile writes one frame carrying f (when not nil) as SCM_RIGHTS on
// the same datagram, so the fd and its reply arrive together or not at
// all. The caller still owns f and closes its copy.
func (c *packetConn) SendFile(b []byte, f *os.File) error {
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	for {
		err := unix.Sendmsg(c.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		runtime.KeepAlive(f)
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
