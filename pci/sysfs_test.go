package pci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// TestDevicesEveryTree reads every device of every captured tree and
// checks the model against the raw files it came from.
func TestDevicesEveryTree(t *testing.T) {
	for _, tree := range trees(t) {
		s := NewSysfs(tree)
		devs, err := s.Devices()
		if err != nil {
			t.Fatalf("%s: %v", tree, err)
		}
		if len(devs) == 0 {
			t.Fatalf("%s: no devices", tree)
		}
		for _, d := range devs {
			dir := s.DevicePath(d.BDF)
			cfg, _ := os.ReadFile(filepath.Join(dir, "config"))
			if d.ConfigSize != len(cfg) || uint16(cfg[0])|uint16(cfg[1])<<8 != d.Vendor {
				t.Errorf("%s %s: vendor %04x / config size %d disagree with raw config", tree, d.BDF, d.Vendor, d.ConfigSize)
			}
			if d.Parent != nil {
				p, err := s.Device(*d.Parent)
				if err != nil || !p.Bridge || d.BDF.Bus < p.SecondaryBus || d.BDF.Bus > p.SubordinateBus {
					t.Errorf("%s %s: parent %s is not a bridge forwarding bus %02x (%+v, %v)", tree, d.BDF, d.Parent, d.BDF.Bus, p, err)
				}
			}
		}
	}
}

func TestDeviceQ35(t *testing.T) {
	s := NewSysfs("testdata/sysfs/q35-vfio-rig")
	edu, err := s.Device(mustBDF(t, "0000:01:00.0"))
	if err != nil {
		t.Fatal(err)
	}
	if edu.Vendor != 0x1234 || edu.DeviceID != 0x11e8 || edu.IOMMUGroup != 9 || edu.Parent == nil ||
		edu.Parent.String() != "0000:00:02.0" || strings.Join(edu.ResetMethods, " ") != "bus" || !edu.HasReset {
		t.Errorf("edu behind root port: %+v", edu)
	}
	if b := edu.BAR(0); b == nil || b.Size != 1<<20 || b.IO || edu.IRQ != 11 {
		t.Errorf("edu BAR0 %+v irq %d", b, edu.IRQ)
	}
	rp, err := s.Device(mustBDF(t, "0000:00:02.0"))
	if err != nil {
		t.Fatal(err)
	}
	if !rp.Bridge || rp.SecondaryBus != 1 || rp.Driver != "pcieport" || rp.ClassName() != "pci-bridge" {
		t.Errorf("root port %+v", rp)
	}
	lpc, err := s.Device(mustBDF(t, "0000:00:1f.0"))
	if err != nil {
		t.Fatal(err)
	}
	if !lpc.MultiFunction || lpc.IOMMUGroup != 8 {
		t.Errorf("ich9 lpc %+v", lpc)
	}
	members, err := s.IOMMUGroupDevices(8)
	if err != nil || len(members) != 3 || members[2].String() != "0000:00:1f.3" {
		t.Errorf("group 8 = %v, %v", members, err)
	}
	behind, err := s.Behind(mustBDF(t, "0000:00:07.0"))
	if err != nil || len(behind) != 2 || behind[0].BDF.String() != "0000:03:00.0" || behind[1].BDF.String() != "0000:03:00.1" {
		t.Errorf("behind 00:07.0: %v, %v", behind, err)
	}
	if _, err := s.Device(mustBDF(t, "0000:09:00.0")); !errors.Is(err, ErrNoDevice) {
		t.Errorf("absent device: %v", err)
	}
}

