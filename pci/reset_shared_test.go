package pci

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// rigQ35Fake is the rig's capture with a fake kernel: behind the
// PCIe-to-PCI bridge 02:00.0 an edu (03:01.0) and an e1000 (03:02.0)
// share one bus and one IOMMU group, and only the edu, scanned first,
// lists "bus" in reset_method (stale: Linux refuses it now).
func rigQ35Fake(t *testing.T) (*Sysfs, *pcifake.Kernel) {
	t.Helper()
	root := pcifake.CopyTree(t, "testdata/sysfs/rig-q35")
	k := pcifake.New(root)
	k.LoadDriver(t, "vfio-pci")
	k.LoadDriver(t, "e1000")
	return &Sysfs{Root: root, Kernel: k}, k
}

// TestResetSharedBusStaleResetMethod: with the e1000 beside it quarantined
// and idle, the edu's bus reset goes the config-space way (the bridge's
// Secondary Bus Reset bit), not through the kernel's stale "bus".
func TestResetSharedBusStaleResetMethod(t *testing.T) {
	s, k := rigQ35Fake(t)
	edu, e1000, bridge := mustBDF(t, "0000:03:01.0"), mustBDF(t, "0000:03:02.0"), mustBDF(t, "0000:02:00.0")
	d, err := s.Device(edu)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(d.ResetMethods, MethodBus) {
		t.Fatalf("capture lost its quirk: edu reset_method %v", d.ResetMethods)
	}
	st := State{Dir: t.TempDir()}
	bd := &Binder{Sysfs: s, State: st}
	if _, err := bd.AddGroup(edu, StubVFIO); err != nil {
		t.Fatal(err)
	}
	if drv := driverOf(t, s, e1000.String()); drv != "vfio-pci" {
		t.Fatalf("e1000 on %q", drv)
	}
	n := len(k.Writes())
	res, err := s.Reset(edu, ResetOptions{Sleep: noSleep, Owner: st.Owner})
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	if res.Method != MethodBus || res.Via != ViaConfig {
		t.Fatalf("result %+v", res)
	}
	ws := k.Writes()[n:]
	for _, w := range ws {
		if strings.HasSuffix(w.Path, "/reset_method") || strings.HasSuffix(w.Path, "/reset") {
			t.Fatalf("kernel route tried:\n%s", writesOf(k))
		}
	}
	brCfg := "sys/bus/pci/devices/" + bridge.String() + "/config"
	if len(ws) < 2 || ws[0].Path != brCfg || ws[0].Off != cfgBridgeCtl || ws[0].Data[0]&bridgeCtlBusReset == 0 {
		t.Fatalf("bridge writes:\n%s", writesOf(k))
	}
	// The plan `pci show` prints says the same before anything is done.
	plan := s.ResetPlan(d, ResetOptions{Owner: st.Owner})
	if v := plan[2]; v.Why != "" || v.Via != ViaConfig {
		t.Fatalf("plan %+v", plan)
	}
}

// TestResetSharedBusFakeKernelRefusesBus: the fake plays Linux and
// refuses "bus" on the shared bus, whatever the list says.
func TestResetSharedBusFakeKernelRefusesBus(t *testing.T) {
	s, k := rigQ35Fake(t)
	err := k.WriteAttr(s.DevicePath(mustBDF(t, "0000:03:01.0"))+"/reset_method", []byte("bus"))
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("select bus on a shared bus: %v", err)
	}
}

// TestResetBusKernelRefusesFallsBackFake: a device alone behind its root
// port lists "bus" but the kernel refuses to select it (EINVAL injected:
// a fake of a list gone stale): the reset is done by config space.
func TestResetBusKernelRefusesFallsBackFake(t *testing.T) {
	s, k := rigQ35Fake(t)
	edu := mustBDF(t, "0000:01:00.0")
	k.Fail["0000:01:00.0/reset_method"] = syscall.EINVAL
	res, err := s.Reset(edu, ResetOptions{Sleep: noSleep})
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	if res.Method != MethodBus || res.Via != ViaConfig {
		t.Fatalf("result %+v", res)
	}
	ws := k.Writes()
	if ws[0].Path != "sys/bus/pci/devices/0000:01:00.0/reset_method" || ws[1].Path != "sys/bus/pci/devices/0000:00:01.0/config" {
		t.Fatalf("writes:\n%s", writesOf(k))
	}
	// Another error of the kernel is not a reason to go around it.
	s, k = rigQ35Fake(t)
	k.Fail["0000:01:00.0/reset_method"] = syscall.EIO
	if _, err := s.Reset(edu, ResetOptions{Sleep: noSleep}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("EIO: %v", err)
	}
	if n := len(k.Writes()); n != 1 {
		t.Fatalf("writes after EIO:\n%s", writesOf(k))
	}
}
