package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestELFClosureOfLs(t *testing.T) {
	deps, err := elfClosure("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	var haveLibc, haveInterp bool
	for _, d := range deps {
		haveLibc = haveLibc || strings.Contains(d, "libc.so.6")
		haveInterp = haveInterp || strings.Contains(d, "ld-linux")
	}
	if !haveLibc || !haveInterp {
		t.Fatalf("closure of /bin/ls misses libc or the interpreter: %v", deps)
	}
}

func TestELFClosureRejectsNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "script")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if _, err := elfClosure(p); err == nil {
		t.Fatal("a shell script passed as an ELF program")
	}
}

func TestPlanRootReproducesLinks(t *testing.T) {
	plan, err := planRoot("/bin/ls", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Debian 12 is merged-/usr: /bin and /lib64 are links to usr/...
	if st, err := os.Lstat("/bin"); err == nil && st.Mode()&os.ModeSymlink != 0 {
		e, ok := plan.entries["/bin"]
		if !ok || e.Kind != 'l' {
			t.Fatalf("/bin is a link on the host but %+v in the plan", e)
		}
	}
	for _, mp := range mountPoints {
		if e := plan.entries[mp]; e.Kind != 'd' {
			t.Errorf("mount point %s missing from plan", mp)
		}
	}
	for p := range plan.entries {
		if strings.HasPrefix(p, "/etc") || strings.HasPrefix(p, "/home") || strings.HasPrefix(p, "/root") {
			t.Errorf("plan holds %s, which ls does not need", p)
		}
	}
}

func TestRootIdentityAndCache(t *testing.T) {
	cache := t.TempDir()
	a, err := ensureRoot(cache, "/bin/ls", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ensureRoot(cache, "/bin/ls", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("same program, two roots: %s %s", a, b)
	}
	c, err := ensureRoot(cache, "/bin/ls", []string{"/etc/hostname"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Fatal("an extra path did not change the root's identity")
	}
	if _, err := os.Stat(filepath.Join(a, "bin/ls")); err != nil {
		t.Fatalf("program missing from its root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a, "etc")); err == nil {
		t.Fatal("root has /etc although nothing needs it")
	}
	st, _ := os.Stat(a)
	if st.Mode().Perm() != 0o755 {
		t.Fatalf("root mode %v, want 0755", st.Mode().Perm())
	}
	// No build directories are left behind.
	ents, _ := os.ReadDir(filepath.Join(cache, "roots"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build-") {
			t.Fatalf("leftover %s", e.Name())
		}
	}
}

func TestPlanRootQEMU(t *testing.T) {
	qemu := "/usr/bin/qemu-system-x86_64"
	if _, err := os.Stat(qemu); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	plan, err := planRoot(qemu, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tcg, bios bool
	for p := range plan.entries {
		tcg = tcg || strings.HasSuffix(p, "accel-tcg-x86_64.so")
		bios = bios || strings.HasSuffix(p, "bios-256k.bin")
		if strings.Contains(p, "/ui-gtk") || strings.Contains(p, "libgtk") {
			t.Errorf("UI module or GTK in a device model root: %s", p)
		}
	}
	if !tcg || !bios {
		t.Fatalf("QEMU root lacks the TCG module (%v) or SeaBIOS (%v)", tcg, bios)
	}
}

func TestPlanMemo(t *testing.T) {
	cache := t.TempDir()
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	data, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(prog, data, 0o755)
	a, err := ensureRoot(cache, prog, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	memos, _ := filepath.Glob(filepath.Join(cache, "plans", "*.json"))
	if len(memos) != 1 {
		t.Fatalf("plan not recorded: %v", memos)
	}
	if b, _ := ensureRoot(cache, prog, nil, nil); b != a {
		t.Fatalf("unchanged program, new root %s != %s", b, a)
	}
	// Replacing the program (new inode, as dpkg does) must not reuse the
	// recorded plan nor the old root.
	os.Remove(prog)
	os.WriteFile(prog, append(data, 0), 0o755)
	c, err := ensureRoot(cache, prog, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Fatal("a replaced program reused the old root")
	}
	got, _ := os.ReadFile(filepath.Join(c, prog))
	if len(got) != len(data)+1 {
		t.Fatalf("root holds the old program (%d bytes)", len(got))
	}
}

// TestRootFiles: a host file placed at a root path of its own (DM mode's
// shim), its directories made for it; a new file content is a new root
// (the plan memo sees the host file, not the root path); a path the root
// already holds is refused.
func TestRootFiles(t *testing.T) {
	cache, src := t.TempDir(), filepath.Join(t.TempDir(), "lib.so")
	if err := os.WriteFile(src, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := []RootFile{{Path: "/usr/lib/dmsandbox/lib.so", Host: src}}
	a, err := ensureRoot(cache, "/bin/ls", nil, f)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(a, "usr/lib/dmsandbox/lib.so")); err != nil || string(data) != "one" {
		t.Fatalf("placed file: %q %v", data, err)
	}
	if b, _ := ensureRoot(cache, "/bin/ls", nil, f); b != a {
		t.Fatal("same file, two roots")
	}
	// Another content (size and mtime change): another root.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(src, []byte("two!"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ensureRoot(cache, "/bin/ls", nil, f)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(c, "usr/lib/dmsandbox/lib.so")); c == a || string(data) != "two!" {
		t.Fatalf("changed file: root %s (was %s), content %q", c, a, data)
	}
	ls, _ := filepath.EvalSymlinks("/bin/ls")
	if _, err := planRoot("/bin/ls", nil, []RootFile{{Path: ls, Host: src}}); !errors.Is(err, ErrUsage) {
		t.Fatalf("a file over the program: %v", err)
	}
}
