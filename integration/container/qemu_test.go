package container_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
	"github.com/dmsandbox/dmsandbox/launcher"
)

// TestQEMUConfined launches qemu-system-x86_64 -S confined and checks the
// confinement from outside, then a QMP round trip, then a clean stop.
func TestQEMUConfined(t *testing.T) {
	e := setup(t)
	r := e.start(t, e.cfgPath, "it-qemu", e.qemuArgs()...)
	st := r.waitReady(t, e, e.cfg.RunDir)

	res := e.dmsandbox(t, "inspect", "it-qemu", "--json", "--config", e.cfgPath)
	if res.code != 0 {
		t.Fatalf("inspect: %d %s", res.code, res.stderr)
	}
	var in launcher.Inspection
	if err := json.Unmarshal([]byte(res.stdout), &in); err != nil {
		t.Fatal(err)
	}
	if in.Pid != st.Pid || in.Pid <= 0 {
		t.Fatalf("inspect pid %d, state pid %d", in.Pid, st.Pid)
	}
	checkConfinement(t, e, &in, st.UID)

	// The management QMP socket answers through go-qemu.
	mon, err := qmp.NewSocketMonitor("unix", in.QMPSocket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	dom, err := qemu.NewDomain(mon, "it-qemu")
	if err != nil {
		t.Fatal(err)
	}
	status, err := dom.Status()
	if err != nil {
		t.Fatal(err)
	}
	if status != qemu.StatusPreLaunch {
		t.Fatalf("QEMU -S status %v, want prelaunch", status)
	}
	dom.Close()

	// SIGTERM to the launcher is forwarded; QEMU quits; all is removed.
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("launcher exit %d after SIGTERM, want 0 (QEMU quits cleanly):\n%s", code, r.stderr)
	}
	assertGone(t, e, e.cfg.RunDir, "it-qemu", st.Pid)
}

// checkConfinement asserts what the issue lists, as the kernel reports it.
func checkConfinement(t *testing.T, e *env, in *launcher.Inspection, uid uint32) {
	t.Helper()
	for i, v := range in.Uid {
		if v != int(uid) || v == 0 {
			t.Errorf("uid[%d] = %d, want %d", i, v, uid)
		}
	}
	for i, v := range in.Gid {
		if v != int(uid) || v == 0 {
			t.Errorf("gid[%d] = %d, want %d", i, v, uid)
		}
	}
	if len(in.Groups) != 0 {
		t.Errorf("supplementary groups %v, want none", in.Groups)
	}
	for name, c := range map[string]string{"CapEff": in.CapEff, "CapPrm": in.CapPrm, "CapBnd": in.CapBnd,
		"CapInh": in.CapInh, "CapAmb": in.CapAmb} {
		if c != "0000000000000000" {
			t.Errorf("%s = %s, want 0", name, c)
		}
	}
	if in.NoNewPrivs != 1 {
		t.Errorf("NoNewPrivs = %d", in.NoNewPrivs)
	}
	if in.Seccomp != 2 || in.Filters < 1 {
		t.Errorf("Seccomp = %d (%d filters), want 2", in.Seccomp, in.Filters)
	}
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net", "cgroup"} {
		n, ok := in.Namespaces[ns]
		if !ok || n.Shared {
			t.Errorf("%s namespace shared with the launcher: %+v", ns, n)
		}
	}
	// The root holds only the minimal tree: no /etc, /home, /root, /sys,
	// /var, no shell.
	allowed := map[string]bool{"usr": true, "lib": true, "lib64": true, "bin": true, "sbin": true,
		"proc": true, "dev": true, "tmp": true, "run": true, "sys": true}
	for _, ent := range in.Root {
		if !allowed[ent] {
			t.Errorf("unexpected /%s in the sandbox root", ent)
		}
	}
	for _, path := range []string{"etc/shadow", "etc/passwd", "bin/sh", "usr/bin/bash"} {
		if _, err := os.Lstat(fmt.Sprintf("/proc/%d/root/%s", in.Pid, path)); err == nil {
			t.Errorf("/%s exists in the sandbox root", path)
		}
	}
	// /sys is only an empty mount point: no sysfs.
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/sys", in.Pid)); err != nil || len(ents) != 0 {
		t.Errorf("/sys in the sandbox: %d entries, %v", len(ents), err)
	}
	// Only the expected fds: stdio, the QMP socket as fd 3, and what QEMU
	// opened itself (KVM, anonymous inodes, sockets/pipes) — never a file
	// of the host or of the launcher (locks, state, logs beyond stdio).
	if !strings.HasPrefix(in.Fds[3], "socket:") {
		t.Errorf("fd 3 = %q, want the QMP socket", in.Fds[3])
	}
	// Before any client connects QEMU has no socket but the one handed in,
	// and no pipe at all: a socket or pipe elsewhere would be a leak from
	// the launcher or its reaper.
	for fd, target := range in.Fds {
		ok := fd <= 2 || (fd == 3 && strings.HasPrefix(target, "socket:")) ||
			strings.HasPrefix(target, "anon_inode:") || target == "/dev/kvm" || target == "/dev/null" ||
			target == "/dev/urandom" || strings.HasPrefix(target, "/memfd:")
		if !ok {
			t.Errorf("unexpected fd %d -> %s", fd, target)
		}
	}
	lim := map[string]string{"Max core file size": "0", "Max msgqueue size": "0", "Max file locks": "0",
		"Max open files": fmt.Sprint(e.cfg.Rlimits.NoFile), "Max processes": fmt.Sprint(e.cfg.Rlimits.NProc),
		"Max file size": fmt.Sprint(e.cfg.Rlimits.FSize)}
	for name, want := range lim {
		if got := in.Limits[name]; got.Soft != want || got.Hard != want {
			t.Errorf("rlimit %s = %s/%s, want %s", name, got.Soft, got.Hard, want)
		}
	}
	if !in.Cgroup.Member {
		t.Error("QEMU is not in its cgroup")
	}
	files := in.Cgroup.Files
	switch in.Cgroup.Mode {
	case launcher.CgroupV1:
		want := map[string]string{"memory.limit_in_bytes": fmt.Sprint(e.cfg.Cgroup.MemoryBytes),
			"pids.max": fmt.Sprint(e.cfg.Cgroup.Pids), "cpu.cfs_quota_us": fmt.Sprint(e.cfg.Cgroup.CPUQuotaUS),
			"cpu.shares": fmt.Sprint(e.cfg.Cgroup.CPUShares)}
		for f, v := range want {
			if files[f] != v {
				t.Errorf("%s = %q, want %s", f, files[f], v)
			}
		}
		if strings.Contains(files["devices.list"], "a *:* rwm") || !strings.Contains(files["devices.list"], "c 1:3 rwm") {
			t.Errorf("devices.list not an allowlist: %q", files["devices.list"])
		}
	case launcher.CgroupV2:
		if files["memory.max"] != fmt.Sprint(e.cfg.Cgroup.MemoryBytes) || files["pids.max"] != fmt.Sprint(e.cfg.Cgroup.Pids) {
			t.Errorf("v2 limits %v", files)
		}
	}
}
