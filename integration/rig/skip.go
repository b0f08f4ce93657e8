package rig

import (
	"os"
	"os/exec"
	"testing"
)

// SkipIfNoRig skips the test when this host cannot run a rig at all: no
// qemu-system-x86_64, or no kernel to boot (apt cannot resolve or download
// linux-image-amd64's kernel and the cache holds none). The message says
// which. Anything else that goes wrong later is a failure, not a skip.
func SkipIfNoRig(t testing.TB) {
	t.Helper()
	qemu := os.Getenv("DMSANDBOX_RIG_QEMU")
	if qemu == "" {
		qemu = qemuBinary
	}
	if _, err := exec.LookPath(qemu); err != nil {
		t.Skipf("rig: no %s on this host (apt-get install qemu-system-x86): %v", qemu, err)
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	if _, err := EnsureKernel(cache); err != nil {
		t.Skipf("rig: cannot obtain the L1 kernel: %v", err)
	}
}
