package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"golang.org/x/sys/unix"
)

var admin = Peer{PID: 1, UID: 0}

// authzRig is a rig whose broker requires pre-authorisation.
func authzRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, "")
	r.stop()
	r.requireAuthz = true
	r.start()
	return r
}

func (r *rig) restart() {
	r.stop()
	r.start()
}

// authzRecords returns the audit records of op.
func (r *rig) recordsOf(op string) []*audit.Record {
	var out []*audit.Record
	for _, rec := range r.records() {
		if rec.Op == op {
			out = append(out, rec)
		}
	}
	return out
}

func listed(t *testing.T, b *Broker, domid uint32) []string {
	t.Helper()
	list, err := b.Authorizations(ByDomid(domid), admin)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range list {
		out = append(out, a.BDF)
	}
	return out
}

func TestAuthorizePersistsAndIsIdempotent(t *testing.T) {
	r := newRig(t, "")
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := r.broker.Authorize(ByDomid(dom), e1000e, admin); err != nil {
			t.Fatalf("authorize #%d: %v", i+1, err)
		}
	}
	if err := r.broker.Authorize(ByDomid(dom+1), other, admin); err != nil {
		t.Fatal(err)
	}
	r.restart()
	if got := listed(t, r.broker, dom); len(got) != 1 || got[0] != e1000e.String() {
		t.Fatalf("after restart, domain %d: %v", dom, got)
	}
	if got := listed(t, r.broker, 0); len(got) != 2 {
		t.Fatalf("after restart, all: %v", got)
	}
	data, err := os.ReadFile(filepath.Join(r.dir, "state", AuthorizationsFile))
	if err != nil || !strings.Contains(string(data), `"v": 2`) {
		t.Fatalf("file: %v\n%s", err, data)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "state", AuthorizationsFile+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	for i := 0; i < 2; i++ { // the second one deauthorises nothing: fine
		if err := r.broker.Deauthorize(ByDomid(dom), e1000e, admin); err != nil {
			t.Fatalf("deauthorize #%d: %v", i+1, err)
		}
	}
	r.restart()
	if got := listed(t, r.broker, 0); len(got) != 1 || got[0] != other.String() {
		t.Fatalf("after deauthorize and restart: %v", got)
	}
	// One record per request, the repeats say so.
	auth, deauth := r.recordsOf("authorize"), r.recordsOf("deauthorize")
	if len(auth) != 3 || len(deauth) != 2 {
		t.Fatalf("audit: %d authorize, %d deauthorize records", len(auth), len(deauth))
	}
	if !strings.Contains(auth[1].Args, "already") || !strings.Contains(deauth[1].Args, "not authorized") || auth[0].Verdict != audit.Allow {
		t.Fatalf("audit args: %+v %+v", auth[1], deauth[1])
	}
	if n := len(r.recordsOf("authorizations")); n != 3 {
		t.Fatalf("list audited %d times, want 3", n)
	}
}

