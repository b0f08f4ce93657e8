package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Install loads p's program (BPF) into the calling process, on every
// thread (SECCOMP_FILTER_FLAG_TSYNC), after setting no_new_privs. It is for
// processes dmsandbox confines itself: the broker, test victims, the test
// exec wrapper. The sandboxed QEMU gets its filter from runc (Config).
//
// Filters stack: a process can only add restrictions, never remove them.
func (p *Profile) Install() error {
	prog, err := p.BPF()
	if err != nil {
		return err
	}
	return loadProgram(p.name, prog)
}

// loadProgram sets no_new_privs and loads prog on every thread.
func loadProgram(name string, prog []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// no_new_privs: without it loading a filter needs CAP_SYS_ADMIN, and a
	// setuid exec could shed the filter's effect on privilege.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp profile %s: set no_new_privs: %w", name, err)
	}
	r, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		return fmt.Errorf("seccomp profile %s: load filter: %w", name, errno)
	}
	if r != 0 {
		// TSYNC names the thread that could not be synchronised.
		return fmt.Errorf("seccomp profile %s: load filter: thread %d cannot take it", name, r)
	}
	return nil
}
