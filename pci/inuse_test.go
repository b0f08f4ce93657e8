package pci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// TestAssignablePlatformGroup: in the rig the ICH9's SATA (00:1f.2) and
// SMBus (00:1f.3) share IOMMU group 9 with the LPC bridge 00:1f.0.
func TestAssignablePlatformGroup(t *testing.T) {
	s := NewSysfs("testdata/sysfs/rig-q35")
	for _, c := range []struct{ bdf, why string }{
		{"0000:00:1f.2", "iommu group 9 holds 0000:00:1f.0 (ISA/LPC bridge, class 060100)"},
		{"0000:00:1f.3", "iommu group 9 holds 0000:00:1f.0 (ISA/LPC bridge, class 060100)"},
		{"0000:00:1f.0", "is the platform's ISA/LPC bridge (class 060100)"},
		{"0000:00:00.0", "is the platform's host bridge (class 060000)"},
	} {
		d, err := s.Device(mustBDF(t, c.bdf))
		must(t, err)
		for _, to := range []Stub{StubVFIO, StubPciback} {
			err := s.Assignable(d, to, nil)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why) {
				t.Errorf("%s to %s: %v; want %q", c.bdf, to, err, c.why)
			}
		}
	}
	// An edu alone in its group stays assignable.
	d, err := s.Device(mustBDF(t, "0000:00:02.0"))
	must(t, err)
	if err := s.Assignable(d, StubVFIO, nil); err != nil {
		t.Fatalf("edu: %v", err)
	}
}

// inUseTree is the rig capture with what capture.sh does not copy grafted
// on by hand (a fake): the 9p transport's mount_tag, a virtio-blk disk with
// a partition and a dm device stacked on another, an interface, and
// proc/self/mountinfo.
func inUseTree(t *testing.T, mountinfo string) *Sysfs {
	t.Helper()
	root := pcifake.CopyTree(t, "testdata/sysfs/rig-q35")
	dev := func(bdf string) string {
		p, err := filepath.EvalSymlinks(filepath.Join(root, "sys/bus/pci/devices", bdf))
		must(t, err)
		return p
	}
	write := func(p, data string) {
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(data), 0o644))
	}
	// 00:07.0 is the host-root 9p share (1af4:1009).
	write(filepath.Join(dev("0000:00:07.0"), "virtio0/mount_tag"), "hostroot\x00")
	write(filepath.Join(dev("0000:00:08.0"), "virtio1/mount_tag"), "results")
	// 00:06.0 stands in for a virtio-blk: vda, vda1, vda2 under dm-0.
	vda := filepath.Join(dev("0000:00:06.0"), "virtio2/block/vda")
	write(filepath.Join(vda, "dev"), "254:0\n")
	write(filepath.Join(vda, "vda1/dev"), "254:1\n")
	write(filepath.Join(vda, "vda1/partition"), "1\n")
	write(filepath.Join(vda, "vda2/dev"), "254:2\n")
	write(filepath.Join(vda, "vda2/partition"), "2\n")
	dm := filepath.Join(root, "sys/devices/virtual/block/dm-0")
	write(filepath.Join(dm, "dev"), "253:0\n")
	must(t, os.MkdirAll(filepath.Join(vda, "vda2/holders"), 0o755))
	rel, _ := filepath.Rel(filepath.Join(vda, "vda2/holders"), dm)
	must(t, os.Symlink(rel, filepath.Join(vda, "vda2/holders/dm-0")))
	// 00:04.0 virtio-net with eth0 up.
	write(filepath.Join(dev("0000:00:04.0"), "virtio3/net/eth0/flags"), "0x1003\n")
	write(filepath.Join(root, "proc/self/mountinfo"), mountinfo)
	return NewSysfs(root)
}

const baseMounts = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"

