package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// The tests of contrib/xen/dmsandbox-pci run the real script under each
// POSIX shell the host has, with the real dmsandbox command code (this
// test binary re-executed through a wrapper, as `dmsandbox` would run)
// against a real broker control socket that requires pre-authorisation
// (broker code, fake backend on the captured sysfs tree). Only xl is
// fake, because this machine has no Xen, and logger, so that the test
// reads what the script logs instead of writing to the host's syslog.

const pciScript = "../../contrib/xen/dmsandbox-pci"

// fakeXL stands in for Xen's xl: the three subcommands the script runs,
// on a state directory (pci-DOMID holds `xl pci-list`'s table body).
// fail-CMD makes CMD fail as xl does (message on stderr, exit 1). As xl
// 4.17's, pci-list prints nothing at all, not even the header, for a
// domain without devices or without a pci backend (one that is gone).
const fakeXL = `#!/bin/sh
d=%DIR%
printf '%s\n' "$*" >>"$d/xl.calls"
if [ -e "$d/fail-$1" ]; then echo "libxl: error: fake $1 failure" >&2; exit 1; fi
case $1 in
pci-list)
	if [ -s "$d/pci-$2" ]; then echo "Vdev Device"; cat "$d/pci-$2"; fi ;;
pci-attach)
	echo "05.0 $3" >>"$d/pci-$2" ;;
pci-detach)
	grep -q " $3\$" "$d/pci-$2" 2>/dev/null || { echo "libxl: error: $3 not attached" >&2; exit 1; }
	grep -v " $3\$" "$d/pci-$2" >"$d/pci-$2.new"; mv "$d/pci-$2.new" "$d/pci-$2" ;;
*) exit 2 ;;
esac
`

// fakeLogger records logger(1)'s arguments, one call a line.
const fakeLogger = `#!/bin/sh
printf '%s\n' "$*" >>%DIR%/logger.calls
`

// dmsandboxWrapper is the DMSANDBOX the script runs: it records each call,
// then runs the real command dispatch (run) in this test binary.
const dmsandboxWrapper = `#!/bin/sh
printf '%s\n' "$*" >>%DIR%/dmsandbox.calls
DMSANDBOX_CONTRIB_HELPER=1 exec %BIN% "$@"
`

