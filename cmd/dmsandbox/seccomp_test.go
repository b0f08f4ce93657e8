package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSeccompCheckCLI(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"qemu-kvm", "socket", "AF_UNIX"}, ExitOK, "allow"},
		{[]string{"qemu-kvm", "socket", "AF_INET"}, ExitOK, "kill_process"},
		{[]string{"qemu-kvm", "clone3"}, ExitOK, "errno 38 (ENOSYS)"},
		{[]string{"qemu-kvm", "ioctl", "3", "KVM_RUN"}, ExitOK, "allow"},
		{[]string{"qemu-xen", "ioctl", "3", "KVM_RUN"}, ExitOK, "kill_process"},
		{[]string{"-log", "qemu-kvm", "ptrace"}, ExitOK, "log"},
		{[]string{"-arch", "i386", "qemu-kvm", "20"}, ExitOK, "kill_thread"},
		{[]string{"-self-pid", "1", "qemu-kvm", "kill", "2", "SIGKILL"}, ExitOK, "kill_process"},
		{[]string{"qemu-kvm", "no_such_call"}, ExitUsage, ""},
		{[]string{"qemu-common", "read"}, ExitUsage, ""}, // a part, not a profile
		{[]string{"qemu-kvm"}, ExitUsage, ""},
	} {
		var out bytes.Buffer
		code := seccompCheck(&out, c.args)
		if code != c.code || strings.TrimSpace(out.String()) != c.out {
			t.Errorf("check %v: code %d out %q, want %d %q", c.args, code, out.String(), c.code, c.out)
		}
	}
}

func TestSeccompProposeCLI(t *testing.T) {
	var out bytes.Buffer
	if code := seccompList(&out); code != ExitOK || !strings.Contains(out.String(), "qemu-kvm") {
		t.Fatalf("list: %d %q", code, out.String())
	}
	out.Reset()
	if code := seccompShow(&out, []string{"qemu-vfio"}); code != ExitOK || !strings.Contains(out.String(), "VFIO_DEVICE_SET_IRQS") {
		t.Fatalf("show: %d", code)
	}
}

func TestSeccompExecUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"qemu-kvm"}, {"qemu-kvm", "--"}, {"nope", "--", "true"}} {
		if code := seccompExec(args); code != ExitUsage {
			t.Errorf("exec %v: code %d, want %d", args, code, ExitUsage)
		}
	}
}
