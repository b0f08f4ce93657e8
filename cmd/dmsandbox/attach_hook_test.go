package main

import (
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
)

// TestBrokerHookRequiresAuthorization: DM mode's device_add path (the
// QMP proxy's hook) against a broker requiring pre-authorisation (broker
// code, fake backend on the captured tree, real control socket): an
// unauthorised device is refused; `dmsandbox attach` lets the grant
// through; `dmsandbox detach` takes the device from the live session and
// QEMU's later device_del revoke finds nothing left.
func TestBrokerHookRequiresAuthorization(t *testing.T) {
	tb := serveTestBroker(t, true)
	sock, be, e := tb.sock, tb.be, tb.e

	const dev = "0000:01:00.0"
	bdf, _ := pci.ParseBDF(dev)
	h := &brokerHook{socket: sock}
	defer h.close()
	if err := h.Grant(7, bdf); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("unauthorised grant: %v", err)
	}
	if st := be.State(); !st.Empty() {
		t.Fatalf("refused grant reached the backend: %v", st.Summary())
	}
	if rc := attachCmd([]string{"--domid", "7", "--device", dev, "--socket", sock}); rc != ExitOK {
		t.Fatalf("attach: rc %d", rc)
	}
	if err := h.Grant(7, bdf); err != nil {
		t.Fatalf("authorised grant: %v", err)
	}
	if st := be.State(); len(st.Assigned) != 1 {
		t.Fatalf("after grant: %v", st.Summary())
	}
	if rc := detachCmd([]string{"--domid", "7", "--device", dev, "--socket", sock}); rc != ExitOK {
		t.Fatalf("detach: rc %d", rc)
	}
	if st := be.State(); !st.Empty() {
		t.Fatalf("detach left %v", st.Summary())
	}
	for _, s := range e.Sessions() {
		if len(s.Devices) != 0 {
			t.Fatalf("session %d still holds %v", s.ID, s.Devices)
		}
	}
	if err := h.Revoke(7, bdf); err == nil {
		t.Fatal("revoke after detach found the device still attached")
	}
}

// TestBrokerHookByName: `xl create` with pci=[...] under mandatory
// pre-authorisation: the site authorises by the domain's name before the
// domain (and its domid) exists; DM mode's hook opens the session with
// libxl's -name, so the grant goes through for that domain whatever its
// domid, and not for a domain of another name.
func TestBrokerHookByName(t *testing.T) {
	tb := serveTestBroker(t, true)
	const dev = "0000:01:00.0"
	bdf, _ := pci.ParseBDF(dev)
	if rc := attachCmd([]string{"--domain", "web", "--device", dev, "--socket", tb.sock}); rc != ExitOK {
		t.Fatalf("attach --domain: rc %d", rc)
	}
	other := &brokerHook{socket: tb.sock, name: "mail"}
	if err := other.Grant(8, bdf); err == nil || !strings.Contains(err.Error(), `authorized for domain "web"`) {
		t.Fatalf("grant to another name: %v", err)
	}
	other.close()
	h := &brokerHook{socket: tb.sock, name: "web"}
	if err := h.Grant(9, bdf); err != nil {
		t.Fatalf("grant to web: %v", err)
	}
	if st := tb.be.State(); len(st.Assigned) != 1 {
		t.Fatalf("after grant: %v", st.Summary())
	}
	h.close() // the domain ends: the name's authorisation stays
	h = &brokerHook{socket: tb.sock, name: "web"}
	defer h.close()
	if err := h.Grant(10, bdf); err != nil {
		t.Fatalf("grant to the next domain called web: %v", err)
	}
	if rc := detachCmd([]string{"--domain", "web", "--device", dev, "--socket", tb.sock}); rc != ExitOK {
		t.Fatalf("detach --domain: rc %d", rc)
	}
	if st := tb.be.State(); !st.Empty() {
		t.Fatalf("detach --domain left %v", st.Summary())
	}
	if rc := attachCmd([]string{"--domain", "web", "--domid", "3", "--device", dev, "--socket", tb.sock}); rc != ExitUsage {
		t.Fatalf("--domid and --domain: rc %d", rc)
	}
}
