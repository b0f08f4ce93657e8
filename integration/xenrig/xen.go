package xenrig

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Debs are the packages of Xen 4.17 the rig unpacks: hypervisor, toolstack
// (xl, libxl, xenstored, hvmloader) and their libraries. qemu-system-xen
// is the host's own (the Makefile's deps install it).
var Debs = []string{"xen-hypervisor-4.17-amd64", "xen-utils-4.17", "xen-utils-common", "libxenstore4",
	"libxenmisc4.17", "libxencall1", "libxendevicemodel1", "libxenevtchn1", "libxenforeignmemory1",
	"libxengnttab1", "libxentoolcore1", "libxentoollog1", "libxenhypfs1", "libyajl2", "xenstore-utils"}

// Xen is an unpacked Xen tree.
type Xen struct {
	Root string // dpkg -x destination: usr/, etc/, boot/, var/
	ELF  string // the hypervisor as a multiboot ELF (QEMU's -kernel)
}

// EnsureXen returns the Xen tree under cache/xen-4.17, downloading and
// unpacking it the first time. A tree is complete once xen.elf exists
// (written last); concurrent callers take turns on a lock.
func EnsureXen(cache string) (*Xen, error) {
	dir := filepath.Join(cache, "xen-4.17")
	x := &Xen{Root: filepath.Join(dir, "root"), ELF: filepath.Join(dir, "xen.elf")}
	if _, err := os.Stat(x.ELF); err == nil {
		return x, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "xen.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("xenrig: lock: %w", err)
	}
	if _, err := os.Stat(x.ELF); err == nil {
		return x, nil // another caller finished it
	}
	debs := filepath.Join(dir, "debs")
	os.RemoveAll(debs)
	os.RemoveAll(x.Root)
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	// apt's download sandbox user must be able to write here.
	os.Chmod(debs, 0o777)
	if err := run(debs, "apt-get", append([]string{"download", "-q"}, Debs...)...); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	if len(files) < len(Debs) {
		return nil, fmt.Errorf("xenrig: apt-get download gave %d of %d packages", len(files), len(Debs))
	}
	for _, f := range files {
		if err := run(debs, "dpkg", "-x", f, x.Root); err != nil {
			return nil, err
		}
	}
	gz, _ := filepath.Glob(filepath.Join(x.Root, "boot", "xen-4.17*-amd64.gz"))
	if len(gz) == 0 {
		return nil, fmt.Errorf("xenrig: no boot/xen-4.17-amd64.gz in %s", x.Root)
	}
	if err := gunzip(gz[0], x.ELF); err != nil {
		return nil, err
	}
	return x, nil
}

func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("xenrig: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// gunzip writes src uncompressed to dst through a temporary file, so dst
// exists only complete.
func gunzip(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("xenrig: %w", err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("xenrig: %s: %w", src, err)
	}
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("xenrig: %w", err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		return fmt.Errorf("xenrig: %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("xenrig: %w", err)
	}
	return os.Rename(tmp, dst)
}
