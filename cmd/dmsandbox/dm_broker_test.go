package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
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
