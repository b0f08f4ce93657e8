package broker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"golang.org/x/sys/unix"
)

// shimEnv is the variable the shim reads the session fd number from.
const shimEnv = "DMSANDBOX_BROKER_FD"

// buildShim compiles shim/dmsb_shim.c with the Makefile's flags (target
// shim) and shim/shim_test_client.c linked against it, so every xc_*
// symbol the client calls resolves to the shim (no libxenctrl loaded).
func buildShim(t *testing.T) (client string) {
	client, _ = buildShimClients(t)
	return client
}

// buildShimClients also returns a client linked against the shim and,
// after it, shim/fake_libxenctrl.c built as libxenctrl.so: the object the
// shim's dlsym(RTLD_NEXT) finds, as it would find the real libxenctrl.
func buildShimClients(t *testing.T) (client, withFake string) {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	if _, err := os.Stat("/usr/include/xenctrl.h"); err != nil {
		t.Skip("no /usr/include/xenctrl.h (libxen-dev)")
	}
	dir := t.TempDir()
	lib := filepath.Join(dir, "libdmsb-shim.so")
	client = filepath.Join(dir, "shim_test_client")
	fakeDir := filepath.Join(dir, "fake")
	if err := os.Mkdir(fakeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	withFake = filepath.Join(dir, "shim_test_client_fakexc")
	cmds := [][]string{
		shimFlags(lib),
		{"gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", client, "shim/shim_test_client.c",
			"-L" + dir, "-ldmsb-shim", "-Wl,-rpath," + dir, "-lpthread"},
		{"gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", filepath.Join(fakeDir, "libxenctrl.so"),
			"shim/fake_libxenctrl.c"},
		// --no-as-needed: no symbol of the client binds to the fake (the
		// shim comes first), yet it must be loaded for RTLD_NEXT to find.
		{"gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", withFake, "shim/shim_test_client.c",
			"-L" + dir, "-ldmsb-shim", "-L" + fakeDir, "-Wl,--no-as-needed", "-lxenctrl", "-Wl,-rpath," + dir + ":" + fakeDir, "-lpthread"},
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return client, withFake
}

// shimFlags is the gcc command line of the Makefile's shim target,
// writing lib.
func shimFlags(lib string) []string {
	return []string{"gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-Ic",
		"-o", lib, "shim/dmsb_shim.c", "shim/dmsb_shim_files.c", "-lpthread", "-ldl"}
}

// runShimClient runs the client with extra as fds 3.. and env added to a
// clean environment (no inherited DMSANDBOX_BROKER_FD).
func runShimClient(t *testing.T, bin string, env []string, extra []*os.File, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.ExtraFiles = extra
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("shim client %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestShim runs the libxenctrl shim against a real session: allowed calls
// reach the (fake) backend with QEMU's arguments, refusals come back as -1
// with the broker's errno, every forwarded call is audited, and concurrent
// callers are serialised by the shim's mutex.
func TestShim(t *testing.T) {
	shimScenario(t, buildShim(t), nil)
}

// TestShimPreloaded is the deployment: a program linked against the real
// libxenctrl, with the shim in LD_PRELOAD. Its xc_* calls must land in the
// shim (interposition), not in libxenctrl's hypercalls.
func TestShimPreloaded(t *testing.T) {
	buildShim(t)
	if out, err := exec.Command("gcc", "-print-file-name=libxenctrl.so").Output(); err != nil ||
		!filepath.IsAbs(strings.TrimSpace(string(out))) {
		t.Skip("no libxenctrl.so (libxen-dev)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "shim_test_client_real")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin, "shim/shim_test_client.c",
		"-lxenctrl", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	lib := filepath.Join(dir, "libdmsb-shim.so")
	if out, err := exec.Command("gcc", shimFlags(lib)[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	shimScenario(t, bin, []string{"LD_PRELOAD=" + lib})
}

// shimScenario runs the client's broker mode (bin, with env added) on a
// real session and checks what reached the backend and the audit log.
func shimScenario(t *testing.T, bin string, env []string) {
	r := newRig(t, "")
	// Another domain's session owns a pirq (the first the fake hands out).
	_, c2 := r.session(dom+1, other)
	var theirs PirqReply
	if err := c2.Do(&MapPirq{Domid: dom + 1, Index: 11, Pirq: -1}, &theirs); err != nil {
		t.Fatal(err)
	}
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	out := runShimClient(t, bin, append(env, shimEnv+"=3"), []*os.File{f}, "broker", strconv.Itoa(int(theirs.Pirq)))
	f.Close()

	intx, msi := int(theirs.Pirq)+1, int(theirs.Pirq)+2
	want := fmt.Sprintf(`memory_mapping ret=0 errno=0
memory_mapping_outside_bars ret=-1 errno=%d
memory_mapping_other_domid ret=-1 errno=%d
memory_mapping_empty ret=0 errno=0
ioport_mapping ret=0 errno=0
map_pirq ret=0 errno=0 pirq=%d
map_pirq_null ret=-1 errno=%d
map_pirq_other_gsi ret=-1 errno=%d
bind_pt_pci_irq ret=0 errno=0
map_pirq_msi ret=0 errno=0 pirq=%d
update_msi_irq ret=0 errno=0
unmap_pirq_theirs ret=-1 errno=%d
update_msi_irq_theirs ret=-1 errno=%d
unbind_msi_irq ret=0 errno=0
unmap_pirq_msi ret=0 errno=0
unbind_pt_irq ret=0 errno=0
unmap_pirq ret=0 errno=0
ioport_unmapping ret=0 errno=0
memory_unmapping ret=0 errno=0
threads calls=800 failed=0
`, unix.ERANGE, unix.ESRCH, intx, unix.EINVAL, unix.EACCES, msi, unix.EPERM, unix.EPERM)
	if out != want {
		t.Fatalf("shim client saw:\n%s\nwant:\n%s", out, want)
	}

	// The backend saw QEMU's arguments, in order (the 800 hammer calls after).
	var got []fake.Call
	for _, c := range r.fake.Calls() {
		if c.Dom == dom && c.Op != "assign" {
			c.Errno = 0
			got = append(got, c)
		}
	}
	wantCalls := []fake.Call{
		{Op: "memory_mapping", Dom: dom, A: 0xf0000, B: 0xfeb80, C: 0x20, Add: true},
		{Op: "ioport_mapping", Dom: dom, A: 0xc000, B: 0xc040, C: 0x20, Add: true},
		{Op: "map_pirq", Dom: dom, A: 10, Pirq: intx},
		{Op: "bind_pt_pci_irq", Dom: dom, Pirq: intx, B: 5},
		{Op: "map_pirq_msi", Dom: dom, BDF: "0000:00:04.0", A: 4, B: 0xfebd0000, Pirq: msi},
		{Op: "update_msi_irq", Dom: dom, Pirq: msi, A: 0x41, C: 0xf1000000},
		{Op: "unbind_msi_irq", Dom: dom, Pirq: msi, A: 0x41},
		{Op: "unmap_pirq", Dom: dom, Pirq: msi},
		{Op: "unbind_pt_irq", Dom: dom, Pirq: intx, B: 5},
		{Op: "unmap_pirq", Dom: dom, Pirq: intx},
		{Op: "ioport_mapping", Dom: dom, A: 0xc000, B: 0xc040, C: 0x20},
		{Op: "memory_mapping", Dom: dom, A: 0xf0000, B: 0xfeb80, C: 0x20},
	}
	if len(got) < len(wantCalls)+800 {
		t.Fatalf("backend saw %d calls of dom %d, want at least %d: %+v", len(got), dom, len(wantCalls)+800, got)
	}
	for i, w := range wantCalls {
		if got[i] != w {
			t.Errorf("backend call %d: %+v, want %+v", i, got[i], w)
		}
	}
	for _, c := range got[len(wantCalls) : len(wantCalls)+800] {
		if c.Op != "memory_mapping" || c.C != 1 || c.B-0xfeba0 != c.A-0x100000 || c.B-0xfeba0 >= 4 {
			t.Errorf("hammer call: %+v", c)
		}
	}

	r.waitGone(s)
	// One audit record per forwarded call (session events aside).
	type key struct {
		op      string
		verdict string
		errno   int
	}
	audited := map[key]int{}
	for _, rec := range r.records() {
		if _, isOp := OpByName(rec.Op); isOp && rec.Session == s.ID && rec.Op != "hello" {
			audited[key{rec.Op, rec.Verdict, rec.Errno}]++
		}
	}
	allow := func(op string) key { return key{op, audit.Allow, 0} }
	deny := func(op string, e unix.Errno) key { return key{op, audit.Deny, int(e)} }
	wantAudit := map[key]int{
		allow("memory_mapping"): 2 + 800, allow("ioport_mapping"): 2, allow("map_pirq"): 1,
		allow("bind_pt_pci_irq"): 1, allow("map_pirq_msi"): 1, allow("update_msi_irq"): 1,
		allow("unbind_msi_irq"): 1, allow("unmap_pirq"): 2, allow("unbind_pt_irq"): 1,
		deny("memory_mapping", unix.ERANGE): 1, deny("memory_mapping", unix.ESRCH): 1,
		deny("map_pirq", unix.EACCES): 1, deny("unmap_pirq", unix.EPERM): 1,
		deny("update_msi_irq", unix.EPERM): 1,
	}
	if fmt.Sprint(audited) != fmt.Sprint(wantAudit) {
		t.Errorf("audited:\n%v\nwant:\n%v", audited, wantAudit)
	}
}

// fallbackOut is the fallback client's output when every call fails with
// errno e.
func fallbackOut(e unix.Errno) string {
	var b strings.Builder
	for _, n := range []string{"memory_mapping", "ioport_mapping", "map_pirq", "map_pirq_msi", "unmap_pirq",
		"bind_pt_pci_irq", "unbind_pt_irq", "update_msi_irq", "unbind_msi_irq"} {
		fmt.Fprintf(&b, "%s ret=-1 errno=%d\n", n, e)
	}
	b.WriteString("pirqs -1 -1\n")
	return b.String()
}

// TestShimFallback: without the variable the shim defers to the next
// definition of each symbol (dlsym(RTLD_NEXT)); none is loaded here, so
// each call returns -1/ENOSYS instead of crashing. With the variable set
// to anything but a SOCK_SEQPACKET socket's fd, every call fails closed
// with EBADF: a broker was promised, libxenctrl must not be reached.
func TestShimFallback(t *testing.T) {
	bin := buildShim(t)
	stream, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	sf := os.NewFile(uintptr(stream[0]), "stream")
	defer sf.Close()
	defer unix.Close(stream[1])
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cases := []struct {
		name  string
		env   []string
		extra []*os.File
		want  unix.Errno
	}{
		{"no variable", nil, nil, unix.ENOSYS},
		{"empty", []string{shimEnv + "="}, nil, unix.EBADF},
		{"fd not open", []string{shimEnv + "=9"}, nil, unix.EBADF},
		{"not a number", []string{shimEnv + "=3x"}, []*os.File{sf}, unix.EBADF},
		{"not a socket", []string{shimEnv + "=3"}, []*os.File{devnull}, unix.EBADF},
		{"stream socket", []string{shimEnv + "=3"}, []*os.File{sf}, unix.EBADF},
	}
	for _, c := range cases {
		if out := runShimClient(t, bin, c.env, c.extra, "fallback"); out != fallbackOut(c.want) {
			t.Errorf("%s: got\n%s\nwant\n%s", c.name, out, fallbackOut(c.want))
		}
	}
}

// TestShimFailsClosed: once the fd is a SOCK_SEQPACKET socket the shim is
// committed to the broker; a failed hello (peer gone, wrong protocol
// version) makes every call fail, never fall back, and sends nothing more.
func TestShimFailsClosed(t *testing.T) {
	bin := buildShim(t)
	pair := func() (*os.File, *os.File) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "peer")
	}
	env := []string{shimEnv + "=3"}

	// Peer gone: the hello cannot be sent.
	cl, peer := pair()
	peer.Close()
	out := runShimClient(t, bin, env, []*os.File{cl}, "fallback")
	cl.Close()
	if out != fallbackOut(unix.EPIPE) {
		t.Errorf("peer gone: got\n%s\nwant\n%s", out, fallbackOut(unix.EPIPE))
	}

	// A peer that answers the hello with protocol version 2.
	cl, peer = pair()
	frames := make(chan int, 1)
	go func() {
		defer peer.Close()
		n, buf := 0, make([]byte, 512)
		for {
			m, err := peer.Read(buf)
			if err != nil || m == 0 {
				frames <- n
				return
			}
			n++
			if m < HeaderSize {
				continue
			}
			h := getHeader(buf[:m])
			rep := EncodeReply(OpHello, h.Seq, 0, &HelloReply{Domid: dom})
			rep[4] = 2
			peer.Write(rep)
		}
	}()
	out = runShimClient(t, bin, env, []*os.File{cl}, "fallback")
	cl.Close()
	if out != fallbackOut(unix.EPROTO) {
		t.Errorf("wrong version: got\n%s\nwant\n%s", out, fallbackOut(unix.EPROTO))
	}
	if n := <-frames; n != 1 {
		t.Errorf("the shim sent %d frames after a refused hello, want only the hello", n)
	}
}

// TestShimSerialises checks the shim's mutex: a fake peer (not a broker)
// answers concurrent requests in reverse order whenever more than one is
// in flight, so a shim that let two threads exchange at once would hand a
// reply to the wrong thread (EPROTO) — the fake also reports it directly.
// The 1 ms poll only decides whether a second request is seen; with a
// correct shim there never is one, whatever the timing.
func TestShimSerialises(t *testing.T) {
	bin := buildShim(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cl := os.NewFile(uintptr(fds[0]), "client")
	peer := fds[1]
	type result struct{ frames, maxInFlight, seqErrors int }
	done := make(chan result, 1)
	go func() {
		defer unix.Close(peer)
		var res result
		last := uint32(0)
		read := func() (Header, bool) {
			buf := make([]byte, 512)
			n, err := unix.Read(peer, buf)
			if err != nil || n < HeaderSize {
				return Header{}, false
			}
			h := getHeader(buf[:n])
			res.frames++
			if h.Seq <= last {
				res.seqErrors++
			}
			last = h.Seq
			return h, true
		}
		for {
			h, ok := read()
			if !ok {
				done <- res
				return
			}
			pending := []Header{h}
			for {
				pfd := []unix.PollFd{{Fd: int32(peer), Events: unix.POLLIN}}
				if n, _ := unix.Poll(pfd, 1); n != 1 || pfd[0].Revents&unix.POLLIN == 0 {
					break
				}
				h, ok := read()
				if !ok {
					break
				}
				pending = append(pending, h)
			}
			res.maxInFlight = max(res.maxInFlight, len(pending))
			for i := len(pending) - 1; i >= 0; i-- {
				var rep []byte
				if pending[i].Op == OpHello {
					rep = EncodeReply(OpHello, pending[i].Seq, 0, &HelloReply{Domid: dom})
				} else {
					rep = EncodeReply(pending[i].Op, pending[i].Seq, 0, nil)
				}
				unix.Write(peer, rep)
			}
		}
	}()
	out := runShimClient(t, bin, []string{shimEnv + "=3"}, []*os.File{cl}, "threads")
	cl.Close()
	res := <-done
	if out != "threads calls=800 failed=0\n" {
		t.Errorf("shim client saw: %s", out)
	}
	if res != (result{frames: 801, maxInFlight: 1}) {
		t.Errorf("peer saw %d frames (want hello + 800), at most %d in flight (want 1), %d seq regressions (want 0)",
			res.frames, res.maxInFlight, res.seqErrors)
	}
}

// TestShimFallbackReachesLibxenctrl: without a broker, each call reaches
// the next definition of its symbol (here a fake libxenctrl linked after
// the shim) with every argument intact, and its out-parameters come back.
func TestShimFallbackReachesLibxenctrl(t *testing.T) {
	_, bin := buildShimClients(t)
	out := runShimClient(t, bin, nil, nil, "fallback")
	want := `fake xc_domain_memory_mapping xch=0x5a5a000 dom=7 gfn=0xf0000 mfn=0xfeb80 nr=0x20 add=1
memory_mapping ret=0 errno=0
fake xc_domain_ioport_mapping xch=0x5a5a000 dom=7 gport=0xc000 mport=0xc040 nr=0x20 add=1
ioport_mapping ret=0 errno=0
fake xc_physdev_map_pirq xch=0x5a5a000 dom=7 index=10 pirq=-1
map_pirq ret=0 errno=0
fake xc_physdev_map_pirq_msi xch=0x5a5a000 dom=7 index=-1 pirq=-1 devfn=0x20 bus=0x10003 entry=4 table=0xfebd0000
map_pirq_msi ret=0 errno=0
fake xc_physdev_unmap_pirq xch=0x5a5a000 dom=7 pirq=100
unmap_pirq ret=0 errno=0
fake xc_domain_bind_pt_pci_irq xch=0x5a5a000 dom=7 irq=101 bus=2 dev=5 intx=3
bind_pt_pci_irq ret=0 errno=0
fake xc_domain_unbind_pt_irq xch=0x5a5a000 dom=7 irq=102 type=0 bus=2 dev=6 intx=1 isa=9
unbind_pt_irq ret=0 errno=0
fake xc_domain_update_msi_irq xch=0x5a5a000 dom=7 gvec=0x41 pirq=103 gflags=0x1200 gtable=0xf1000000
update_msi_irq ret=0 errno=0
fake xc_domain_unbind_msi_irq xch=0x5a5a000 dom=7 gvec=0x42 pirq=104 gflags=0x1300
unbind_msi_irq ret=0 errno=0
pirqs 77 78
`
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
}

// TestShimFiles: the files Xen QEMU opens itself, through the shim on a
// real session (fake backend, captured tree plus MSI-X BAR files): sysfs
// reads come from the broker's tree, never this host's /sys; writes
// other than config are refused before anything is sent; config reads
// are native, config writes reach the backend only through the filter;
// /dev/mem maps the MSI-X BAR's resource file at the table's address and
// nothing else. Every open is audited.
func TestShimFiles(t *testing.T) {
	bin := buildShim(t)
	root := openFileTree(t)
	r := newRig(t, root)
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	out := runShimClient(t, bin, []string{shimEnv + "=3"}, []*os.File{f}, "files")
	f.Close()

	line := func(b []byte) string { return strings.SplitN(string(b), "\n", 2)[0] }
	cfg := sysfsFile(t, root, e1000e, "config")
	pattern := barPattern(e1000e, 4)
	want := fmt.Sprintf(`vendor read=%s
irq read=%s
resource read=%s
class read=%s
vendor_for_writing fd=-1 errno=%d
vendor_create fd=-1 errno=%d
other_device fd=-1 errno=%d
unknown_file fd=-1 errno=%d
config_open ok=1 cloexec=0
config_pread ret=4 errno=0
config_id %02x%02x%02x%02x
config_pread_ext ret=4 errno=0
config_pwrite_command ret=2 errno=0
config_pwrite_vendor ret=-1 errno=%d
config_pwrite_past_end ret=-1 errno=%d
config_write ret=-1 errno=%d
config_cycles ok=40 distinct=40
devmem_open ok=1
msix_table first=%02x%02x%02x%02x
msix_outside errno=%d
msix_writable errno=%d
`, line(sysfsFile(t, root, e1000e, "vendor")), line(sysfsFile(t, root, e1000e, "irq")),
		line(sysfsFile(t, root, e1000e, "resource")), line(sysfsFile(t, root, e1000e, "class")),
		unix.EACCES, unix.EACCES, unix.ENODEV, unix.ENOENT,
		cfg[3], cfg[2], cfg[1], cfg[0],
		unix.EROFS, unix.EINVAL, unix.EBADF,
		pattern[0], pattern[1], pattern[2], pattern[3],
		unix.ERANGE, unix.EACCES)
	if out != want {
		t.Fatalf("shim client saw:\n%s\nwant:\n%s", out, want)
	}
	// The command register write reached the backend; the vendor ID
	// write did not.
	var writes []fake.Call
	for _, c := range r.fake.Calls() {
		if c.Op == "config_write" {
			writes = append(writes, c)
		}
	}
	if len(writes) != 41 || writes[0].A != 4 {
		t.Errorf("backend config writes: %d (%+v), want 41 at offset 4", len(writes), writes[0])
	}
	r.waitGone(s)
	opens := map[string]int{}
	for _, rec := range r.records() {
		if rec.Session == s.ID && rec.Op == "open_file" {
			opens[rec.Verdict+" "+strings.Fields(rec.Args)[1]]++
		}
	}
	wantOpens := map[string]int{"allow file=vendor": 1, "allow file=irq": 1, "allow file=resource": 1,
		"allow file=class": 1, "allow file=config": 41, "allow file=msix_bar": 1,
		"deny file=vendor": 1, "deny file=msix_bar": 1}
	if fmt.Sprint(opens) != fmt.Sprint(wantOpens) {
		t.Errorf("audited opens %v, want %v", opens, wantOpens)
	}
}
