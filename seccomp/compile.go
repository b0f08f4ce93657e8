package seccomp

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Layout selects how libseccomp arranges the syscall checks.
type Layout int

const (
	// LayoutRunc is what runc v1.5.1 does: a binary tree
	// (SCMP_FLTATR_CTL_OPTIMIZE=2) when the config has more than 32
	// syscall entries, libseccomp's linear chain otherwise.
	LayoutRunc Layout = iota
	// LayoutLinear forces libseccomp's default linear chain, for comparison.
	LayoutLinear
	// LayoutTree forces the binary tree.
	LayoutTree
)

// runcTreeThreshold is the number of configs.Syscall entries above which
// runc's InitSeccomp asks libseccomp for the binary tree.
const runcTreeThreshold = 32

// BPF returns the program runc loads for p.Config(): libseccomp's filter,
// built with runc's rules, preceded by the -ENOSYS stub that runc's patchbpf
// prepends. Tests check it against the program the kernel holds after runc's
// own seccomp.InitSeccomp (compile_runc_test.go).
func (p *Profile) BPF() ([]bpf.RawInstruction, error) { return p.BPFLayout(LayoutRunc) }

// BPFLayout is BPF with an explicit libseccomp layout (for benchmarks).
func (p *Profile) BPFLayout(layout Layout) ([]bpf.RawInstruction, error) {
	cfg := p.Config()
	prog, err := buildLibseccomp(cfg, layout)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile %s: %w", p.name, err)
	}
	return append(enosysStub(cfg), prog...), nil
}

// buildLibseccomp mirrors runc's InitSeccomp up to the point where it hands
// the filter to patchbpf: same default action, same attributes, same
// translation of each configs.Syscall into libseccomp rules.
func buildLibseccomp(cfg *configs.Seccomp, layout Layout) ([]bpf.RawInstruction, error) {
	def, err := scmpAction(cfg.DefaultAction, cfg.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("libseccomp new filter: %w", err)
	}
	defer f.Release()
	tree := layout == LayoutTree || (layout == LayoutRunc && len(cfg.Syscalls) > runcTreeThreshold)
	if tree {
		if err := f.SetOptimize(2); err != nil {
			return nil, fmt.Errorf("libseccomp binary tree: %w", err)
		}
	}
	// runc leaves no_new_privs to its own code (or to the launcher).
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("libseccomp nnp attribute: %w", err)
	}
	for _, sc := range cfg.Syscalls {
		act, err := scmpAction(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("syscall %s: %w", sc.Name, err)
		}
		if act == def {
			continue // runc skips rules that repeat the default
		}
		nr, err := libseccomp.GetSyscallFromName(sc.Name)
		if err != nil {
			return nil, fmt.Errorf("syscall %s: %w", sc.Name, err)
		}
		if len(sc.Args) == 0 {
			if err := f.AddRule(nr, act); err != nil {
				return nil, fmt.Errorf("syscall %s: %w", sc.Name, err)
			}
			continue
		}
		var conds []libseccomp.ScmpCondition
		for _, a := range sc.Args {
			c, err := libseccomp.MakeCondition(a.Index, scmpOp(a.Op), a.Value, a.ValueTwo)
			if err != nil {
				return nil, fmt.Errorf("syscall %s arg %d: %w", sc.Name, a.Index, err)
			}
			conds = append(conds, c)
		}
		if err := f.AddRuleConditional(nr, act, conds); err != nil {
			return nil, fmt.Errorf("syscall %s: %w", sc.Name, err)
		}
	}
	return exportBPF(f)
}

// exportBPF reads libseccomp's program through a memfd (ExportBPF writes
// to a file descriptor).
func exportBPF(f *libseccomp.ScmpFilter) ([]bpf.RawInstruction, error) {
	fd, err := unix.MemfdCreate("dmsandbox-seccomp-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for bpf export: %w", err)
	}
	mf := os.NewFile(uintptr(fd), "dmsandbox-seccomp-bpf")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return nil, fmt.Errorf("libseccomp export bpf: %w", err)
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind bpf export: %w", err)
	}
	raw, err := io.ReadAll(mf)
	if err != nil {
		return nil, fmt.Errorf("read bpf export: %w", err)
	}
	return decodeSockFilters(raw)
}

// decodeSockFilters decodes struct sock_filter records (u16 code, u8 jt,
// u8 jf, u32 k, native endian).
func decodeSockFilters(raw []byte) ([]bpf.RawInstruction, error) {
	const size = 8
	if len(raw)%size != 0 || len(raw) == 0 {
		return nil, fmt.Errorf("bpf program of %d bytes is not a sequence of %d-byte instructions", len(raw), size)
	}
	out := make([]bpf.RawInstruction, 0, len(raw)/size)
	for i := 0; i < len(raw); i += size {
		out = append(out, bpf.RawInstruction{
			Op: binary.NativeEndian.Uint16(raw[i:]),
			Jt: raw[i+2],
			Jf: raw[i+3],
			K:  binary.NativeEndian.Uint32(raw[i+4:]),
		})
	}
	return out, nil
}

func scmpAction(a configs.Action, errno *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case configs.KillProcess:
		return libseccomp.ActKillProcess, nil
	case configs.Allow:
		return libseccomp.ActAllow, nil
	case configs.Log:
		return libseccomp.ActLog, nil
	case configs.Errno:
		if errno == nil {
			return libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM)), nil
		}
		return libseccomp.ActErrno.SetReturnCode(int16(*errno)), nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("action %v is not used by dmsandbox profiles", a)
}

func scmpOp(op configs.Operator) libseccomp.ScmpCompareOp {
	switch op {
	case configs.EqualTo:
		return libseccomp.CompareEqual
	case configs.NotEqualTo:
		return libseccomp.CompareNotEqual
	case configs.GreaterThan:
		return libseccomp.CompareGreater
	case configs.GreaterThanOrEqualTo:
		return libseccomp.CompareGreaterEqual
	case configs.LessThan:
		return libseccomp.CompareLess
	case configs.LessThanOrEqualTo:
		return libseccomp.CompareLessOrEqual
	case configs.MaskEqualTo:
		return libseccomp.CompareMaskedEqual
	}
	return libseccomp.CompareInvalid
}
