package pci

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Stub is a passthrough driver a device can be handed to.
type Stub string

// The stub drivers dmsandbox binds devices to.
const (
	StubVFIO    Stub = "vfio-pci"    // KVM/VFIO: the broker opens /dev/vfio/<group>
	StubPciback Stub = "xen-pciback" // Xen: pciback holds the device for domains
)

// ParseStub accepts "vfio-pci", "xen-pciback" (also "pciback").
func ParseStub(s string) (Stub, error) {
	switch s {
	case string(StubVFIO):
		return StubVFIO, nil
	case string(StubPciback), "pciback":
		return StubPciback, nil
	}
	return "", fmt.Errorf("pci: unknown stub driver %q (want vfio-pci or xen-pciback): %w", s, ErrMalformed)
}

// Driver is the driver's name under /sys/bus/pci/drivers (the xen-pciback
// module registers itself as "pciback").
func (s Stub) Driver() string {
	if s == StubPciback {
		return "pciback"
	}
	return string(s)
}

// quarantineDrivers hold a device without letting the host use it. A
// device bound to one of them (or to none) does not make its IOMMU group
// unviable for VFIO: pci-stub and pcieport never do DMA on a device's
// behalf (the kernel marks them driver_managed_dma).
var quarantineDrivers = map[string]bool{"vfio-pci": true, "pciback": true, "pci-stub": true}

// DenyRule is one entry of a deny list: a device address, or a
// vendor:device pair with "*" allowed for the device.
type DenyRule struct {
	Text     string
	BDF      *BDF
	Vendor   uint16
	DeviceID int // -1: any device of the vendor
}

// DenyList names devices the host must never give away (its boot disk's
// controller, its management NIC, the console GPU).
type DenyList []DenyRule

// ParseDenyList parses one rule per line: "0000:00:1f.2", "8086:10d3" or
// "8086:*"; "#" starts a comment; blank lines are ignored.
func ParseDenyList(data []byte) (DenyList, error) {
	var out DenyList
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		r, err := parseDenyRule(line)
		if err != nil {
			return nil, fmt.Errorf("pci: deny list line %d: %w", n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

func parseDenyRule(s string) (DenyRule, error) {
	if b, err := ParseBDF(s); err == nil {
		return DenyRule{Text: s, BDF: &b}, nil
	}
	v, d, ok := strings.Cut(s, ":")
	if !ok || len(v) != 4 || !isHex(v) || !(d == "*" || len(d) == 4 && isHex(d)) {
		return DenyRule{}, fmt.Errorf("%q: want DDDD:BB:DD.F, VVVV:DDDD or VVVV:*: %w", s, ErrMalformed)
	}
	vv, _ := strconv.ParseUint(v, 16, 16)
	r := DenyRule{Text: s, Vendor: uint16(vv), DeviceID: -1}
	if d != "*" {
		dd, _ := strconv.ParseUint(d, 16, 16)
		r.DeviceID = int(dd)
	}
	return r, nil
}

// Match returns the first rule that names d.
func (l DenyList) Match(d *Device) (DenyRule, bool) {
	for _, r := range l {
		if r.BDF != nil && *r.BDF == d.BDF ||
			r.BDF == nil && r.Vendor == d.Vendor && (r.DeviceID < 0 || r.DeviceID == int(d.DeviceID)) {
			return r, true
		}
	}
	return DenyRule{}, false
}

// Assignable says whether d may be made assignable to the stub, and if
// not, why (an ErrRefused-wrapping error whose text is the reason). It
// looks at the device alone and at its IOMMU group; it does not change
// anything.
func (s *Sysfs) Assignable(d *Device, to Stub, deny DenyList) error {
	if err := s.assignableAlone(d, to, deny); err != nil {
		return err
	}
	if to == StubVFIO {
		return s.GroupViable(d)
	}
	return nil
}

// assignableAlone is Assignable without the look at the rest of the group.
func (s *Sysfs) assignableAlone(d *Device, to Stub, deny DenyList) error {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("pci %s: %s: %w", d.BDF, fmt.Sprintf(format, a...), ErrRefused)
	}
	// A bridge forwards other devices' traffic; a guest owning it could
	// reprogram their windows and reset them. The kernel's pcieport also
	// holds it for AER and hotplug.
	if d.Bridge {
		return refuse("is a PCI bridge (header type %d)", d.HeaderType)
	}
	// Host bridges, ISA/LPC bridges, interrupt/DMA/timer controllers,
	// the IOMMU: the chipset itself.
	if what, ok := platformClasses[uint16(d.Class>>8)]; ok {
		return refuse("is the platform's %s (class %06x)", what, d.Class)
	}
	if r, ok := deny.Match(d); ok {
		return refuse("on the deny list (%s)", r.Text)
	}
	// A group is one unit of DMA isolation: a device sharing one with
	// the chipset cannot be isolated from it (the ICH9's 00:1f.x
	// functions share the LPC bridge's group), and VFIO would need the
	// chipset on vfio-pci too.
	if p, err := s.platformInGroup(d); err != nil {
		return err
	} else if p != "" {
		return refuse("iommu group %d holds %s: the platform cannot be given away with it", d.IOMMUGroup, p)
	}
	// The host's own storage, 9p root and console (docs/pci.md).
	if _, err := s.InUse(d); err != nil {
		return err
	}
	if to == StubVFIO {
		// VFIO isolates by IOMMU group; without one there is no DMA
		// isolation and vfio-pci will not take the device.
		if d.IOMMUGroup < 0 {
			return refuse("in no IOMMU group (IOMMU off or absent): no DMA isolation")
		}
	}
	return nil
}

// GroupViable checks that every other member of d's IOMMU group is on a
// quarantine driver (vfio-pci, pciback, pci-stub), on pcieport (a bridge
// port), or on no driver. Otherwise a host driver shares d's DMA isolation
// and VFIO refuses to open the group.
func (s *Sysfs) GroupViable(d *Device) error {
	if d.IOMMUGroup < 0 {
		return fmt.Errorf("pci %s: in no IOMMU group: %w", d.BDF, ErrRefused)
	}
	members, err := s.IOMMUGroupDevices(d.IOMMUGroup)
	if err != nil {
		return fmt.Errorf("pci %s: %w", d.BDF, err)
	}
	var busy []string
	for _, m := range members {
		if m == d.BDF {
			continue
		}
		drv, err := linkBase(s.DevicePath(m) + "/driver")
		if err != nil {
			return fmt.Errorf("pci %s: group member %s: %w", d.BDF, m, err)
		}
		if drv != "" && !quarantineDrivers[drv] && drv != "pcieport" {
			busy = append(busy, fmt.Sprintf("%s (on %s)", m, drv))
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("pci %s: iommu group %d not viable: shared with %s; make the whole group assignable (--group): %w",
			d.BDF, d.IOMMUGroup, strings.Join(busy, ", "), ErrRefused)
	}
	return nil
}
