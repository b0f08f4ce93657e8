package container_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestProbeEscapes runs the probe under the same sandbox as QEMU (profile
// qemu-kvm) once per attempt. Each attempt must fail: the probe reports
// BLOCKED (exit 0) or seccomp kills it (SIGSYS: 128+31).
func TestProbeEscapes(t *testing.T) {
	e := setup(t)
	// Control: a harmless attempt reports ESCAPED, so a probe that could
	// not run at all is not mistaken for a blocked attempt.
	if res := e.dmsandbox(t, "run", "--config", e.cfgPath, "--name", "it-probe", "--", e.probe, "ok"); res.code != 1 ||
		!strings.Contains(res.stdout, "ESCAPED ok") {
		t.Fatalf("control attempt: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	attempts := []string{"open-shadow", "open-kcore", "open-devmem", "open-sys", "list-sys",
		"write-cgroup", "write-cgroup-proc", "mount", "unshare-user", "unshare-mnt", "setuid0",
		"ptrace-init", "socket-inet", "socket-netlink", "mknod-mem", "write-root", "chroot", "fork",
		"kill-outside " + fmt.Sprint(os.Getpid())}
	for _, a := range attempts {
		t.Run(strings.Fields(a)[0], func(t *testing.T) {
			args := append([]string{"run", "--config", e.cfgPath, "--name", "it-probe", "--", e.probe}, strings.Fields(a)...)
			res := e.dmsandbox(t, args...)
			switch {
			case res.code == 0 && strings.Contains(res.stdout, "BLOCKED"):
				t.Logf("%s", strings.TrimSpace(res.stdout))
			case res.code == 128+31:
				t.Logf("%s: killed by seccomp", a)
			default:
				t.Fatalf("%s: exit %d, stdout %q, stderr %q", a, res.code, res.stdout, res.stderr)
			}
		})
	}
}

// TestPidsLimit: threads count against pids.max (64 in the test config);
// asking for 200 threads must fail inside the sandbox.
func TestPidsLimit(t *testing.T) {
	e := setup(t)
	res := e.dmsandbox(t, "run", "--config", e.cfgPath, "--name", "it-pids", "--", e.probe, "threads", "200")
	if res.code == 0 || res.code == 1 || strings.Contains(res.stdout, "ESCAPED") {
		t.Fatalf("200 threads under pids.max=%d: exit %d, stdout %q", e.cfg.Cgroup.Pids, res.code, res.stdout)
	}
	if !strings.Contains(res.stderr, "failed to create new OS thread") && !strings.Contains(res.stderr, "resource temporarily unavailable") {
		t.Fatalf("probe did not fail on thread creation: %s", res.stderr)
	}
}
