package vfio

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// These tests run against a copy of the pci package's captured q35 tree
// with a fake kernel that plays the driver core's part (a probe binds the
// device to its driver_override). The real bind/grant/reset is exercised
// in the nested VFIO rig (integration/rig), not here.

const captured = "../../testdata/sysfs/q35-vfio-rig"

var e1000e = pci.BDF{Bus: 0, Dev: 4}

// fakeKernel applies sysfs writes to the tree like the driver core would.
type fakeKernel struct{ root string }

func (k fakeKernel) WriteAttr(path string, data []byte) error {
	switch filepath.Base(path) {
	case "drivers_probe", "bind":
		bdf := strings.TrimSpace(string(data))
		dev := filepath.Join(k.root, "sys/bus/pci/devices", bdf)
		ov, _ := os.ReadFile(filepath.Join(dev, "driver_override"))
		drv := strings.TrimSpace(string(ov))
		if filepath.Base(path) == "bind" {
			drv = filepath.Base(filepath.Dir(path))
		}
		if drv == "" || drv == "(null)" {
			return nil
		}
		os.Remove(filepath.Join(dev, "driver"))
		return os.Symlink(filepath.Join(k.root, "sys/bus/pci/drivers", drv), filepath.Join(dev, "driver"))
	case "unbind":
		bdf := strings.TrimSpace(string(data))
		return os.Remove(filepath.Join(k.root, "sys/bus/pci/devices", bdf, "driver"))
	}
	return os.WriteFile(path, data, 0o644)
}

func (k fakeKernel) WriteConfig(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt(data, off)
	return err
}

type limit struct {
	pid   int
	bytes uint64
}

func setup(t *testing.T) (*Backend, *pci.Sysfs, string, *[]limit) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "sysfs")
	if out, err := exec.Command("cp", "-a", captured, root).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	os.MkdirAll(filepath.Join(root, "sys/bus/pci/drivers/vfio-pci"), 0o755)
	node := filepath.Join(dir, "dev/vfio/4")
	os.MkdirAll(filepath.Dir(node), 0o755)
	os.WriteFile(node, nil, 0o600)
	sys := pci.NewSysfs(root)
	sys.Kernel = fakeKernel{root: root}
	var limits []limit
	b, err := New(Options{Sysfs: sys, DevRoot: dir, StateDir: filepath.Join(dir, "state"),
		Prlimit: func(pid int, n uint64) error { limits = append(limits, limit{pid, n}); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return b, sys, node, &limits
}

func owner(t *testing.T, path string) (int, int) {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid)
}

func TestAssignBindsGrantsAndSizesMemlock(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown of the group node needs root")
	}
	b, sys, node, limits := setup(t)
	dev, err := sys.Device(e1000e)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Assign(7, dev, backend.Grant{UID: 1234, GID: 1235, QEMUPid: 4242, MemlockBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	dev, _ = sys.Device(e1000e)
	if dev.Driver != "vfio-pci" {
		t.Fatalf("driver %q", dev.Driver)
	}
	if u, g := owner(t, node); u != 1234 || g != 1235 {
		t.Fatalf("group node owned by %d:%d", u, g)
	}
	if len(*limits) != 1 || (*limits)[0] != (limit{4242, 1 << 30}) {
		t.Fatalf("memlock %v", *limits)
	}
	if err := b.Release(7, dev); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(t, node); u != 0 || g != 0 {
		t.Fatalf("after release owned by %d:%d", u, g)
	}
	// Quarantine: still on vfio-pci.
	if dev, _ = sys.Device(e1000e); dev.Driver != "vfio-pci" {
		t.Fatalf("released device on %q", dev.Driver)
	}
}

func TestAssignRefusesRootGrant(t *testing.T) {
	b, sys, _, _ := setup(t)
	dev, _ := sys.Device(e1000e)
	if err := b.Assign(7, dev, backend.Grant{UID: 0}); err == nil {
		t.Fatal("granted a device to uid 0")
	}
}

func TestXenOpsUnsupported(t *testing.T) {
	b, _, _, _ := setup(t)
	if err := b.MemoryMapping(7, 1, 2, 3, true); err != backend.ErrUnsupported {
		t.Fatal(err)
	}
}

func TestConfigThroughSysfs(t *testing.T) {
	b, sys, _, _ := setup(t)
	dev, _ := sys.Device(e1000e)
	v, err := b.ConfigRead(dev, 0, 4)
	if err != nil || v&0xffff != 0x8086 {
		t.Fatalf("%#x %v", v, err)
	}
	if err := b.ConfigWrite(dev, 0x0c, 1, 0x10); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.ConfigRead(dev, 0x0c, 1); v != 0x10 {
		t.Fatalf("readback %#x", v)
	}
}

func TestNodesForTheLauncher(t *testing.T) {
	b, sys, node, _ := setup(t)
	dev, _ := sys.Device(e1000e)
	nodes, err := b.Nodes(dev)
	if err != nil || len(nodes) != 2 || nodes[1] != node || filepath.Base(nodes[0]) != "vfio" {
		t.Fatalf("%v %v", nodes, err)
	}
	dev.IOMMUGroup = -1
	if _, err := b.Nodes(dev); err == nil {
		t.Fatal("a device in no IOMMU group has VFIO nodes")
	}
}

// TestConfigThroughPCIKernel: config space access goes through the pci
// package's single-register API, so its writes pass the pci.Kernel seam
// (a pcifake records them) and its bounds are checked there.
func TestConfigThroughPCIKernel(t *testing.T) {
	root := pcifake.CopyTree(t, captured)
	k := pcifake.New(root)
	sys := &pci.Sysfs{Root: root, Kernel: k}
	b, err := New(Options{Sysfs: sys, DevRoot: t.TempDir(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := sys.Device(e1000e)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := b.ConfigRead(dev, 0, 4); err != nil || v != 0x10d38086 {
		t.Fatalf("read %#x, %v", v, err)
	}
	if err := b.ConfigWrite(dev, 0x3c, 1, 0x0b); err != nil {
		t.Fatal(err)
	}
	ws := k.Writes()
	if len(ws) != 1 || ws[0].String() != "sys/bus/pci/devices/0000:00:04.0/config@0x3c=0b" {
		t.Fatalf("writes %v", ws)
	}
	if v, err := b.ConfigRead(dev, 0x3c, 1); err != nil || v != 0x0b {
		t.Fatalf("read back %#x, %v", v, err)
	}
	if err := b.ConfigWrite(dev, 0x3d, 2, 0); !errors.Is(err, pci.ErrBadAccess) {
		t.Fatalf("unaligned: %v", err)
	}
}
