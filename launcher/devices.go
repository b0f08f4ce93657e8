package launcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// baseDevices are the nodes every sandbox gets: what glibc and QEMU open
// unconditionally. No tty, no ptmx: QEMU's serial goes to fds or sockets.
var baseDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// profileDevices are the nodes a seccomp profile's device model needs.
// Optional nodes (absent on this host) are skipped: QEMU falls back to TCG
// without /dev/kvm, and the Xen nodes exist only in a dom0.
var profileDevices = map[string][]string{
	"qemu-kvm":  {"/dev/kvm"},
	"qemu-vfio": {"/dev/kvm", "/dev/vfio/vfio"},
	// hypercall: libxencall takes its hypercall buffers from it; without
	// it, it locks memory, which fails under dm_restrict's memlock 0.
	"qemu-xen": {"/dev/xen/privcmd", "/dev/xen/evtchn", "/dev/xen/gntdev", "/dev/xen/gntalloc", "/dev/xen/xenbus",
		"/dev/xen/hypercall"},
}

// devNode is a host device node to expose in the sandbox's /dev.
type devNode struct {
	Path         string
	Type         byte // 'c' or 'b'
	Major, Minor int64
	Mode         fs.FileMode // permission bits in the sandbox
	Private      bool        // owned by the sandbox uid, mode 0600
}

// sandboxDevices lists the nodes for a profile plus extra, read from the
// host. An extra node that does not exist is an error (the caller asked
// for it); a profile node that does not exist is skipped.
func sandboxDevices(profile string, extra []string) ([]devNode, error) {
	var out []devNode
	seen := map[string]bool{}
	add := func(path string, required, private bool) error {
		if seen[path] {
			return nil
		}
		seen[path] = true
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			if !required && errors.Is(err, syscall.ENOENT) {
				return nil
			}
			return fmt.Errorf("device %s: %w", path, err)
		}
		var typ byte
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = 'c'
		case unix.S_IFBLK:
			typ = 'b'
		default:
			return fmt.Errorf("device %s: not a device node", path)
		}
		mode := fs.FileMode(0o666)
		if private {
			mode = 0o600
		}
		out = append(out, devNode{Path: path, Type: typ, Major: int64(unix.Major(uint64(st.Rdev))),
			Minor: int64(unix.Minor(uint64(st.Rdev))), Mode: mode, Private: private})
		return nil
	}
	for _, p := range baseDevices {
		if err := add(p, true, false); err != nil {
			return nil, err
		}
	}
	for _, p := range profileDevices[profile] {
		if err := add(p, false, true); err != nil {
			return nil, err
		}
	}
	for _, p := range extra {
		if err := add(p, true, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// deviceRules returns the cgroup device rules for the nodes. "m" is
// allowed for exactly these nodes because runc's init creates them with
// mknod after joining the cgroup (without it runc silently falls back to
// bind-mounting the host node, whose owner and mode then apply). The
// program cannot use it: it has no CAP_MKNOD, and mknod is not in any
// seccomp profile.
func deviceRules(nodes []devNode) []DeviceRule {
	out := make([]DeviceRule, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, DeviceRule{Type: n.Type, Major: n.Major, Minor: n.Minor, Access: "rwm"})
	}
	return out
}

// privateNode makes a copy of a device node owned by uid in dir (the
// sandbox's own, removed with it), for user-namespace sandboxes: there
// runc bind-mounts nodes instead of creating them, so the host node's
// owner and mode would apply and /dev/kvm (root:kvm 0660) would be
// unusable by the mapped uid. The directory is not under RUN_DIR because
// /run is usually mounted nodev.
func privateNode(dir string, n devNode, uid uint32) (string, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	path := fmt.Sprintf("%s/%c-%d-%d", dir, n.Type, n.Major, n.Minor)
	kind := uint32(unix.S_IFCHR)
	if n.Type == 'b' {
		kind = unix.S_IFBLK
	}
	if err := unix.Mknod(path, kind|uint32(n.Mode.Perm()), int(unix.Mkdev(uint32(n.Major), uint32(n.Minor)))); err != nil {
		return "", fmt.Errorf("mknod %s: %w", path, err)
	}
	// Mknod applies the umask: set the mode exactly, then the owner.
	if err := os.Chmod(path, n.Mode.Perm()); err != nil {
		return "", fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Chown(path, int(uid), int(uid)); err != nil {
		return "", fmt.Errorf("chown %s: %w", path, err)
	}
	return path, nil
}

func hasNode(nodes []devNode, path string) bool {
	for _, n := range nodes {
		if n.Path == path {
			return true
		}
	}
	return false
}
