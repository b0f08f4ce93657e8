package launcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disk images a program opens by host path. Xen QEMU's qdisk backend
// (xen-block, machine xenpv, and the PV path of HVM guests) reads the
// image's path from xenstore, where libxl wrote it before spawning the
// device model, and opens it itself: no argv option, no fd to hand. So
// the path must exist in the sandbox, and the sandbox uid must be able
// to open what is there.
//
// Why a loop device, not a bind mount of the image: a bind mount shows
// the same inode with the same owner and mode, so QEMU (uid 3000000+N,
// no capabilities) still gets EACCES on a root-owned 0600 image, and
// re-opening an fd the launcher opened through /proc/self/fd checks the
// inode's permissions again. Making the image readable means chown,
// chmod or an ACL on the user's file, which the launcher must not do; an
// idmapped mount would do it without touching the file, but tmpfs (6.1)
// and 9p have none. So the launcher opens the image itself (as root,
// never through a symlink), attaches a loop device to that open file
// and gives the sandbox, at the image's own path, a block device node of
// that loop device owned by the sandbox uid. QEMU's xen-block sees a
// block device and uses its host_device driver. The sandbox holds no
// node of the user's file or disk: the loop device's own ioctls
// (LOOP_CLR_FD, LOOP_SET_STATUS...) are in no seccomp profile, the
// devices cgroup admits exactly that loop device, and a read-only image
// is a read-only loop device (the kernel refuses writes, whatever the
// node's mode). The loop device is LO_FLAGS_AUTOCLEAR: it goes away with
// the last close, QEMU's or the launcher's, also when both are killed.
// No LO_FLAGS_PARTSCAN: the host kernel does not parse the guest's
// partition table. The price of a loop device: the host's udev sees a
// block device holding guest data (blkid), as with phy: backends, so a
// site with LVM event activation should filter /dev/loop* as it filters
// guest LVs (docs/libxl.md).
//
// Where the node goes: the cached root is shared and read-only, so the
// image path's first component gets an empty mount point in the root
// (planRoot's mounts; it changes the root's identity only for a new
// first component) and a small tmpfs is mounted there (scaffold), in
// which runc creates the parent directories and the node. Under /dev the
// node goes into the sandbox's own /dev tmpfs.

// Image is a host disk image exposed at its own path in the sandbox
// (see above).
type Image struct {
	Path     string // absolute, clean, no symlink in any component
	ReadOnly bool
}

// imageRefusedTop are first path components an image may not live
// under: the sandbox mounts its own /proc, /sys, /run and /tmp there,
// and the host's are no disk images.
var imageRefusedTop = map[string]bool{"proc": true, "sys": true, "run": true, "tmp": true}

// imageRefusedDev are /dev subtrees whose nodes are never disk images:
// the Xen and VFIO nodes the sandbox already gets under its own rules,
// and the pseudo-filesystems mounted under /dev.
var imageRefusedDev = []string{"/dev/xen", "/dev/vfio", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/hugepages", "/dev/fd"}

// imageRefusedFS are filesystems whose regular files are no disk images
// (a bind mount of one elsewhere would pass the path checks).
var imageRefusedFS = map[int64]string{unix.PROC_SUPER_MAGIC: "proc", unix.SYSFS_MAGIC: "sysfs",
	unix.DEBUGFS_MAGIC: "debugfs", unix.TRACEFS_MAGIC: "tracefs", unix.SECURITYFS_MAGIC: "securityfs",
	unix.CGROUP_SUPER_MAGIC: "cgroup", unix.CGROUP2_SUPER_MAGIC: "cgroup2", unix.BPF_FS_MAGIC: "bpf",
	unix.EFIVARFS_MAGIC: "efivarfs"}

// imageMountPoint checks an image path against the policy and returns
// the scaffold mount point for it ("" under /dev).
func imageMountPoint(path string) (string, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || strings.ContainsRune(path, 0) || len(path) > 1024 {
		return "", fmt.Errorf("image %q: not an absolute, clean path", path)
	}
	first, rest, _ := strings.Cut(path[1:], "/")
	if rest == "" {
		return "", fmt.Errorf("image %s: directly under /: put it in a directory", path)
	}
	if imageRefusedTop[first] {
		return "", fmt.Errorf("image %s: under /%s, which the sandbox mounts itself", path, first)
	}
	if first == "dev" {
		for _, d := range imageRefusedDev {
			if path == d || strings.HasPrefix(path, d+"/") {
				return "", fmt.Errorf("image %s: under %s", path, d)
			}
		}
		return "", nil
	}
	return "/" + first, nil
}

// imageMountPoints returns the scaffold mount points of images, each
// once, after checking every path.
func imageMountPoints(images []Image) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, img := range images {
		mp, err := imageMountPoint(img.Path)
		if err != nil {
			return nil, err
		}
		if seen["img:"+img.Path] {
			return nil, fmt.Errorf("image %s: given twice", img.Path)
		}
		seen["img:"+img.Path] = true
		if mp != "" && !seen[mp] {
			seen[mp] = true
			out = append(out, mp)
		}
	}
	return out, nil
}

