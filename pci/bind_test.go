package pci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// q35Fake returns a Sysfs over a writable copy of the q35 capture with a
// fake kernel, vfio-pci loaded, e1000e on its host driver and the virtio
// function of the multi-function slot on virtio-pci.
func q35Fake(t *testing.T) (*Sysfs, *pcifake.Kernel) {
	t.Helper()
	root := pcifake.CopyTree(t, "testdata/sysfs/q35-vfio-rig")
	k := pcifake.New(root)
	k.LoadDriver(t, "vfio-pci")
	k.BindHost(t, "0000:00:04.0", "e1000e")
	k.BindHost(t, "0000:03:00.0", "virtio-pci")
	return &Sysfs{Root: root, Kernel: k}, k
}

func writesOf(k *pcifake.Kernel) string {
	var out []string
	for _, w := range k.Writes() {
		out = append(out, w.String())
	}
	return strings.Join(out, "\n")
}

func driverOf(t *testing.T, s *Sysfs, bdf string) string {
	t.Helper()
	d, err := s.Device(mustBDF(t, bdf))
	if err != nil {
		t.Fatal(err)
	}
	return d.Driver
}

func TestAssignableAddRemoveVFIO(t *testing.T) {
	s, k := q35Fake(t)
	state := State{Dir: t.TempDir()}
	bd := &Binder{Sysfs: s, State: state}
	b := mustBDF(t, "0000:00:04.0")

	rec, err := bd.Add(b, StubVFIO)
	if err != nil {
		t.Fatal(err)
	}
	want := `sys/bus/pci/devices/0000:00:04.0/driver_override="vfio-pci\n"
sys/bus/pci/drivers/e1000e/unbind="0000:00:04.0"
sys/bus/pci/drivers_probe="0000:00:04.0"`
	if got := writesOf(k); got != want {
		t.Fatalf("writes:\n%s\nwant:\n%s", got, want)
	}
	if driverOf(t, s, "0000:00:04.0") != "vfio-pci" || rec.OriginalDriver != "e1000e" || rec.Phase != PhaseBound {
		t.Fatalf("after add: driver %s, record %+v", driverOf(t, s, "0000:00:04.0"), rec)
	}
	// Persisted: a new Binder (a restarted dmsandbox) finds the record.
	again, err := (&Binder{Sysfs: s, State: State{Dir: state.Dir}}).State.Load(b)
	if err != nil || again.OriginalDriver != "e1000e" || again.Version != 1 {
		t.Fatalf("reloaded record %+v, %v", again, err)
	}
	// Idempotent.
	if _, err := bd.Add(b, StubVFIO); err != nil {
		t.Fatalf("second add: %v", err)
	}
	n := len(k.Writes())

	bd2 := &Binder{Sysfs: s, State: State{Dir: state.Dir}}
	if _, err := bd2.Remove(b); err != nil {
		t.Fatal(err)
	}
	got := k.Writes()[n:]
	wantRm := []string{
		`sys/bus/pci/drivers/vfio-pci/unbind="0000:00:04.0"`,
		`sys/bus/pci/devices/0000:00:04.0/driver_override="\n"`,
		`sys/bus/pci/drivers/e1000e/bind="0000:00:04.0"`,
	}
	if len(got) != len(wantRm) {
		t.Fatalf("remove writes %v", got)
	}
	for i := range wantRm {
		if got[i].String() != wantRm[i] {
			t.Errorf("remove write %d = %s, want %s", i, got[i], wantRm[i])
		}
	}
	if driverOf(t, s, "0000:00:04.0") != "e1000e" {
		t.Fatalf("not back on e1000e")
	}
	if _, err := state.Load(b); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("record still there: %v", err)
	}
	if d, _ := s.Device(b); d.DriverOverride != "" {
		t.Fatalf("override left: %q", d.DriverOverride)
	}
}

