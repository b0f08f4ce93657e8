package rig

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseKernelDepends(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", "linux-image-6.1.0-56-amd64", true},
		{"linux-image-amd64\n |Depends: linux-image-6.1.0-9-amd64\n", "linux-image-6.1.0-9-amd64", true},
		{"linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64-unsigned\n", "", false},
		{"linux-image-amd64\n  Depends: firmware-linux\n", "", false},
		{"", "", false},
		{"W: Unable to locate package linux-image-amd64", "", false},
	} {
		got, err := parseKernelDepends(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseKernelDepends(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestCPIOReadBack writes an archive and lists and unpacks it with GNU cpio,
// an independent reader of the newc format.
func TestCPIOReadBack(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("no cpio binary to read the archive back (apt-get install cpio)")
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("etc", 0o755)
	w.File("etc/a", 0o644, []byte("hello"))      // data needs padding
	w.File("etc/four", 0o600, []byte("1234"))    // data needs none
	w.File("init", 0o755, []byte("#!/bin/sh\n")) //
	w.Symlink("sh", "init")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range map[string]string{"etc/a": "hello", "etc/four": "1234", "init": "#!/bin/sh\n"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "init")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("init mode = %v, %v; want 0755", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "sh")); err != nil || l != "init" {
		t.Errorf("sh -> %q, %v; want init", l, err)
	}
}

func TestQEMUArgs(t *testing.T) {
	r := &Rig{
		Devices:  []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		QEMUArgs: []string{"-netdev", "user,id=n0"},
		Append:   "rig.x=1",
	}
	k := &Kernel{Release: "6.1.0-56-amd64", Root: "/c/k"}
	a := strings.Join(r.qemuArgs(bootFiles{kernel: k, initramfs: "/c/i.gz", outDir: "/w/a,b/out"}), " ")
	for _, want := range []string{
		"-accel tcg,thread=multi -cpu max",
		"-machine q35,kernel-irqchip=split -m 1024 -smp 2",
		"-device intel-iommu,intremap=on,caching-mode=on -device pcie-root-port,id=rp1,chassis=1,slot=1 -device edu,bus=rp1 -netdev user,id=n0",
		"local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
		"local,path=/w/a,,b/out,mount_tag=rigout", // comma escaped
		"-kernel /c/k/boot/vmlinuz-6.1.0-56-amd64 -initrd /c/i.gz",
		"intel_iommu=on iommu=pt",
		"rig.kmod=/c/k/lib/modules/6.1.0-56-amd64 rig.cgroup=v1 rig.x=1",
		"-no-reboot",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("qemu args lack %q:\n%s", want, a)
		}
	}
}

func TestScriptEnvQuoting(t *testing.T) {
	r := &Rig{Env: map[string]string{"B": "it's $HOME", "A": "1"}, Script: "echo \"$A|$B\""}
	out, err := exec.Command("bash", "-c", r.scriptText()).Output()
	if err != nil {
		t.Skipf("no bash to run the script: %v", err)
	}
	if got, want := strings.TrimSpace(string(out)), "1|it's $HOME"; got != want {
		t.Errorf("script printed %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, r := range []Rig{
		{Cgroup: "v3"},
		{Append: "a\nb"},
		{Env: map[string]string{"A B": "x"}},
		{Env: map[string]string{"": "x"}},
	} {
		if err := r.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", r)
		}
	}
	if err := (&Rig{Cgroup: "v2", Env: map[string]string{"X_1": "y"}}).validate(); err != nil {
		t.Errorf("validate of a good rig: %v", err)
	}
}

func TestRetries(t *testing.T) {
	for in, want := range map[int]int{-1: 0, 0: 1, 2: 2} {
		if got := (&Rig{Retries: in}).retries(); got != want {
			t.Errorf("Retries %d: %d retries, want %d", in, got, want)
		}
	}
}

func TestPruneImages(t *testing.T) {
	dir := t.TempDir()
	old, fresh, other := filepath.Join(dir, "a.cpio.gz"), filepath.Join(dir, "b.cpio.gz"), filepath.Join(dir, "keep.txt")
	for _, p := range []string{old, fresh, other} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-30 * 24 * time.Hour)
	for _, p := range []string{old, other} {
		if err := os.Chtimes(p, long, long); err != nil {
			t.Fatal(err)
		}
	}
	pruneImages(dir, imageMaxIdle)
	for p, want := range map[string]bool{old: false, fresh: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
