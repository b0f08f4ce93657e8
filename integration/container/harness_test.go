// Package container_test runs the dmsandbox launcher for real: real QEMU,
// real cgroups, real seccomp, real namespaces. It needs root; it uses KVM
// when /dev/kvm works and TCG otherwise.
package container_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
)

// env is built once for all tests of this package.
type env struct {
	bin     string // dmsandbox
	probe   string // the escape probe, outside /tmp (the sandbox mounts over it)
	cfgPath string
	cfg     launcher.Config
	qemu    string
	accel   string
}

var theEnv *env

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		os.RemoveAll(filepath.Dir(theEnv.bin))
		os.RemoveAll(theEnv.cfg.RunDir)
	}
	os.Exit(code)
}

// setup skips only for a missing host facility, naming it.
func setup(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, cgroups, uid switching)")
	}
	if theEnv != nil {
		return theEnv
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-itest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	e := &env{bin: filepath.Join(dir, "dmsandbox"), probe: filepath.Join(dir, "probe"), qemu: qemu, accel: "tcg"}
	build := func(args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	build("build", "-tags", "seccomp", "-o", e.bin, "./cmd/dmsandbox")
	cmd := exec.Command("go", "build", "-o", e.probe, "./integration/probe")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		e.accel = "kvm"
	}
	// A config of its own: own run dir, cgroup parent and uid range, so
	// that the tests never meet a sandbox of a user of this machine.
	e.cfg = launcher.DefaultConfig()
	e.cfg.UIDBase = 3100000
	e.cfg.UIDCount = 100
	e.cfg.RunDir = filepath.Join(dir, "run")
	e.cfg.CgroupParent = "dmsandbox-itest"
	e.cfg.Cgroup.Pids = 64
	e.cfg.Cgroup.MemoryBytes = 512 << 20
	e.cfg.Rlimits.NoFile = 1024
	e.cfgPath = filepath.Join(dir, "config.json")
	writeConfig(t, e.cfgPath, e.cfg)
	theEnv = e
	return e
}

func writeConfig(t *testing.T, path string, cfg launcher.Config) {
	t.Helper()
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// result of a finished dmsandbox command.
type result struct {
	code           int
	stdout, stderr string
}

// dmsandbox runs the binary to completion.
func (e *env) dmsandbox(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(e.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("dmsandbox %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// qemuArgs is a QEMU that stays up without a guest OS: paused (-S).
func (e *env) qemuArgs(extra ...string) []string {
	return append([]string{e.qemu, "-S", "-display", "none", "-nodefaults", "-machine", "q35",
		"-accel", e.accel, "-m", "64"}, extra...)
}

// running is a launcher started in the background.
type running struct {
	cmd    *exec.Cmd
	name   string
	stderr *bytes.Buffer
	done   chan struct{}
	code   int
}

func (e *env) start(t *testing.T, cfgPath, name string, argv ...string) *running {
	t.Helper()
	args := append([]string{"run", "--config", cfgPath, "--name", name, "--"}, argv...)
	return startRunning(t, exec.Command(e.bin, args...), name)
}

// startRunning starts cmd (a launcher of the sandbox name) in the
// background; the test's cleanup stops it (SIGTERM, then SIGKILL after
// 15 s) if it is still running.
func startRunning(t *testing.T, cmd *exec.Cmd, name string) *running {
	t.Helper()
	r := &running{cmd: cmd, name: name, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.stderr, r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		r.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code = 128 + int(ws.Signal())
			}
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-r.done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-r.done
			}
		}
	})
	return r
}

// waitReady polls until the sandbox's state has a pid and, for QEMU, the
// launcher has logged readiness (it logs only after QMP answered).
func (r *running) waitReady(t *testing.T, e *env, runDir string) *launcher.State {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			t.Fatalf("launcher exited (%d) before ready:\n%s", r.code, r.stderr)
		default:
		}
		if st, err := launcher.ReadState(runDir, r.name); err == nil && st.Pid > 0 &&
			strings.Contains(r.stderr.String(), fmt.Sprintf("dmsandbox: %s: pid", r.name)) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("sandbox %s not ready within 60s:\n%s", r.name, r.stderr)
	return nil
}

func (r *running) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(timeout):
		t.Fatalf("launcher %s still running after %v:\n%s", r.name, timeout, r.stderr)
	}
	return -1
}

// assertGone checks that nothing of sandbox name is left: no process of
// its uid... no cgroup directory on any hierarchy, no run directory.
func assertGone(t *testing.T, e *env, runDir, name string, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, fmt.Sprintf("process %d", pid))
			}
		}
		left = append(left, cgroupDirs(e.cfg.CgroupParent, name)...)
		if _, err := os.Stat(filepath.Join(runDir, name)); err == nil {
			left = append(left, filepath.Join(runDir, name))
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind by %s: %v", name, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive tells whether pid exists and is not a zombie waiting for its
// (new) parent to reap it.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// cgroupDirs finds every directory PARENT/NAME on every cgroup hierarchy,
// at any depth (the sandbox nests under the launcher's own cgroup, whose
// depth differs per hierarchy).
func cgroupDirs(parent, name string) []string {
	var out []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if d.Name() == name && filepath.Base(filepath.Dir(p)) == parent {
			out = append(out, p)
		}
		return nil
	})
	return out
}
