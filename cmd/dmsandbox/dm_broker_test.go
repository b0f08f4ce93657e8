package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// TestBrokerHook: the QMP proxy's passthrough hook against a real broker
// control socket (broker code, fake backend on the captured rig tree):
// the grant attaches the device to a session of the domain, the revoke
// detaches it, close ends the session; without a daemon grants fail.
func TestBrokerHook(t *testing.T) {
	tb := serveTestBroker(t, false)
	dir, sock, e := tb.dir, tb.sock, tb.e

	bdf, _ := pci.ParseBDF("0000:01:00.0")
	h := &brokerHook{socket: sock}
	if err := h.Grant(7, bdf); err != nil {
		t.Fatalf("grant: %v", err)
	}
	devices := func() string {
		var out []string
		for _, s := range e.Sessions() {
			if s.Domid == 7 {
				out = append(out, s.Devices...)
			}
		}
		return strings.Join(out, " ")
	}
	if got := devices(); got != "0000:01:00.0" {
		t.Errorf("after grant, domain 7 holds %q", got)
	}
	// Another domain's device model (its own hook, its own session).
	other := &brokerHook{socket: sock}
	if err := other.Grant(8, bdf); err == nil {
		t.Error("a second domain got a device the first holds")
	}
	other.close()
	if err := h.Revoke(7, bdf); err != nil {
		t.Errorf("revoke: %v", err)
	}
	if got := devices(); got != "" {
		t.Errorf("after revoke, domain 7 holds %q", got)
	}
	if err := h.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if n := len(e.Sessions()); n != 0 {
		t.Errorf("%d sessions after close", n)
	}
	none := &brokerHook{socket: filepath.Join(dir, "none.sock")}
	if err := none.Grant(7, bdf); err == nil || !strings.Contains(err.Error(), "no broker daemon") {
		t.Errorf("grant without a daemon: %v", err)
	}
}

