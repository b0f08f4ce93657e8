package seccomp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelLog follows /dev/kmsg from the moment it is opened, so a caller can
// collect the seccomp records a run produced (and nothing older).
//
// KernelLog owns its fd; Close releases it.
type KernelLog struct {
	f *os.File
}

// OpenKernelLog opens /dev/kmsg (root, or kernel.dmesg_restrict=0) and
// skips the records already there.
func OpenKernelLog() (*KernelLog, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kmsg: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/dev/kmsg")
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek /dev/kmsg: %w", err)
	}
	return &KernelLog{f: f}, nil
}

// ReadNew returns the message text of every record logged since the last
// call (or since OpenKernelLog).
func (k *KernelLog) ReadNew() ([]string, error) {
	var out []string
	buf := make([]byte, 8192) // a record never exceeds this (PRINTK_MESSAGE_MAX)
	for {
		n, err := unix.Read(int(k.f.Fd()), buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, nil
		case errors.Is(err, unix.EPIPE):
			continue // records overwritten before we read them; go on
		case err != nil:
			return out, fmt.Errorf("read /dev/kmsg: %w", err)
		case n == 0:
			return out, nil
		}
		// "prio,seq,usec,flags;text\n KEY=VALUE\n..."
		rec := string(buf[:n])
		if _, text, ok := strings.Cut(rec, ";"); ok {
			text, _, _ = strings.Cut(text, "\n")
			out = append(out, text)
		}
	}
}

// Close closes /dev/kmsg.
func (k *KernelLog) Close() error { return k.f.Close() }