// pciScriptEnv is one shell's run of the script: its broker, the fakes'
// state directory and the environment the script gets.
type pciScriptEnv struct {
	t     *testing.T
	shell []string    // argv before the script's path
	sock  string      // the broker's control socket
	tb    *testBroker // nil against a daemon process
	dir   string      // fakes' state and call records
	env   []string    // PATH with the fakes, DMSANDBOX, DMSANDBOX_BROKER_SOCKET
	// ownLogger: the shell runs its own logger applet before PATH's
	// (busybox), so the fake logger sees nothing.
	ownLogger bool
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func newPCIScriptEnv(t *testing.T, shell []string, sock string) *pciScriptEnv {
	t.Helper()
	dir := t.TempDir()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fakeDir := filepath.Join(dir, "fake")
	if err := os.Mkdir(fakeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		text = strings.NewReplacer("%DIR%", shQuote(dir), "%BIN%", shQuote(bin)).Replace(text)
		if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(fakeDir, "xl"), fakeXL)
	write(filepath.Join(fakeDir, "logger"), fakeLogger)
	write(filepath.Join(dir, "dmsandbox"), dmsandboxWrapper)
	return &pciScriptEnv{t: t, shell: shell, sock: sock, dir: dir, ownLogger: filepath.Base(shell[0]) == "busybox", env: []string{
		"PATH=" + fakeDir + ":/usr/sbin:/usr/bin:/sbin:/bin",
		"DMSANDBOX=" + filepath.Join(dir, "dmsandbox"),
		"DMSANDBOX_BROKER_SOCKET=" + sock,
	}}
}

// script runs dmsandbox-pci ARGS with extra environment entries and
// returns its exit status, stdout and stderr.
func (e *pciScriptEnv) script(extraEnv []string, args ...string) (int, string, string) {
	e.t.Helper()
	cmd := exec.Command(e.shell[0], append(append(e.shell[1:len(e.shell):len(e.shell)], pciScript), args...)...)
	cmd.Env = append(append([]string{}, e.env...), extraEnv...)
	return runExit(e.t, cmd)
}

// expect runs the script and fails the test unless it exits want; quiet
// also demands empty stdout and stderr.
func (e *pciScriptEnv) expect(want int, quiet bool, args ...string) (string, string) {
	e.t.Helper()
	rc, out, errOut := e.script(nil, args...)
	if rc != want || (quiet && out+errOut != "") {
		e.t.Fatalf("dmsandbox-pci %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), rc, want, out, errOut)
	}
	return out, errOut
}

// authorised asks the broker itself, not the script, what DOMID may get.
func (e *pciScriptEnv) authorised(domid uint32) string {
	e.t.Helper()
	c, err := broker.DialControl(e.sock)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Shutdown()
	list, err := c.Authorizations(broker.ByDomid(domid))
	if err != nil {
		e.t.Fatal(err)
	}
	var s []string
	for _, a := range list {
		s = append(s, a.BDF)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func (e *pciScriptEnv) wantAuthorised(domid uint32, want string) {
	e.t.Helper()
	if got := e.authorised(domid); got != want {
		e.t.Fatalf("domain %d authorised %q, want %q", domid, got, want)
	}
}

// calls returns the lines a fake or the wrapper recorded, and forgets them.
func (e *pciScriptEnv) calls(name string) []string {
	e.t.Helper()
	p := filepath.Join(e.dir, name+".calls")
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	os.Remove(p)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (e *pciScriptEnv) touch(name string) func() {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return func() { os.Remove(p) }
}

// pciShells are the POSIX shells a site's /bin/sh may be.
func pciShells(t *testing.T) map[string][]string {
	shells := map[string][]string{}
	for name, path := range map[string]string{"sh": "/bin/sh", "dash": "/usr/bin/dash", "bash": "/usr/bin/bash"} {
		if _, err := os.Stat(path); err == nil {
			shells[name] = []string{path}
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		shells["busybox"] = []string{p, "sh"}
	}
	if len(shells) == 0 {
		t.Skip("no POSIX shell at /bin/sh")
	}
	return shells
}

func TestContribPCIScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the broker's control socket needs root (SO_PEERCRED uid 0)")
	}
	for name, shell := range pciShells(t) {
		t.Run(name, func(t *testing.T) {
			tb := serveTestBroker(t, true)
			e := newPCIScriptEnv(t, shell, tb.sock)
			e.tb = tb
			testPCIScript(t, e)
		})
	}
}

func testPCIScript(t *testing.T, e *pciScriptEnv) {
	const d4, d5, d10 = "0000:00:04.0", "0000:00:05.0", "0000:01:00.0"

	// Bad input: exit 2, a reason, and nothing run at all (no dmsandbox,
	// no xl), even when the bad argument follows good ones.
	for _, args := range [][]string{
		{}, {"frob", "7"}, {"add"}, {"add", "7"},
		{"add", "0", d4}, {"add", "07", d4}, {"add", "32752", d4}, {"add", "-1", d4}, {"add", "7 ", d4},
		{"add", "1e3", d4}, {"add", "", d4}, {"add", "123456", d4},
		{"add", "7", d4, d5 + ";touch /tmp/x"}, {"add", "7", "0000:00:20.0"}, {"add", "7", "00:04.8"},
		{"add", "7", "00:04.0,permissive=1"}, {"add", "7", "00:04.0@8"}, {"add", "7", "*"}, {"add", "7", "0000:00:04.0 "},
		{"add", "7", "--socket=/tmp/x"}, {"remove", "x"}, {"sync", "7", d4, "../04.0"},
		{"pci-attach", "7"}, {"pci-attach", "7", d4, d5}, {"pci-detach", "7"}, {"list", "0"}, {"list", "7", "8"},
	} {
		_, errOut := e.expect(ExitUsage, false, args...)
		if !strings.Contains(errOut, "usage: dmsandbox-pci") {
			t.Errorf("dmsandbox-pci %q: no usage on stderr: %s", args, errOut)
		}
		if c := append(e.calls("dmsandbox"), e.calls("xl")...); len(c) != 0 {
			t.Fatalf("dmsandbox-pci %q ran %q before rejecting its input", args, c)
		}
	}
	// Not on a tty: the reason also went to syslog, as an error.
	if l := e.calls("logger"); !e.ownLogger && (len(l) == 0 || !strings.Contains(l[len(l)-1], "-p daemon.err")) {
		t.Fatalf("usage errors not logged: %q", l)
	}

	// No broker daemon listening: 3, for each command that needs it.
	down := []string{"DMSANDBOX_BROKER_SOCKET=" + filepath.Join(e.dir, "no-broker.sock")}
	for _, args := range [][]string{{"add", "7", d4}, {"remove", "7"}, {"sync", "7", d4}, {"list"}} {
		if rc, _, errOut := e.script(down, args...); rc != exitNoBroker || !strings.Contains(errOut, "no broker daemon") {
			t.Fatalf("broker down, dmsandbox-pci %q: exit %d, want %d; stderr: %s", args, rc, exitNoBroker, errOut)
		}
	}
	// A DMSANDBOX that cannot run is a failure, not "no broker".
	if rc, _, errOut := e.script([]string{"DMSANDBOX=" + filepath.Join(e.dir, "missing")}, "add", "7", d4); rc != ExitFailure || !strings.Contains(errOut, "cannot run dmsandbox") {
		t.Fatalf("missing DMSANDBOX: exit %d; stderr: %s", rc, errOut)
	}
	e.wantAuthorised(0, "")
	e.calls("dmsandbox")
	e.calls("logger")

	// add authorises (short form canonicalised); quiet, idempotent; the
	// broker socket is the one in DMSANDBOX_BROKER_SOCKET.
	e.expect(ExitOK, true, "add", "7", "00:04.0")
	e.wantAuthorised(7, d4)
	e.expect(ExitOK, true, "add", "7", d4)
	e.wantAuthorised(7, d4)
	if c := e.calls("dmsandbox"); len(c) != 2 || c[0] != "attach --domid 7 --device "+d4+" --socket "+e.sock {
		t.Fatalf("dmsandbox calls: %q", c)
	}
	if l := e.calls("logger"); !e.ownLogger && (len(l) != 2 || !strings.Contains(l[0], "-p daemon.info") || !strings.Contains(l[0], "domain 7: "+d4+" authorised")) {
		t.Fatalf("syslog after add: %q", l)
	}
	// Several at once.
	e.expect(ExitOK, true, "add", "7", d5, d10)
	e.wantAuthorised(7, d4+" "+d5+" "+d10)
	// Upper case is accepted and passed on in the broker's canonical form
	// (what the script compares lists with); this device does not exist.
	e.calls("dmsandbox")
	e.expect(ExitFailure, false, "add", "7", "00:0A.0")
	if c := e.calls("dmsandbox"); len(c) != 1 || !strings.Contains(c[0], "--device 0000:00:0a.0 ") {
		t.Fatalf("dmsandbox calls of add 00:0A.0: %q", c)
	}

	// The broker's refusals are 1 with its reason; the first stops the run.
	if _, errOut := e.expect(ExitFailure, false, "add", "8", "0000:02:00.0", d4, "0000:03:00.1"); !strings.Contains(errOut, "authorized for domain 7") {
		t.Fatalf("one-domain refusal: %s", errOut)
	}
	e.wantAuthorised(8, "0000:02:00.0")
	if _, errOut := e.expect(ExitFailure, false, "add", "8", "0000:00:1F.7"); !strings.Contains(errOut, "0000:00:1f.7") {
		t.Fatalf("missing device refusal names it? %s", errOut)
	}
	e.wantAuthorised(8, "0000:02:00.0")

	// What the authorisation is for: DM mode's device_add grant (the QMP
	// hook) goes through for an added device, and remove takes it away
	// from the live session at once.
	bdf5, _ := pci.ParseBDF(d5)
	h := &brokerHook{socket: e.sock}
	defer h.close()
	if err := h.Grant(7, bdf5); err != nil {
		t.Fatalf("grant after add: %v", err)
	}
	if st := e.tb.be.State(); len(st.Assigned) != 1 {
		t.Fatalf("after grant: %v", st.Summary())
	}
	e.expect(ExitOK, true, "remove", "7", d5)
	e.wantAuthorised(7, d4+" "+d10)
	if st := e.tb.be.State(); !st.Empty() {
		t.Fatalf("remove left the device with the domain: %v", st.Summary())
	}
	if err := h.Grant(7, bdf5); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("grant after remove: %v", err)
	}
	e.expect(ExitOK, true, "remove", "7", d5) // idempotent

	// sync with a list: exactly that list, stale ones withdrawn.
	e.expect(ExitOK, true, "sync", "7", d5, d10)
	e.wantAuthorised(7, d5+" "+d10)
	// sync from xl pci-list: exactly what the domain has.
	xlHas := func(table string) {
		if err := os.WriteFile(filepath.Join(e.dir, "pci-7"), []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A line the script does not understand: 1, nothing changed.
	xlHas("05.0 " + d4 + "\n06.0 0000:00:04.0,permissive=1\n")
	e.expect(ExitFailure, false, "sync", "7")
	e.wantAuthorised(7, d5+" "+d10)
	xlHas("05.0 " + d4 + "\n06.0 " + d10 + "\n")
	e.expect(ExitOK, true, "sync", "7")
	e.wantAuthorised(7, d4+" "+d10)
	xlHas("05.0 " + d4 + "\n")
	e.calls("xl")
	e.expect(ExitOK, true, "sync", "7")
	e.wantAuthorised(7, d4)
	if c := e.calls("xl"); len(c) != 1 || c[0] != "pci-list 7" {
		t.Fatalf("xl calls of sync: %q", c)
	}
	// xl failing: 1, and nothing changed.
	undo := e.touch("fail-pci-list")
	e.expect(ExitFailure, false, "sync", "7")
	undo()
	e.wantAuthorised(7, d4)
	// A domain with nothing (or a domain that is gone): everything withdrawn.
	e.expect(ExitOK, true, "sync", "8")
	e.wantAuthorised(8, "")

	// pci-attach of a device the broker refuses: 1, and xl never runs.
	e.calls("xl")
	e.expect(ExitFailure, false, "pci-attach", "8", d4)
	if c := e.calls("xl"); len(c) != 0 {
		t.Fatalf("xl ran after a refused authorisation: %q", c)
	}
	// pci-attach: authorise, then xl pci-attach.
	e.calls("xl")
	e.expect(ExitOK, true, "pci-attach", "7", d5)
	e.wantAuthorised(7, d4+" "+d5)
	if c := e.calls("xl"); len(c) != 1 || c[0] != "pci-attach 7 "+d5 {
		t.Fatalf("xl calls of pci-attach: %q", c)
	}
	// xl failing: 1; a device authorised by this call is withdrawn again,
	// one authorised before stays.
	undo = e.touch("fail-pci-attach")
	e.expect(ExitFailure, false, "pci-attach", "7", d10)
	e.wantAuthorised(7, d4+" "+d5)
	e.expect(ExitFailure, false, "pci-attach", "7", d4)
	e.wantAuthorised(7, d4+" "+d5)
	undo()
	// pci-detach: xl pci-detach, then withdraw; withdrawn even if xl fails.
	e.calls("xl")
	e.expect(ExitOK, true, "pci-detach", "7", d5)
	e.wantAuthorised(7, d4)
	if c := e.calls("xl"); len(c) != 1 || c[0] != "pci-detach 7 "+d5 {
		t.Fatalf("xl calls of pci-detach: %q", c)
	}
	undo = e.touch("fail-pci-detach")
	e.expect(ExitFailure, false, "pci-detach", "7", d4)
	undo()
	e.wantAuthorised(7, "")

	// list prints the broker's table; remove DOMID withdraws them all.
	e.expect(ExitOK, true, "add", "7", d4, d10)
	out, _ := e.expect(ExitOK, false, "list", "7")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "DOMID") {
		t.Fatalf("list 7:\n%s", out)
	}
	e.expect(ExitOK, true, "remove", "7")
	e.wantAuthorised(0, "")

	// A device the running domain has by its name (dmsandbox attach
	// --domain) is the site's standing policy: sync, pci-attach and
	// pci-detach neither authorise it by domid (the broker would refuse:
	// one domain per device) nor withdraw it.
	if rc := attachCmd([]string{"--domain", "web", "--device", d10, "--socket", e.sock}); rc != ExitOK {
		t.Fatalf("attach --domain: rc %d", rc)
	}
	bdf10, _ := pci.ParseBDF(d10)
	hw := &brokerHook{socket: e.sock, name: "web"}
	defer hw.close()
	if err := hw.Grant(9, bdf10); err != nil {
		t.Fatalf("grant to web: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "pci-9"), []byte("05.0 "+d10+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	byName := func() {
		t.Helper()
		c, err := broker.DialControl(e.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Shutdown()
		list, err := c.Authorizations(broker.Domain{})
		if err != nil || len(list) != 1 || list[0].Name != "web" || list[0].BDF != d10 {
			t.Fatalf("authorisations: %+v %v", list, err)
		}
	}
	e.expect(ExitOK, true, "sync", "9")
	byName()
	e.calls("xl")
	e.expect(ExitOK, true, "pci-detach", "9", d10)
	byName()
	e.expect(ExitOK, true, "pci-attach", "9", d10)
	byName()
	if c := e.calls("xl"); len(c) != 2 || c[1] != "pci-attach 9 "+d10 {
		t.Fatalf("xl calls: %q", c)
	}
}

// TestContribPCIScriptDaemon: the script against `dmsandbox broker run
// --require-authorization` as its own process (vfio backend on the
// captured tree, under the broker's seccomp profile), with dmsandbox found
// on PATH when DMSANDBOX is unset.
func TestContribPCIScriptDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the broker's control socket needs root (SO_PEERCRED uid 0)")
	}
	dir := t.TempDir()
	d := authzDaemon(t, dir)
	e := newPCIScriptEnv(t, []string{"/bin/sh"}, filepath.Join(dir, "run", "broker.sock"))
	const dev = "0000:00:04.0"
	e.expect(ExitOK, true, "add", "7", dev)
	e.expect(ExitOK, true, "add", "7", dev)
	e.wantAuthorised(7, dev)
	if _, err := os.Stat("/usr/sbin/dmsandbox"); err == nil {
		t.Log("/usr/sbin/dmsandbox exists: DMSANDBOX unset would run it; not tried")
	} else {
		// The wrapper as "dmsandbox" on PATH, DMSANDBOX unset.
		var env []string
		for _, kv := range e.env {
			switch {
			case strings.HasPrefix(kv, "DMSANDBOX="):
			case strings.HasPrefix(kv, "PATH="):
				env = append(env, "PATH="+e.dir+":"+strings.TrimPrefix(kv, "PATH="))
			default:
				env = append(env, kv)
			}
		}
		e.env = env
	}
	e.calls("dmsandbox")
	e.expect(ExitOK, true, "remove", "7", dev)
	e.wantAuthorised(7, "")
	if c := e.calls("dmsandbox"); len(c) != 1 {
		t.Fatalf("dmsandbox calls of remove: %q", c)
	}
	e.expect(ExitOK, true, "sync", "7", dev)
	e.wantAuthorised(7, dev)
	stopDaemon(t, d)
	if rc, _, _ := e.script(nil, "list"); rc != exitNoBroker {
		t.Fatalf("list after the daemon stopped: exit %d, want %d", rc, exitNoBroker)
	}
}

// TestContribPCIScriptShellcheck: the script passes shellcheck as POSIX sh.
func TestContribPCIScriptShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck not installed (apt-get install shellcheck)")
	}
	if out, err := exec.Command(sc, "-s", "sh", pciScript).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}
