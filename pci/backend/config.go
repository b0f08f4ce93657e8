package backend

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dmsandbox/dmsandbox/pci"
)

// SysfsConfig reads and writes config space through the device's sysfs
// `config` file, as QEMU's xen-host-pci-device.c does. The xen and vfio
// backends share it. Offsets and sizes were checked by the broker.
type SysfsConfig struct{ Sysfs *pci.Sysfs }

func (c SysfsConfig) path(b pci.BDF) string { return filepath.Join(c.Sysfs.DevicePath(b), "config") }

// Read reads size (1, 2, 4) bytes at off.
func (c SysfsConfig) Read(dev *pci.Device, off, size int) (uint32, error) {
	f, err := os.Open(c.path(dev.BDF))
	if err != nil {
		return 0, fmt.Errorf("config %s: %w", dev.BDF, err)
	}
	defer f.Close()
	var b [4]byte
	if n, err := f.ReadAt(b[:size], int64(off)); n != size {
		return 0, fmt.Errorf("config %s at %#x: read %d of %d: %w", dev.BDF, off, n, size, err)
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// Write writes size bytes of val at off in one pwrite (the kernel turns
// a 1/2/4-byte aligned write into one config cycle).
func (c SysfsConfig) Write(dev *pci.Device, off, size int, val uint32) error {
	f, err := os.OpenFile(c.path(dev.BDF), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("config %s: %w", dev.BDF, err)
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], val)
	if n, err := f.WriteAt(b[:size], int64(off)); n != size {
		return fmt.Errorf("config %s at %#x: wrote %d of %d: %w", dev.BDF, off, n, size, err)
	}
	return nil
}
