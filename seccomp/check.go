package seccomp

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Check runs p's compiled program (BPF) over one synthetic call in the
// userspace evaluator and returns the kernel's verdict.
func (p *Profile) Check(d Data) (Verdict, error) {
	prog, err := p.BPF()
	if err != nil {
		return Verdict{}, err
	}
	ret, err := Evaluate(prog, d)
	if err != nil {
		return Verdict{}, fmt.Errorf("seccomp profile %s: %w", p.name, err)
	}
	return DecodeVerdict(ret), nil
}

// Arch names for CheckData.
var archByName = map[string]uint32{
	"x86_64": unix.AUDIT_ARCH_X86_64,
	"x32":    unix.AUDIT_ARCH_X86_64, // with the x32 bit in the number
	"i386":   unix.AUDIT_ARCH_I386,
}

// CheckData builds seccomp_data for "SYSCALL [ARG...]" as a user types it:
// the syscall by x86_64 name or number; each argument a number (negative
// numbers are sign-extended, as a C int argument is), a symbol expression
// ("AF_UNIX", "CLONE_VM|CLONE_THREAD") or an ioctl request name. arch is
// x86_64, x32 or i386 (for x32 and i386 the syscall must be a number).
func CheckData(arch, syscall string, args []string) (Data, error) {
	a, ok := archByName[arch]
	if !ok {
		return Data{}, fmt.Errorf("unknown arch %q (x86_64, x32, i386)", arch)
	}
	if len(args) > 6 {
		return Data{}, fmt.Errorf("%d arguments, a syscall has at most 6", len(args))
	}
	d := Data{Arch: a}
	if n, err := strconv.ParseUint(syscall, 0, 31); err == nil {
		d.Nr = int32(n)
	} else if arch != "x86_64" {
		return Data{}, fmt.Errorf("give the %s syscall as a number", arch)
	} else if nr, ok := syscallNumber(syscall); ok {
		d.Nr = int32(nr)
	} else {
		return Data{}, fmt.Errorf("unknown syscall %q", syscall)
	}
	if arch == "x32" {
		d.Nr |= x32SyscallBit
	}
	for i, s := range args {
		v, err := ParseArg(s)
		if err != nil {
			return Data{}, fmt.Errorf("argument %d: %w", i, err)
		}
		d.Args[i] = v
	}
	return d, nil
}

// ParseArg reads one argument value: an ioctl request name, a symbol
// expression, or a number (a negative one sign-extended to 64 bits).
func ParseArg(s string) (uint64, error) {
	for _, class := range ioctlRequests {
		if v, ok := class[s]; ok {
			return v, nil
		}
	}
	if strings.HasPrefix(s, "-") {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("bad number %q", s)
		}
		return uint64(n), nil
	}
	return evalSymbols(s)
}
