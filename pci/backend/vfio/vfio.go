// Package vfio is the broker backend of KVM/VFIO deployments and of the
// passthrough test rigs: there are no hypercalls to mediate (QEMU maps
// BARs and wires interrupts itself through the VFIO device fd), so the
// broker's job is the device lifecycle — bind to vfio-pci, grant the
// group node to the sandbox's uid, size the device model's locked-memory
// limit to the guest's RAM, reset, and take the grant back.
//
// The Xen passthrough operations return backend.ErrUnsupported.
package vfio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"golang.org/x/sys/unix"
)

// Options configure the backend.
type Options struct {
	Sysfs *pci.Sysfs
	// DevRoot is where /dev lives ("/" in production; tests use a tree).
	DevRoot string
	// StateDir holds the pci binding records (pci.DefaultStateDir).
	StateDir string
	Deny     pci.DenyList
	// Prlimit sets RLIMIT_MEMLOCK of a pid; nil means the prlimit(2)
	// syscall. Tests record instead: their pid is not a device model.
	Prlimit func(pid int, bytes uint64) error
}

// Backend is the vfio backend.
type Backend struct {
	o      Options
	binder *pci.Binder
}

// New returns a vfio backend.
func New(o Options) (*Backend, error) {
	if o.Sysfs == nil {
		return nil, errors.New("vfio backend: no sysfs")
	}
	if o.DevRoot == "" {
		o.DevRoot = "/"
	}
	if o.StateDir == "" {
		o.StateDir = pci.DefaultStateDir
	}
	if o.Prlimit == nil {
		o.Prlimit = prlimitMemlock
	}
	return &Backend{o: o, binder: &pci.Binder{Sysfs: o.Sysfs, State: pci.State{Dir: o.StateDir}, Deny: o.Deny}}, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "vfio" }

// GroupNode is /dev/vfio/<group> of dev.
func (b *Backend) GroupNode(dev *pci.Device) (string, error) {
	if dev.IOMMUGroup < 0 {
		return "", fmt.Errorf("vfio backend: %s is in no IOMMU group: %w", dev.BDF, pci.ErrRefused)
	}
	return filepath.Join(b.o.DevRoot, "dev", "vfio", strconv.Itoa(dev.IOMMUGroup)), nil
}

// Nodes are the device nodes the sandbox needs for dev, for the
// launcher (the only cgroup writer) to bind into the sandbox and allow in
// its device cgroup: the VFIO container node and the group node.
func (b *Backend) Nodes(dev *pci.Device) ([]string, error) {
	g, err := b.GroupNode(dev)
	if err != nil {
		return nil, err
	}
	return []string{filepath.Join(b.o.DevRoot, "dev", "vfio", "vfio"), g}, nil
}

// Assign binds dev to vfio-pci (pci.Binder: deny list, group viability,
// the original driver recorded), then, in this order: raises the device
// model's RLIMIT_MEMLOCK (VFIO pins all guest RAM; the 8 MiB default
// fails VFIO_MAP_DMA with ENOMEM) and only then hands the group node to
// the sandbox uid, so the sandbox never holds a device it cannot use.
func (b *Backend) Assign(dom uint32, dev *pci.Device, g backend.Grant) error {
	if _, err := b.binder.Add(dev.BDF, pci.StubVFIO); err != nil {
		return fmt.Errorf("vfio backend: bind %s: %w", dev.BDF, err)
	}
	node, err := b.GroupNode(dev)
	if err != nil {
		return err
	}
	if g.QEMUPid > 0 && g.MemlockBytes > 0 {
		if err := b.o.Prlimit(g.QEMUPid, g.MemlockBytes); err != nil {
			return fmt.Errorf("vfio backend: RLIMIT_MEMLOCK of pid %d for %s: %w", g.QEMUPid, dev.BDF, err)
		}
	}
	if g.UID <= 0 {
		return fmt.Errorf("vfio backend: %s: refusing to grant %s to uid %d (the sandbox runs unprivileged)", dev.BDF, node, g.UID)
	}
	if err := os.Chown(node, g.UID, g.GID); err != nil {
		return fmt.Errorf("vfio backend: grant %s: %w", node, err)
	}
	if err := os.Chmod(node, 0o600); err != nil {
		return fmt.Errorf("vfio backend: grant %s: %w", node, err)
	}
	return nil
}

// Release takes the group node back (root, 0600). The device stays on
// vfio-pci: that is quarantine; `dmsandbox pci` gives it back to its
// host driver.
func (b *Backend) Release(dom uint32, dev *pci.Device) error {
	node, err := b.GroupNode(dev)
	if err != nil {
		return err
	}
	if err := os.Chown(node, 0, 0); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("vfio backend: take back %s: %w", node, err)
	}
	if err := os.Chmod(node, 0o600); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("vfio backend: take back %s: %w", node, err)
	}
	return nil
}

// Reset resets with the pci package's order (FLR, PM, then a bus reset
// only when no other active device shares the bus). A bus reset is the
// kernel's secondary bus reset, which is what VFIO_DEVICE_PCI_HOT_RESET
// performs for a single-device bus.
func (b *Backend) Reset(dev *pci.Device, opt pci.ResetOptions) error {
	if _, err := b.o.Sysfs.Reset(dev.BDF, opt); err != nil {
		return fmt.Errorf("vfio backend: %w", err)
	}
	return nil
}

// ConfigRead implements backend.Backend.
func (b *Backend) ConfigRead(dev *pci.Device, off, size int) (uint32, error) {
	return b.o.Sysfs.ReadConfigReg(dev.BDF, off, size)
}

// ConfigWrite implements backend.Backend.
func (b *Backend) ConfigWrite(dev *pci.Device, off, size int, val uint32) error {
	return b.o.Sysfs.WriteConfigReg(dev.BDF, off, size, val)
}

func prlimitMemlock(pid int, bytes uint64) error {
	lim := unix.Rlimit{Cur: bytes, Max: bytes}
	return unix.Prlimit(pid, unix.RLIMIT_MEMLOCK, &lim, nil)
}

// The Xen passthrough calls have no VFIO meaning.

func (b *Backend) MemoryMapping(uint32, uint64, uint64, uint64, bool) error {
	return backend.ErrUnsupported
}
func (b *Backend) IoportMapping(uint32, uint32, uint32, uint32, bool) error {
	return backend.ErrUnsupported
}
func (b *Backend) MapPirq(uint32, int, int) (int, error) { return -1, backend.ErrUnsupported }
func (b *Backend) MapPirqMSI(uint32, *pci.Device, int, int, uint64) (int, error) {
	return -1, backend.ErrUnsupported
}
func (b *Backend) UnmapPirq(uint32, int) error                         { return backend.ErrUnsupported }
func (b *Backend) BindPtPciIrq(uint32, int, uint8, uint8, uint8) error { return backend.ErrUnsupported }
func (b *Backend) UnbindPtIrq(uint32, int, uint8, uint8, uint8) error  { return backend.ErrUnsupported }
func (b *Backend) UpdateMsiIrq(uint32, uint32, int, uint32, uint64) error {
	return backend.ErrUnsupported
}
func (b *Backend) UnbindMsiIrq(uint32, uint32, int, uint32) error { return backend.ErrUnsupported }

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }

var _ backend.Backend = (*Backend)(nil)