func TestAssignableAddRefusals(t *testing.T) {
	s, k := q35Fake(t)
	deny, err := ParseDenyList([]byte("# boot disk\n0000:00:1f.2\n1af4:*   # every virtio\n"))
	if err != nil {
		t.Fatal(err)
	}
	bd := &Binder{Sysfs: s, State: State{Dir: t.TempDir()}, Deny: deny}
	cases := map[string]string{
		"0000:00:02.0": "is a PCI bridge",
		"0000:00:00.0": "host bridge",
		"0000:00:1f.0": "ISA/LPC bridge",
		"0000:00:1f.2": "deny list (0000:00:1f.2)",
		"0000:00:05.0": "deny list (1af4:*)",
		"0000:03:00.1": "iommu group 11 not viable: shared with 0000:03:00.0 (on virtio-pci); make the whole group assignable (--group)",
	}
	for bdf, why := range cases {
		_, err := bd.Add(mustBDF(t, bdf), StubVFIO)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), bdf) {
			t.Errorf("%s: err = %v, want refusal %q", bdf, err, why)
		}
	}
	if _, err := bd.Add(mustBDF(t, "0000:00:04.0"), StubPciback); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "pciback is not loaded") {
		t.Errorf("pciback not loaded: %v", err)
	}
	if len(k.Writes()) != 0 {
		t.Fatalf("a refusal wrote to sysfs:\n%s", writesOf(k))
	}
	if recs, _ := bd.State.List(); len(recs) != 0 {
		t.Fatalf("a refusal left records: %+v", recs)
	}
	// No IOMMU at all (i440fx): vfio-pci refuses, pciback does not care.
	root := pcifake.CopyTree(t, "testdata/sysfs/i440fx-multifn")
	k2 := pcifake.New(root)
	k2.LoadDriver(t, "vfio-pci")
	k2.LoadDriver(t, "pciback")
	k2.BindHost(t, "0000:00:03.0", "e1000")
	s2 := &Sysfs{Root: root, Kernel: k2}
	bd2 := &Binder{Sysfs: s2, State: State{Dir: t.TempDir()}}
	if _, err := bd2.Add(mustBDF(t, "0000:00:03.0"), StubVFIO); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no IOMMU group") {
		t.Errorf("vfio without iommu: %v", err)
	}
	if rec, err := bd2.Add(mustBDF(t, "0000:00:03.0"), StubPciback); err != nil || rec.OriginalDriver != "e1000" || driverOf(t, s2, "0000:00:03.0") != "pciback" {
		t.Errorf("pciback add: %+v, %v", rec, err)
	}
}

// TestAssignableCrashRecovery: drivers_probe fails after the unbind (as if
// dmsandbox died there); the record, written first, still leads home.
func TestAssignableCrashRecovery(t *testing.T) {
	s, k := q35Fake(t)
	state := State{Dir: t.TempDir()}
	b := mustBDF(t, "0000:00:04.0")
	k.Fail["drivers_probe"] = syscall.EIO
	if _, err := (&Binder{Sysfs: s, State: state}).Add(b, StubVFIO); err == nil {
		t.Fatal("add succeeded with a failing probe")
	}
	delete(k.Fail, "drivers_probe")
	rec, err := state.Load(b)
	if err != nil || rec.Phase != PhaseBinding || rec.OriginalDriver != "e1000e" {
		t.Fatalf("record after crash: %+v, %v", rec, err)
	}
	if driverOf(t, s, "0000:00:04.0") != "" {
		t.Fatal("expected the device on no driver")
	}
	// A second add refuses to stack on the half-done record.
	if _, err := (&Binder{Sysfs: s, State: state}).Add(b, StubVFIO); !errors.Is(err, ErrRefused) {
		t.Fatalf("add over a binding record: %v", err)
	}
	// A restarted dmsandbox recovers it; a fully bound device stays.
	if _, err := (&Binder{Sysfs: s, State: state}).Add(mustBDF(t, "0000:01:00.0"), StubVFIO); err != nil {
		t.Fatal(err)
	}
	undone, err := (&Binder{Sysfs: s, State: state}).Recover()
	if err != nil || len(undone) != 1 || undone[0].BDF != b {
		t.Fatalf("recover: %+v, %v", undone, err)
	}
	if driverOf(t, s, "0000:01:00.0") != "vfio-pci" {
		t.Fatal("recover touched a bound device")
	}
	if driverOf(t, s, "0000:00:04.0") != "e1000e" {
		t.Fatal("not back on e1000e")
	}
}

func TestAssignableTimeout(t *testing.T) {
	s, k := q35Fake(t)
	hang := make(chan struct{})
	defer close(hang)
	k.Block["drivers_probe"] = hang
	bd := &Binder{Sysfs: s, State: State{Dir: t.TempDir()}, Timeout: 20 * time.Millisecond}
	_, err := bd.Add(mustBDF(t, "0000:00:04.0"), StubVFIO)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "drivers_probe") {
		t.Fatalf("err = %v", err)
	}
}