// TestBrokerHookHandTo: with a daemon, DM mode opens the domain's session
// before QEMU starts and hands it over: one more fd after libxl's, the
// shim preloaded and copied into the root, the fd number in the
// environment; the session exists before any device_add. Without a
// daemon, or with LD_PRELOAD already set, the spec is left alone.
func TestBrokerHookHandTo(t *testing.T) {
	tb := serveTestBroker(t, false)
	shim := filepath.Join(t.TempDir(), "libdmsb-shim.so")
	if err := os.WriteFile(shim, []byte("not loaded here"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envShim, shim)
	qemu := "/usr/bin/qemu-system-x86_64" // FirstFileFD: QEMU gets the QMP socket as fd 3
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	base := launcher.Spec{Program: qemu, Env: []string{"XEN_DOMAIN_ID=7"},
		Files: []launcher.HandedFile{{Name: "libxl-cmd", File: devnull}}}

	h := &brokerHook{socket: tb.sock}
	spec := base
	if err := h.handTo(&spec, 7); err != nil {
		t.Fatal(err)
	}
	if len(spec.Files) != 2 || spec.Files[1].Name != "broker" || spec.Files[1].File != h.sfd {
		t.Errorf("files: %+v", spec.Files)
	}
	// The shim at a fixed path in the root, from wherever it is.
	wantEnv := []string{"XEN_DOMAIN_ID=7", "LD_PRELOAD=/usr/lib/dmsandbox/libdmsb-shim.so", "DMSANDBOX_BROKER_FD=5"}
	if strings.Join(spec.Env, " ") != strings.Join(wantEnv, " ") {
		t.Errorf("env %q, want %q", spec.Env, wantEnv)
	}
	if len(spec.RootFiles) != 1 || spec.RootFiles[0] != (launcher.RootFile{Path: "/usr/lib/dmsandbox/libdmsb-shim.so", Host: shim}) {
		t.Errorf("root files %+v", spec.RootFiles)
	}
	if n := len(tb.e.Sessions()); n != 1 || tb.e.Sessions()[0].Domid != 7 {
		t.Errorf("sessions after handTo: %+v", tb.e.Sessions())
	}
	if err := h.close(); err != nil {
		t.Fatal(err)
	}
	if n := len(tb.e.Sessions()); n != 0 {
		t.Errorf("%d sessions after close", n)
	}

	for name, c := range map[string]struct {
		socket string
		env    []string
	}{
		"no daemon":  {filepath.Join(tb.dir, "none.sock"), nil},
		"LD_PRELOAD": {tb.sock, []string{"LD_PRELOAD=/x.so"}},
	} {
		spec := base
		spec.Env = append(append([]string(nil), base.Env...), c.env...)
		h := &brokerHook{socket: c.socket}
		if err := h.handTo(&spec, 8); err == nil {
			t.Errorf("%s: handTo succeeded", name)
		}
		if len(spec.Files) != 1 || len(spec.Env) != 1+len(c.env) || len(spec.RootFiles) != 0 {
			t.Errorf("%s: spec changed: %+v", name, spec)
		}
		h.close()
	}
	if n := len(tb.e.Sessions()); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

// TestBrokerHookEmbedded: with no daemon socket at all, DM mode's hook
// runs the broker in its own process (here with the fake backend on the
// captured tree): the session is handed over as with a daemon, grants
// attach devices, close undoes and shuts the broker down; the same with
// a dead daemon's socket left behind.
func TestBrokerHookEmbedded(t *testing.T) {
	dir := t.TempDir()
	var made []*broker.Embedded
	embed := func(domid uint32) (*broker.Embedded, error) {
		be, err := fake.New(capturedTree, "")
		if err != nil {
			return nil, err
		}
		e, err := broker.NewEmbedded(broker.EmbeddedConfig{Backend: be, SysfsRoot: capturedTree,
			AuditDir: filepath.Join(dir, "audit"), StateDir: filepath.Join(dir, "state"), Buffered: true, AllowFake: true})
		if err == nil {
			made = append(made, e)
		}
		return e, err
	}
	shim := filepath.Join(dir, "libdmsb-shim.so")
	if err := os.WriteFile(shim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envShim, shim)
	h := &brokerHook{socket: filepath.Join(dir, "none", "broker.sock"), embed: embed}
	spec := launcher.Spec{Program: "/usr/bin/qemu-system-x86_64"}
	if err := h.handTo(&spec, 7); err != nil {
		t.Fatal(err)
	}
	if len(made) != 1 || len(spec.Files) != 1 {
		t.Fatalf("embedded brokers %d, files %+v", len(made), spec.Files)
	}
	bdf, _ := pci.ParseBDF("0000:00:04.0")
	if err := h.Grant(7, bdf); err != nil {
		t.Fatalf("grant: %v", err)
	}
	if s := made[0].Sessions(); len(s) != 1 || s[0].Domid != 7 || len(s[0].Devices) != 1 {
		t.Fatalf("sessions: %+v", s)
	}
	if err := h.close(); err != nil {
		t.Fatal(err)
	}
	if s := made[0].Sessions(); len(s) != 0 {
		t.Fatalf("sessions after close: %+v", s)
	}

	// A socket path that exists without a daemon behind it: a dead
	// daemon's leftover, the embedded broker again (broker.Connect).
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unixpacket", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	h = &brokerHook{socket: stale, embed: embed}
	if err := h.Grant(8, bdf); err != nil || len(made) != 2 {
		t.Fatalf("grant with a dead daemon's socket: %v (%d embedded brokers)", err, len(made))
	}
	h.close()
	// Without an embedded broker to fall back on, no daemon is an error.
	h = &brokerHook{socket: stale}
	if err := h.Grant(8, bdf); err == nil || !strings.Contains(err.Error(), "no broker daemon") {
		t.Fatalf("grant without daemon or embedded broker: %v", err)
	}
}