func TestAuthorizeOneDomainAtATime(t *testing.T) {
	r := newRig(t, "")
	if err := r.broker.Authorize(ByDomid(dom), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	err := r.broker.Authorize(ByDomid(dom+1), e1000e, admin)
	if !errors.Is(err, ErrConflict) || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "authorized for domain 7") {
		t.Fatalf("authorize for a second domain: %v", err)
	}
	// Nor may the other domain withdraw it.
	if err := r.broker.Deauthorize(ByDomid(dom+1), e1000e, admin); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("deauthorize by another domain: %v", err)
	}
	if got := listed(t, r.broker, dom); len(got) != 1 {
		t.Fatalf("authorization lost: %v", got)
	}
	recs := r.recordsOf("authorize")
	last := recs[len(recs)-1]
	if last.Verdict != audit.Deny || last.Errno != int(unix.EBUSY) || last.Domid != dom+1 {
		t.Fatalf("refusal audit: %+v", last)
	}
	// Once withdrawn, the other domain may have it.
	if err := r.broker.Deauthorize(ByDomid(dom), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Authorize(ByDomid(dom+1), e1000e, admin); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizeRefusesNonsense(t *testing.T) {
	r := newRig(t, "")
	cases := []struct {
		domid uint32
		bdf   pci.BDF
		errno unix.Errno
	}{
		{0, e1000e, unix.EINVAL},                    // dom0 is the host
		{0x7ff0, e1000e, unix.EINVAL},               // DOMID_FIRST_RESERVED
		{dom, pci.BDF{Bus: 9, Dev: 9}, unix.ENODEV}, // no such device
		{dom, pci.BDF{Bus: 0, Dev: 2}, unix.EINVAL}, // a bridge (PCIe root port)
	}
	for _, c := range cases {
		if err := r.broker.Authorize(ByDomid(c.domid), c.bdf, admin); !errors.Is(err, c.errno) {
			t.Errorf("authorize %d %s: %v, want %v", c.domid, c.bdf, err, c.errno)
		}
	}
	if got := listed(t, r.broker, 0); len(got) != 0 {
		t.Fatalf("refused ones stored: %v", got)
	}
}

func TestAuthorizationsFileRefusedWhenBroken(t *testing.T) {
	for name, body := range map[string]string{
		"version":   `{"v":3,"require_authorization":true,"authorizations":[]}`,
		"no policy": `{"v":2,"authorizations":[]}`,
		"both keys": `{"v":2,"require_authorization":true,"authorizations":[{"bdf":"0000:00:04.0","domid":7,"name":"web"}]}`,
		"bad name":  `{"v":2,"require_authorization":true,"authorizations":[{"bdf":"0000:00:04.0","name":"a b"}]}`,
		"garbage":   `{"v":1,"authorizations":[`,
		"bad bdf":   `{"v":1,"authorizations":[{"bdf":"zz","domid":7}]}`,
		"dom0":      `{"v":1,"authorizations":[{"bdf":"0000:00:04.0","domid":0}]}`,
		"duplicate": `{"v":1,"authorizations":[{"bdf":"0000:00:04.0","domid":7},{"bdf":"0000:00:04.0","domid":8}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), AuthorizationsFile)
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadAuthz(p, "boot"); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestRequireAuthorizationRefusesAttach(t *testing.T) {
	r := authzRig(t)
	s, f, err := r.broker.OpenSession(dom, "", Peer{PID: int32(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = r.broker.Attach(s.ID, e1000e, AttachOptions{})
	if !errors.Is(err, ErrNotAuthorized) || !errors.Is(err, unix.EACCES) {
		t.Fatalf("unauthorized attach: %v", err)
	}
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("backend reached: %v", st.Summary())
	}
	deny := r.recordsOf("attach")
	if len(deny) != 1 || deny[0].Verdict != audit.Deny || deny[0].Errno != int(unix.EACCES) || deny[0].Session != s.ID ||
		!strings.Contains(deny[0].Args, e1000e.String()) {
		t.Fatalf("audit of the refusal: %+v", deny)
	}
	// Authorised for another domain is no better.
	if err := r.broker.Authorize(ByDomid(dom+1), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "authorized for domain 8") {
		t.Fatalf("attach of another domain's device: %v", err)
	}
	if err := r.broker.Authorize(ByDomid(dom), other, admin); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, other, AttachOptions{}); err != nil {
		t.Fatalf("authorized attach: %v", err)
	}
	// The authorisation survives a restart and still gates the new broker.
	r.restart()
	s2, f2, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := r.broker.Attach(s2.ID, other, AttachOptions{}); err != nil {
		t.Fatalf("authorized attach after restart: %v", err)
	}
	if err := r.broker.Attach(s2.ID, pci05, AttachOptions{}); !errors.Is(err, unix.EACCES) {
		t.Fatalf("unauthorized attach after restart: %v", err)
	}
}

// Without the switch Attach ignores authorisations.
func TestAuthorizationOptional(t *testing.T) {
	r := newRig(t, "")
	if err := r.broker.Authorize(ByDomid(dom+1), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Deauthorising a device the domain's session holds detaches it, undoing
// in the close order, and the session may not touch it afterwards.
func TestDeauthorizeDetachesLiveDevice(t *testing.T) {
	r := authzRig(t)
	for _, d := range []pci.BDF{e1000e, other} {
		if err := r.broker.Authorize(ByDomid(dom), d, admin); err != nil {
			t.Fatal(err)
		}
	}
	s, c := r.session(dom, e1000e, other)
	defer c.Close()
	if err := c.Do(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 0x20}, nil); err != nil {
		t.Fatal(err)
	}
	var msix PirqReply
	if err := c.Do(&MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, Bus: 0, EntryNr: 4, TableBase: 0xfebd0000}, &msix); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(&UpdateMsiIrq{Domid: dom, Gvec: 0x41, Pirq: uint32(msix.Pirq), Gtable: 0xf1000000}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Deauthorize(ByDomid(dom), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	if sum := r.fake.State().Summary(); len(sum) != 1 || !strings.HasPrefix(sum[0], "assigned "+other.String()) {
		t.Fatalf("after deauthorize, backend holds %v", sum)
	}
	var kinds []string
	for _, rec := range r.records() {
		if rec.Op == "undo" {
			kinds = append(kinds, strings.Fields(rec.Args)[0])
		}
	}
	if strings.Join(kinds, " ") != "mem msi pirq device" {
		t.Fatalf("undo order %v", kinds)
	}
	if d := r.recordsOf("deauthorize"); len(d) != 1 || !strings.Contains(d[0].Args, "detached from session") {
		t.Fatalf("deauthorize audit: %+v", d)
	}
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)); got == 0 {
		t.Fatal("session still reads the withdrawn device")
	}
	if list := r.broker.Sessions(); len(list) != 1 || len(list[0].Devices) != 1 || list[0].Devices[0] != other.String() {
		t.Fatalf("session devices: %+v", list)
	}
	// It cannot come back without a new authorisation.
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EACCES) {
		t.Fatalf("re-attach after deauthorize: %v", err)
	}
	// The list shows which session holds what.
	list, err := r.broker.Authorizations(ByDomid(dom), admin)
	if err != nil || len(list) != 1 || list[0].Session != s.ID {
		t.Fatalf("authorizations: %+v %v", list, err)
	}
}

// The control channel carries the domid-keyed ops for any root
// connection, not only the one holding the session.
func TestControlAuthorize(t *testing.T) {
	r := authzRig(t)
	path := serveControl(t, r)
	launcher, err := DialControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer launcher.Shutdown()
	id, f, err := launcher.Open(dom, "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := launcher.Attach(id, e1000e, AttachOptions{}); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("unauthorized attach over control: %v", err)
	}
	script, err := DialControl(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := script.Authorize(ByDomid(dom), e1000e); err != nil {
		t.Fatal(err)
	}
	script.Shutdown() // a hotplug script exits: the authorisation stays
	if err := launcher.Attach(id, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := launcher.Authorize(ByDomid(dom+1), e1000e); err == nil || !strings.Contains(err.Error(), "authorized for domain 7") {
		t.Fatalf("second domain over control: %v", err)
	}
	list, err := launcher.Authorizations(ByDomid(0))
	if err != nil || len(list) != 1 || list[0].Session != id || list[0].Domid != dom {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := launcher.Deauthorize(ByDomid(dom), e1000e); err != nil {
		t.Fatal(err)
	}
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("deauthorize over control left %v", st.Summary())
	}
	if list, err := launcher.Authorizations(ByDomid(dom)); err != nil || len(list) != 0 {
		t.Fatalf("list after: %+v %v", list, err)
	}
}

// A withdrawal racing an attach never leaves the session holding a
// device that is not authorised (Attach and Deauthorize serialise).
func TestDeauthorizeRacingAttach(t *testing.T) {
	r := authzRig(t)
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 50; i++ {
		if err := r.broker.Authorize(ByDomid(dom), e1000e, admin); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 2)
		go func() { done <- r.broker.Attach(s.ID, e1000e, AttachOptions{}) }()
		go func() { done <- r.broker.Deauthorize(ByDomid(dom), e1000e, admin) }()
		for j := 0; j < 2; j++ {
			if err := <-done; err != nil && !errors.Is(err, unix.EACCES) {
				t.Fatalf("round %d: %v", i, err)
			}
		}
		_, held := r.broker.holder(ByDomid(dom), e1000e)
		authorized := len(listed(t, r.broker, dom)) == 1
		if held && !authorized {
			t.Fatalf("round %d: session holds a withdrawn device", i)
		}
		if _, assigned := r.fake.State().Assigned[e1000e.String()]; assigned != held {
			t.Fatalf("round %d: backend assigned=%v, session holds=%v", i, assigned, held)
		}
		if held {
			if err := r.broker.Deauthorize(ByDomid(dom), e1000e, admin); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestAuthorizationsEndWithSession: a domain's authorisations end when
// its session does (closed over the control channel, or its client hung
// up), so a later domain reusing the domid inherits nothing; other
// domains keep theirs, and a broker shutting down keeps them all.
func TestAuthorizationsEndWithSession(t *testing.T) {
	r := authzRig(t)
	for _, a := range []struct {
		domid uint32
		bdf   pci.BDF
	}{{dom, e1000e}, {dom + 1, other}} {
		if err := r.broker.Authorize(ByDomid(a.domid), a.bdf, admin); err != nil {
			t.Fatal(err)
		}
	}
	// Shutdown: kept (the domains still run).
	_, c := r.session(dom, e1000e)
	r.restart()
	c.Close()
	if got := listed(t, r.broker, 0); len(got) != 2 {
		t.Fatalf("after a broker restart: %v", got)
	}
	// Closed over the control channel: dom's go, dom+1's stay.
	s, c := r.session(dom, e1000e)
	if err := r.broker.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := listed(t, r.broker, 0); len(got) != 1 || got[0] != other.String() {
		t.Fatalf("after dom %d's session closed: %v", dom, got)
	}
	d := r.recordsOf("deauthorize")
	if len(d) != 1 || d[0].Domid != dom || !strings.Contains(d[0].Args, e1000e.String()) || !strings.Contains(d[0].Args, "session ended") {
		t.Fatalf("audit: %+v", d)
	}
	// A later domain with the same domid gets nothing it was not given.
	s2, c2 := r.session(dom)
	if err := r.broker.Attach(s2.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EACCES) {
		t.Fatalf("attach in the reused domid: %v", err)
	}
	// Client hung up: dom+1's go too, and survive no restart.
	c2.Close()
	r.waitGone(s2)
	s3, c3 := r.session(dom+1, other)
	c3.Close()
	r.waitGone(s3)
	r.restart()
	if got := listed(t, r.broker, 0); len(got) != 0 {
		t.Fatalf("after dom %d's client hung up: %v", dom+1, got)
	}
}

// TestEmbeddedLeavesDaemonAuthorizations: a broker reading another
// broker's authorisations file (DM mode's embedded broker, the daemon's
// file) never writes it back when a domain's session ends: several of
// them would lose each other's updates; the file is the daemon's.
func TestEmbeddedLeavesDaemonAuthorizations(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, AuthorizationsFile)
	body := []byte(`{"v":2,"require_authorization":true,"authorizations":[{"bdf":"0000:00:04.0","domid":7,"boot_id":"` + currentBootID() + `","since":"2026-11-26T00:00:00Z"}]}`)
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	be, err := fake.New(captured, "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEmbedded(EmbeddedConfig{Backend: be, SysfsRoot: captured, AuditDir: filepath.Join(dir, "audit"),
		StateDir: filepath.Join(dir, "state"), Buffered: true, AllowFake: true,
		RequireAuthorization: true, AuthorizationsFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	id, f, err := e.Open(dom, "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := e.Attach(id, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach of an authorised device: %v", err)
	}
	if err := e.Close(id); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(file); err != nil || string(got) != string(body) {
		t.Fatalf("the daemon's file changed: %v\n%s", err, got)
	}
}