func TestAssignableRemoveChecks(t *testing.T) {
	s, k := q35Fake(t)
	state := State{Dir: t.TempDir()}
	bd := &Binder{Sysfs: s, State: state}
	b := mustBDF(t, "0000:00:04.0")
	if _, err := bd.Remove(b); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("remove without record: %v", err)
	}
	if _, err := bd.Add(b, StubVFIO); err != nil {
		t.Fatal(err)
	}
	rec, _ := state.Load(b)
	// Another device at the same address.
	rec.DeviceID = 0xbeef
	must(t, state.Save(rec))
	if _, err := bd.Remove(b); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "8086:beef") {
		t.Fatalf("vendor mismatch: %v", err)
	}
	// Assigned to a domain.
	rec.DeviceID, rec.Owner = 0x10d3, "dom7"
	must(t, state.Save(rec))
	if _, err := bd.Remove(b); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "dom7") {
		t.Fatalf("owned: %v", err)
	}
	// A record of a future format is not guessed at.
	data, _ := os.ReadFile(filepath.Join(state.Dir, "0000:00:04.0.json"))
	must(t, os.WriteFile(filepath.Join(state.Dir, "0000:00:04.0.json"), []byte(strings.Replace(string(data), `"version": 1`, `"version": 2`, 1)), 0o600))
	if _, err := bd.Remove(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("future version: %v", err)
	}
	_ = k
}

func TestAdoptDeviceAlreadyOnStub(t *testing.T) {
	s, k := q35Fake(t)
	k.BindHost(t, "0000:00:04.0", "vfio-pci")
	bd := &Binder{Sysfs: s, State: State{Dir: t.TempDir()}}
	rec, err := bd.Add(mustBDF(t, "0000:00:04.0"), StubVFIO)
	if err != nil || rec.OriginalDriver != "" {
		t.Fatalf("adopt: %+v, %v", rec, err)
	}
	if w := writesOf(k); w != `sys/bus/pci/devices/0000:00:04.0/driver_override="vfio-pci\n"` {
		t.Fatalf("writes %s", w)
	}
	// With no original driver recorded, Remove lets the kernel choose
	// (drivers_probe); its id table would pick e1000e.
	k.Match["0000:00:04.0"] = "e1000e"
	if _, err := bd.Remove(mustBDF(t, "0000:00:04.0")); err != nil {
		t.Fatal(err)
	}
	if driverOf(t, s, "0000:00:04.0") != "e1000e" {
		t.Fatal("kernel's choice not applied")
	}
}

func TestParseDenyList(t *testing.T) {
	for _, bad := range []string{"8086", "80860:1234", "zzzz:*", "0000:00:1f.9", "8086:12"} {
		if _, err := ParseDenyList([]byte(bad)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestAssignableAddGroup: the two functions of the slot behind 00:07.0
// share group 11; neither can go alone, both go together and come back.
func TestAssignableAddGroup(t *testing.T) {
	s, k := q35Fake(t)
	bd := &Binder{Sysfs: s, State: State{Dir: t.TempDir()}}
	recs, err := bd.AddGroup(mustBDF(t, "0000:03:00.1"), StubVFIO)
	if err != nil || len(recs) != 2 {
		t.Fatalf("%+v, %v", recs, err)
	}
	if driverOf(t, s, "0000:03:00.0") != "vfio-pci" || driverOf(t, s, "0000:03:00.1") != "vfio-pci" || recs[0].OriginalDriver != "virtio-pci" {
		t.Fatalf("after group add:\n%s", writesOf(k))
	}
	for _, r := range recs {
		if _, err := bd.Remove(r.BDF); err != nil {
			t.Fatal(err)
		}
	}
	if driverOf(t, s, "0000:03:00.0") != "virtio-pci" {
		t.Fatal("virtio function not given back")
	}
	// A group holding the chipset's LPC bridge is refused whole, untouched.
	n := len(k.Writes())
	if _, err := bd.AddGroup(mustBDF(t, "0000:00:1f.2"), StubVFIO); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "ISA/LPC") {
		t.Fatalf("chipset group: %v", err)
	}
	// One member failing to bind rolls back the others.
	k.Fail["drivers_probe"] = syscall.EIO
	if _, err := bd.AddGroup(mustBDF(t, "0000:03:00.1"), StubVFIO); err == nil {
		t.Fatal("group add with failing probe succeeded")
	}
	delete(k.Fail, "drivers_probe")
	if len(k.Writes()) == n {
		t.Fatal("nothing tried")
	}
	if driverOf(t, s, "0000:03:00.0") != "virtio-pci" {
		t.Fatalf("not rolled back:\n%s", writesOf(k))
	}
	if recs, _ := bd.State.List(); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
}

func TestAssignableLockedByAnother(t *testing.T) {
	s, k := q35Fake(t)
	st := State{Dir: t.TempDir()}
	unlock, err := st.lock(mustBDF(t, "0000:00:04.0"))
	must(t, err)
	defer unlock()
	_, err = (&Binder{Sysfs: s, State: st}).Add(mustBDF(t, "0000:00:04.0"), StubVFIO)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another dmsandbox") || len(k.Writes()) != 0 {
		t.Fatalf("err = %v", err)
	}
}
