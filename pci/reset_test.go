package pci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

func noSleep(time.Duration) {}

func TestResetKernelBusEduBehindRootPort(t *testing.T) {
	s, k := q35Fake(t)
	res, err := s.Reset(mustBDF(t, "0000:01:00.0"), ResetOptions{Sleep: noSleep})
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != MethodBus || res.Via != ViaKernel {
		t.Fatalf("result %+v", res)
	}
	want := `sys/bus/pci/devices/0000:01:00.0/reset_method="bus"
sys/bus/pci/devices/0000:01:00.0/reset="1"
sys/bus/pci/devices/0000:01:00.0/reset_method="bus"`
	if got := writesOf(k); got != want {
		t.Fatalf("writes:\n%s\nwant:\n%s", got, want)
	}
	if r := k.Resets(); len(r) != 1 || r[0] != "0000:01:00.0:bus" {
		t.Fatalf("resets %v", r)
	}
	// Why FLR and PM were passed over is part of the answer.
	if !strings.Contains(res.Verdicts[0].Why, "no FLR capability") || !strings.Contains(res.Verdicts[1].Why, "no PM capability") {
		t.Fatalf("verdicts %+v", res.Verdicts)
	}
}

func TestResetEduOnRootBusRefused(t *testing.T) {
	s, k := q35Fake(t)
	_, err := s.Reset(mustBDF(t, "0000:00:03.0"), ResetOptions{Sleep: noSleep})
	if !errors.Is(err, ErrNoReset) {
		t.Fatalf("err = %v", err)
	}
	for _, why := range []string{"0000:00:03.0", "flr: no FLR capability", "pm: no PM capability", "bus: on a root bus"} {
		if !strings.Contains(err.Error(), why) {
			t.Errorf("error %q lacks %q", err, why)
		}
	}
	if len(k.Writes()) != 0 {
		t.Fatalf("refused reset wrote:\n%s", writesOf(k))
	}
}

