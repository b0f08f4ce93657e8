package pci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Sysfs reads (and, for binding and reset, writes) the kernel's PCI view
// under Root. Root is "/" in production; tests point it at a tree captured
// by testdata/capture.sh, which keeps the same layout:
//
//	Root/sys/bus/pci/devices/<bdf>     -> ../../../devices/pci0000:00/.../<bdf>
//	Root/sys/bus/pci/drivers/<name>/   bind, unbind, new_id, remove_id
//	Root/sys/bus/pci/drivers_probe
//	Root/sys/kernel/iommu_groups/<n>/devices/<bdf>
//	Root/proc/sys/kernel/osrelease
type Sysfs struct {
	Root string
	// Kernel performs writes to sysfs attributes. Nil means the real
	// thing: write the files under Root. Unit tests set a fake that
	// records each write and simulates the kernel's reaction on a
	// captured tree (see fakekernel_test.go).
	Kernel Kernel
	// Proc is the root of /proc (mountinfo, swaps: whether the host uses
	// a device); "" means Root/proc, which a captured tree carries too.
	Proc string
}

// NewSysfs returns a Sysfs rooted at root ("/" for the running host).
func NewSysfs(root string) *Sysfs {
	if root == "" {
		root = "/"
	}
	return &Sysfs{Root: root}
}

// maxConfig is the largest config space (PCIe extended).
const maxConfig = cfgExtLen

// maxAttr bounds text attribute reads: sysfs text attributes are at most a
// page; a bigger file is not a sysfs attribute.
const maxAttr = 4096

func (s *Sysfs) path(elem ...string) string {
	return filepath.Join(append([]string{s.Root, "sys"}, elem...)...)
}

// DevicePath is the sysfs directory of a device (through the
// bus/pci/devices symlink).
func (s *Sysfs) DevicePath(b BDF) string { return s.path("bus", "pci", "devices", b.String()) }

