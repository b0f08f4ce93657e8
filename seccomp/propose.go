package seccomp

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Proposal is one rule the discovery workflow suggests, from the seccomp
// records of a run under LogMode (or a killed run).
type Proposal struct {
	Syscall string // x86_64 name, or "#nr" when unknown
	Count   int    // records seen
	Comms   []string
	// Note says what the records cannot tell: a syscall already allowed for
	// some arguments means another argument value was refused, and the
	// audit record does not carry arguments.
	Note string
}

// ReadAuditRecords reads kernel log lines and keeps the seccomp records.
// suppressed counts the audit records the kernel dropped instead of
// printing ("kauditd_printk_skb: N callbacks suppressed"): printk's rate
// limit (kernel.printk_ratelimit, 10 records per 5 s by default) silently
// thins out a log-mode run unless it is lifted or auditd takes the records.
func ReadAuditRecords(r io.Reader) (recs []AuditRecord, suppressed int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rec, ok := ParseAuditLine(line); ok {
			recs = append(recs, rec)
			continue
		}
		suppressed += suppressedCount(line)
	}
	return recs, suppressed, sc.Err()
}

// suppressedCount reads "kauditd_printk_skb: N callbacks suppressed".
func suppressedCount(line string) int {
	const key = "kauditd_printk_skb: "
	i := strings.Index(line, key)
	if i < 0 || !strings.HasSuffix(strings.TrimSpace(line), "callbacks suppressed") {
		return 0
	}
	f := strings.Fields(line[i+len(key):])
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// Propose turns records into proposals against profile p (nil: none). Records
// of other architectures are returned apart: a profile never allows them.
func Propose(recs []AuditRecord, p *Profile) (props []Proposal, foreign []AuditRecord) {
	by := map[string]*Proposal{}
	comms := map[string]map[string]bool{}
	for _, r := range recs {
		if r.Arch != unix.AUDIT_ARCH_X86_64 || r.Syscall&x32SyscallBit != 0 {
			foreign = append(foreign, r)
			continue
		}
		name, ok := syscallName(r.Syscall)
		if !ok {
			name = fmt.Sprintf("#%d", r.Syscall)
		}
		pr := by[name]
		if pr == nil {
			pr = &Proposal{Syscall: name}
			by[name] = pr
			comms[name] = map[string]bool{}
		}
		pr.Count++
		comms[name][r.Comm] = true
	}
	for name, pr := range by {
		for c := range comms[name] {
			pr.Comms = append(pr.Comms, c)
		}
		sort.Strings(pr.Comms)
		if p != nil {
			pr.Note = ruleNote(p.Rules().For(name), name)
		}
		props = append(props, *pr)
	}
	sort.Slice(props, func(i, j int) bool { return props[i].Syscall < props[j].Syscall })
	return props, foreign
}

// ruleNote says why a record can exist for a syscall the profile has rules
// for, or "" when it has none (then the proposal is a new rule).
func ruleNote(rules []Rule, name string) string {
	if len(rules) == 0 {
		return ""
	}
	if len(rules[0].Args) == 0 {
		if rules[0].Action == ActErrno {
			return "this profile answers errno without a record: the record came from another profile"
		}
		return "this profile allows it unconditionally: the record came from another profile"
	}
	return "allowed only for some arguments, and an argument value was refused (records carry no arguments: find it with strace -f -e " + name + ")"
}