// openImage opens path as an image: first O_PATH, without following a
// symlink in any component, so that nothing is opened before its type
// is known (opening a FIFO blocks, opening a tty or tape device acts);
// then, for a regular file or a block device, for real, through that
// very inode.
func openImage(img Image) (*os.File, error) {
	pfd, err := unix.Openat2(unix.AT_FDCWD, img.Path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("image %s: a symbolic link on the way (give the real path): %w", img.Path, err)
		}
		return nil, fmt.Errorf("image %s: %w", img.Path, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if strings.HasPrefix(img.Path, "/dev/") {
			return nil, fmt.Errorf("image %s: a regular file under /dev", img.Path)
		}
	case unix.S_IFBLK:
	default:
		return nil, fmt.Errorf("image %s: neither a regular file nor a block device (mode %#o)", img.Path, st.Mode&unix.S_IFMT)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(pfd, &sfs); err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Path, err)
	}
	if name, bad := imageRefusedFS[int64(sfs.Type)]; bad {
		return nil, fmt.Errorf("image %s: on %s, not a disk image", img.Path, name)
	}
	flags := os.O_RDWR
	if img.ReadOnly {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", pfd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Path, err)
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		f.Close()
		return nil, fmt.Errorf("image %s: changed while it was opened", img.Path)
	}
	return f, nil
}

// loopImage is an image attached to a loop device.
type loopImage struct {
	loop *os.File // the loop device, held until the sandbox is closed
	node devNode  // what the sandbox gets at the image's path
}

// loopBusyRetries bounds the race with another process taking the free
// loop device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE.
const loopBusyRetries = 10

// attachImage opens img and attaches a loop device to it (LOOP_CONFIGURE:
// file, read-only flag and autoclear in one ioctl, Linux 5.8+).
func attachImage(img Image) (*loopImage, error) {
	f, err := openImage(img)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the loop device holds its own reference to the file
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("image %s: loop devices: %w (modprobe loop)", img.Path, err)
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if img.ReadOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img.Path)
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("image %s: LOOP_CTL_GET_FREE: %w", img.Path, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		loop, err := openLoop(dev)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Path, err)
		}
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) && try < loopBusyRetries {
			loop.Close()
			continue
		}
		if err != nil {
			loop.Close()
			return nil, fmt.Errorf("image %s: LOOP_CONFIGURE %s: %w", img.Path, dev, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(loop.Fd()), &st); err != nil {
			loop.Close() // autoclear detaches it
			return nil, fmt.Errorf("image %s: %s: %w", img.Path, dev, err)
		}
		mode := fs.FileMode(0o600)
		if img.ReadOnly {
			mode = 0o400
		}
		return &loopImage{loop: loop, node: devNode{Path: img.Path, Type: 'b',
			Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev))),
			Mode: mode, Private: true}}, nil
	}
}

// openLoop opens a loop device node, which devtmpfs creates a moment
// after LOOP_CTL_GET_FREE added the device.
func openLoop(dev string) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || i == 50 {
			return f, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
