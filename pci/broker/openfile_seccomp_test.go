package broker

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/seccomp"
)

// TestOpenFileUnderBrokerSeccomp runs open_file in a broker confined by
// its production seccomp profile (seccomp/profiles/broker.json, kill on
// anything else), in a child process: opening the sysfs file, checking
// it and sending it with SCM_RIGHTS must all be allowed calls. The
// daemon installs the same profile after its setup, as the child does.
func TestOpenFileUnderBrokerSeccomp(t *testing.T) {
	if os.Getenv("DMSANDBOX_OPENFILE_SECCOMP_CHILD") != "" {
		t.Skip("running as the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOpenFileUnderSeccomp$", "-test.v")
	cmd.Env = append(os.Environ(), "DMSANDBOX_OPENFILE_SECCOMP_CHILD=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "open_file under seccomp: ok") {
		// Killed by SIGSYS: the broker profile lacks a call open_file makes.
		t.Fatalf("child: %v\n%s", err, out.String())
	}
}

func TestHelperOpenFileUnderSeccomp(t *testing.T) {
	if os.Getenv("DMSANDBOX_OPENFILE_SECCOMP_CHILD") == "" {
		t.Skip("helper for TestOpenFileUnderBrokerSeccomp")
	}
	root := openFileTree(t)
	r := newRig(t, root) // setup (exec of cp, audit log) before the filter, as the daemon
	prof, err := seccomp.Load("broker")
	if err != nil {
		t.Fatal(err)
	}
	if err := prof.Install(); err != nil {
		t.Fatal(err)
	}
	_, c := r.session(dom, e1000e)
	f, _, err := c.OpenFile(e1000e, FileConfig, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := readAll(t, f)
	f.Close()
	g, rep, err := c.OpenFile(AnyBDF, FileMSIXBar, e1000eMSIXBar)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if len(data) != 4096 || rep.Base != e1000eMSIXBar {
		t.Fatalf("config %d bytes, msix_bar %+v", len(data), rep)
	}
	c.Close()
	fmt.Println("open_file under seccomp: ok")
	// Skip the test framework's cleanup (it would run under the filter
	// and is not the broker's business).
	os.Exit(0)
}
