// Package backend defines what executes a request once the broker's
// policy has allowed it. Implementations: xen (libxenctrl through cgo,
// build tag xen), vfio (KVM deployments: device binding and grants, no
// hypercalls) and fake (recording, for tests; refused by a production
// broker).
//
// A backend trusts its arguments: every check against device truth has
// been done by the broker before a call. A backend is only ever called
// with the broker's session lock held, one call at a time per session;
// different sessions may call concurrently.
package backend

import (
	"errors"

	"github.com/dmsandbox/dmsandbox/pci"
)

// Grant says who may use a device once assigned: the sandbox's uid/gid
// (vfio chowns the group node to them), the device model's pid and how
// much guest memory it will pin (vfio raises its RLIMIT_MEMLOCK).
type Grant struct {
	UID          int    `json:"uid"`
	GID          int    `json:"gid"`
	QEMUPid      int    `json:"qemu_pid,omitempty"`
	MemlockBytes uint64 `json:"memlock_bytes,omitempty"`
}

// Backend executes allowed requests. Methods mirror the libxenctrl calls
// QEMU's xen_pt code makes; a backend that has no such notion (vfio)
// returns ErrUnsupported.
type Backend interface {
	// Name is "xen", "vfio" or "fake".
	Name() string

	// Assign takes dev out of quarantine for domain dom: xen grants the
	// iomem/ioport/irq permissions libxl grants; vfio binds vfio-pci and
	// grants the group node. Release undoes Assign and returns the device
	// to quarantine; it must succeed on a half-assigned device.
	Assign(dom uint32, dev *pci.Device, g Grant) error
	Release(dom uint32, dev *pci.Device) error
	// Reset resets the device with the first method that applies. opt
	// says which domain holds it and who holds its neighbours (a bus
	// reset hits them too); the broker fills it in.
	Reset(dev *pci.Device, opt pci.ResetOptions) error

	ConfigRead(dev *pci.Device, off, size int) (uint32, error)
	ConfigWrite(dev *pci.Device, off, size int, val uint32) error

	MemoryMapping(dom uint32, gfn, mfn, nr uint64, add bool) error
	IoportMapping(dom uint32, gport, mport, nr uint32, add bool) error
	// MapPirq maps a host GSI; pirq < 0 lets the hypervisor choose.
	MapPirq(dom uint32, gsi, pirq int) (int, error)
	// MapPirqMSI maps MSI (tableBase 0) or MSI-X entry of dev.
	MapPirqMSI(dom uint32, dev *pci.Device, pirq, entry int, tableBase uint64) (int, error)
	UnmapPirq(dom uint32, pirq int) error
	BindPtPciIrq(dom uint32, pirq int, bus, device, intx uint8) error
	UnbindPtIrq(dom uint32, pirq int, bus, device, intx uint8) error
	UpdateMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32, gtable uint64) error
	UnbindMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32) error

	// Close releases the backend's handles (xc_interface...).
	Close() error
}

// ErrUnsupported: the backend has no such operation (vfio has no
// hypercalls); the broker replies EOPNOTSUPP.
var ErrUnsupported = errors.New("operation not supported by this backend")
