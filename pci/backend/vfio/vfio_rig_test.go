package vfio

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// TestVFIORig runs TestInRig inside the nested VFIO rig (integration/rig):
// an L1 with an emulated VT-d and an edu device behind a root port, where
// binding to vfio-pci, /dev/vfio/N, prlimit and bus resets are real.
// Budget: about a minute (boot under TCG), 2 minutes per attempt.
func TestVFIORig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 40 s); skipped with -short")
	}
	if os.Getenv(inRigEnv) != "" {
		t.Skip("already inside the rig")
	}
	rig.SkipIfNoRig(t)
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	testBin := filepath.Join(t.TempDir(), "vfio.test")
	build := exec.Command("go", "test", "-c", "-tags", "seccomp", "-o", testBin, "./pci/backend/vfio")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build test binary: %v\n%s", err, out)
	}
	r := rig.Rig{
		Devices: []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		Timeout: 2 * time.Minute,
		Env:     map[string]string{"T": testBin, inRigEnv: "1"},
		Script:  `cd /tmp && "$T" -test.run '^TestInRig$' -test.v 2>&1`,
		Logf:    t.Logf,
		WorkDir: t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	res, err := r.Run(ctx)
	if res != nil {
		t.Logf("L1 (attempts %d, boot %.1fs, total %.1fs):\n%s", res.Attempts, res.Boot.Seconds(), res.Duration.Seconds(), res.Log)
	}
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Log, "--- PASS: TestInRig") {
		t.Fatalf("TestInRig failed in L1 (exit %d)", res.ExitCode)
	}
}

const inRigEnv = "DMSANDBOX_VFIO_IN_RIG"

// TestInRig: the broker with the vfio backend on L1's real sysfs: attach
// binds edu to vfio-pci, raises a stand-in device model's RLIMIT_MEMLOCK
// and hands /dev/vfio/N to uid 65534; config reads go to the device; a
// reset is a real secondary bus reset; closing the session resets again
// and takes the node back, leaving the device on vfio-pci (quarantine).
func TestInRig(t *testing.T) {
	if os.Getenv(inRigEnv) != "1" {
		t.Skip("runs inside the nested VFIO rig (TestVFIORig)")
	}
	sys := pci.NewSysfs("/")
	devs, err := sys.Devices()
	if err != nil {
		t.Fatal(err)
	}
	var edu *pci.Device
	for _, d := range devs {
		if d.Vendor == 0x1234 && d.DeviceID == 0x11e8 {
			edu = d
		}
	}
	if edu == nil {
		t.Fatal("no edu device in L1")
	}
	t.Logf("edu %s group %d reset methods %v driver %q", edu.BDF, edu.IOMMUGroup, edu.ResetMethods, edu.Driver)
	be, err := New(Options{Sysfs: sys, StateDir: filepath.Join(t.TempDir(), "pci")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := broker.NewEmbedded(broker.EmbeddedConfig{Backend: be, AuditDir: filepath.Join(t.TempDir(), "audit"), StateDir: filepath.Join(t.TempDir(), "state")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	dm := exec.Command("sleep", "120") // stands in for the device model
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	defer dm.Process.Kill()

	id, f, err := e.Open(1, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Attach(id, edu.BDF, broker.AttachOptions{Grant: backend.Grant{UID: 65534, GID: 65534, QEMUPid: dm.Process.Pid, MemlockBytes: 256 << 20}}); err != nil {
		t.Fatal(err)
	}
	now, _ := sys.Device(edu.BDF)
	if now.Driver != "vfio-pci" {
		t.Fatalf("after attach on %q", now.Driver)
	}
	node := fmt.Sprintf("/dev/vfio/%d", now.IOMMUGroup)
	if uid, gid := nodeOwner(t, node); uid != 65534 || gid != 65534 {
		t.Fatalf("%s owned by %d:%d", node, uid, gid)
	}
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", dm.Process.Pid))
	if !strings.Contains(string(limits), "268435456") {
		t.Fatalf("memlock of the device model not raised:\n%s", limits)
	}
	c, err := broker.NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(&broker.Hello{Version: 1}, nil); err != nil {
		t.Fatal(err)
	}
	var v broker.ConfigReadReply
	if err := c.Do(&broker.ConfigRead{BDF: broker.WireBDF(edu.BDF), Size: 4}, &v); err != nil || v.Value != 0x11e81234 {
		t.Fatalf("config read: %#x %v", v.Value, err)
	}
	if err := c.Do(&broker.Reset{BDF: broker.WireBDF(edu.BDF)}, nil); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if err := c.Do(&broker.MemoryMapping{Domid: 1, Add: 1, FirstGfn: 1, FirstMfn: edu.BARs[0].Start >> 12, NrMfns: 1}, nil); broker.Errno(err) != syscall.EOPNOTSUPP {
		t.Fatalf("a hypercall op on vfio: %v", err)
	}
	c.Close() // the device model hangs up: the broker undoes the session
	for i := 0; i < 1000; i++ {
		if len(e.Sessions()) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if uid, gid := nodeOwner(t, node); uid != 0 || gid != 0 {
		t.Fatalf("after close %s owned by %d:%d", node, uid, gid)
	}
	if now, _ := sys.Device(edu.BDF); now.Driver != "vfio-pci" {
		t.Fatalf("after close on %q, not in quarantine", now.Driver)
	}
}

func nodeOwner(t *testing.T, path string) (int, int) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid)
}
