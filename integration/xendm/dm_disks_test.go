package xendm

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/dmsandbox/dmsandbox/xenstore/xenstoretest"
)

// fakeXenstored serves nodes on a socket dmsandbox finds through
// $XENSTORED_PATH (as libxenstore does).
func fakeXenstored(t *testing.T, e *env, nodes map[string]string) string {
	t.Helper()
	sock := filepath.Join(e.dir, "xenstored.sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go xenstoretest.Serve(ln, nodes)
	return sock
}

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

// TestQdiskImageExposed: the PV capture (machine xenpv, no disk on the
// argv) with a qdisk backend in (fake) xenstore: DM mode exposes the
// image at its path inside the sandbox as a block device of QEMU's uid,
// and SIGHUP leaves neither the sandbox nor the loop device.
func TestQdiskImageExposed(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control (modprobe loop)")
	}
	// Not under e.dir: the fake QEMU lives there, in /var, so the
	// sandbox root holds /var and an image there is refused.
	imgDir, err := os.MkdirTemp("/srv", "dmsandbox-xendm-")
	if err != nil {
		t.Skipf("no writable /srv for the image: %v", err)
	}
	defer os.RemoveAll(imgDir)
	img := filepath.Join(imgDir, "pv.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := fakeXenstored(t, e, map[string]string{
		"/local/domain/0/backend/qdisk/2/51712/params": "aio:" + img,
		"/local/domain/0/backend/qdisk/2/51712/mode":   "w",
	})
	xenRun := filepath.Join(e.dir, "xen")
	d := e.start(t, e.fake, argv(t, "xen417-pv1-qdisk", xenRun), nil, "XEN_DOMAIN_ID=2", "XENSTORED_PATH="+sock)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(d.text(), "xen-dm-2: pid") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready; log:\n%s", d.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(d.text(), "qdisk image "+img+" (rw) from xenstore") {
		t.Errorf("log does not name the image:\n%s", d.text())
	}
	st, err := launcher.ReadState(e.cfg.RunDir, "xen-dm-2")
	if err != nil {
		t.Fatal(err)
	}
	var s syscall.Stat_t
	if err := syscall.Stat("/proc/"+itoa(st.Pid)+"/root"+img, &s); err != nil {
		t.Fatalf("the image path in the sandbox: %v", err)
	}
	if s.Mode&syscall.S_IFMT != syscall.S_IFBLK || s.Uid != st.UID || s.Mode&0o777 != 0o600 {
		t.Errorf("in the sandbox %s is mode %o uid %d, want a 0600 block device of uid %d", img, s.Mode, s.Uid, st.UID)
	}
	if l := loopsOf(img); len(l) != 1 {
		t.Errorf("loop devices of the image: %v", l)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	if code := d.wait(t); code != 0 {
		t.Errorf("exit %d after SIGHUP; log:\n%s", code, d.text())
	}
	e.checkClean(t, "xen-dm-2", st.CgroupPaths)
	for i := 0; i < 50 && len(loopsOf(img)) > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if l := loopsOf(img); len(l) > 0 {
		t.Errorf("loop device left: %v", l)
	}
}

// TestQdiskImageRefused: a backend naming a link or /proc starts nothing
// (exit 2 or 5, the reason in libxl's log).
func TestQdiskImageRefused(t *testing.T) {
	e := setup(t)
	dir, err := os.MkdirTemp("/srv", "dmsandbox-xendm-")
	if err != nil {
		t.Skipf("no writable /srv for the image: %v", err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "real.img")
	os.WriteFile(img, make([]byte, 4096), 0o600)
	link := filepath.Join(dir, "link.img")
	os.Symlink(img, link)
	for _, c := range []struct{ params, want string }{
		{"aio:" + link, "symbolic link"},
		{"/proc/self/environ", "under /proc"},
		{"aio:" + dir, "neither a regular file nor a block device"},
		{e.dir + "/run.img", "part of the sandbox root"}, // the fake QEMU is under /var
	} {
		sock := fakeXenstored(t, e, map[string]string{"/local/domain/0/backend/qdisk/2/51712/params": c.params})
		d := e.start(t, e.fake, argv(t, "xen417-pv1-qdisk", filepath.Join(e.dir, "xen")), nil, "XEN_DOMAIN_ID=2", "XENSTORED_PATH="+sock)
		if code := d.wait(t); (code != 2 && code != 5) || !strings.Contains(d.text(), c.want) {
			t.Errorf("params %q: exit %d; log:\n%s", c.params, code, d.text())
		}
		e.checkClean(t, "xen-dm-2", nil)
	}
}
