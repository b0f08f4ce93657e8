package rig

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DefaultModules are loaded by stage 1 in L1, with their dependencies:
// the 9p root and the overlay over it (essential), the VFIO stack, and the
// drivers of the devices rigs usually carry (so a device starts bound to its
// real driver, as on a host). intel-iommu is built into Debian's kernel.
var DefaultModules = []string{
	"virtio_pci", "9pnet_virtio", "9p", "overlay",
	"vfio", "vfio_iommu_type1", "vfio_pci",
	"e1000e", "e1000", "virtio_net",
}

// kvmModules are loaded only when L1's CPU offers the matching extension.
var kvmModules = map[string]string{"kvm_amd": "modules.kvm_amd", "kvm_intel": "modules.kvm_intel"}

//go:embed guest/init
var stage1Script []byte

//go:embed guest/stage2
var stage2Script []byte

// BuildInitramfs returns the path of a gzipped initramfs for kernel k holding
// busybox, the two init stages and the given modules (nil: DefaultModules)
// with everything they depend on. Images are cached under
// cacheDir/initramfs/ by a hash of their content, so a changed script, module
// list, kernel or busybox gives a new image and an unchanged one is reused.
func BuildInitramfs(cacheDir string, k *Kernel, modules []string) (string, error) {
	if modules == nil {
		modules = DefaultModules
	}
	bb, err := staticBusybox()
	if err != nil {
		return "", err
	}
	base, err := moduleOrder(k, modules, nil)
	if err != nil {
		return "", err
	}
	kvm := map[string][]string{}
	for m, list := range kvmModules {
		if kvm[list], err = moduleOrder(k, []string{m}, base); err != nil {
			return "", err
		}
	}

	// Everything that goes into the image, in a fixed order: the hash of
	// this list is the cache key.
	type file struct {
		name string
		perm uint32
		data []byte
	}
	files := []file{
		{"init", 0o755, stage1Script},
		{"etc/rig/stage2", 0o644, stage2Script},
		{"bin/busybox", 0o755, bb},
		{"etc/rig/modules", 0o644, []byte(baseNames(base))},
		{"etc/rig/modules.kvm_amd", 0o644, []byte(baseNames(kvm["modules.kvm_amd"]))},
		{"etc/rig/modules.kvm_intel", 0o644, []byte(baseNames(kvm["modules.kvm_intel"]))},
	}
	all := append(append(append([]string{}, base...), kvm["modules.kvm_amd"]...), kvm["modules.kvm_intel"]...)
	for _, p := range all {
		data, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("rig: initramfs module: %w", err)
		}
		files = append(files, file{"lib/modules/" + filepath.Base(p), 0o644, data})
	}
	h := sha256.New()
	fmt.Fprintf(h, "dmsandbox-rig-initramfs-v1\x00%s\x00", k.Release)
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.name, f.perm, len(f.data))
		h.Write(f.data)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	path := filepath.Join(cacheDir, "initramfs", k.Release+"-"+sum+".cpio.gz")
	if _, err := os.Stat(path); err == nil {
		// The mtime says when an image was last used; pruneImages goes by it.
		now := time.Now()
		_ = os.Chtimes(path, now, now)
		return path, nil
	}
	pruneImages(filepath.Dir(path), imageMaxIdle)

	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	cw := newCPIOWriter(zw)
	for _, d := range []string{"bin", "dev", "etc", "etc/rig", "lib", "lib/modules", "proc", "sys"} {
		cw.Dir(d, 0o755)
	}
	cw.CharDev("dev/console", 0o600, 5, 1)
	for _, f := range files {
		cw.File(f.name, f.perm, f.data)
	}
	if err := cw.Close(); err != nil {
		return "", fmt.Errorf("rig: write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("rig: write initramfs: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	// Write-then-rename: a concurrent builder of the same hash writes the
	// same bytes, and a reader never sees a partial image.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initramfs-*")
	if err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return "", fmt.Errorf("rig: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("rig: write %s: %w", tmp.Name(), err)
	}
	_ = os.Chmod(tmp.Name(), 0o644)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	return path, nil
}

// imageMaxIdle: an image unused this long is deleted when a new one is built.
// Each change to the init stages or module list makes a new image (3–4 MB);
// an image still in use by someone's older checkout is rebuilt if needed.
const imageMaxIdle = 7 * 24 * time.Hour

func pruneImages(dir string, maxIdle time.Duration) {
	old, _ := filepath.Glob(filepath.Join(dir, "*.cpio.gz"))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > maxIdle {
			_ = os.Remove(p)
		}
	}
}

// moduleOrder lists the .ko files to insmod, dependencies first, without
// duplicates and without those already in skip. modprobe --show-depends
// prints exactly the insmod sequence it would run (built-in modules print
// "builtin ..." and need nothing).
func moduleOrder(k *Kernel, modules, skip []string) ([]string, error) {
	seen := map[string]bool{}
	for _, p := range skip {
		seen[p] = true
	}
	var order []string
	for _, m := range modules {
		out, err := run("", "modprobe", "-d", k.Root, "-S", k.Release, "--show-depends", m)
		if err != nil {
			return nil, fmt.Errorf("rig: module %s of kernel %s: %w", m, k.Release, err)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" {
				continue
			}
			if strings.HasSuffix(f[1], ".xz") || strings.HasSuffix(f[1], ".zst") || strings.HasSuffix(f[1], ".gz") {
				return nil, fmt.Errorf("rig: module %s is compressed; busybox insmod in the initramfs cannot load it", f[1])
			}
			if !seen[f[1]] {
				seen[f[1]] = true
				order = append(order, f[1])
			}
		}
	}
	return order, nil
}

func baseNames(paths []string) string {
	var b strings.Builder
	for _, p := range paths {
		b.WriteString(filepath.Base(p) + "\n")
	}
	return b.String()
}

// staticBusybox returns the busybox binary for the initramfs. It must be
// statically linked: the initramfs has no libc.
func staticBusybox() ([]byte, error) {
	path := os.Getenv("DMSANDBOX_RIG_BUSYBOX")
	if path == "" {
		var err error
		if path, err = exec.LookPath("busybox"); err != nil {
			return nil, fmt.Errorf("rig: busybox not found (apt-get install busybox-static): %w", err)
		}
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rig: busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("rig: busybox %s is dynamically linked; the initramfs needs busybox-static", path)
		}
	}
	return os.ReadFile(path)
}
