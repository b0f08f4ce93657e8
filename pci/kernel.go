package pci

import (
	"bytes"
	"fmt"
	"os"
	"time"
)

// Kernel is the seam through which this package changes the host: every
// write to a sysfs attribute or to config space goes through it. The
// production implementation writes the files; tests use a fake that
// records writes and plays the kernel's part on a captured tree.
type Kernel interface {
	// WriteAttr writes data to a sysfs text attribute (driver_override,
	// unbind, drivers_probe, reset_method, reset...).
	WriteAttr(path string, data []byte) error
	// WriteConfig writes data into a config space file at off.
	WriteConfig(path string, off int64, data []byte) error
}

// realKernel writes the files. Attributes are opened without O_CREATE: an
// attribute that does not exist means the kernel does not offer the
// operation, and creating a regular file would silently do nothing.
type realKernel struct{}

func (realKernel) WriteAttr(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil {
		return werr // an *os.PathError: "write PATH: errno"
	}
	return cerr
}

func (realKernel) WriteConfig(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	n, werr := f.WriteAt(data, off)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %s at %#x: %w", path, off, werr)
	}
	if n != len(data) {
		return fmt.Errorf("write %s at %#x: short write %d of %d", path, off, n, len(data))
	}
	return cerr
}

func (s *Sysfs) kernel() Kernel {
	if s.Kernel == nil {
		return realKernel{}
	}
	return s.Kernel
}

// DefaultTimeout bounds one kernel write (a probe, an unbind, a reset):
// a driver's probe or remove, or a device that never comes back from a
// reset, can block the writer inside the kernel.
const DefaultTimeout = 10 * time.Second

// writeAttr writes a sysfs attribute through the Kernel, giving up after
// timeout. A write stuck in the kernel cannot be cancelled: the goroutine
// stays blocked until the kernel returns, and the caller gets ErrTimeout
// and must treat the device as in an unknown state.
func (s *Sysfs) writeAttr(path string, data []byte, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	done := make(chan error, 1)
	k := s.kernel()
	go func() { done <- k.WriteAttr(path, data) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("write %q to %s: no answer after %v: %w", bytes.TrimSpace(data), path, timeout, ErrTimeout)
	}
}
