package seccomp

import libseccomp "github.com/seccomp/libseccomp-golang"

// syscallNumber resolves an x86_64 syscall name with libseccomp's table.
func syscallNumber(name string) (int, bool) {
	nr, err := libseccomp.GetSyscallFromNameByArch(name, libseccomp.ArchAMD64)
	if err != nil || nr < 0 {
		return 0, false
	}
	return int(nr), true
}

// syscallName is the reverse of syscallNumber.
func syscallName(nr int) (string, bool) {
	n, err := libseccomp.ScmpSyscall(nr).GetNameByArch(libseccomp.ArchAMD64)
	if err != nil {
		return "", false
	}
	return n, true
}
