package seccomp

import (
	"fmt"
	"strings"

	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Action is what a rule does when it matches.
type Action int

// The actions a profile rule may take. The default action (no rule
// matches) is not one of them: it is kill-process, or log in LogMode.
const (
	ActAllow Action = iota + 1
	ActErrno
)

// Op is how a condition compares a syscall argument.
type Op int

// Comparison operators. They mirror libseccomp's SCMP_CMP_*; OpSelfPID is
// resolved to OpEqual or OpMaskedEqual when the profile is loaded.
const (
	OpEqual Op = iota + 1
	OpNotEqual
	OpLess
	OpLessEqual
	OpGreater
	OpGreaterEqual
	OpMaskedEqual
	OpSelfPID
)

var opNames = map[string]Op{
	"eq": OpEqual, "ne": OpNotEqual, "lt": OpLess, "le": OpLessEqual,
	"gt": OpGreater, "ge": OpGreaterEqual, "masked_eq": OpMaskedEqual,
	"self_pid": OpSelfPID,
}

func (o Op) String() string {
	for n, v := range opNames {
		if v == o {
			return n
		}
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// Cond is one argument condition: Arg(Index) Op Value, or for
// OpMaskedEqual: Arg(Index) & Mask == Value.
type Cond struct {
	Index uint
	Op    Op
	Value uint64
	Mask  uint64
	Text  string // the value as written in the profile, for show
}

// Rule is one resolved rule: syscall, action, conditions, and why.
type Rule struct {
	Syscall string
	Action  Action
	Errno   uint // with ActErrno
	Args    []Cond
	Why     string
	From    string // the profile file that holds the rule
}

// ioctlMask keeps the low 32 bits of the request argument: the kernel reads
// ioctl's cmd as unsigned int, and callers that hold the request in an int
// (QEMU's kvm_vm_ioctl(KVMState *, int type, ...)) sign-extend requests with
// bit 31 set (every _IOR/_IOWR), so a 64-bit equality would miss them.
const ioctlMask = 0xffffffff

// nonNegativePIDMask matches a pid argument in [0, 2^31): the upper 33 bits
// clear. It excludes -1 (every process) and negative values (process groups).
const nonNegativePIDMask = 0xffffffff80000000

// resolveRule turns one file rule into rules, one per syscall (or ioctl
// request). It checks every name against libseccomp's syscall table and the
// symbol tables, so an unknown name is an error, not a silently dropped rule
// (runc drops rules for syscalls libseccomp does not know).
func resolveRule(fr *fileRule, from string) ([]Rule, error) {
	why := strings.TrimSpace(fr.Why)
	if why == "" {
		return nil, fmt.Errorf("no why: every rule names the code path that needs it")
	}
	if (len(fr.Syscalls) == 0) == (fr.Ioctls == nil) {
		return nil, fmt.Errorf("exactly one of syscalls or ioctls must be set")
	}
	act, errno, err := resolveAction(fr.Action, fr.Errno)
	if err != nil {
		return nil, err
	}
	conds, err := resolveConds(fr.Args)
	if err != nil {
		return nil, err
	}
	var out []Rule
	if fr.Ioctls != nil {
		if len(fr.Args) != 0 {
			return nil, fmt.Errorf("ioctls rule takes no args (the request is the condition)")
		}
		class, ok := ioctlRequests[fr.Ioctls.Class]
		if !ok {
			return nil, fmt.Errorf("unknown ioctl class %q", fr.Ioctls.Class)
		}
		if len(fr.Ioctls.Requests) == 0 {
			return nil, fmt.Errorf("ioctls rule with no requests")
		}
		for _, name := range fr.Ioctls.Requests {
			req, ok := class[name]
			if !ok {
				return nil, fmt.Errorf("unknown %s ioctl %q", fr.Ioctls.Class, name)
			}
			out = append(out, Rule{Syscall: "ioctl", Action: act, Errno: errno, Why: why, From: from,
				Args: []Cond{{Index: 1, Op: OpMaskedEqual, Mask: ioctlMask, Value: req & ioctlMask, Text: name}}})
		}
		return out, nil
	}
	for _, sc := range fr.Syscalls {
		if _, err := libseccomp.GetSyscallFromNameByArch(sc, libseccomp.ArchAMD64); err != nil {
			return nil, fmt.Errorf("unknown syscall %q", sc)
		}
		out = append(out, Rule{Syscall: sc, Action: act, Errno: errno, Args: conds, Why: why, From: from})
	}
	return out, nil
}

func resolveAction(action, errno string) (Action, uint, error) {
	switch action {
	case "", "allow":
		if errno != "" {
			return 0, 0, fmt.Errorf("errno %q given with action allow", errno)
		}
		return ActAllow, 0, nil
	case "errno":
		e := errnoByName(errno)
		if e == 0 {
			return 0, 0, fmt.Errorf("unknown errno %q", errno)
		}
		return ActErrno, uint(e), nil
	}
	return 0, 0, fmt.Errorf("unknown action %q (allow, errno)", action)
}

func resolveConds(args []fileArg) ([]Cond, error) {
	var conds []Cond
	seen := map[uint]bool{}
	for _, a := range args {
		if a.Index > 5 {
			return nil, fmt.Errorf("argument index %d out of range 0..5", a.Index)
		}
		if seen[a.Index] {
			// libcontainer would OR two conditions on one argument
			// (configs.Syscall semantics); refuse instead of widening.
			return nil, fmt.Errorf("two conditions on argument %d in one rule", a.Index)
		}
		seen[a.Index] = true
		op, ok := opNames[a.Op]
		if !ok {
			return nil, fmt.Errorf("unknown op %q", a.Op)
		}
		c := Cond{Index: a.Index, Op: op, Text: a.Value}
		switch op {
		case OpSelfPID:
			if a.Value != "" || a.Mask != "" {
				return nil, fmt.Errorf("op self_pid takes no value or mask")
			}
			c.Text = "self"
		case OpMaskedEqual:
			m, err := evalSymbols(a.Mask)
			if err != nil {
				return nil, fmt.Errorf("mask: %w", err)
			}
			c.Mask = m
			c.Text = a.Mask + " == " + a.Value
			fallthrough
		default:
			if op != OpMaskedEqual && a.Mask != "" {
				return nil, fmt.Errorf("mask given with op %s", a.Op)
			}
			v, err := evalSymbols(a.Value)
			if err != nil {
				return nil, fmt.Errorf("value: %w", err)
			}
			if op == OpMaskedEqual && v&^c.Mask != 0 {
				return nil, fmt.Errorf("value %#x has bits outside mask %#x: never matches", v, c.Mask)
			}
			c.Value = v
		}
		conds = append(conds, c)
	}
	return conds, nil
}

// errnoByName resolves an errno name ("ENOSYS") with x/sys/unix's table.
func errnoByName(name string) unix.Errno {
	for e := unix.Errno(1); e < 4096; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}
