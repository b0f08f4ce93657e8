package seccomp

import (
	"github.com/opencontainers/runc/libcontainer/configs"
)

// Profile is a composed, validated profile. It is immutable; Config and BPF
// return fresh values on each call.
type Profile struct {
	name    string
	summary string
	parts   []string // profile files composed, includes first
	rules   *RuleSet
	opts    options
}

// Name is the profile's name ("qemu-kvm").
func (p *Profile) Name() string { return p.name }

// Summary is the profile's one-line description.
func (p *Profile) Summary() string { return p.summary }

// Parts lists the profile files composed into p, includes first.
func (p *Profile) Parts() []string { return append([]string(nil), p.parts...) }

// LogMode reports whether the default action is log instead of kill.
func (p *Profile) LogMode() bool { return p.opts.logMode }

// Rules returns the composed rules.
func (p *Profile) Rules() *RuleSet { return p.rules }

// Config is the one compiler's output: what the launcher hands to
// libcontainer, which builds a libseccomp filter from it in runc init,
// prepends its -ENOSYS stub (patchbpf) and loads it just before execve.
//
// Each Rule becomes one configs.Syscall, so rules for one syscall are ORed
// by libseccomp; the conditions inside a rule name distinct arguments and
// are ANDed (resolveConds refuses repeats, which libcontainer would OR).
// Architectures is empty: only the native x86_64 ABI is allowed; i386 and
// x32 calls take libseccomp's bad-arch action (see docs/seccomp.md).
func (p *Profile) Config() *configs.Seccomp {
	def := configs.KillProcess
	if p.opts.logMode {
		def = configs.Log
	}
	c := &configs.Seccomp{DefaultAction: def}
	for _, r := range p.rules.rules {
		sc := &configs.Syscall{Name: r.Syscall, Action: configs.Allow}
		if r.Action == ActErrno {
			e := r.Errno
			sc.Action, sc.ErrnoRet = configs.Errno, &e
		}
		for _, a := range r.Args {
			arg := &configs.Arg{Index: a.Index, Value: a.Value}
			switch a.Op {
			case OpEqual:
				arg.Op = configs.EqualTo
			case OpNotEqual:
				arg.Op = configs.NotEqualTo
			case OpLess:
				arg.Op = configs.LessThan
			case OpLessEqual:
				arg.Op = configs.LessThanOrEqualTo
			case OpGreater:
				arg.Op = configs.GreaterThan
			case OpGreaterEqual:
				arg.Op = configs.GreaterThanOrEqualTo
			case OpMaskedEqual:
				// libseccomp's SCMP_CMP_MASKED_EQ takes (mask, datum):
				// runc passes Value as the mask, ValueTwo as the datum.
				arg.Op, arg.Value, arg.ValueTwo = configs.MaskEqualTo, a.Mask, a.Value
			default:
				// compose resolves OpSelfPID; anything else is a bug.
				panic("seccomp: unresolved operator " + a.Op.String())
			}
			sc.Args = append(sc.Args, arg)
		}
		c.Syscalls = append(c.Syscalls, sc)
	}
	return c
}
