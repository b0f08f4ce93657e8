package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/seccomp"
	"golang.org/x/sys/unix"
)

func TestImageMountPoint(t *testing.T) {
	good := map[string]string{
		"/var/lib/xen/pvdisk.img": "/var",
		"/srv/images/a.raw":       "/srv",
		"/dev/sdb1":               "",
		"/dev/disk0/part":         "",
	}
	for p, want := range good {
		if mp, err := imageMountPoint(p); err != nil || mp != want {
			t.Errorf("imageMountPoint(%q) = %q, %v; want %q", p, mp, err, want)
		}
	}
	for _, p := range []string{"", "rel/a.img", "/var/../etc/shadow", "/var//a", "/var/a/", "/a.img",
		"/proc/self/mem", "/sys/block/sda", "/run/x/a.img", "/tmp/a.img", "/dev/xen/privcmd",
		"/dev/vfio/1", "/dev/shm/a.img", "/dev/pts/0", "/var/a\x00b"} {
		if mp, err := imageMountPoint(p); err == nil {
			t.Errorf("imageMountPoint(%q) = %q, accepted", p, mp)
		}
	}
	if _, err := imageMountPoints([]Image{{Path: "/var/a"}, {Path: "/var/a", ReadOnly: true}}); err == nil {
		t.Error("the same image twice accepted")
	}
	mps, err := imageMountPoints([]Image{{Path: "/var/a"}, {Path: "/var/b"}, {Path: "/srv/c"}, {Path: "/dev/sdz"}})
	if err != nil || strings.Join(mps, ",") != "/var,/srv" {
		t.Errorf("mount points %q, %v; want /var,/srv", mps, err)
	}
}

// openImage never follows a link, never opens what is not a regular file
// or a block device (a FIFO would block: the test would hang), never a
// file of a pseudo-filesystem.
func TestOpenImageRefuses(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "real", "a.img")
	os.MkdirAll(filepath.Dir(img), 0o755)
	os.WriteFile(img, []byte("data"), 0o600)
	os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "linkdir"))
	os.Symlink(img, filepath.Join(dir, "link.img"))
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
	cases := map[string]string{
		filepath.Join(dir, "linkdir", "a.img"): "symbolic link",
		filepath.Join(dir, "link.img"):         "symbolic link",
		filepath.Join(dir, "fifo"):             "neither",
		filepath.Join(dir, "real"):             "neither",
		"/dev/null":                            "neither",
		"/proc/version":                        "on proc",
		filepath.Join(dir, "missing"):          "no such file",
	}
	for p, want := range cases {
		f, err := openImage(Image{Path: p})
		if err == nil {
			f.Close()
			t.Errorf("openImage(%s) accepted", p)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Errorf("openImage(%s): %v; want %q and the path", p, err, want)
		}
	}
	f, err := openImage(Image{Path: img, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("x")); err == nil {
		t.Error("a read-only image was opened writable")
	}
}

func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control (modprobe loop)")
	}
}

// loopSysfs is the loop device's sysfs directory for a node.
func loopSysfs(n devNode) string { return fmt.Sprintf("/sys/dev/block/%d:%d", n.Major, n.Minor) }

