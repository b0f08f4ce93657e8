package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A guest's serial port under libxl is a pty (serial="pty"): QEMU opens
// one and libxl publishes its name for `xl console`. In the sandbox QEMU
// has no devpts the host can see and no tty ioctls, so DM mode makes the
// pty in the host's devpts itself and relays it to QEMU over a connected
// socket pair (dmargv's -chardev socket,fd=N):
//
//	xl console ── /dev/pts/M (slave) ── master ◀─relay─▶ socket ── QEMU serial0
//
// Guest output is dropped while nobody reads the slave and its buffer is
// full, as QEMU's own pty backend drops it while disconnected: a guest
// never stalls on its console.

// ptyRelay copies between QEMU's socket and the host pty master. It owns
// both files and closes them on close.
type ptyRelay struct {
	master, sock *os.File
	dropped      uint64
}

// newPTYRelay makes the host pty and the socket pair; it returns the
// relay, the slave (held open so the master never sees a hangup), the
// slave's path, and QEMU's end of the socket pair.
func newPTYRelay() (*ptyRelay, *os.File, string, *os.File, error) {
	master, slave, path, err := openPTY()
	if err != nil {
		return nil, nil, "", nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		master.Close()
		slave.Close()
		return nil, nil, "", nil, fmt.Errorf("pty relay: socketpair: %w", err)
	}
	r := &ptyRelay{master: master, sock: os.NewFile(uintptr(fds[0]), "pty-relay")}
	qemu := os.NewFile(uintptr(fds[1]), "pty-qemu")
	go r.toPTY()
	go r.fromPTY()
	return r, slave, path, qemu, nil
}

// toPTY: guest output, QEMU → console. A write the pty cannot take now is
// dropped, never waited for.
func (r *ptyRelay) toPTY() {
	buf := make([]byte, 4096)
	rc, err := r.master.SyscallConn()
	if err != nil {
		return
	}
	for {
		n, err := r.sock.Read(buf)
		if err != nil {
			return
		}
		data := buf[:n]
		werr := rc.Write(func(fd uintptr) bool {
			for len(data) > 0 {
				w, err := unix.Write(int(fd), data)
				if err != nil {
					r.dropped += uint64(len(data))
					return true // EAGAIN included: drop, do not wait
				}
				data = data[w:]
			}
			return true
		})
		if werr != nil {
			return
		}
	}
}

// fromPTY: console input, console → QEMU.
func (r *ptyRelay) fromPTY() {
	buf := make([]byte, 4096)
	for {
		n, err := r.master.Read(buf)
		if err != nil {
			return
		}
		if _, err := r.sock.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (r *ptyRelay) close() {
	r.sock.Close()
	r.master.Close()
}
