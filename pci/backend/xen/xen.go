//go:build xen

package xen

/*
#cgo LDFLAGS: -lxenctrl
#include <stdlib.h>
#include <xenctrl.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
)

// ErrNotBuilt is returned only by builds without the xen tag; it is
// defined here too so callers compile either way.
var ErrNotBuilt = errors.New("xen backend: not built in")

// Backend holds one xc_interface handle. libxenctrl handles are not
// documented as thread-safe, so calls are serialised.
type Backend struct {
	mu    sync.Mutex
	xch   *C.xc_interface // owned; closed by Close
	sysfs *pci.Sysfs
}

// New opens libxenctrl (needs /dev/xen/privcmd, i.e. dom0 root).
func New(sysfs *pci.Sysfs) (backend.Backend, error) {
	xch, err := C.xc_interface_open(nil, nil, 0)
	if xch == nil {
		return nil, fmt.Errorf("xen backend: xc_interface_open: %w", errOr(err))
	}
	return &Backend{xch: xch, sysfs: sysfs}, nil
}

func errOr(err error) error {
	if err == nil {
		return errors.New("failed without errno")
	}
	return err
}

// check turns a libxenctrl return into an error carrying errno (the
// broker forwards the errno to QEMU as xen_pt would have seen it).
func check(call string, rc C.int, err error) error {
	if rc < 0 {
		return fmt.Errorf("%s: %w", call, errOr(err))
	}
	return nil
}

func b2u(b bool) C.uint32_t {
	if b {
		return 1
	}
	return 0
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "xen" }

// Assign grants what libxl's pci_add_dm_done grants before QEMU touches
// the device: iomem permission for each memory BAR (and the ROM), ioport
// permission for each I/O BAR, irq permission for the GSI (dom0's pirq of
// a GSI is the GSI). The device must already be held by pciback
// (`dmsandbox pci assignable-add --to xen-pciback`): a device a dom0
// driver still drives must never be handed to a guest.
func (b *Backend) Assign(dom uint32, dev *pci.Device, g backend.Grant) error {
	if dev.Driver != pci.StubPciback.Driver() {
		return fmt.Errorf("xen backend: %s is on driver %q, not %s (make it assignable first): %w",
			dev.BDF, dev.Driver, pci.StubPciback.Driver(), pci.ErrRefused)
	}
	return b.permit(dom, dev, true)
}

// Release revokes the permissions Assign granted; the device stays bound
// to pciback (quarantine).
func (b *Backend) Release(dom uint32, dev *pci.Device) error {
	return b.permit(dom, dev, false)
}

func (b *Backend) permit(dom uint32, dev *pci.Device, allow bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	bars := append([]pci.BAR(nil), dev.BARs...)
	if dev.ROM != nil {
		bars = append(bars, *dev.ROM)
	}
	var errs []error
	for _, bar := range bars {
		if bar.IO {
			rc, err := C.xc_domain_ioport_permission(b.xch, C.uint32_t(dom), C.uint32_t(bar.Start), C.uint32_t(bar.Size), b2u(allow))
			errs = append(errs, check(fmt.Sprintf("xc_domain_ioport_permission %s BAR %d", dev.BDF, bar.Index), rc, err))
			continue
		}
		first := bar.Start >> 12
		nr := (bar.Start+bar.Size+0xfff)>>12 - first
		rc, err := C.xc_domain_iomem_permission(b.xch, C.uint32_t(dom), C.ulong(first), C.ulong(nr), C.uint8_t(b2u(allow)))
		errs = append(errs, check(fmt.Sprintf("xc_domain_iomem_permission %s BAR %d", dev.BDF, bar.Index), rc, err))
	}
	if dev.IRQ > 0 {
		rc, err := C.xc_domain_irq_permission(b.xch, C.uint32_t(dom), C.uint32_t(dev.IRQ), C.bool(allow))
		errs = append(errs, check(fmt.Sprintf("xc_domain_irq_permission %s irq %d", dev.BDF, dev.IRQ), rc, err))
	}
	return errors.Join(errs...)
}

// Reset resets through sysfs in the pci package's order.
func (b *Backend) Reset(dev *pci.Device, opt pci.ResetOptions) error {
	if _, err := b.sysfs.Reset(dev.BDF, opt); err != nil {
		return fmt.Errorf("xen backend: %w", err)
	}
	return nil
}

// ConfigRead implements backend.Backend.
func (b *Backend) ConfigRead(dev *pci.Device, off, size int) (uint32, error) {
	return b.sysfs.ReadConfigReg(dev.BDF, off, size)
}

// ConfigWrite implements backend.Backend.
func (b *Backend) ConfigWrite(dev *pci.Device, off, size int, val uint32) error {
	return b.sysfs.WriteConfigReg(dev.BDF, off, size, val)
}

// MemoryMapping calls xc_domain_memory_mapping.
func (b *Backend) MemoryMapping(dom uint32, gfn, mfn, nr uint64, add bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_memory_mapping(b.xch, C.uint32_t(dom), C.ulong(gfn), C.ulong(mfn), C.ulong(nr), b2u(add))
	return check("xc_domain_memory_mapping", rc, err)
}

// IoportMapping calls xc_domain_ioport_mapping.
func (b *Backend) IoportMapping(dom uint32, gport, mport, nr uint32, add bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_ioport_mapping(b.xch, C.uint32_t(dom), C.uint32_t(gport), C.uint32_t(mport), C.uint32_t(nr), b2u(add))
	return check("xc_domain_ioport_mapping", rc, err)
}

// MapPirq calls xc_physdev_map_pirq.
func (b *Backend) MapPirq(dom uint32, gsi, pirq int) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := C.int(pirq)
	rc, err := C.xc_physdev_map_pirq(b.xch, C.uint32_t(dom), C.int(gsi), &p)
	return int(p), check("xc_physdev_map_pirq", rc, err)
}

// MapPirqMSI calls xc_physdev_map_pirq_msi with the device's host
// address, segment in the high 16 bits of bus as QEMU passes it.
func (b *Backend) MapPirqMSI(dom uint32, dev *pci.Device, pirq, entry int, tableBase uint64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := C.int(pirq)
	devfn := C.int(int(dev.BDF.Dev)<<3 | int(dev.BDF.Fn))
	bus := C.int(int(dev.BDF.Domain)<<16 | int(dev.BDF.Bus))
	rc, err := C.xc_physdev_map_pirq_msi(b.xch, C.uint32_t(dom), -1, &p, devfn, bus, C.int(entry), C.uint64_t(tableBase))
	return int(p), check("xc_physdev_map_pirq_msi", rc, err)
}

// UnmapPirq calls xc_physdev_unmap_pirq.
func (b *Backend) UnmapPirq(dom uint32, pirq int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_physdev_unmap_pirq(b.xch, C.uint32_t(dom), C.int(pirq))
	return check("xc_physdev_unmap_pirq", rc, err)
}

// BindPtPciIrq calls xc_domain_bind_pt_pci_irq.
func (b *Backend) BindPtPciIrq(dom uint32, pirq int, bus, device, intx uint8) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_bind_pt_pci_irq(b.xch, C.uint32_t(dom), C.uint8_t(pirq), C.uint8_t(bus), C.uint8_t(device), C.uint8_t(intx))
	return check("xc_domain_bind_pt_pci_irq", rc, err)
}

// UnbindPtIrq calls xc_domain_unbind_pt_irq with PT_IRQ_TYPE_PCI.
func (b *Backend) UnbindPtIrq(dom uint32, pirq int, bus, device, intx uint8) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_unbind_pt_irq(b.xch, C.uint32_t(dom), C.uint8_t(pirq), C.PT_IRQ_TYPE_PCI, C.uint8_t(bus), C.uint8_t(device), C.uint8_t(intx), 0)
	return check("xc_domain_unbind_pt_irq", rc, err)
}

// UpdateMsiIrq calls xc_domain_update_msi_irq.
func (b *Backend) UpdateMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32, gtable uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_update_msi_irq(b.xch, C.uint32_t(dom), C.uint32_t(gvec), C.uint32_t(pirq), C.uint32_t(gflags), C.uint64_t(gtable))
	return check("xc_domain_update_msi_irq", rc, err)
}

// UnbindMsiIrq calls xc_domain_unbind_msi_irq.
func (b *Backend) UnbindMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	rc, err := C.xc_domain_unbind_msi_irq(b.xch, C.uint32_t(dom), C.uint32_t(gvec), C.uint32_t(pirq), C.uint32_t(gflags))
	return check("xc_domain_unbind_msi_irq", rc, err)
}

// Close implements backend.Backend.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.xch != nil {
		C.xc_interface_close(b.xch)
		b.xch = nil
	}
	return nil
}

var _ backend.Backend = (*Backend)(nil)
