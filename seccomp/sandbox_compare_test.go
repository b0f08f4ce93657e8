package seccomp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCompareQEMUSandbox compares qemu-kvm with QEMU's own denylist, read
// from the binary that ships here rather than from its source: QEMU runs
// with -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
// resourcecontrol=deny, the test reads the filter it loaded through
// PTRACE_SECCOMP_GET_FILTER and evaluates both programs for every x86_64
// syscall number (arguments zero, plus fork-style and thread-style clone).
// It logs the table docs/seccomp.md shows and checks the one direction that
// matters: whatever QEMU's denylist refuses, qemu-kvm refuses too, except
// the calls listed in allowedDespiteSandbox, each for a reason.
func TestCompareQEMUSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("runs QEMU")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for PTRACE_SECCOMP_GET_FILTER")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(qemu, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-machine", "pc,accel=tcg", "-S", "-m", "16", "-display", "none", "-nodefaults", "-no-user-config",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ { // the QMP socket appears after -sandbox is applied
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 500 {
			t.Fatal("QEMU never created its QMP socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	theirs := ptraceFilter(t, cmd.Process.Pid)
	p, err := Load("qemu-kvm")
	if err != nil {
		t.Fatal(err)
	}
	ours, err := p.BPF()
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ name, theirs, ours string }
	var deniedByQEMU, deniedByBoth, onlyOurs []row
	var allowedByQEMU int
	probe := func(name string, d Data) {
		a, err1 := Evaluate(theirs, d)
		b, err2 := Evaluate(ours, d)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", name, err1, err2)
		}
		va, vb := DecodeVerdict(a), DecodeVerdict(b)
		r := row{name, va.String(), vb.String()}
		if va.Action != "allow" {
			deniedByQEMU = append(deniedByQEMU, r)
			if vb.Action != "allow" {
				deniedByBoth = append(deniedByBoth, r)
			}
		} else {
			allowedByQEMU++
			if vb.Action != "allow" {
				onlyOurs = append(onlyOurs, r)
			}
		}
	}
	for nr := 0; nr < 460; nr++ {
		name, ok := syscallName(nr)
		if !ok {
			continue
		}
		probe(name, sysData(uintptr(nr)))
	}
	probe("clone(fork flags)", sysData(unix.SYS_CLONE, uint64(unix.SIGCHLD)))
	probe("clone(thread flags)", sysData(unix.SYS_CLONE, glibcPthr))
	probe("socket(AF_INET)", sysData(unix.SYS_SOCKET, unix.AF_INET))
	probe("ioctl(TIOCSTI)", sysData(unix.SYS_IOCTL, 0, unix.TIOCSTI))

	var b strings.Builder
	fmt.Fprintf(&b, "QEMU -sandbox (read from the running binary): %d instructions; qemu-kvm: %d\n", len(theirs), len(ours))
	fmt.Fprintf(&b, "probes: %d; QEMU denies %d, allows %d; qemu-kvm denies %d of QEMU's %d and %d more that QEMU allows\n",
		len(deniedByQEMU)+allowedByQEMU, len(deniedByQEMU), allowedByQEMU, len(deniedByBoth), len(deniedByQEMU), len(onlyOurs))
	fmt.Fprintln(&b, "denied by QEMU -sandbox (its action -> qemu-kvm's):")
	for _, r := range deniedByQEMU {
		fmt.Fprintf(&b, "  %-22s %-22s %s\n", r.name, r.theirs, r.ours)
	}
	var extra []string
	for _, r := range onlyOurs {
		extra = append(extra, r.name)
	}
	sort.Strings(extra)
	fmt.Fprintf(&b, "allowed by QEMU -sandbox, killed or refused by qemu-kvm (%d): %s\n", len(extra), strings.Join(extra, " "))
	t.Log("\n" + b.String())

	for _, r := range deniedByQEMU {
		if strings.HasPrefix(r.ours, "allow") && !allowedDespiteSandbox[r.name] {
			t.Errorf("%s: QEMU's sandbox refuses it (%s), qemu-kvm allows it: add it to allowedDespiteSandbox with a reason, or refuse it", r.name, r.theirs)
		}
	}
}

// allowedDespiteSandbox: calls QEMU's -sandbox refuses that qemu-kvm allows.
var allowedDespiteSandbox = map[string]bool{
	// runc init execs QEMU after loading the filter, so the filter must
	// allow execve; no_new_privs and the minimal root bound what it reaches.
	"execve": true,
	// allowed only with pid 0 (the calling thread), for thread-context.
	"sched_setaffinity": true,
}
