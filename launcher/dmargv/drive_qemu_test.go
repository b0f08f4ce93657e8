package dmargv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDriveFdsetRealQEMU runs a real QEMU 7.2 with a translated
// read-write drive and the fds as DM mode hands them: it must open the
// drive (it opens it read-only first, so a set holding only the
// read-write fd fails with "Could not dup FD ... flags 0") and report it
// writable.
func TestDriveFdsetRealQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dm, err := Parse(withBase("-drive", "file="+img+",if=ide,index=0,media=disk,format=raw,cache=writeback"))
	if err != nil {
		t.Fatal(err)
	}
	// QEMU's fd FirstFD+k is Handed[k]; fd 3 (the launcher's QMP socket)
	// is a placeholder here. Opened as cmd/dmsandbox's prepare does.
	files := []*os.File{nil}
	for _, h := range dm.Handed {
		if h.Kind != HandFile {
			t.Fatalf("unexpected handed %+v", h)
		}
		flag := os.O_RDWR
		if h.ReadOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(h.Path, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	files[0] = null
	// Only the drive's words: the rest of the argv is Xen's.
	var args []string
	for i := 0; i < len(dm.Args)-1; i++ {
		if dm.Args[i] == "-add-fd" || dm.Args[i] == "-drive" {
			args = append(args, dm.Args[i], dm.Args[i+1])
		}
	}
	cmd := exec.Command(qemu, append([]string{"-S", "-display", "none", "-nodefaults", "-machine", "pc",
		"-accel", "tcg", "-m", "64", "-qmp", "stdio"}, args...)...)
	cmd.ExtraFiles = files
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"query-block"}` + "\n" + `{"execute":"quit"}` + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("QEMU did not quit:\n%s", out.String())
	}
	if err != nil || !strings.Contains(out.String(), `"file": "/dev/fdset/`) || !strings.Contains(out.String(), `"ro": false`) {
		t.Fatalf("QEMU %v; want the drive opened read-write from its fd set:\n%s", err, out.String())
	}
}