// List returns the addresses of all devices, sorted.
func (s *Sysfs) List() ([]BDF, error) {
	dir := s.path("bus", "pci", "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pci: list devices: %w", err)
	}
	out := make([]BDF, 0, len(ents))
	for _, e := range ents {
		b, err := ParseBDF(e.Name())
		if err != nil {
			// Not a device: the tree is not what we think it is.
			return nil, fmt.Errorf("pci: %s: unexpected entry %q: %w", dir, e.Name(), ErrMalformed)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// Devices reads every device. Devices that fail to read are left out of
// the slice and their errors joined into err, so a caller can show the
// rest; a broker must not act on a device it could not read.
func (s *Sysfs) Devices() ([]*Device, error) {
	bdfs, err := s.List()
	if err != nil {
		return nil, err
	}
	var devs []*Device
	var errs []error
	for _, b := range bdfs {
		d, err := s.Device(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		devs = append(devs, d)
	}
	return devs, errors.Join(errs...)
}

// Device reads one device. Errors name the BDF and the file; a missing
// device wraps ErrNoDevice.
func (s *Sysfs) Device(b BDF) (*Device, error) {
	dir := s.DevicePath(b)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pci %s: %w", b, ErrNoDevice)
		}
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	d := &Device{BDF: b, IOMMUGroup: -1}
	wrap := func(err error) (*Device, error) { return nil, fmt.Errorf("pci %s: %w", b, err) }

	// Identity: the kernel's cached values (after quirks), not raw config.
	for _, f := range []struct {
		name string
		bits int
		dst  func(uint64)
	}{
		{"vendor", 16, func(v uint64) { d.Vendor = uint16(v) }},
		{"device", 16, func(v uint64) { d.DeviceID = uint16(v) }},
		{"subsystem_vendor", 16, func(v uint64) { d.SubVendor = uint16(v) }},
		{"subsystem_device", 16, func(v uint64) { d.SubDevice = uint16(v) }},
		{"class", 24, func(v uint64) { d.Class = uint32(v) }},
		{"revision", 8, func(v uint64) { d.Revision = uint8(v) }},
	} {
		v, err := s.readHexAttr(dir, f.name, f.bits)
		if err != nil {
			return wrap(err)
		}
		f.dst(v)
	}

	irq, err := s.readAttr(dir, "irq")
	if err != nil {
		return wrap(err)
	}
	n, err := strconv.ParseUint(irq, 10, 31)
	if err != nil {
		return wrap(fmt.Errorf("%s/irq: %q is not an irq number: %w", dir, irq, ErrMalformed))
	}
	d.IRQ = int(n)

	res, err := readBounded(filepath.Join(dir, "resource"), maxAttr)
	if err != nil {
		return wrap(err)
	}
	if d.BARs, d.ROM, err = ParseResource(res); err != nil {
		return wrap(fmt.Errorf("%s/resource: %w", dir, err))
	}

	cfg, err := s.ReadConfig(b)
	if err != nil {
		return wrap(err)
	}
	d.ConfigSize = len(cfg)
	// Linux shows unprivileged readers only the 64-byte header, where
	// no capability lives: say so instead of a confusing parse error.
	if len(cfg) == cfgHeaderLen {
		return wrap(fmt.Errorf("%s/config: only %d bytes readable (config space past the header is for root): %w", dir, len(cfg), ErrMalformed))
	}
	if d.Caps, err = ParseCapabilities(cfg); err != nil {
		return wrap(fmt.Errorf("%s/config: %w", dir, err))
	}
	d.HeaderType = cfg[cfgHeaderType] & headerTypeMask
	d.MultiFunction = cfg[cfgHeaderType]&headerMultiFn != 0
	if d.HeaderType == headerTypeBridge || d.HeaderType == headerTypeCardbus {
		d.Bridge = true
		d.SecondaryBus, d.SubordinateBus = cfg[0x19], cfg[0x1a]
	}

	if err := s.readResetAttrs(dir, d); err != nil {
		return wrap(err)
	}
	if d.Driver, err = linkBase(filepath.Join(dir, "driver")); err != nil {
		return wrap(err)
	}
	if ov, err := s.readAttr(dir, "driver_override"); err == nil {
		if ov != "(null)" {
			d.DriverOverride = ov
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return wrap(err)
	}
	if g, err := linkBase(filepath.Join(dir, "iommu_group")); err != nil {
		return wrap(err)
	} else if g != "" {
		n, err := strconv.ParseUint(g, 10, 31)
		if err != nil {
			return wrap(fmt.Errorf("%s/iommu_group: %q is not a group number: %w", dir, g, ErrMalformed))
		}
		d.IOMMUGroup = int(n)
	}
	if err := s.readSRIOV(dir, d); err != nil {
		return wrap(err)
	}
	if err := s.readAncestors(b, d); err != nil {
		return wrap(err)
	}
	return d, nil
}

// readResetAttrs reads `reset_method` (kernel ≥ 5.15; absent when the
// kernel knows no method for the device) and notes whether `reset` exists.
func (s *Sysfs) readResetAttrs(dir string, d *Device) error {
	rm, err := s.readAttr(dir, "reset_method")
	switch {
	case err == nil:
		d.HasResetMethod = true
		d.ResetMethods = strings.Fields(rm)
	case errors.Is(err, fs.ErrNotExist):
	default:
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, "reset")); err == nil {
		d.HasReset = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Sysfs) readSRIOV(dir string, d *Device) error {
	pf, err := linkBase(filepath.Join(dir, "physfn"))
	if err != nil {
		return err
	}
	if pf != "" {
		b, err := ParseBDF(pf)
		if err != nil {
			return fmt.Errorf("%s/physfn: %w", dir, err)
		}
		d.PhysFn = &b
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "virtfn") {
			continue
		}
		vf, err := linkBase(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		b, err := ParseBDF(vf)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", dir, e.Name(), err)
		}
		d.VirtFns = append(d.VirtFns, b)
	}
	sort.Slice(d.VirtFns, func(i, j int) bool { return d.VirtFns[i].Less(d.VirtFns[j]) })
	return nil
}

// readAncestors derives the bridges above the device from where the
// bus/pci/devices symlink points: the kernel nests each device's directory
// under its parent bridge's (…/pci0000:00/0000:00:1c.0/0000:03:00.0).
func (s *Sysfs) readAncestors(b BDF, d *Device) error {
	link := s.DevicePath(b)
	target, err := os.Readlink(link)
	if err != nil {
		return fmt.Errorf("%s: not a symlink into sys/devices: %w", link, err)
	}
	parts := strings.Split(filepath.ToSlash(filepath.Clean(target)), "/")
	if len(parts) == 0 || parts[len(parts)-1] != b.String() {
		return fmt.Errorf("%s points to %q, not to %s: %w", link, target, b, ErrMalformed)
	}
	for _, p := range parts[:len(parts)-1] {
		if a, err := ParseBDF(p); err == nil {
			d.Ancestors = append(d.Ancestors, a)
		}
	}
	if n := len(d.Ancestors); n > 0 {
		p := d.Ancestors[n-1]
		d.Parent = &p
	}
	return nil
}

// IOMMUGroupDevices lists the members of an IOMMU group, sorted.
func (s *Sysfs) IOMMUGroupDevices(group int) ([]BDF, error) {
	if group < 0 {
		return nil, fmt.Errorf("pci: iommu group %d: %w", group, ErrNoDevice)
	}
	dir := s.path("kernel", "iommu_groups", strconv.Itoa(group), "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pci: iommu group %d: %w", group, err)
	}
	var out []BDF
	for _, e := range ents {
		b, err := ParseBDF(e.Name())
		if err != nil {
			return nil, fmt.Errorf("pci: %s: unexpected entry %q: %w", dir, e.Name(), ErrMalformed)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// Behind returns every device below bridge (on its secondary bus and on
// buses further down), i.e. everything a secondary bus reset of bridge
// would reset. Devices that fail to read are an error: a reset decision
// must not ignore a device it cannot see.
func (s *Sysfs) Behind(bridge BDF) ([]*Device, error) {
	bdfs, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []*Device
	for _, b := range bdfs {
		if b == bridge {
			continue
		}
		// The link alone says whether b is below bridge; read the whole
		// device only then (ls asks this for every device).
		target, err := os.Readlink(s.DevicePath(b))
		if err != nil {
			return nil, fmt.Errorf("pci %s: %w", b, err)
		}
		if !strings.Contains(filepath.ToSlash(target), "/"+bridge.String()+"/") {
			continue
		}
		d, err := s.Device(b)
		if err != nil {
			return nil, err
		}
		for _, a := range d.Ancestors {
			if a == bridge {
				out = append(out, d)
				break
			}
		}
	}
	return out, nil
}

// ReadConfig reads the device's config space as the kernel exposes it
// (256 bytes for conventional PCI, 4096 for PCIe; only 64 for non-root
// readers, which is rejected later as truncated).
func (s *Sysfs) ReadConfig(b BDF) ([]byte, error) {
	return readBounded(filepath.Join(s.DevicePath(b), "config"), maxConfig)
}

func (s *Sysfs) readAttr(dir, name string) (string, error) {
	data, err := readBounded(filepath.Join(dir, name), maxAttr)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// readHexAttr reads a "0x…" attribute of at most bits bits.
func (s *Sysfs) readHexAttr(dir, name string, bits int) (uint64, error) {
	txt, err := s.readAttr(dir, name)
	if err != nil {
		return 0, err
	}
	v, err := parseHex0x([]byte(txt))
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w", dir, name, err)
	}
	if v>>bits != 0 {
		return 0, fmt.Errorf("%s/%s: %#x wider than %d bits: %w", dir, name, v, bits, ErrMalformed)
	}
	return v, nil
}

// readBounded reads at most max bytes; a longer file is malformed.
func readBounded(path string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > max {
		return nil, fmt.Errorf("%s: longer than %d bytes: %w", path, max, ErrMalformed)
	}
	return bytes.Clone(data), nil
}

// linkBase returns the last element of a symlink's target, "" when the
// link does not exist.
func linkBase(path string) (string, error) {
	t, err := os.Readlink(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(t), nil
}
