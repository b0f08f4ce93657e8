package seccomp

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/opencontainers/runc/libcontainer/configs"
)

func TestNamesAndParts(t *testing.T) {
	got := strings.Join(Names(), " ")
	if got != "broker qemu-kvm qemu-vfio qemu-xen" {
		t.Fatalf("Names() = %q", got)
	}
	for _, part := range []string{"qemu-common", "runtime-common", "no-such"} {
		if _, err := Load(part); !errors.Is(err, ErrUnknownProfile) {
			t.Errorf("Load(%q) = %v, want ErrUnknownProfile", part, err)
		}
	}
	p, err := Load("qemu-vfio")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Parts(), " "); got != "runtime-common qemu-common qemu-kvm qemu-vfio" {
		t.Errorf("qemu-vfio parts %q", got)
	}
	rs := p.Rules()
	for _, sc := range []string{"execve", "openat2", "fstatfs", "statx", "close_range", "getppid", "sigaltstack", "rt_sigprocmask", "sched_getaffinity", "ioctl", "clone", "clone3"} {
		if !rs.Has(sc) {
			t.Errorf("qemu-vfio lacks %s", sc)
		}
	}
	for _, sc := range []string{"ptrace", "fork", "vfork", "mount", "unshare", "setns", "bpf", "userfaultfd", "execveat", "tkill"} {
		if rs.Has(sc) {
			t.Errorf("qemu-vfio names %s", sc)
		}
	}
	var sawRun, sawVFIO bool
	for _, r := range rs.For("ioctl") {
		sawRun = sawRun || r.Args[0].Text == "KVM_RUN"
		sawVFIO = sawVFIO || r.Args[0].Text == "VFIO_DEVICE_SET_IRQS"
		if r.Why == "" || r.From == "" {
			t.Errorf("rule without why or origin: %+v", r)
		}
	}
	if !sawRun || !sawVFIO {
		t.Errorf("qemu-vfio ioctls: KVM_RUN %v VFIO_DEVICE_SET_IRQS %v", sawRun, sawVFIO)
	}
}

func TestConfig(t *testing.T) {
	p, err := Load("qemu-kvm")
	if err != nil {
		t.Fatal(err)
	}
	c := p.Config()
	if c.DefaultAction != configs.KillProcess || len(c.Architectures) != 0 || len(c.Flags) != 0 {
		t.Fatalf("config header %+v", c)
	}
	if len(c.Syscalls) != p.Rules().Len() {
		t.Fatalf("%d syscalls for %d rules", len(c.Syscalls), p.Rules().Len())
	}
	var clone3, socket bool
	for _, sc := range c.Syscalls {
		switch sc.Name {
		case "clone3":
			clone3 = sc.Action == configs.Errno && sc.ErrnoRet != nil && *sc.ErrnoRet == 38
		case "socket":
			socket = len(sc.Args) == 1 && sc.Args[0].Op == configs.EqualTo && sc.Args[0].Value == 1
		}
		seen := map[uint]bool{}
		for _, a := range sc.Args {
			if seen[a.Index] {
				t.Errorf("%s: two conditions on arg %d (libcontainer would OR them)", sc.Name, a.Index)
			}
			seen[a.Index] = true
		}
	}
	if !clone3 || !socket {
		t.Errorf("clone3 errno ENOSYS %v, socket AF_UNIX %v", clone3, socket)
	}
	c.Syscalls = nil // callers may change what they get
	if len(p.Config().Syscalls) == 0 {
		t.Fatal("Config shares state between calls")
	}
	l, err := Load("qemu-kvm", LogMode())
	if err != nil {
		t.Fatal(err)
	}
	if l.Config().DefaultAction != configs.Log || !l.LogMode() {
		t.Fatal("LogMode default action")
	}
}

// TestCatalogRefuses: composition errors a profile author can make.
func TestCatalogRefuses(t *testing.T) {
	file := func(name, include, rules string) string {
		return `{"version":1,"name":"` + name + `","summary":"s","include":[` + include + `],"rules":[` + rules + `]}`
	}
	read := `{"syscalls":["read"],"why":"w"}`
	for _, c := range []struct {
		name  string
		files map[string]string
		load  string
		want  string
	}{
		{"cycle", map[string]string{"a": file("a", `"b"`, read), "b": file("b", `"a"`, read)}, "a", "cycle"},
		{"unknown include", map[string]string{"a": file("a", `"zz"`, read)}, "a", "unknown part"},
		{"duplicate unconditional", map[string]string{"a": file("a", "", read+","+read)}, "a", "unconditional"},
		{"mixed actions", map[string]string{"a": file("a", "",
			`{"syscalls":["kill"],"args":[{"index":0,"op":"eq","value":"1"}],"why":"w"},`+
				`{"syscalls":["kill"],"args":[{"index":0,"op":"eq","value":"2"}],"action":"errno","errno":"EPERM","why":"w"}`)}, "a", "different actions"},
		{"name mismatch", map[string]string{"a": file("b", "", read)}, "", "does not match"},
		{"unknown syscall", map[string]string{"a": file("a", "", `{"syscalls":["nosuchcall"],"why":"w"}`)}, "", "unknown syscall"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for n, body := range c.files {
				fsys["p/"+n+".json"] = &fstest.MapFile{Data: []byte(body)}
			}
			cat, err := readCatalog(fsys, "p")
			if err == nil && c.load != "" {
				_, err = compose(cat, c.load, options{})
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}
