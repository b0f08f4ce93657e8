package qmpproxy

import (
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// libxl passes fds with some commands (SCM_RIGHTS): `xl cd-insert` opens
// the new medium and sends it with add-fd, then names /dev/fdset/N in
// blockdev-change-medium. The proxy receives them on the client
// connection and sends each on to QEMU with the add-fd or getfd it came
// with, and only if it is a regular file or a block device: never a
// directory (openat would reach the host's tree), socket or device node.

// maxQueuedFDs bounds the fds a client may have in flight.
const maxQueuedFDs = 4

// fdConn reads a unix stream connection and keeps the fds that arrive
// with it, in order.
type fdConn struct {
	c   *net.UnixConn
	mu  sync.Mutex
	fds []*os.File
}

func (r *fdConn) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4*maxQueuedFDs))
	n, oobn, _, _, err := r.c.ReadMsgUnix(p, oob)
	if n < 0 { // on error, ReadMsgUnix may report -1
		n = 0
	}
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				r.mu.Lock()
				if len(r.fds) < maxQueuedFDs {
					r.fds = append(r.fds, os.NewFile(uintptr(fd), "client-fd"))
				} else {
					unix.Close(fd)
				}
				r.mu.Unlock()
			}
		}
	}
	return n, err
}

// take returns the oldest queued fd (nil if none); the caller owns it.
func (r *fdConn) take() *os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fds) == 0 {
		return nil
	}
	f := r.fds[0]
	r.fds = r.fds[1:]
	return f
}

// drop closes every queued fd.
func (r *fdConn) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.fds {
		f.Close()
	}
	r.fds = nil
}

// fdCommands carry an fd from libxl to QEMU.
var fdCommands = map[string]bool{"add-fd": true, "getfd": true}

// attachClientFD gives p the fd its client sent with it, after checking
// what it is; an fd sent with any other command is closed. It returns an
// error reply when the fd is refused.
func (s *session) attachClientFD(p *pending) []byte {
	if s.cfds == nil {
		return nil
	}
	if !fdCommands[p.cmd.Execute] {
		s.cfds.drop()
		return nil
	}
	f := s.cfds.take()
	if f == nil {
		return nil // QEMU answers "No file descriptor supplied"
	}
	st, err := f.Stat()
	if err != nil || !(st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0) {
		f.Close()
		s.p.cfg.Log("qmp proxy: domain %d: refused an fd passed with %s (%v)", s.p.cfg.Domid, p.cmd.Execute, st.Mode())
		return errorReply(p.cmd.ID, fmt.Sprintf("%s: only regular files and block devices are passed to QEMU", p.cmd.Execute))
	}
	p.file = f
	return nil
}
