package pci

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// Single-register config space access: the one way dmsandbox reads or
// writes a device's config space register by register (the broker's
// config ops through its backends, the config-space resets). Writes go
// through the Kernel, so they are the package's seam like every other
// change to the host, and a fake kernel records them.
//
// An access is 1, 2 or 4 bytes, naturally aligned, inside the config
// space the kernel exposes (256 bytes, 4096 for PCIe): the kernel turns
// such an access into one config cycle, as QEMU's xen-host-pci-device
// expects. Anything else is refused before a file is opened.

// checkConfigReg validates an access against the config file's size.
func (s *Sysfs) checkConfigReg(b BDF, path string, off, size int) error {
	if size != 1 && size != 2 && size != 4 {
		return fmt.Errorf("pci %s: config access of %d bytes (want 1, 2 or 4): %w", b, size, ErrBadAccess)
	}
	if off < 0 || off%size != 0 {
		return fmt.Errorf("pci %s: config access of %d bytes at %#x is not aligned: %w", b, size, off, ErrBadAccess)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pci %s: %w", b, err)
	}
	if int64(off+size) > st.Size() {
		return fmt.Errorf("pci %s: config access at %#x past the %d-byte config space: %w", b, off, st.Size(), ErrBadAccess)
	}
	return nil
}

// ReadConfigReg reads size (1, 2, 4) bytes at off, little-endian, in one
// read of exactly those bytes (not the whole config space: on real
// hardware every dword read is a config cycle).
func (s *Sysfs) ReadConfigReg(b BDF, off, size int) (uint32, error) {
	path := filepath.Join(s.DevicePath(b), "config")
	if err := s.checkConfigReg(b, path, off, size); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("pci %s: %w", b, err)
	}
	defer f.Close()
	var buf [4]byte
	if n, err := f.ReadAt(buf[:size], int64(off)); n != size {
		return 0, fmt.Errorf("pci %s: config read at %#x: %d of %d bytes: %v: %w", b, off, n, size, err, ErrBadAccess)
	}
	return binary.LittleEndian.Uint32(buf[:]), nil
}

// WriteConfigReg writes the low size (1, 2, 4) bytes of val at off,
// little-endian, in one write through the Kernel. A val wider than size
// is refused rather than truncated.
func (s *Sysfs) WriteConfigReg(b BDF, off, size int, val uint32) error {
	path := filepath.Join(s.DevicePath(b), "config")
	if err := s.checkConfigReg(b, path, off, size); err != nil {
		return err
	}
	if size < 4 && val>>(8*size) != 0 {
		return fmt.Errorf("pci %s: config write of %#x wider than %d bytes: %w", b, val, size, ErrBadAccess)
	}
	var buf [4]byte
	binary.LittleEndian.PutUint32(buf[:], val)
	if err := s.kernel().WriteConfig(path, int64(off), buf[:size]); err != nil {
		return fmt.Errorf("pci %s: %w", b, err)
	}
	return nil
}
