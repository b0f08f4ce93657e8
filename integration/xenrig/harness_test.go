package xenrig

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rigPreflight skips unless the nested Xen rig can run here: opt-in
// (DMSANDBOX_XEN_RIG=1, make test-xen), root, the L0 QEMU and the Xen
// device model dom0 runs (dom0 sees this host's / over 9p).
func rigPreflight(t *testing.T) {
	t.Helper()
	if os.Getenv("DMSANDBOX_XEN_RIG") == "" {
		t.Skip("nested Xen rig is opt-in: DMSANDBOX_XEN_RIG=1 (make test-xen)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (apt-get download, 9p share of /)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	if _, err := os.Stat("/usr/libexec/xen-qemu-system-i386"); err != nil {
		t.Skip("qemu-system-xen not installed (the device model dom0 runs)")
	}
}

// rigWorkDir is a directory dom0 sees at the same path (not /tmp or /run,
// which dom0 does not share with the host), removed after the test.
func rigWorkDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

// rigBinary is the dmsandbox under test: $DMSANDBOX_BIN (make test-xen
// passes the xen-tagged bin/dmsandbox-xen, the shim beside it), else one
// built from this tree into dir, with the xen backend (the broker in
// dom0) and the shim beside it, where DM mode looks for it.
func rigBinary(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("DMSANDBOX_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	bin := filepath.Join(dir, "dmsandbox")
	for _, c := range []*exec.Cmd{
		exec.Command("go", "build", "-tags", "seccomp xen", "-o", bin, "./cmd/dmsandbox"),
		exec.Command("make", "SHIM="+filepath.Join(dir, "libdmsb-shim.so"), filepath.Join(dir, "libdmsb-shim.so")),
	} {
		c.Dir = "../.."
		c.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	return bin
}

// runRig runs r with timeout per attempt (DMSANDBOX_XEN_RIG_TIMEOUT
// overrides it: a machine busy with other rigs and fuzzers may need more)
// and fails the test unless the dom0 script exits 0; it logs the
// script's output either way.
func runRig(t *testing.T, r *Rig, timeout time.Duration) {
	t.Helper()
	r.Timeout = timeout
	if v := os.Getenv("DMSANDBOX_XEN_RIG_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("DMSANDBOX_XEN_RIG_TIMEOUT: %v", err)
		}
		r.Timeout = d
	}
	// Two attempts, and the wait for another rig's lock.
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.timeout()+3*time.Minute)
	defer cancel()
	res, err := r.Run(ctx)
	if err != nil {
		if res != nil {
			t.Logf("console tail:\n%s", tailLines(res.Console, 40))
			t.Logf("script log:\n%s", res.Log)
		}
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("dom0 script exit %d:\n%s\nconsole tail:\n%s", res.ExitCode, res.Log, tailLines(res.Console, 30))
	}
	t.Logf("boot %.1fs, total %.1fs, attempts %d", res.Boot.Seconds(), res.Duration.Seconds(), res.Attempts)
	t.Log(res.Log)
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
