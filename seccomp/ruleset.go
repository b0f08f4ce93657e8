package seccomp

import (
	"fmt"
	"sort"
)

// RuleSet is a composed profile's rules, queryable without compiling or
// installing anything (tests ask Has("openat")).
type RuleSet struct {
	rules  []Rule
	byName map[string][]int
}

// newRuleSet indexes rules and refuses combinations that would hide a
// mistake: an unconditional rule next to any other rule for the same
// syscall (the conditional one would be dead), or two actions for one
// syscall (the outcome would depend on libseccomp's precedence rules).
func newRuleSet(rules []Rule) (*RuleSet, error) {
	rs := &RuleSet{rules: rules, byName: map[string][]int{}}
	for i, r := range rules {
		rs.byName[r.Syscall] = append(rs.byName[r.Syscall], i)
	}
	for name, idx := range rs.byName {
		if len(idx) < 2 {
			continue
		}
		first := rules[idx[0]]
		for _, i := range idx {
			r := rules[i]
			if len(r.Args) == 0 {
				return nil, fmt.Errorf("syscall %s: unconditional rule (%s) next to %d other rules", name, r.From, len(idx)-1)
			}
			if r.Action != first.Action || r.Errno != first.Errno {
				return nil, fmt.Errorf("syscall %s: rules in %s and %s take different actions", name, first.From, r.From)
			}
		}
	}
	return rs, nil
}

// Has reports whether any rule names the syscall (allow or errno,
// conditional or not).
func (rs *RuleSet) Has(syscall string) bool { return len(rs.byName[syscall]) > 0 }

// For returns the rules for one syscall, in profile order.
func (rs *RuleSet) For(syscall string) []Rule {
	var out []Rule
	for _, i := range rs.byName[syscall] {
		out = append(out, rs.rules[i])
	}
	return out
}

// Syscalls returns every syscall some rule names, sorted.
func (rs *RuleSet) Syscalls() []string {
	out := make([]string, 0, len(rs.byName))
	for n := range rs.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// All returns every rule in profile order.
func (rs *RuleSet) All() []Rule { return append([]Rule(nil), rs.rules...) }

// Len is the number of rules (one per syscall or ioctl request).
func (rs *RuleSet) Len() int { return len(rs.rules) }

// ioctlCollisions lists pairs of ioctl names (sorted within a pair) that
// share a request number (low 32 bits): the filter cannot tell them apart.
func ioctlCollisions() [][2]string {
	byNum := map[uint64][]string{}
	for _, class := range ioctlRequests {
		for n, v := range class {
			byNum[v&ioctlMask] = append(byNum[v&ioctlMask], n)
		}
	}
	var out [][2]string
	for _, names := range byNum {
		sort.Strings(names)
		for i := 0; i < len(names); i++ {
			for j := i + 1; j < len(names); j++ {
				out = append(out, [2]string{names[i], names[j]})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}
