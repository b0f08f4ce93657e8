package dmargv

import (
	"errors"
	"github.com/dmsandbox/dmsandbox/launcher"
	"os"
	"reflect"
	"strings"
	"testing"
)

var base = []string{"-xen-domid", "4", "-nodefaults", "-machine", "xenfv"}

func withBase(extra ...string) []string { return append(append([]string(nil), base...), extra...) }

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{withBase("-daemonize"), "-daemonize"},
		{withBase("-plugin", "file=/tmp/evil.so"), "-plugin"},
		{withBase("-L", "/tmp"), "firmware directories"},
		{withBase("-L", "/usr/share/qemu/../../../tmp"), "firmware"},
		{withBase("-device", "xen-pci-passthrough,hostaddr=0000:00:05.0"), "over QMP"},
		{withBase("-device", "vfio-pci,host=0000:00:05.0"), "over QMP"},
		{withBase("-netdev", "type=tap,id=n0,ifname=vif1.0-emu,script=/etc/xen/scripts/qemu-ifup"), "script="},
		{withBase("-netdev", "tap,id=n0"), "ifname="},
		{withBase("-netdev", "bridge,id=n0,br=xenbr0"), "bridge"},
		{withBase("-incoming", "exec:cat /etc/shadow"), "fd:N"},
		{withBase("-incoming", "tcp:0:4444"), "fd:N"},
		{withBase("-drive", "file=nbd:host:10809"), "absolute"},
		{withBase("-drive", "file=disk.img"), "absolute"},
		{withBase("-drive", "driver=quorum,children.0.file.filename=/x"), "plain file="},
		{withBase("-serial", "file:/etc/passwd"), "serial"},
		{withBase("-chardev", "file,id=c,path=/etc/passwd"), "chardev"},
		{withBase("-display", "sdl"), "display"},
		{withBase("-readconfig", "/etc/qemu.cfg"), "config file"},
		{withBase("/var/lib/xen/disk.img"), "positional"},
		{withBase("-vnc", "unix:/tmp/vnc.sock"), "HOST:DISPLAY"},
		{withBase("-vnc", "127.0.0.1:0,websocket=5700"), "websocket"},
	} {
		_, err := Parse(tc.argv)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want ErrRefused mentioning %q", tc.argv, err, tc.want)
		}
	}
}

func TestNotDM(t *testing.T) {
	for _, argv := range [][]string{
		{"-nodefaults"},
		{"-xen-domid", "0"},
		{"-xen-domid", "32752"},
		{"-xen-domid", "x"},
		{"-xen-domid"},
		{"-xen-domid", "1", "-xen-domid", "2"},
		withBase("-chardev", "socket,id=libxl-cmd,fd=2,server=on,wait=off", "-mon", "chardev=libxl-cmd,mode=control"),
		withBase("-incoming", "fd:-1"),
	} {
		if _, err := Parse(argv); !errors.Is(err, ErrNotDM) {
			t.Errorf("Parse(%q) = %v, want ErrNotDM", argv, err)
		}
	}
}

// TestUnknownPassThrough: options this package does not know reach QEMU
// unchanged and in order, flags and options with arguments alike.
func TestUnknownPassThrough(t *testing.T) {
	extra := []string{"-some-new-flag", "-object", "iothread,id=io0", "-another", "v,x=1", "-sandbox", "on", "--overcommit", "mem-lock=off"}
	dm, err := Parse(withBase(extra...))
	if err != nil {
		t.Fatal(err)
	}
	if want := withBase(extra...); !reflect.DeepEqual(dm.Args, want) {
		t.Errorf("args %q, want %q", dm.Args, want)
	}
}

// TestInheritedOnce: an fd named twice is handed once.
func TestInheritedOnce(t *testing.T) {
	dm, err := Parse(withBase("-add-fd", "fd=9,set=2", "-add-fd", "fd=9,set=3"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dm.Handed) != 1 || dm.Handed[0].FD != 9 {
		t.Fatalf("handed %+v", dm.Handed)
	}
	if got := dm.Args[len(dm.Args)-1]; got != "fd=4,set=3" {
		t.Errorf("second add-fd %q", got)
	}
}

func TestEnv(t *testing.T) {
	dm, _ := Parse(base)
	env, err := dm.Env([]string{"XEN_DOMAIN_ID=4", "XEN_QEMU_CONSOLE_LIMIT=1048576", "LD_PRELOAD=/tmp/x.so", "PATH=/bin"})
	if err != nil || !reflect.DeepEqual(env, []string{"XEN_DOMAIN_ID=4", "XEN_QEMU_CONSOLE_LIMIT=1048576"}) {
		t.Errorf("env %q, %v", env, err)
	}
	if _, err := dm.Env([]string{"XEN_DOMAIN_ID=5"}); err == nil {
		t.Error("XEN_DOMAIN_ID mismatch accepted")
	}
	if _, err := dm.Env([]string{"XEN_QEMU_CONSOLE_LIMIT=1m"}); err == nil {
		t.Error("non-numeric XEN_QEMU_CONSOLE_LIMIT accepted")
	}
}

func TestSpec(t *testing.T) {
	dm, err := Parse(readArgv(t, "testdata/argv/xen417-hvm2-dmrestrict.argv"))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	files := make([]*os.File, len(dm.Handed))
	for i := range files {
		files[i] = f
	}
	s, err := dm.Spec("/usr/libexec/xen-qemu-system-i386", files, []string{"XEN_DOMAIN_ID=3"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Index != 3 || s.Name != "xen-dm-3" || s.Profile != "qemu-xen" || len(s.Files) != len(dm.Handed) {
		t.Errorf("spec %+v", s)
	}
	if _, err := dm.Spec("/x", nil, nil); err == nil && len(dm.Handed) > 0 {
		t.Error("file count mismatch accepted")
	}
}

func TestOptsRoundTrip(t *testing.T) {
	for _, s := range []string{"socket,id=a,path=/x,,y,server=on,wait=off", "xenfv,suppress-vmdesc=on", "server,nowait", "a=", "=", ""} {
		if got := parseOpts(s, "backend").String(); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
}

// The argv this package writes names fds from FirstFD on; the launcher
// hands Spec.Files from FirstFileFD on. They must agree.
func TestFirstFDMatchesLauncher(t *testing.T) {
	if got := launcher.FirstFileFD(launcher.Spec{Program: "/usr/libexec/xen-qemu-system-i386"}); got != FirstFD {
		t.Fatalf("dmargv.FirstFD %d, launcher hands files from %d", FirstFD, got)
	}
}
