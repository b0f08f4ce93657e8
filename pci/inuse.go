package pci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Whether the host itself is using a device, as far as sysfs and /proc
// tell: giving away the disk under a mounted filesystem, the 9p share the
// root filesystem comes from, or the console, takes the host down with
// it. What is found (in the device's sysfs subtree, without following
// links out of it):
//
//   - block devices (…/block/<name>, their partitions, and what is stacked
//     on them through holders/: dm, md) whose major:minor or /dev/<name>
//     source is mounted (mountinfo) or used as swap (/proc/swaps): refused;
//   - virtio transports with a mount_tag (9p) mounted as a 9p source:
//     refused;
//   - the console: a tty named in sys/class/tty/console/active whose
//     device is in the subtree, or the firmware's boot VGA (boot_vga 1):
//     refused;
//   - network interfaces (…/net/<name>) that are up: a warning, not a
//     refusal — a NIC may be up without carrying anything the host needs,
//     and taking it away is recoverable; the operator decides.

// maxInUseDepth bounds the walk of a device's subtree (a SCSI disk sits
// at <bdf>/host0/target0:0:0/0:0:0:0/block/sda/sda1, depth 6).
const maxInUseDepth = 10

// procPath is a path under the /proc root: Sysfs.Proc, else Root/proc.
func (s *Sysfs) procPath(elem ...string) string {
	p := s.Proc
	if p == "" {
		p = filepath.Join(s.Root, "proc")
	}
	return filepath.Join(append([]string{p}, elem...)...)
}

// p9 is a virtio 9p transport: its mount tag and the driver of its
// virtio device (9pnet_virtio when a 9p client may use it).
type p9 struct{ tag, driver, dev string }

// subtree is what the walk of a device's directory found.
type subtree struct {
	blocks  map[string]string // block device name -> "major:minor"
	tags    []p9              // virtio 9p transports
	nets    []string          // interface directories
	realDir string
}

func (s *Sysfs) walkDevice(b BDF) (*subtree, error) {
	real, err := filepath.EvalSymlinks(s.DevicePath(b))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	t := &subtree{blocks: map[string]string{}, realDir: real}
	err = filepath.WalkDir(real, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // a vanished or unreadable attribute: not a use
		}
		rel, _ := filepath.Rel(real, p)
		if e.IsDir() && p != real {
			// Another PCI function's directory (below a bridge) is that
			// device's business; so is anything too deep.
			if _, perr := ParseBDF(e.Name()); perr == nil || strings.Count(rel, string(filepath.Separator)) >= maxInUseDepth {
				return fs.SkipDir
			}
			switch filepath.Base(filepath.Dir(p)) {
			case "block":
				s.addBlock(t, p, 0)
			case "net":
				t.nets = append(t.nets, p)
			}
			return nil
		}
		if e.Name() == "mount_tag" && e.Type().IsRegular() {
			if tag, err := readBounded(p, maxAttr); err == nil {
				drv, _ := linkBase(filepath.Join(filepath.Dir(p), "driver"))
				t.tags = append(t.tags, p9{tag: strings.TrimRight(string(tag), "\x00\n "), driver: drv, dev: filepath.Base(filepath.Dir(p))})
			}
		}
		return nil
	})
	return t, err
}

// addBlock records a block device (or partition) directory and what is
// stacked on it, following holders/ links (bounded).
func (s *Sysfs) addBlock(t *subtree, dir string, depth int) {
	name := filepath.Base(dir)
	if _, seen := t.blocks[name]; seen || depth > 4 {
		return
	}
	dev, err := readBounded(filepath.Join(dir, "dev"), maxAttr)
	if err != nil {
		return
	}
	t.blocks[name] = strings.TrimSpace(string(dev))
	ents, _ := os.ReadDir(filepath.Join(dir, "holders"))
	for _, e := range ents {
		if h, err := filepath.EvalSymlinks(filepath.Join(dir, "holders", e.Name())); err == nil {
			s.addBlock(t, h, depth+1)
		}
	}
	// Partitions are subdirectories with a `partition` attribute; the
	// walk finds them too, but their holders must be followed here.
	subs, _ := os.ReadDir(dir)
	for _, e := range subs {
		if e.IsDir() && exists(filepath.Join(dir, e.Name(), "partition")) {
			s.addBlock(t, filepath.Join(dir, e.Name()), depth+1)
		}
	}
}

