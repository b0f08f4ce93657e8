package container_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLauncherSIGKILL: the launcher dies without any chance to clean up;
// its reaper must kill QEMU and remove the cgroup and run directory.
func TestLauncherSIGKILL(t *testing.T) {
	e := setup(t)
	r := e.start(t, e.cfgPath, "it-kill", e.qemuArgs()...)
	st := r.waitReady(t, e, e.cfg.RunDir)
	r.cmd.Process.Kill()
	r.wait(t, 10*time.Second)
	assertGone(t, e, e.cfg.RunDir, "it-kill", st.Pid, st.ReaperPid)
	// The name is free again.
	r2 := e.start(t, e.cfgPath, "it-kill", e.qemuArgs()...)
	st2 := r2.waitReady(t, e, e.cfg.RunDir)
	r2.cmd.Process.Signal(syscall.SIGTERM)
	r2.wait(t, 20*time.Second)
	assertGone(t, e, e.cfg.RunDir, "it-kill", st2.Pid)
}

// TestQEMUCrash: a QEMU that crashes gives its status to the caller. The
// crash is a SIGKILL from outside: QEMU is pid 1 of its namespace, and the
// kernel drops any other signal from outside that it has no handler for.
func TestQEMUCrash(t *testing.T) {
	e := setup(t)
	r := e.start(t, e.cfgPath, "it-crash", e.qemuArgs()...)
	st := r.waitReady(t, e, e.cfg.RunDir)
	syscall.Kill(st.Pid, syscall.SIGKILL)
	if code := r.wait(t, 20*time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit %d, want %d (128+SIGKILL)", code, 128+int(syscall.SIGKILL))
	}
	assertGone(t, e, e.cfg.RunDir, "it-crash", st.Pid)

	// A QEMU that fails at start (bad option) reports its failure too.
	res := e.dmsandbox(t, append([]string{"run", "--config", e.cfgPath, "--name", "it-crash", "--"},
		e.qemuArgs("-no-such-option")...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "exited before its monitor answered") {
		t.Fatalf("bad QEMU option: exit %d, stderr %s", res.code, res.stderr)
	}
	assertGone(t, e, e.cfg.RunDir, "it-crash")
}

// TestSignalForwarding: SIGHUP (what xl destroy sends) ends the sandbox.
func TestSignalForwarding(t *testing.T) {
	e := setup(t)
	r := e.start(t, e.cfgPath, "it-hup", e.qemuArgs()...)
	st := r.waitReady(t, e, e.cfg.RunDir)
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.wait(t, 20*time.Second)
	assertGone(t, e, e.cfg.RunDir, "it-hup", st.Pid)
}

// TestSignalDuringStart: a SIGTERM that arrives while the sandbox is being
// built is forwarded once the program runs; nothing is left either way.
func TestSignalDuringStart(t *testing.T) {
	e := setup(t)
	for i := 0; i < 3; i++ {
		r := e.start(t, e.cfgPath, "it-early", e.qemuArgs()...)
		// Once the run directory exists Start is under way (before that
		// the Go runtime may not even run main yet); then a little later
		// each round, to land in different steps.
		for j := 0; j < 1000; j++ {
			if _, err := os.Stat(filepath.Join(e.cfg.RunDir, "it-early")); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(i*15) * time.Millisecond)
		r.cmd.Process.Signal(syscall.SIGTERM)
		code := r.wait(t, 30*time.Second)
		if code == 128+int(syscall.SIGTERM) {
			t.Fatalf("round %d: the launcher died of the SIGTERM instead of handling it:\n%s", i, r.stderr)
		}
		assertGone(t, e, e.cfg.RunDir, "it-early")
	}
}

// TestBadInput: each mistake gets a clear error, its documented exit code,
// and leaves nothing behind.
func TestBadInput(t *testing.T) {
	e := setup(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	writeExec := func(name string) string {
		p := write(name, "#!/bin/true\n")
		os.Chmod(p, 0o755)
		return p
	}
	invalid := write("invalid.json", `{"version":1,"uid_bsae":1}`)
	root := write("root.json", `{"version":1,"uid_base":0}`)
	unreadable := filepath.Join(dir, "missing.json")
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"run", "--bogus", "--name", "x", "--", "/bin/true"}, 2, "flag provided but not defined"},
		{"no name", []string{"run", "--", "/bin/true"}, 2, "--name is required"},
		{"missing program", []string{"run", "--config", e.cfgPath, "--name", "it-bad"}, 2, "missing PROGRAM"},
		{"program not found", []string{"run", "--config", e.cfgPath, "--name", "it-bad", "--", "/no/such/qemu"}, 2, "no such file"},
		{"unreadable config", []string{"run", "--config", unreadable, "--name", "it-bad", "--", "/bin/true"}, 3, "missing.json"},
		{"invalid config", []string{"run", "--config", invalid, "--name", "it-bad", "--", "/bin/true"}, 3, "unknown field"},
		{"uid base 0", []string{"run", "--config", root, "--name", "it-bad", "--", "/bin/true"}, 3, "uid_base 0"},
		{"slash in name", []string{"run", "--config", e.cfgPath, "--name", "a/b", "--", "/bin/true"}, 2, "no '/'"},
		{"dotdot name", []string{"run", "--config", e.cfgPath, "--name", "..", "--", "/bin/true"}, 2, "name \"..\""},
		{"unknown profile", []string{"run", "--config", e.cfgPath, "--profile", "nope", "--name", "it-bad", "--", "/bin/true"}, 2, "nope"},
		{"program under /tmp", []string{"run", "--config", e.cfgPath, "--name", "it-bad", "--", writeExec("prog")}, 2, "mounts over"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := e.dmsandbox(t, c.args...)
			if res.code != c.code || !strings.Contains(res.stderr, c.msg) {
				t.Fatalf("exit %d stderr %q; want %d and %q", res.code, res.stderr, c.code, c.msg)
			}
			assertGone(t, e, e.cfg.RunDir, "it-bad")
		})
	}

	// A name already running: exit 4, and the running one is untouched.
	r := e.start(t, e.cfgPath, "it-dup", e.qemuArgs()...)
	st := r.waitReady(t, e, e.cfg.RunDir)
	res := e.dmsandbox(t, append([]string{"run", "--config", e.cfgPath, "--name", "it-dup", "--"}, e.qemuArgs()...)...)
	if res.code != 4 || !strings.Contains(res.stderr, "is running") {
		t.Fatalf("duplicate name: exit %d stderr %q", res.code, res.stderr)
	}
	if !alive(st.Pid) {
		t.Fatal("the running sandbox died when a duplicate was refused")
	}
	if _, err := os.Stat(filepath.Join(e.cfg.RunDir, "it-dup", "state.json")); err != nil {
		t.Fatalf("the running sandbox lost its state: %v", err)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t, 20*time.Second)
	assertGone(t, e, e.cfg.RunDir, "it-dup", st.Pid)
}
