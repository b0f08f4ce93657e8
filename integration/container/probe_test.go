package container_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	scratch := scratchCgroup(t)
	attempts := []string{"open-shadow", "open-kcore", "open-devmem", "open-sys", "list-sys",
		"write-cgroup " + scratch, "mount", "unshare-user", "unshare-mnt", "setuid0",
		"ptrace-init", "socket-inet", "socket-netlink", "mknod-mem", "write-root", "chroot", "fork",
		"kill-outside " + fmt.Sprint(os.Getpid())}
	// Calls seccomp must stop by itself (SIGSYS), not merely see fail:
	// ptrace of pid 1 would fail anyway (it is the probe itself).
	mustKill := map[string]bool{"ptrace-init": true, "mount": true, "unshare-user": true, "fork": true, "socket-inet": true}
	for _, a := range attempts {
		t.Run(strings.Fields(a)[0], func(t *testing.T) {
			args := append([]string{"run", "--config", e.cfgPath, "--name", "it-probe", "--", e.probe}, strings.Fields(a)...)
			res := e.dmsandbox(t, args...)
			switch {
			case res.code == 0 && strings.Contains(res.stdout, "BLOCKED") && !mustKill[strings.Fields(a)[0]]:
				t.Logf("%s", strings.TrimSpace(res.stdout))
			case res.code == 128+31:
				t.Logf("%s: killed by seccomp", a)
			default:
				t.Fatalf("%s: exit %d, stdout %q, stderr %q", a, res.code, res.stdout, res.stderr)
			}
		})
	}
}

// TestProbeControls runs attempts of TestProbeEscapes unconfined, as root:
// each must succeed there, so that a "blocked" inside the sandbox is the
// sandbox's doing and not an attempt that could never work.
func TestProbeControls(t *testing.T) {
	e := setup(t)
	for _, a := range []string{"open-shadow", "open-sys", "list-sys", "write-cgroup " + scratchCgroup(t),
		"socket-inet", "kill-outside " + fmt.Sprint(os.Getpid()), "unshare-mnt"} {
		out, err := exec.Command(e.probe, strings.Fields(a)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ESCAPED") {
			t.Errorf("%s unconfined: %v %q; the attempt cannot succeed, so it proves nothing confined", a, err, out)
		}
	}
}

// scratchCgroup makes an empty pids cgroup of the test's own and returns
// the path of its pids.max, a file root may write on the host.
func scratchCgroup(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/sys/fs/cgroup/pids")
	root := "/sys/fs/cgroup"
	if len(dirs) == 1 {
		root = dirs[0]
	}
	dir := filepath.Join(root, "dmsandbox-itest-scratch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("cannot make a scratch cgroup (%v)", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	return filepath.Join(dir, "pids.max")
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