// InUse says whether the host uses d: refusal (an ErrRefused-wrapping
// error naming what is in use) and warnings. A /proc that cannot be read
// is an error: a check that cannot look must not say "not in use".
func (s *Sysfs) InUse(d *Device) (warnings []string, refusal error) {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("pci %s: %s: %w", d.BDF, fmt.Sprintf(format, a...), ErrRefused)
	}
	t, err := s.walkDevice(d.BDF)
	if err != nil {
		return nil, err
	}
	if v, err := s.readAttr(t.realDir, "boot_vga"); err == nil && v == "1" {
		return nil, refuse("is the boot VGA device (boot_vga 1): the host's console")
	}
	if name, ok := s.consoleIn(t.realDir); ok {
		return nil, refuse("carries the host console %s (sys/class/tty/console/active)", name)
	}
	if len(t.blocks) > 0 || len(t.tags) > 0 {
		mounts, err := s.mounts()
		if err != nil {
			return nil, fmt.Errorf("pci %s: cannot tell whether its storage is mounted: %w", d.BDF, err)
		}
		for _, m := range mounts {
			for name, dev := range t.blocks {
				if m.Dev == dev || m.Source == "/dev/"+name {
					return nil, refuse("backs the mounted filesystem %s (%s on /dev/%s)", m.MountPoint, m.FSType, name)
				}
			}
			if m.FSType == "9p" {
				for _, p := range t.tags {
					if m.Source == p.tag {
						return nil, refuse("its virtio 9p share %q is mounted on %s", p.tag, m.MountPoint)
					}
				}
			}
		}
		// A 9p mount can be out of this process's sight: outside its
		// root (the rig's L1 root is an overlay on a 9p share mounted
		// before switch_root) or in another mount namespace. And
		// unbinding a transport in use hangs in the kernel (the virtio
		// 9p remove waits for the channel). So a transport the 9p
		// client holds is refused even when no mount is visible.
		for _, p := range t.tags {
			if p.driver == "9pnet_virtio" {
				return nil, refuse("its virtio 9p share %q is held by 9pnet_virtio (%s): a mount of it may be outside this mount namespace's view; unbind %s from 9pnet_virtio first if it is truly unused", p.tag, p.dev, p.dev)
			}
		}
		if swaps, err := readBounded(s.procPath("swaps"), maxMountinfo); err == nil {
			for _, line := range strings.Split(string(swaps), "\n")[1:] {
				f := strings.Fields(line)
				for name := range t.blocks {
					if len(f) > 0 && f[0] == "/dev/"+name {
						return nil, refuse("/dev/%s is in use as swap", name)
					}
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pci %s: %w", d.BDF, err)
		}
	}
	for _, n := range t.nets {
		flags, err := s.readHexAttr(n, "flags", 32)
		if err == nil && flags&1 != 0 { // IFF_UP
			warnings = append(warnings, fmt.Sprintf("network interface %s is up (flags %#x): the host may be using it", filepath.Base(n), flags))
		}
	}
	return warnings, nil
}

func (s *Sysfs) mounts() ([]Mount, error) {
	data, err := readBounded(s.procPath("self", "mountinfo"), maxMountinfo)
	if err != nil {
		return nil, err
	}
	return ParseMountinfo(data)
}

// consoleIn: a console tty whose device lies in dir.
func (s *Sysfs) consoleIn(dir string) (string, bool) {
	active, err := s.readAttr(s.path("class", "tty", "console"), "active")
	if err != nil {
		return "", false
	}
	for _, name := range strings.Fields(active) {
		if strings.ContainsAny(name, "/.") {
			continue
		}
		real, err := filepath.EvalSymlinks(s.path("class", "tty", name))
		if err == nil && strings.HasPrefix(real, dir+string(filepath.Separator)) {
			return name, true
		}
	}
	return "", false
}

// platformClasses are the chipset: a device of one of these classes, or
// an IOMMU group holding one, is never given away. Host and ISA/LPC
// bridges route the platform's own traffic and legacy interrupts; the
// interrupt, DMA, timer and RTC controllers and the IOMMU are the
// platform itself (PCI Code and ID Assignment, classes 06h and 08h).
var platformClasses = map[uint16]string{
	0x0600: "host bridge", 0x0601: "ISA/LPC bridge",
	0x0800: "interrupt controller", 0x0801: "DMA controller", 0x0802: "timer",
	0x0803: "RTC controller", 0x0806: "IOMMU",
}

// platformInGroup names a member of d's IOMMU group that is part of the
// platform, "" when none is.
func (s *Sysfs) platformInGroup(d *Device) (string, error) {
	if d.IOMMUGroup < 0 {
		return "", nil
	}
	members, err := s.IOMMUGroupDevices(d.IOMMUGroup)
	if err != nil {
		return "", fmt.Errorf("pci %s: %w", d.BDF, err)
	}
	for _, m := range members {
		if m == d.BDF {
			continue
		}
		class, err := s.readHexAttr(s.DevicePath(m), "class", 24)
		if err != nil {
			return "", fmt.Errorf("pci %s: group member %s: %w", d.BDF, m, err)
		}
		if what, ok := platformClasses[uint16(class>>8)]; ok {
			return fmt.Sprintf("%s (%s, class %06x)", m, what, class), nil
		}
	}
	return "", nil
}