// A real loop device over a root-owned 0600 file: the data is the
// file's, a read-only image is a read-only device, and the last close
// detaches it.
func TestAttachImageLoop(t *testing.T) {
	needLoop(t)
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-img-") // not tmpfs-only: any fs works, this is the common one
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "a.img")
	data := bytes.Repeat([]byte("dmsandbox image "), 4096) // 64 KiB
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		li, err := attachImage(Image{Path: img, ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		n := li.node
		if n.Path != img || n.Type != 'b' || !n.Private || (ro && n.Mode != 0o400) || (!ro && n.Mode != 0o600) {
			t.Errorf("node %+v", n)
		}
		sys := loopSysfs(n)
		backing, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file"))
		if err != nil || strings.TrimSpace(string(backing)) != img {
			t.Errorf("backing_file %q, %v; want %s", backing, err, img)
		}
		roFlag, _ := os.ReadFile(filepath.Join(sys, "ro"))
		if want := map[bool]string{true: "1", false: "0"}[ro]; strings.TrimSpace(string(roFlag)) != want {
			t.Errorf("ro=%v: sysfs ro %q", ro, roFlag)
		}
		buf := make([]byte, 64)
		if _, err := li.loop.ReadAt(buf, 16); err != nil || !bytes.Equal(buf, data[16:80]) {
			t.Errorf("read through the loop device: %q, %v", buf, err)
		}
		_, werr := li.loop.WriteAt([]byte("X"), 0)
		if ro && werr == nil {
			t.Error("wrote to a read-only image's loop device")
		}
		if !ro && werr != nil {
			t.Errorf("write to a writable image's loop device: %v", werr)
		}
		li.loop.Close()
		// Autoclear: the last close detaches it (asynchronously).
		gone := false
		for i := 0; i < 100 && !gone; i++ {
			_, err := os.Stat(filepath.Join(sys, "loop", "backing_file"))
			gone = errors.Is(err, os.ErrNotExist)
			if !gone {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if !gone {
			t.Errorf("ro=%v: loop device %s still attached after the last close", ro, sys)
		}
	}
	got, _ := os.ReadFile(img)
	if got[0] != 'X' {
		t.Error("the write through the writable loop device did not reach the file")
	}
	st, _ := os.Stat(img)
	if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("image mode/owner changed: %v", st.Mode())
	}
}

func TestPlanRootMounts(t *testing.T) {
	p, err := planRoot("/bin/ls", nil, nil, "/var")
	if err != nil {
		t.Fatal(err)
	}
	if e := p.entries["/var"]; e.Kind != 'd' || !e.Synth {
		t.Fatalf("/var in plan: %+v", e)
	}
	if _, err := planRoot("/bin/ls", nil, nil, "/usr"); !errors.Is(err, ErrUsage) {
		t.Fatalf("mount point over the root's /usr: %v, want ErrUsage", err)
	}
	cache := t.TempDir()
	a, err := ensureRoot(cache, "/bin/ls", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ensureRoot(cache, "/bin/ls", nil, nil, "/var")
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("a mount point did not change the root's identity")
	}
	if st, err := os.Lstat(filepath.Join(b, "var")); err != nil || !st.IsDir() {
		t.Fatalf("mount point missing from the root: %v", err)
	}
	if c, _ := ensureRoot(cache, "/bin/ls", nil, nil, "/var"); c != b {
		t.Fatalf("same mount points, two roots: %s %s", b, c)
	}
}

// The scaffold is a tmpfs that can hold a device node (no nodev), set up
// before the user namespace's node binds that may go into it.
func TestBuildConfigScaffold(t *testing.T) {
	for _, userns := range []bool{false, true} {
		s := testSetup(userns)
		s.scaffolds = []string{"/var"}
		s.devices = append(s.devices, devNode{Path: "/var/lib/xen/a.img", Type: 'b', Major: 7, Minor: 3, Mode: 0o600, Private: true})
		s.privateNodes["/var/lib/xen/a.img"] = "/var/cache/dmsandbox/dev/t/b-7-3"
		cfg := buildConfig(s)
		scaffold, bind := -1, -1
		for i, m := range cfg.Mounts {
			if m.Destination == "/var" {
				scaffold = i
				if m.Device != "tmpfs" || m.Flags&unix.MS_NODEV != 0 || m.Flags&unix.MS_NOSUID == 0 {
					t.Errorf("scaffold mount %+v", m)
				}
			}
			if m.Destination == "/var/lib/xen/a.img" {
				bind = i
			}
		}
		if scaffold < 0 || (userns && bind < scaffold) || (!userns && bind >= 0) {
			t.Errorf("userns=%v: scaffold at %d, node bind at %d", userns, scaffold, bind)
		}
		found := false
		for _, d := range cfg.Devices {
			found = found || d.Path == "/var/lib/xen/a.img"
		}
		if found == userns {
			t.Errorf("userns=%v: image node among runc's devices: %v", userns, found)
		}
	}
}

// The loop device in the sandbox must stay what the launcher made it: no
// device model profile allows a loop ioctl (LOOP_CLR_FD needs no
// privilege at all, LOOP_SET_STATUS64 only write access), while the
// block ioctls QEMU's host_device driver uses are allowed.
func TestProfilesRefuseLoopIoctls(t *testing.T) {
	loopIoctls := map[string]uintptr{"LOOP_SET_FD": unix.LOOP_SET_FD, "LOOP_CLR_FD": unix.LOOP_CLR_FD,
		"LOOP_SET_STATUS": unix.LOOP_SET_STATUS, "LOOP_SET_STATUS64": unix.LOOP_SET_STATUS64,
		"LOOP_CHANGE_FD": 0x4C06 /* linux/loop.h; not in x/sys */, "LOOP_SET_CAPACITY": unix.LOOP_SET_CAPACITY,
		"LOOP_SET_DIRECT_IO": unix.LOOP_SET_DIRECT_IO, "LOOP_SET_BLOCK_SIZE": unix.LOOP_SET_BLOCK_SIZE,
		"LOOP_CONFIGURE": unix.LOOP_CONFIGURE, "LOOP_CTL_GET_FREE": unix.LOOP_CTL_GET_FREE,
		"LOOP_CTL_ADD": unix.LOOP_CTL_ADD, "LOOP_CTL_REMOVE": unix.LOOP_CTL_REMOVE}
	for _, name := range []string{"qemu-xen", "qemu-kvm", "qemu-vfio"} {
		p, err := seccomp.Load(name, seccomp.SelfPID(1))
		if err != nil {
			t.Fatal(err)
		}
		verdict := func(req uintptr) string {
			d, err := seccomp.CheckData("x86_64", "ioctl", []string{"5", fmt.Sprint(req)})
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.Check(d)
			if err != nil {
				t.Fatal(err)
			}
			return v.Action
		}
		for ioctl, req := range loopIoctls {
			if v := verdict(req); v == "allow" || v == "log" {
				t.Errorf("%s: %s (%#x) %s", name, ioctl, req, v)
			}
		}
		if v := verdict(unix.BLKGETSIZE64); v != "allow" {
			t.Errorf("%s: BLKGETSIZE64 %s, want allow (host_device)", name, v)
		}
	}
}
