// Package xendm runs dmsandbox in DM mode as libxl does: the argv of the
// rig's captures (../../launcher/dmargv/testdata/argv), stdout/stderr on a
// log file, fd 0 /dev/null, dm_restrict's pre-opened QMP socket, SIGHUP
// to end it. What runs confined is, in turn, the real Xen QEMU (which
// exits at "failed to initialize xen" on a host without Xen: the exit
// status relay and the cleanup are checked) and fakeqemu (a fake Xen
// device model that serves QMP, so that the proxy, the pty hand-over,
// the confinement and SIGHUP are checked end to end). Neither runs a
// guest: that needs the nested Xen rig.
package xendm

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
)

type env struct {
	dir, bin, fake, cfgPath string
	cfg                     launcher.Config
}

func setup(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, cgroups, uid switching)")
	}
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-xendm-") // not /tmp: the sandbox mounts over it
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{dir: dir, bin: filepath.Join(dir, "dmsandbox"), fake: filepath.Join(dir, "fake-xen-qemu-system-i386")}
	for _, b := range []struct {
		out, pkg string
		env      []string
	}{{e.bin, "./cmd/dmsandbox", []string{"CGO_ENABLED=1"}}, {e.fake, "./integration/xendm/fakeqemu", []string{"CGO_ENABLED=0"}}} {
		args := []string{"build", "-o", b.out}
		if b.pkg == "./cmd/dmsandbox" {
			args = append(args, "-tags", "seccomp")
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	e.cfg = launcher.DefaultConfig()
	e.cfg.UIDBase = 3200000
	e.cfg.UIDCount = 100
	e.cfg.RunDir = filepath.Join(dir, "run")
	e.cfg.CgroupParent = "dmsandbox-xendm"
	e.cfg.Cgroup.Pids = 64
	e.cfg.Cgroup.MemoryBytes = 512 << 20
	e.cfg.Rlimits.NoFile = 1024
	data, _ := json.Marshal(e.cfg)
	e.cfgPath = filepath.Join(dir, "config.json")
	if err := os.WriteFile(e.cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// argv reads a captured argv and moves /var/run/xen under dir, so that
// the test never touches the host's Xen run directory.
func argv(t *testing.T, name, xenRun string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../launcher/dmargv/testdata/argv", name+".argv"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, strings.ReplaceAll(l, "/var/run/xen", xenRun))
		}
	}
	return out
}

// dm is one dmsandbox started as libxl starts a device model.
type dm struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

// start execs dmsandbox with args; extra become fds 3.. (nil entries are
// closed fds), as libxl leaves its pre-opened QMP socket at fd N.
func (e *env) start(t *testing.T, qemu string, args []string, extra []*os.File, environ ...string) *dm {
	t.Helper()
	logPath := filepath.Join(e.dir, "qemu-dm.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(e.bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = logf, logf, extra
	cmd.Env = append([]string{"XEN_QEMU_CONSOLE_LIMIT=1048576", "DMSANDBOX_CONFIG=" + e.cfgPath,
		"DMSANDBOX_DM_QEMU=" + qemu, "DMSANDBOX_BROKER_SOCKET=" + filepath.Join(e.dir, "no-broker.sock")}, environ...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // libxl setsid()s the device model
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &dm{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
		d.done <- nil
	})
	return d
}

// wait returns the exit status; the bound only keeps a broken build from
// hanging the test run.
func (d *dm) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("dmsandbox did not exit; log:\n%s", d.text())
	}
	d.done <- nil
	return d.cmd.ProcessState.ExitCode()
}

func (d *dm) text() string { b, _ := os.ReadFile(d.log); return string(b) }

// checkClean: no run directory, state or cgroup of the sandbox is left.
func (e *env) checkClean(t *testing.T, name string, cgroups map[string]string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(e.cfg.RunDir, name)); !os.IsNotExist(err) {
		t.Errorf("run directory of %s left behind (%v)", name, err)
	}
	for sub, p := range cgroups {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s %s left behind", sub, p)
		}
	}
}