func TestAssignableInUseFake(t *testing.T) {
	for _, c := range []struct {
		name, bdf, mounts, why string
	}{
		{"9p root", "0000:00:07.0", "1 0 0:30 / / rw shared:1 - 9p hostroot rw,trans=virtio\n", `its virtio 9p share "hostroot" is mounted on /`},
		{"9p with a space in the mount point", "0000:00:08.0", "3 1 0:31 / /run/rig\\040out rw - 9p results rw\n", `its virtio 9p share "results" is mounted on /run/rig out`},
		{"partition by device number", "0000:00:06.0", "5 1 254:1 / /boot rw - ext4 /dev/vda1 rw\n", "backs the mounted filesystem /boot (ext4 on /dev/vda1)"},
		{"btrfs by source", "0000:00:06.0", "5 1 0:40 / /srv rw - btrfs /dev/vda1 rw\n", "backs the mounted filesystem /srv (btrfs on /dev/vda1)"},
		{"dm stacked on a partition", "0000:00:06.0", "5 1 253:0 / /var rw - xfs /dev/mapper/vg-var rw\n", "backs the mounted filesystem /var (xfs on /dev/dm-0)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := inUseTree(t, baseMounts+c.mounts)
			d, err := s.Device(mustBDF(t, c.bdf))
			must(t, err)
			err = s.Assignable(d, StubVFIO, nil)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("%v; want %q", err, c.why)
			}
		})
	}
	// Not mounted: assignable. eth0 up: a warning, not a refusal.
	s := inUseTree(t, baseMounts+"9 1 0:50 / /mnt rw - 9p other rw\n")
	for _, b := range []string{"0000:00:06.0", "0000:00:07.0", "0000:00:04.0"} {
		d, err := s.Device(mustBDF(t, b))
		must(t, err)
		sum := s.Summarize(d, StubPciback, nil, nil) // pciback: no group rule in the way
		if !sum.Assignable {
			t.Errorf("%s: %s", b, sum.WhyNot)
		}
		if b == "0000:00:04.0" && (len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], "network interface eth0 is up (flags 0x1003)")) {
			t.Errorf("%s warnings %v", b, sum.Warnings)
		}
	}
	// A transport the 9p client holds, with no mount in sight (the rig's
	// root: mounted before switch_root, outside this root).
	p9dev, _ := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, "0000:00:08.0")))
	must(t, os.MkdirAll(filepath.Join(s.Root, "sys/bus/virtio/drivers/9pnet_virtio"), 0o755))
	rel, _ := filepath.Rel(filepath.Join(p9dev, "virtio1"), filepath.Join(s.Root, "sys/bus/virtio/drivers/9pnet_virtio"))
	must(t, os.Symlink(rel, filepath.Join(p9dev, "virtio1/driver")))
	d08, _ := s.Device(mustBDF(t, "0000:00:08.0"))
	if err := s.Assignable(d08, StubVFIO, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `its virtio 9p share "results" is held by 9pnet_virtio (virtio1)`) {
		t.Fatalf("held 9p transport: %v", err)
	}
	// Swap on vda2.
	must(t, os.WriteFile(filepath.Join(s.Root, "proc/swaps"), []byte("Filename\tType\tSize\tUsed\tPriority\n/dev/vda2 partition 1024 0 -2\n"), 0o644))
	d, _ := s.Device(mustBDF(t, "0000:00:06.0"))
	if err := s.Assignable(d, StubVFIO, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "/dev/vda2 is in use as swap") {
		t.Fatalf("swap: %v", err)
	}
	// No mountinfo to look at: an error, not "not in use".
	must(t, os.Remove(filepath.Join(s.Root, "proc/self/mountinfo")))
	if err := s.Assignable(d, StubVFIO, nil); err == nil || errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "cannot tell whether its storage is mounted") {
		t.Fatalf("no mountinfo: %v", err)
	}
	// Binding refuses too, before anything is written.
	s2 := inUseTree(t, baseMounts+"1 0 0:30 / / rw - 9p hostroot rw\n")
	k := pcifake.New(s2.Root)
	k.LoadDriver(t, "vfio-pci")
	s2.Kernel = k
	if _, err := (&Binder{Sysfs: s2, State: State{Dir: t.TempDir()}}).Add(mustBDF(t, "0000:00:07.0"), StubVFIO); !errors.Is(err, ErrRefused) || len(k.Writes()) != 0 {
		t.Fatalf("add of the 9p root: %v, writes %v", err, k.Writes())
	}
}

func TestAssignableConsoleFake(t *testing.T) {
	s := inUseTree(t, baseMounts)
	edu, _ := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, "0000:00:02.0")))
	must(t, os.WriteFile(filepath.Join(edu, "boot_vga"), []byte("1\n"), 0o644))
	d, _ := s.Device(mustBDF(t, "0000:00:02.0"))
	if err := s.Assignable(d, StubVFIO, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "boot VGA") {
		t.Fatalf("boot_vga: %v", err)
	}
	// A PCI serial card carrying ttyS4, the console.
	e1000e, _ := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, "0000:00:03.0")))
	must(t, os.MkdirAll(filepath.Join(e1000e, "tty/ttyS4"), 0o755))
	must(t, os.MkdirAll(filepath.Join(s.Root, "sys/class/tty/console"), 0o755))
	must(t, os.WriteFile(filepath.Join(s.Root, "sys/class/tty/console/active"), []byte("tty0 ttyS4\n"), 0o644))
	rel, _ := filepath.Rel(filepath.Join(s.Root, "sys/class/tty"), filepath.Join(e1000e, "tty/ttyS4"))
	must(t, os.Symlink(rel, filepath.Join(s.Root, "sys/class/tty/ttyS4")))
	d, _ = s.Device(mustBDF(t, "0000:00:03.0"))
	if err := s.Assignable(d, StubPciback, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "carries the host console ttyS4") {
		t.Fatalf("console: %v", err)
	}
}

// TestAssignableRefusesHostRootDisk: on this machine's real sysfs and
// /proc, the PCI device under the root filesystem is refused.
func TestAssignableRefusesHostRootDisk(t *testing.T) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no /proc/self/mountinfo: %v", err)
	}
	mounts, err := ParseMountinfo(data)
	must(t, err)
	var rootDev string
	for _, m := range mounts {
		if m.MountPoint == "/" {
			rootDev = m.Dev
		}
	}
	real, err := filepath.EvalSymlinks("/sys/dev/block/" + rootDev)
	if err != nil {
		t.Skipf("the root filesystem (%s) is not on a block device: %v", rootDev, err)
	}
	var bdf BDF
	found := false
	for _, p := range strings.Split(real, "/") {
		if b, err := ParseBDF(p); err == nil {
			bdf, found = b, true
		}
	}
	if !found {
		t.Skipf("the root filesystem's disk %s is not a PCI device", real)
	}
	s := NewSysfs("/")
	d, err := s.Device(bdf)
	if err != nil {
		t.Skipf("cannot read %s (not root?): %v", bdf, err)
	}
	err = s.Assignable(d, StubPciback, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "backs the mounted filesystem / ") {
		t.Fatalf("%s under /: %v", bdf, err)
	}
	t.Logf("%s: %s", bdf, Reason(err, bdf))
}
