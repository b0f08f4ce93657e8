package rig

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitramfsReal builds the initramfs for the real rig kernel and reads
// it back with GNU cpio: the files the init stages rely on are there,
// modules come after their dependencies, and the content-hash cache
// returns the same image for the same inputs and a new one for new inputs.
func TestInitramfsReal(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the rig kernel (a 70 MB download on first use); skipped with -short")
	}
	SkipIfNoRig(t)
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := EnsureKernel(cache)
	if err != nil {
		t.Fatal(err)
	}
	path, err := BuildInitramfs(cache, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := BuildInitramfs(cache, k, nil)
	if err != nil || again != path {
		t.Errorf("second build: %q, %v; want the cached %q", again, err, path)
	}
	// (into a scratch cache: the real one keeps only images rigs use)
	other, err := BuildInitramfs(t.TempDir(), k, []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"})
	if err != nil || filepath.Base(other) == filepath.Base(path) {
		t.Errorf("build with other modules: %q, %v; want a new image", other, err)
	}

	gz, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio binary to read the image back (apt-get install cpio)")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "--quiet", "-d", "--no-absolute-filenames", "--nonmatching", "dev/console")
	cmd.Dir, cmd.Stdin = dir, zr
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i of %s: %v %s", path, err, out)
	}
	for _, f := range []string{"init", "bin/busybox", "etc/rig/stage2", "etc/rig/modules", "lib/modules/9p.ko", "lib/modules/vfio-pci.ko"} {
		if _, err := os.Stat(dir + "/" + f); err != nil {
			t.Errorf("initramfs lacks %s: %v", f, err)
		}
	}
	list, _ := os.ReadFile(dir + "/etc/rig/modules")
	order := strings.Fields(string(list))
	pos := map[string]int{}
	for i, m := range order {
		pos[m] = i
	}
	for _, dep := range [][2]string{
		{"9pnet.ko", "9pnet_virtio.ko"}, {"9pnet.ko", "9p.ko"}, {"netfs.ko", "9p.ko"},
		{"vfio.ko", "vfio-pci-core.ko"}, {"vfio-pci-core.ko", "vfio-pci.ko"}, {"irqbypass.ko", "vfio-pci-core.ko"},
	} {
		a, okA := pos[dep[0]]
		b, okB := pos[dep[1]]
		if !okA || !okB || a > b {
			t.Errorf("module order: want %s before %s, got %v", dep[0], dep[1], order)
		}
	}
}