// TestRealXenQEMUExitRelayed: the Xen QEMU really runs confined with a
// captured argv, fails without Xen, and its status and messages reach
// libxl's log; nothing is left.
func TestRealXenQEMUExitRelayed(t *testing.T) {
	const xq = "/usr/libexec/xen-qemu-system-i386"
	if _, err := os.Stat(xq); err != nil {
		t.Skip("Xen device model not installed (apt-get install qemu-system-xen)")
	}
	e := setup(t)
	xenRun := filepath.Join(e.dir, "xen")
	d := e.start(t, xq, argv(t, "xen417-hvm1-plain", xenRun), nil, "XEN_DOMAIN_ID=1")
	if code := d.wait(t); code != 1 {
		t.Errorf("exit %d, want QEMU's 1; log:\n%s", code, d.text())
	}
	log := d.text()
	for _, want := range []string{"translated -serial pty", "failed to initialize xen", "exited before its monitor answered"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, p := range []string{"qmp-libxl-1", "qmp-libxenstat-1"} {
		if _, err := os.Stat(filepath.Join(xenRun, p)); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
	e.checkClean(t, "xen-dm-1", nil)
}

// TestRefusedArgv: an argv that would weaken the sandbox starts nothing.
func TestRefusedArgv(t *testing.T) {
	e := setup(t)
	d := e.start(t, e.fake, []string{"-xen-domid", "2", "-daemonize", "-machine", "xenfv"}, nil)
	if code := d.wait(t); code != 2 {
		t.Errorf("exit %d, want 2; log:\n%s", code, d.text())
	}
	if !strings.Contains(d.text(), "-daemonize") {
		t.Errorf("log does not say why:\n%s", d.text())
	}
	e.checkClean(t, "xen-dm-2", nil)
}

// qmpClient is libxl's side of one exchange.
type qmpClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialQMP(t *testing.T, path string) *qmpClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard, not an assertion
	q := &qmpClient{t: t, c: c, r: bufio.NewReader(c)}
	if g := q.recv(); g["QMP"] == nil {
		t.Fatalf("greeting %v", g)
	}
	q.do(`{"execute":"qmp_capabilities","id":1}`)
	return q
}

func (q *qmpClient) recv() map[string]any {
	q.t.Helper()
	line, err := q.r.ReadString('\n')
	if err != nil {
		q.t.Fatalf("qmp: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		q.t.Fatalf("qmp: %q: %v", line, err)
	}
	return m
}

func (q *qmpClient) do(cmd string) map[string]any {
	q.t.Helper()
	q.c.Write([]byte(cmd + "\r\n"))
	return q.recv()
}

// TestLibxlContract runs the dm_restrict capture (libxl's pre-opened QMP
// socket at fd 14, -S) with fakeqemu confined, talks QMP to it as libxl
// does, and ends it with SIGHUP as xl destroy does.
func TestLibxlContract(t *testing.T) {
	e := setup(t)
	xenRun := filepath.Join(e.dir, "xen")
	os.MkdirAll(xenRun, 0o700)
	// libxl__pre_open_qmp_socket: bound and listening before the exec.
	lpath := filepath.Join(xenRun, "qmp-libxl-3")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: lpath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // libxl keeps the path; only its fd moves
	lf, _ := ln.File()
	ln.Close()
	extra := make([]*os.File, 12) // fd 14 = 3 + 11
	extra[11] = lf
	d := e.start(t, e.fake, argv(t, "xen417-hvm2-dmrestrict", xenRun), extra, "XEN_DOMAIN_ID=3")
	lf.Close()

	// Readiness under dm_restrict: query-status over the pre-opened socket.
	q := dialQMP(t, lpath)
	if r := q.do(`{"execute":"query-status","id":2}`); r["return"].(map[string]any)["status"] != "prelaunch" {
		t.Fatalf("query-status %v", r)
	}
	q.c.Close()
	// Postconfig: query-chardev names the host pty for xenconsoled.
	q = dialQMP(t, lpath)
	r := q.do(`{"execute":"query-chardev","id":3}`)
	list, _ := r["return"].([]any)
	if len(list) != 1 {
		t.Fatalf("query-chardev %v", r)
	}
	fn, _ := list[0].(map[string]any)["filename"].(string)
	pts := strings.TrimPrefix(fn, "pty:")
	if !strings.HasPrefix(pts, "/dev/pts/") {
		t.Fatalf("serial0 filename %q", fn)
	}
	// xl console: the guest's serial port through the host pty.
	pty, err := os.OpenFile(pts, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("host pty %s: %v", pts, err)
	}
	defer pty.Close()
	pty.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
	pty.Write([]byte("hello console\n"))              // raw pty: no CR-to-NL translation
	con := bufio.NewReader(pty)
	for {
		line, err := con.ReadString('\n')
		if err != nil {
			t.Fatalf("console: %v (read so far %q); log:\n%s", err, line, d.text())
		}
		if strings.Contains(line, "echo: hello console") {
			break
		}
	}
	// Refused without reaching QEMU; passthrough fails closed (no broker).
	if r := q.do(`{"execute":"human-monitor-command","arguments":{"command-line":"info"},"id":4}`); r["error"] == nil {
		t.Errorf("HMP allowed: %v", r)
	}
	if r := q.do(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"pci-pt-00_05.0","hostaddr":"0000:00:05.0"},"id":5}`); r["error"] == nil {
		t.Errorf("passthrough without a broker: %v", r)
	}
	if r := q.do(`{"execute":"cont","id":6}`); r["error"] != nil {
		t.Errorf("cont: %v", r)
	}
	q.c.Close()
	// libxenstat's socket is served too.
	q = dialQMP(t, filepath.Join(xenRun, "qmp-libxenstat-3"))
	if r := q.do(`{"execute":"query-status","id":2}`); r["return"].(map[string]any)["status"] != "running" {
		t.Errorf("after cont: %v", r)
	}
	q.c.Close()

	// Confined as the launcher promises, seen from outside.
	st, err := launcher.ReadState(e.cfg.RunDir, "xen-dm-3")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := os.ReadFile("/proc/" + itoa(st.Pid) + "/status")
	for _, want := range []string{"Uid:\t3200003\t", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("QEMU's status lacks %q", want)
		}
	}
	if st.Profile != "qemu-xen" || st.Index != 3 {
		t.Errorf("state %+v", st)
	}

	// xl destroy: SIGHUP to the pid libxl recorded (dmsandbox's).
	d.cmd.Process.Signal(syscall.SIGHUP)
	if code := d.wait(t); code != 0 {
		t.Errorf("exit %d after SIGHUP; log:\n%s", code, d.text())
	}
	log := d.text()
	for _, want := range []string{"dropped -chroot", "dropped -runas", "serial0 fd 4 is a socket", "terminating on signal 1", `refused command "human-monitor-command"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(filepath.Join(xenRun, "qmp-libxenstat-3")); !os.IsNotExist(err) {
		t.Error("libxenstat socket left behind")
	}
	e.checkClean(t, "xen-dm-3", st.CgroupPaths)
}

// TestVNC: with "-vnc HOST:D,to=N" dmsandbox listens in the host's
// namespace, hands each viewer to QEMU over the monitor, and query-vnc
// tells libxl that port; QEMU itself gets "-vnc none".
func TestVNC(t *testing.T) {
	e := setup(t)
	xenRun := filepath.Join(e.dir, "xen")
	args := argv(t, "xen417-hvm1-plain", xenRun)
	for i, a := range args {
		if a == "-vnc" {
			args[i+1] = "127.0.0.1:4000,to=4099" // ports 9900-9999, clear of real displays
		}
	}
	d := e.start(t, e.fake, args, nil, "XEN_DOMAIN_ID=1")
	q := dialQMPRetry(t, filepath.Join(xenRun, "qmp-libxl-1"))
	r := q.do(`{"execute":"query-vnc","id":2}`)
	q.c.Close()
	ret, _ := r["return"].(map[string]any)
	port, _ := ret["service"].(string)
	if ret["enabled"] != true || ret["host"] != "127.0.0.1" || port == "" {
		t.Fatalf("query-vnc %v", r)
	}
	v, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.SetDeadline(time.Now().Add(30 * time.Second)) // hang guard
	greet := make([]byte, 12)
	if _, err := io.ReadFull(v, greet); err != nil || string(greet) != "RFB 003.008\n" {
		t.Errorf("viewer got %q, %v; log:\n%s", greet, err, d.text())
	}
	st, err := launcher.ReadState(e.cfg.RunDir, "xen-dm-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(st.Args, " "), "-vnc none") {
		t.Errorf("QEMU's argv %q", st.Args)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	if code := d.wait(t); code != 0 {
		t.Errorf("exit %d; log:\n%s", code, d.text())
	}
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
		c.Close()
		t.Error("VNC port still listening after the device model ended")
	}
}

// dialQMPRetry dials a QMP socket that appears once dmsandbox runs.
func dialQMPRetry(t *testing.T, path string) *qmpClient {
	t.Helper()
	for i := 0; i < 300; i++ { // bounded wait for the socket, not a timing assertion
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return dialQMP(t, path)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
	return nil
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
