package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrUsage marks a Spec that cannot be run as given (bad name, missing
// program, ...). Nothing was created when it is returned.
var ErrUsage = errors.New("invalid request")

// ErrConflict marks a name (or index) already in use by a running sandbox.
var ErrConflict = errors.New("already running")

// Spec is one sandbox to run: what the CLI's `run` and DM mode produce.
type Spec struct {
	// Name identifies the sandbox: its runtime directory, cgroup and lock.
	Name string
	// Index selects the uid (Config.UIDBase+Index); -1 takes the lowest
	// index no running sandbox uses. In DM mode it is the domid.
	Index int
	// Program is the binary to run, an absolute path or a name on PATH.
	Program string
	// Args are the program's arguments (without argv[0]).
	Args []string
	// Env is the program's whole environment; nothing of the launcher's
	// own environment is passed on implicitly.
	Env []string
	// Profile is the seccomp profile; empty means the config's.
	Profile string
	// Files are handed to the program as fds FirstFileFD(spec), ... in
	// this order (see fds.go). The caller keeps ownership: it may close
	// them once Start returns (the program has its own copies).
	Files []HandedFile
	// ExtraDevices are host device nodes exposed besides the profile's.
	ExtraDevices []string
	// NoQMP suppresses the management QMP socket a QEMU program gets.
	NoQMP bool
	// RootFiles are host files placed in the minimal root at a path of
	// their own (DM mode: the libxenctrl shim at /usr/lib/dmsandbox, from
	// wherever it was built), read-only like the rest of the root.
	RootFiles []RootFile
	// VFIO are PCI devices (BDFs, already bound to vfio-pci) the program
	// may open through VFIO: their group nodes and a synthetic /sys view
	// holding only their iommu_group links (vfio.go).
	VFIO []string
	// Images are host disk images the program opens by their host path
	// (Xen's qdisk backend): each appears at that path as a node of a
	// loop device over the launcher's own open of the image (images.go).
	Images []Image
}

// RootFile is one Spec.RootFiles entry: the host file Host at Path in
// the root (both absolute; Path not under a directory the sandbox mounts).
type RootFile struct {
	Path string
	Host string
}

// HandedFile is one fd given to the confined program.
type HandedFile struct {
	Name string // for logs and inspect: "qmp", "tap0", ...
	File *os.File
}

// validName accepts names usable as a directory and cgroup component:
// 1-64 characters of [A-Za-z0-9_.-], not starting with '.', so never "."
// or ".." and never containing '/'.
func validName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// resolve validates the spec and resolves Program to an absolute path.
func (s *Spec) resolve(cfg *Config) error {
	if !validName(s.Name) {
		return fmt.Errorf("%w: name %q: use 1-64 characters of A-Z a-z 0-9 _ . - (no '/', not starting with '.')", ErrUsage, s.Name)
	}
	if s.Program == "" {
		return fmt.Errorf("%w: no program to run", ErrUsage)
	}
	if s.Index < -1 || (s.Index >= 0 && uint64(s.Index) >= uint64(cfg.UIDCount)) {
		return fmt.Errorf("%w: index %d outside 0..%d", ErrUsage, s.Index, cfg.UIDCount-1)
	}
	prog := s.Program
	if !strings.Contains(prog, "/") {
		p, err := exec.LookPath(prog)
		if err != nil {
			return fmt.Errorf("%w: program %q: %v", ErrUsage, prog, err)
		}
		prog = p
	}
	abs, err := filepath.Abs(prog)
	if err != nil {
		return fmt.Errorf("%w: program %q: %v", ErrUsage, prog, err)
	}
	// The root reproduces the path, so resolve links in the directory
	// part only; the binary's own name stays (QEMU looks at argv[0]).
	st, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("%w: program %s: %v", ErrUsage, abs, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: program %s is not an executable file", ErrUsage, abs)
	}
	for _, mp := range mountPoints {
		if strings.HasPrefix(abs, mp+"/") {
			return fmt.Errorf("%w: program %s is under %s, which the sandbox mounts over; install it elsewhere", ErrUsage, abs, mp)
		}
	}
	s.Program = abs
	for _, f := range s.RootFiles {
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path || !filepath.IsAbs(f.Host) {
			return fmt.Errorf("%w: root file %s from %s: both paths must be absolute and clean", ErrUsage, f.Path, f.Host)
		}
		for _, mp := range mountPoints {
			if f.Path == mp || strings.HasPrefix(f.Path, mp+"/") {
				return fmt.Errorf("%w: root file %s is under %s, which the sandbox mounts over", ErrUsage, f.Path, mp)
			}
		}
	}
	if s.Profile == "" {
		s.Profile = cfg.Profile
	}
	return nil
}
