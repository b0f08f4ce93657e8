package launcher

import (
	"fmt"
	"os"
)

// Fd hand-over. The confined program gets exactly:
//
//	fd 0       Launcher.Stdin (default /dev/null)
//	fd 1, 2    Launcher.Stdout, Launcher.Stderr (under libxl: the
//	           qemu-dm-NAME.log it opened)
//	fd 3       the management QMP listening socket (QEMU, unless NoQMP)
//	fd 3+k...  Spec.Files in order (tap fds, libxl's pre-bound QMP socket,
//	           disks, the broker session)
//
// Ownership: the caller of Start owns Spec.Files and may close them once
// Start returns (the program has its own copies by then); the QMP socket's
// fd is created and closed by Start. Every other fd of the launcher is
// O_CLOEXEC (Go's default) and runc's init closes all fds above the
// handed ones before execve, so nothing else leaks in.
// FirstFileFD is the fd the program gets Spec.Files[0] as: 4 when the
// management QMP socket takes fd 3 (a QEMU without NoQMP), else 3.
func FirstFileFD(spec Spec) int {
	if isQEMU(spec.Program) && !spec.NoQMP {
		return 4
	}
	return 3
}

type handover struct {
	files []*os.File // fds 3.. in order
	names []string   // parallel to files
}

func (h *handover) add(name string, f *os.File) int {
	h.files = append(h.files, f)
	h.names = append(h.names, name)
	return 2 + len(h.files)
}

// openStdio returns f, or /dev/null opened with flag when f is nil.
func openStdio(f *os.File, flag int) (*os.File, func(), error) {
	if f != nil {
		return f, func() {}, nil
	}
	n, err := os.OpenFile(os.DevNull, flag, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	return n, func() { n.Close() }, nil
}
