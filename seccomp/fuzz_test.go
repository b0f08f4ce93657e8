package seccomp

import (
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

// FuzzParseProfile: the profile decoder never panics, and what it accepts
// resolves into rules that compile (the checks in parseProfile are the
// ones Load relies on). Seeds: the embedded profiles and broken variants
// (testdata/fuzz/FuzzParseProfile).
func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(`{"version":1,"name":"x","summary":"s","rules":[{"syscalls":["read"],"why":"w"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fp, err := parseProfile(data)
		if err != nil {
			return
		}
		var rules []Rule
		for i := range fp.Rules {
			rs, err := resolveRule(&fp.Rules[i], fp.Name)
			if err != nil {
				t.Fatalf("parseProfile accepted a rule resolveRule refuses: %v", err)
			}
			rules = append(rules, rs...)
		}
		set, err := newRuleSet(rules)
		if err != nil {
			return // conflicting rules: refused at Load
		}
		for _, r := range set.All() {
			for _, c := range r.Args {
				if c.Op == OpSelfPID {
					return
				}
			}
		}
		p := &Profile{name: fp.Name, rules: set}
		if _, err := p.BPF(); err != nil {
			t.Fatalf("accepted profile does not compile: %v", err)
		}
	})
}

// FuzzParseAuditLine: kernel log lines are untrusted text; the parser never
// panics and what it returns round-trips the numeric fields it saw.
func FuzzParseAuditLine(f *testing.F) {
	f.Add(`audit: type=1326 audit(1795703704.664:40): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=30599 comm="probe" exe="/tmp/probe" sig=31 arch=c000003e syscall=105 compat=0 ip=0x40866e code=0x80000000`)
	f.Fuzz(func(t *testing.T, line string) {
		rec, ok := ParseAuditLine(line)
		if !ok {
			return
		}
		if rec.PID < 0 || rec.Syscall < 0 {
			t.Fatalf("negative field: %+v", rec)
		}
		if !strings.Contains(line, "1326") && !strings.Contains(line, "SECCOMP") {
			t.Fatalf("accepted a line that is no seccomp record: %q", line)
		}
		_ = rec.String()
	})
}

// FuzzEvaluate: the evaluator never panics and always ends on any program
// (it is what the tests trust to judge compiled filters).
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{0x20, 0, 0, 0, 4, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}, int32(0), uint64(0))
	f.Fuzz(func(t *testing.T, code []byte, nr int32, arg uint64) {
		prog, err := decodeSockFilters(code)
		if err != nil {
			return
		}
		if len(prog) > 4096 {
			prog = prog[:4096]
		}
		d := sysData(0, arg, arg)
		d.Nr = nr
		Evaluate(prog, d)
		_ = []bpf.RawInstruction(prog)
	})
}