func TestResetOrderFLRThenPM(t *testing.T) {
	s, k := q35Fake(t)
	res, err := s.Reset(mustBDF(t, "0000:02:00.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodFLR || res.Via != ViaKernel {
		t.Fatalf("virtio with flr pm bus: %+v, %v", res, err)
	}
	if r := k.Resets(); r[0] != "0000:02:00.0:flr" {
		t.Fatalf("resets %v", r)
	}
	// The kernel's list is put back afterwards.
	if got := k.Writes()[2].String(); got != `sys/bus/pci/devices/0000:02:00.0/reset_method="flr pm bus"` {
		t.Fatalf("restore write %s", got)
	}
	// e1000e offers only pm; it is refused while e1000e drives it.
	if _, err := s.Reset(mustBDF(t, "0000:00:04.0"), ResetOptions{Sleep: noSleep}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "host driver e1000e") {
		t.Fatalf("reset of a host-driven device: %v", err)
	}
	bd := &Binder{Sysfs: s, State: State{Dir: t.TempDir()}}
	if _, err := bd.Add(mustBDF(t, "0000:00:04.0"), StubVFIO); err != nil {
		t.Fatal(err)
	}
	res, err = s.Reset(mustBDF(t, "0000:00:04.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodPM || res.Verdicts[0].Why != "no FLR capability (neither PCIe DevCap FLR nor AF FLR)" {
		t.Fatalf("e1000e: %+v, %v", res, err)
	}
}

// TestResetBusSiblings: edu at 03:00.1 shares the slot behind root port
// 00:07.0 with a virtio function; the kernel offers edu nothing, so a bus
// reset is dmsandbox's own, by config space, and only when the neighbour
// is idle or belongs to the same domain.
func TestResetBusSiblings(t *testing.T) {
	edu := "0000:03:00.1"
	t.Run("neighbour on a host driver", func(t *testing.T) {
		s, _ := q35Fake(t)
		_, err := s.Reset(mustBDF(t, edu), ResetOptions{Sleep: noSleep})
		if !errors.Is(err, ErrNoReset) || !strings.Contains(err.Error(), "would also reset 0000:03:00.0 (in use by host driver virtio-pci)") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("neighbour on vfio-pci unknown to dmsandbox", func(t *testing.T) {
		s, k := q35Fake(t)
		k.BindHost(t, "0000:03:00.0", "vfio-pci")
		_, err := s.Reset(mustBDF(t, edu), ResetOptions{Sleep: noSleep})
		if !errors.Is(err, ErrNoReset) || !strings.Contains(err.Error(), "without a dmsandbox record") {
			t.Fatalf("err = %v", err)
		}
	})
	owner := func(who string) func(BDF) (string, bool) {
		return func(BDF) (string, bool) { return who, true }
	}
	t.Run("neighbour assigned to another domain", func(t *testing.T) {
		s, k := q35Fake(t)
		k.BindHost(t, "0000:03:00.0", "vfio-pci")
		_, err := s.Reset(mustBDF(t, edu), ResetOptions{Sleep: noSleep, Domain: "dom1", Owner: owner("dom2")})
		if !errors.Is(err, ErrNoReset) || !strings.Contains(err.Error(), "assigned to dom2") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("neighbour in the same domain", func(t *testing.T) {
		s, k := q35Fake(t)
		k.BindHost(t, "0000:03:00.0", "vfio-pci")
		bridge := mustBDF(t, "0000:00:07.0")
		before, _ := s.ReadConfig(mustBDF(t, edu))
		res, err := s.Reset(mustBDF(t, edu), ResetOptions{Sleep: noSleep, Domain: "dom2", Owner: owner("dom2")})
		if err != nil || res.Method != MethodBus || res.Via != ViaConfig {
			t.Fatalf("%+v, %v", res, err)
		}
		ws := k.Writes()
		// Assert and release the bridge's secondary bus reset bit, then
		// restore both functions' headers.
		brCfg := "sys/bus/pci/devices/" + bridge.String() + "/config"
		if ws[0].Path != brCfg || ws[0].Off != cfgBridgeCtl || ws[0].Data[0]&bridgeCtlBusReset == 0 ||
			ws[1].Path != brCfg || ws[1].Data[0]&bridgeCtlBusReset != 0 {
			t.Fatalf("bridge writes:\n%s", writesOf(k))
		}
		restored := map[string]bool{}
		for _, w := range ws[2:] {
			restored[w.Path] = true
		}
		if len(restored) != 2 || !restored["sys/bus/pci/devices/0000:03:00.0/config"] || !restored["sys/bus/pci/devices/"+edu+"/config"] {
			t.Fatalf("restores:\n%s", writesOf(k))
		}
		after, _ := s.ReadConfig(mustBDF(t, edu))
		if string(after[:cfgHeaderLen]) != string(before[:cfgHeaderLen]) {
			t.Fatal("header not restored")
		}
	})
}

// TestResetOldKernelConfigRoute: on a kernel without reset_method (< 5.15)
// FLR and PM are done by config-space writes. The tree is the q35 capture
// with its reset_method files removed and osrelease rewritten (a fake).
func TestResetOldKernelConfigRouteFake(t *testing.T) {
	root := pcifake.CopyTree(t, "testdata/sysfs/q35-vfio-rig")
	olds, _ := filepath.Glob(filepath.Join(root, "sys/devices/*/*/reset_method"))
	olds2, _ := filepath.Glob(filepath.Join(root, "sys/devices/*/*/*/reset_method"))
	for _, p := range append(olds, olds2...) {
		must(t, os.Remove(p))
	}
	must(t, os.WriteFile(filepath.Join(root, "proc/sys/kernel/osrelease"), []byte("5.10.0-28-amd64\n"), 0o644))
	k := pcifake.New(root)
	s := &Sysfs{Root: root, Kernel: k}
	res, err := s.Reset(mustBDF(t, "0000:02:00.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodFLR || res.Via != ViaConfig {
		t.Fatalf("%+v, %v", res, err)
	}
	w := k.Writes()[0]
	// PCIe cap at 0x40: Device Control at 0x48, Initiate FLR is bit 15.
	if w.Off != 0x48 || w.Data[1]&0x80 == 0 {
		t.Fatalf("first write %s", w)
	}
	res, err = s.Reset(mustBDF(t, "0000:00:04.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodPM || res.Via != ViaConfig {
		t.Fatalf("%+v, %v", res, err)
	}
}

// TestResetKernelQuirk: the device advertises FLR but the kernel, which
// has reset_method, does not offer it (a quirk): do not go around it.
func TestResetKernelQuirkFake(t *testing.T) {
	s, k := q35Fake(t)
	dir, _ := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, "0000:02:00.0")))
	must(t, os.WriteFile(filepath.Join(dir, "reset_method"), []byte("bus\n"), 0o644))
	res, err := s.Reset(mustBDF(t, "0000:02:00.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodBus || !strings.Contains(res.Verdicts[0].Why, "does not offer flr") {
		t.Fatalf("%+v, %v", res, err)
	}
	if r := k.Resets(); r[0] != "0000:02:00.0:bus" {
		t.Fatalf("resets %v", r)
	}
}

func TestResetTimeout(t *testing.T) {
	s, k := q35Fake(t)
	hang := make(chan struct{})
	defer close(hang)
	k.Block["/reset"] = hang
	_, err := s.Reset(mustBDF(t, "0000:01:00.0"), ResetOptions{Sleep: noSleep, Timeout: 20 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "0000:01:00.0") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseRelease(t *testing.T) {
	for r, want := range map[string][2]int{"6.1.0-56-amd64": {6, 1}, "5.15.0": {5, 15}, "6.18.44-fc-v595\n": {6, 18}, "4.19": {4, 19}} {
		ma, mi, ok := parseRelease(r)
		if !ok || ma != want[0] || mi != want[1] {
			t.Errorf("%q: %d.%d %v", r, ma, mi, ok)
		}
	}
	if _, _, ok := parseRelease("linux"); ok {
		t.Error("parsed garbage")
	}
}

// TestResetRefusesPFWithVFsFake: virtfn links added by hand (a fake; no
// QEMU model here enables VFs).
func TestResetRefusesPFWithVFsFake(t *testing.T) {
	s, k := q35Fake(t)
	pf, _ := filepath.EvalSymlinks(s.DevicePath(mustBDF(t, "0000:02:00.0")))
	must(t, os.Symlink("../0000:02:00.1", filepath.Join(pf, "virtfn0")))
	_, err := s.Reset(mustBDF(t, "0000:02:00.0"), ResetOptions{Sleep: noSleep})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "1 virtual functions") {
		t.Fatalf("err = %v", err)
	}
	if len(k.Writes()) != 0 {
		t.Fatal("wrote")
	}
}

// TestResetAFFLRConfigRouteFake: an AF capability with FLR grafted onto
// the edu's config space in a copy (no QEMU model here has AF), on a
// kernel without reset_method: the reset is an AF "Initiate FLR" write.
func TestResetAFFLRConfigRouteFake(t *testing.T) {
	root := pcifake.CopyTree(t, "testdata/sysfs/q35-vfio-rig")
	must(t, os.WriteFile(filepath.Join(root, "proc/sys/kernel/osrelease"), []byte("5.4.0\n"), 0o644))
	for _, p := range []string{"sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0", "sys/devices/pci0000:00/0000:00:06.0/0000:02:00.0",
		"sys/devices/pci0000:00/0000:00:07.0/0000:03:00.0", "sys/devices/pci0000:00/0000:00:04.0"} {
		must(t, os.Remove(filepath.Join(root, p, "reset_method")))
	}
	cfgPath := filepath.Join(root, "sys/devices/pci0000:00/0000:00:03.0/config")
	cfg, err := os.ReadFile(cfgPath)
	must(t, err)
	cfg[0x41] = 0x60 // MSI -> AF
	copy(cfg[0x60:], []byte{CapAF, 0x00, 6, afCapFLR | afCapTP, 0, 0})
	must(t, os.WriteFile(cfgPath, cfg, 0o644))
	k := pcifake.New(root)
	s := &Sysfs{Root: root, Kernel: k}
	res, err := s.Reset(mustBDF(t, "0000:00:03.0"), ResetOptions{Sleep: noSleep})
	if err != nil || res.Method != MethodAFFLR || res.Via != ViaConfig {
		t.Fatalf("%+v, %v", res, err)
	}
	if w := k.Writes()[0]; w.Off != 0x64 || w.Data != "\x01" {
		t.Fatalf("first write %s", w)
	}
}
