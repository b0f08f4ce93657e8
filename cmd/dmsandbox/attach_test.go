package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// authzDaemon runs `dmsandbox broker run --require-authorization` (this
// test binary re-executed, vfio backend on the captured tree, under the
// broker seccomp profile) on dir and waits until it listens.
func authzDaemon(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DMSANDBOX_AUTHZ_DAEMON_DIR="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sock := filepath.Join(dir, "run", "broker.sock")
	for i := 0; i < 500; i++ { // bounded wait for the socket, not a timing assertion
		if c, err := broker.DialControl(sock); err == nil {
			c.Shutdown()
			return cmd
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("daemon never listened")
	return nil
}

func stopDaemon(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		// SIGSYS here means the broker seccomp profile lacks a call.
		t.Fatalf("daemon exit: %v", err)
	}
}

// cli runs `dmsandbox ARGS...` as its own process (the test binary
// re-executed) and returns the exit status, stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	js, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DMSANDBOX_CLI_ARGS="+string(js))
	return runExit(t, cmd)
}

// runExit runs cmd and returns its exit status, stdout and stderr; a
// command that cannot run at all fails the test.
func runExit(t testing.TB, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	rc := 0
	if ee, ok := err.(*exec.ExitError); ok {
		rc = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return rc, stdout.String(), stderr.String()
}

func TestAttachCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "broker.sock")
	const dev, dev2 = "0000:00:04.0", "0000:00:05.0"
	expect := func(want int, quiet bool, args ...string) (string, string) {
		t.Helper()
		rc, out, errOut := cli(t, append(args, "--socket", sock)...)
		if rc != want || (quiet && out+errOut != "") {
			t.Fatalf("dmsandbox %s: rc %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), rc, want, out, errOut)
		}
		return out, errOut
	}
	// No daemon yet: 3, so a hotplug script can tell "retry later".
	expect(exitNoBroker, false, "attach", "--domid", "7", "--device", dev)
	d := authzDaemon(t, dir)
	expect(ExitOK, true, "attach", "--domid", "7", "--device", dev)
	expect(ExitOK, true, "attach", "--domid", "7", "--device", dev) // idempotent
	if _, e := expect(ExitFailure, false, "attach", "--domid", "8", "--device", dev); !strings.Contains(e, "authorized for domain 7") {
		t.Fatalf("one-domain refusal names the holder? %s", e)
	}
	expect(ExitUsage, false, "attach", "--domid", "7")
	expect(ExitUsage, false, "detach", "--domid", "0", "--device", dev)
	expect(ExitUsage, false, "detach", "--domid", "7", "--device", "nonsense")
	expect(ExitUsage, false, "detach", "--list")
	expect(ExitUsage, false, "attach", "--domain", "a b", "--device", dev2)
	// By name: listed with DOMID "-" and the name last.
	expect(ExitOK, true, "attach", "--domain", "web", "--device", dev2)
	if out, _ := expect(ExitOK, false, "attach", "--list", "--domain", "web"); !strings.Contains(out, "-  ") || !strings.HasSuffix(strings.TrimSpace(out), "web") {
		t.Fatalf("list by name:\n%s", out)
	}
	expect(ExitOK, true, "detach", "--domain", "web", "--device", dev2)
	// A restarted daemon keeps the authorisations.
	stopDaemon(t, d)
	d = authzDaemon(t, dir)
	out, _ := expect(ExitOK, false, "attach", "--list", "--domid", "7")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "7 ") || !strings.Contains(lines[1], dev) {
		t.Fatalf("list after restart:\n%s", out)
	}
	// The launcher's device_add path (DM mode's QMP hook asks exactly
	// this): an unauthorised device is refused.
	cc, err := broker.DialControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	id, f, err := cc.Open(7, "")
	if err != nil {
		t.Fatal(err)
	}
	// The session lives as long as its fd: hold it until the attach is
	// answered, or the broker may already have ended the session.
	bdf2, _ := pci.ParseBDF(dev2)
	if err := cc.Attach(id, bdf2, broker.AttachOptions{}); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("unauthorised attach: %v", err)
	}
	f.Close()
	cc.Shutdown()
	// The session ended (its client hung up): domain 7 is gone, and its
	// authorisations with it, so a later domain 7 inherits nothing.
	for i := 0; ; i++ {
		if out, _ := expect(ExitOK, false, "attach", "--list", "--domid", "7"); !strings.Contains(out, dev) {
			break
		}
		if i == 100 {
			t.Fatal("authorisation outlived the domain's session")
		}
		time.Sleep(50 * time.Millisecond)
	}
	expect(ExitOK, true, "attach", "--domid", "7", "--device", dev)
	expect(ExitOK, true, "detach", "--domid", "7", "--device", dev)
	expect(ExitOK, true, "detach", "--domid", "7", "--device", dev) // idempotent
	if out, _ := expect(ExitOK, false, "attach", "--list"); strings.Contains(out, dev) {
		t.Fatalf("list after detach:\n%s", out)
	}
	stopDaemon(t, d)

	auditDir := filepath.Join(dir, "audit")
	if rc := auditCmd([]string{"verify", auditDir}); rc != ExitOK {
		t.Fatal("audit chain of the daemon does not verify")
	}
	files, err := audit.Files(auditDir)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, p := range files {
		recs, err := audit.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			count[r.Op+"/"+r.Verdict]++
			if r.Op == "attach" && r.Verdict == audit.Deny && r.Errno != int(syscall.EACCES) {
				t.Errorf("attach refusal errno %d", r.Errno)
			}
		}
	}
	// deauthorize/allow 4: three detaches (one by name) and the domain's end.
	want := map[string]int{"authorize/allow": 4, "authorize/deny": 1, "deauthorize/allow": 4, "attach/deny": 1, "authorizations/allow": 4}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("audit %s: %d records, want %d (all: %v)", k, count[k], n, count)
		}
	}
}
