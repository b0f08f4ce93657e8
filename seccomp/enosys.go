package seccomp

import (
	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccomp_data offsets (include/uapi/linux/seccomp.h): nr, arch,
// instruction_pointer, args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// x32SyscallBit marks x32 syscall numbers on AUDIT_ARCH_X86_64.
const x32SyscallBit = 0x40000000

// enosysStub is the prefix runc's patchbpf puts before libseccomp's program
// when the default action is not an allow-like one: a native (x86_64, not
// x32) syscall numbered above the largest syscall the config names returns
// -ENOSYS, because it is newer than the profile (and maybe than libseccomp),
// and a program must be able to fall back from it as from a kernel that
// lacks it. Everything else goes on to libseccomp's program.
//
// This is written for the one architecture dmsandbox profiles use; runc's
// generator handles more and lays the jumps out differently, so the two
// programs are compared by behaviour, not instruction by instruction
// (compile_runc_test.go).
func enosysStub(cfg *configs.Seccomp) []bpf.RawInstruction {
	switch cfg.DefaultAction {
	case configs.Allow, configs.Log, configs.Trace:
		return nil
	}
	if cfg.DefaultErrnoRet != nil && *cfg.DefaultErrnoRet == uint(unix.ENOSYS) {
		return nil
	}
	var last uint32
	for _, sc := range cfg.Syscalls {
		nr, err := libseccomp.GetSyscallFromNameByArch(sc.Name, libseccomp.ArchAMD64)
		if err == nil && uint32(nr) > last {
			last = uint32(nr)
		}
	}
	if last == 0 {
		return nil
	}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipFalse: 4},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: x32SyscallBit, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: last, SkipFalse: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		// A constant program; failing to assemble it is a bug.
		panic("seccomp: assemble enosys stub: " + err.Error())
	}
	return raw
}
