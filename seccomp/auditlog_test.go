package seccomp

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseAuditLine(t *testing.T) {
	for _, c := range []struct {
		line string
		ok   bool
		want AuditRecord
	}{
		{`[ 1099.868302] audit: type=1326 audit(1795703704.664:40): auid=4294967295 uid=3100000 gid=3100000 ses=4294967295 pid=30599 comm="probe" exe="/var/tmp/x/probe" sig=31 arch=c000003e syscall=105 compat=0 ip=0x40866e code=0x80000000`,
			true, AuditRecord{PID: 30599, Comm: "probe", Exe: "/var/tmp/x/probe", Arch: unix.AUDIT_ARCH_X86_64, Syscall: 105, Code: 0x80000000}},
		{`type=SECCOMP msg=audit(1.2:3): auid=1000 uid=1000 gid=1000 ses=2 pid=88 comm=71656D75 exe="/usr/bin/qemu" sig=31 arch=40000003 syscall=102 compat=1 ip=0xf7 code=0x80000000`,
			true, AuditRecord{PID: 88, Comm: "qemu", Exe: "/usr/bin/qemu", Arch: unix.AUDIT_ARCH_I386, Syscall: 102, Code: 0x80000000}},
		{`audit: type=1326 audit(1.2:3): pid=1 comm="a b" exe="/x" sig=31 arch=c000003e syscall=41 compat=0 ip=0x1 code=0x7ffc0000`,
			true, AuditRecord{PID: 1, Comm: "a b", Exe: "/x", Arch: unix.AUDIT_ARCH_X86_64, Syscall: 41, Code: 0x7ffc0000}},
		{`audit: type=1326 audit(1.2:3): pid=1 arch=c000003e syscall=`, false, AuditRecord{}},
		{`audit: type=1400 apparmor="DENIED" pid=1 arch=c000003e syscall=41 code=0x0`, false, AuditRecord{}},
		{strings.Repeat("x", maxAuditLine+1), false, AuditRecord{}},
	} {
		got, ok := ParseAuditLine(c.line)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%.60q: got %+v %v, want %+v %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestProposeFromRecords(t *testing.T) {
	p, err := Load("qemu-kvm")
	if err != nil {
		t.Fatal(err)
	}
	in := strings.Join([]string{
		`audit: type=1326 audit(1.2:3): pid=5 comm="qemu" exe="/q" sig=0 arch=c000003e syscall=101 compat=0 ip=0x1 code=0x7ffc0000`,
		`audit: type=1326 audit(1.2:4): pid=5 comm="qemu" exe="/q" sig=0 arch=c000003e syscall=101 compat=0 ip=0x1 code=0x7ffc0000`,
		`audit: type=1326 audit(1.2:5): pid=5 comm="qemu" exe="/q" sig=0 arch=c000003e syscall=16 compat=0 ip=0x1 code=0x7ffc0000`,
		`audit: type=1326 audit(1.2:6): pid=5 comm="qemu" exe="/q" sig=31 arch=40000003 syscall=102 compat=1 ip=0x1 code=0x0`,
		`unrelated line`,
		`[ 2868.864840] kauditd_printk_skb: 5603 callbacks suppressed`,
	}, "\n")
	recs, suppressed, err := ReadAuditRecords(strings.NewReader(in))
	if err != nil || len(recs) != 4 || suppressed != 5603 {
		t.Fatalf("records %d suppressed %d %v", len(recs), suppressed, err)
	}
	props, foreign := Propose(recs, p)
	if len(foreign) != 1 || len(props) != 2 {
		t.Fatalf("props %+v foreign %+v", props, foreign)
	}
	if props[0].Syscall != "ioctl" || props[0].Note == "" || props[1].Syscall != "ptrace" || props[1].Count != 2 || props[1].Note != "" {
		t.Fatalf("props %+v", props)
	}
}
