package container_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"
)

// imagerun builds integration/cmd/imagerun (`dmsandbox run` with
// Spec.Images) next to the test's dmsandbox.
func imagerun(t *testing.T, e *env) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(e.bin), "imagerun")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "build", "-tags", "seccomp", "-o", bin, "./integration/cmd/imagerun")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build imagerun: %v\n%s", err, out)
	}
	return bin
}

func startImagerun(t *testing.T, e *env, cfgPath, name string, args ...string) *running {
	t.Helper()
	return startRunning(t, exec.Command(imagerun(t, e), append([]string{"-config", cfgPath, "-name", name}, args...)...), name)
}

func hmp(t *testing.T, mon *qmp.SocketMonitor, line string) {
	t.Helper()
	cmd, _ := json.Marshal(map[string]any{"execute": "human-monitor-command", "arguments": map[string]string{"command-line": line}})
	raw, err := mon.Run(cmd)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if !bytes.Contains(raw, []byte(`"return"`)) {
		t.Fatalf("%s: %s", line, raw)
	}
}

// loopsOf lists the loop devices whose backing file is path.
func loopsOf(path string) []string {
	var out []string
	m, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range m {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == path {
			out = append(out, f)
		}
	}
	return out
}

// imageWrite runs QEMU with img (read-write) exposed, checks from
// outside that QEMU holds a block device of its own uid at the image's
// path, writes 0xab at 512..1023 through QEMU's block layer and checks
// that it reached the file and that nothing is left.
func imageWrite(t *testing.T, e *env, cfgPath, runDir, img string, qemu []string) {
	t.Helper()
	r := startImagerun(t, e, cfgPath, "it-image", append([]string{"-image", img, "--"}, qemu...)...)
	st := r.waitReady(t, e, runDir)
	// QEMU holds the loop device's node, not the file.
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", st.Pid))
	var held []string
	for _, fd := range fds {
		var s syscall.Stat_t
		link, _ := os.Readlink(fd)
		if syscall.Stat(fd, &s) == nil && link == img {
			held = append(held, fmt.Sprintf("%s mode %o rdev %d:%d", link, s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev)))
			if s.Mode&syscall.S_IFMT != syscall.S_IFBLK || s.Uid != st.UID {
				t.Errorf("QEMU holds %s as %o owned by %d, want a block device of uid %d", link, s.Mode, s.Uid, st.UID)
			}
		}
	}
	if len(held) == 0 || len(loopsOf(img)) != 1 {
		t.Fatalf("QEMU holds %v; loop devices of the image %v", held, loopsOf(img))
	}
	t.Logf("QEMU holds %v", held)
	writeAndStop(t, r, st.QMPSocket, `write -P 0xab 512 512`)
	assertGone(t, e, runDir, "it-image", st.Pid)
	data, _ := os.ReadFile(img)
	if !bytes.Equal(data[512:1024], bytes.Repeat([]byte{0xab}, 512)) || data[0] != 0x11 || data[1024] != 0x11 {
		t.Fatal("QEMU's write did not reach the image, or reached the wrong place")
	}
	fi, _ := os.Stat(img)
	if fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("image mode/owner changed: %v uid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	for i := 0; i < 50 && len(loopsOf(img)) > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if l := loopsOf(img); len(l) > 0 {
		t.Fatalf("loop device left: %v", l)
	}
}

// TestImageConfined: a root-owned 0600 image, exposed with Spec.Images,
// is opened by the confined QEMU by its own path (host_device, as Xen's
// qdisk backend opens it); a write through QEMU's block layer reaches
// the file; the image's owner and mode stay; a read-only image cannot
// be opened for writing; nothing (loop device included) is left.
func TestImageConfined(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control (modprobe loop)")
	}
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-img-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{0x11}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	drive := func() []string {
		return e.qemuArgs("-drive", "if=none,id=d0,driver=raw,file.driver=host_device,file.filename="+img)
	}

	imageWrite(t, e, e.cfgPath, e.cfg.RunDir, img, drive())

	// Read-only: whatever QEMU asks for (a read-write drive here; QEMU
	// falls back to read-only when the open for writing fails), nothing
	// it writes reaches the image.
	r := startImagerun(t, e, e.cfgPath, "it-image", append([]string{"-image", img + ":ro", "--"}, drive()...)...)
	st := r.waitReady(t, e, e.cfg.RunDir)
	writeAndStop(t, r, st.QMPSocket, `write -P 0xcd 2048 512`)
	assertGone(t, e, e.cfg.RunDir, "it-image", st.Pid)
	if data, _ := os.ReadFile(img); !bytes.Equal(data[2048:2560], bytes.Repeat([]byte{0x11}, 512)) {
		t.Fatal("a write reached a read-only image")
	}

	// Refused before anything starts: a link, a path the sandbox owns.
	os.Symlink(img, filepath.Join(dir, "link.img"))
	for _, bad := range []string{filepath.Join(dir, "link.img"), "/proc/self/environ", "/dev/null"} {
		r = startImagerun(t, e, e.cfgPath, "it-image", append([]string{"-image", bad, "--"}, e.qemuArgs()...)...)
		if code := r.wait(t, 30*time.Second); code == 0 || !strings.Contains(r.stderr.String(), "image "+bad) {
			t.Errorf("image %s: exit %d\n%s", bad, code, r.stderr)
		}
		assertGone(t, e, e.cfg.RunDir, "it-image")
	}
}

// TestImageUserNamespace: the same with user_namespace on, where runc
// binds a node the launcher made (owned by the sandbox uid) into the
// scaffold instead of creating it.
func TestImageUserNamespace(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control (modprobe loop)")
	}
	cfg := e.cfg
	cfg.UserNamespace = true
	path := filepath.Join(filepath.Dir(e.cfgPath), "userns-images.json")
	writeConfig(t, path, cfg)
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-img-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{0x11}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	imageWrite(t, e, path, cfg.RunDir, img, e.qemuArgs("-drive", "if=none,id=d0,driver=raw,file.driver=host_device,file.filename="+img))
}

// writeAndStop has the confined QEMU write through its drive d0 with
// qemu-io (over its QMP socket) and flush, then stops it with SIGTERM,
// which must end it with status 0. qemu-io prints to QEMU's stdout, not
// the monitor: the callers check the file.
func writeAndStop(t *testing.T, r *running, qmpSocket, write string) {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", qmpSocket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	hmp(t, mon, `qemu-io d0 "`+write+`"`)
	hmp(t, mon, `qemu-io d0 "flush"`)
	mon.Disconnect()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, r.stderr)
	}
}
