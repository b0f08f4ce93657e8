package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// TestBrokerDaemonEndToEnd runs `dmsandbox broker run` (this test binary
// re-executed as the daemon, vfio backend on the captured tree), talks to
// it over the real control socket and session fd, and stops it with
// SIGTERM as systemd does.
func TestBrokerDaemonEndToEnd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "broker.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DMSANDBOX_DAEMON_DIR="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var cc *broker.ControlClient
	var err error
	for i := 0; i < 500; i++ { // wait for the socket (bounded, not a timing assertion)
		if cc, err = broker.DialControl(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("daemon never listened: %v", err)
	}
	id, f, err := cc.Open(9, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := broker.NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	var hr broker.HelloReply
	if err := c.Do(&broker.Hello{Version: 1}, &hr); err != nil || hr.Domid != 9 {
		t.Fatalf("hello: %v %+v", err, hr)
	}
	// Policy answers before any backend: this session owns no pirq.
	if got := broker.Errno(c.Do(&broker.UnmapPirq{Domid: 9, Pirq: 1}, nil)); got != syscall.EPERM {
		t.Fatalf("unmap of an unowned pirq: %v", got)
	}
	// open_file (op 14) is served by the daemon: a device the session
	// does not hold is refused, with no fd. (The fd-carrying path under
	// the daemon's seccomp profile: pci/broker TestOpenFileUnderBrokerSeccomp.)
	if f, _, err := c.OpenFile(pci.BDF{Dev: 4}, broker.FileConfig, 0); f != nil || broker.Errno(err) != syscall.ENODEV {
		t.Fatalf("open_file of a device not in the session: %v %v", f, err)
	}
	if rc := brokerCmd([]string{"ls", "--socket", sock}); rc != ExitOK {
		t.Fatalf("broker ls: rc %d", rc)
	}
	if err := cc.Close(id); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cc.Shutdown()
	// A second daemon on the same socket is a conflict.
	second := exec.Command(os.Args[0])
	second.Env = append(os.Environ(), "DMSANDBOX_DAEMON_DIR="+dir)
	err = second.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != ExitConflict {
		t.Fatalf("second daemon: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("socket left behind")
	}
	if rc := auditCmd([]string{"verify", filepath.Join(dir, "audit")}); rc != ExitOK {
		t.Fatal("audit chain of the daemon does not verify")
	}
}