// TestDeviceSRIOVLinks: no QEMU model this rig boots enables VFs, so the
// physfn/virtfn links are added to a copy by hand (a fake, named so).
func TestDeviceSRIOVLinksFake(t *testing.T) {
	root := pcifake.CopyTree(t, "testdata/sysfs/q35-vfio-rig")
	pf := filepath.Join(root, "sys/devices/pci0000:00/0000:00:06.0/0000:02:00.0")
	vf := filepath.Join(root, "sys/devices/pci0000:00/0000:00:07.0/0000:03:00.1")
	must(t, os.Symlink("../../0000:00:07.0/0000:03:00.1", filepath.Join(pf, "virtfn0")))
	must(t, os.Symlink("../../0000:00:06.0/0000:02:00.0", filepath.Join(vf, "physfn")))
	s := NewSysfs(root)
	d, err := s.Device(mustBDF(t, "0000:02:00.0"))
	if err != nil || len(d.VirtFns) != 1 || d.VirtFns[0].String() != "0000:03:00.1" {
		t.Fatalf("pf: %+v, %v", d, err)
	}
	d, err = s.Device(mustBDF(t, "0000:03:00.1"))
	if err != nil || d.PhysFn == nil || d.PhysFn.String() != "0000:02:00.0" {
		t.Fatalf("vf: %+v, %v", d, err)
	}
	must(t, os.Symlink("../../0000:00:06.0/garbage", filepath.Join(vf, "virtfn3")))
	if _, err := s.Device(mustBDF(t, "0000:03:00.1")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage virtfn link: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeviceMalformedFiles damages one file at a time in a copy of a
// captured tree: each gives an error naming the device, never a panic.
func TestDeviceMalformedFiles(t *testing.T) {
	const bdf = "0000:00:04.0"
	cases := []struct {
		name   string
		damage func(dir string) error
		want   error
		text   string
	}{
		{"missing config", func(d string) error { return os.Remove(d + "/config") }, fs.ErrNotExist, "config"},
		{"missing resource", func(d string) error { return os.Remove(d + "/resource") }, fs.ErrNotExist, "resource"},
		{"missing vendor", func(d string) error { return os.Remove(d + "/vendor") }, fs.ErrNotExist, "vendor"},
		{"missing irq", func(d string) error { return os.Remove(d + "/irq") }, fs.ErrNotExist, "irq"},
		{"truncated config", func(d string) error { return os.Truncate(d+"/config", 40) }, ErrMalformed, "truncated"},
		{"config as a non-root reader sees it", func(d string) error { return os.Truncate(d+"/config", 64) }, ErrMalformed, "for root"},
		{"capability loop", func(d string) error {
			f, err := os.OpenFile(d+"/config", os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte{0x05, 0xd0}, 0xd0) // MSI at 0xd0 points to itself
			return err
		}, ErrMalformed, "loops"},
		{"garbage resource", func(d string) error {
			return os.WriteFile(d+"/resource", []byte("hello world\n"), 0o644)
		}, ErrMalformed, "resource"},
		{"garbage irq", func(d string) error { return os.WriteFile(d+"/irq", []byte("-1\n"), 0o644) }, ErrMalformed, "irq"},
		{"vendor too wide", func(d string) error { return os.WriteFile(d+"/vendor", []byte("0x12345\n"), 0o644) }, ErrMalformed, "vendor"},
		{"vendor not hex", func(d string) error { return os.WriteFile(d+"/vendor", []byte("8086\n"), 0o644) }, ErrMalformed, "vendor"},
		{"huge class file", func(d string) error {
			return os.WriteFile(d+"/class", []byte(strings.Repeat("0", 5000)), 0o644)
		}, ErrMalformed, "longer than"},
		{"bad iommu group link", func(d string) error {
			if err := os.Remove(d + "/iommu_group"); err != nil {
				return err
			}
			return os.Symlink("../../../kernel/iommu_groups/x", d+"/iommu_group")
		}, ErrMalformed, "iommu_group"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := pcifake.CopyTree(t, "testdata/sysfs/q35-vfio-rig")
			s := NewSysfs(root)
			dir, err := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, bdf)))
			must(t, err)
			must(t, tc.damage(dir))
			_, err = s.Device(mustBDF(t, bdf))
			if err == nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), bdf) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v; want %v naming %s and %q", err, tc.want, bdf, tc.text)
			}
			// The rest of the tree still reads, and the bad device is
			// reported, not dropped silently.
			devs, err := s.Devices()
			if err == nil || len(devs) != 14 {
				t.Fatalf("Devices() = %d devices, %v", len(devs), err)
			}
		})
	}
}

func TestListRejectsStrangeEntries(t *testing.T) {
	root := pcifake.CopyTree(t, "testdata/sysfs/host-fc")
	must(t, os.Symlink("../../../devices/x", filepath.Join(root, "sys/bus/pci/devices/not-a-bdf")))
	if _, err := NewSysfs(root).Devices(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewSysfs(t.TempDir()).Devices(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty root: %v", err)
	}
}
