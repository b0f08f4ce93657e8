package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"golang.org/x/sys/unix"
)

// namedSession opens the session of domid called name.
func (r *rig) namedSession(domid uint32, name string) (*Session, *os.File) {
	r.t.Helper()
	s, f, err := r.broker.OpenSession(domid, name, Peer{PID: int32(os.Getpid())})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { f.Close() })
	return s, f
}

// TestAuthorizeByName: a site authorises a device for a domain by name
// before the domain exists (xl create with pci=[...]); whatever domid the
// domain gets, its session may attach the device, any other domain's is
// refused, and the authorisation outlives the session (the site's
// standing policy) until withdrawn, which detaches it from a live one.
func TestAuthorizeByName(t *testing.T) {
	r := authzRig(t)
	if err := r.broker.Authorize(ByName("web"), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	// The name holds the device: no domid may take it, and back.
	if err := r.broker.Authorize(ByDomid(dom), e1000e, admin); !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), `authorized for domain "web"`) {
		t.Fatalf("authorize a name's device by domid: %v", err)
	}
	if err := r.broker.Authorize(ByDomid(dom), other, admin); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Authorize(ByName("db"), other, admin); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("authorize a domid's device by name: %v", err)
	}
	// Another domain (named or not) is refused.
	s1, _ := r.namedSession(dom+1, "mail")
	if err := r.broker.Attach(s1.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), `authorized for domain "web"`) {
		t.Fatalf("attach to another domain: %v", err)
	}
	// The domain called web, whatever its domid.
	s, f := r.namedSession(dom+2, "web")
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach to the named domain: %v", err)
	}
	// Listing by domid includes the running domain's name-keyed ones.
	if got := listed(t, r.broker, dom+2); len(got) != 1 || got[0] != e1000e.String() {
		t.Fatalf("domain %d (web) lists %v", dom+2, got)
	}
	list, err := r.broker.Authorizations(ByName("web"), admin)
	if err != nil || len(list) != 1 || list[0].Session != s.ID || list[0].Name != "web" || list[0].Domid != 0 || list[0].BootID != "" {
		t.Fatalf("by name: %+v %v", list, err)
	}
	// The session ends: the name's authorisation stays, domid 7's too
	// (its domain's session never ended).
	if err := r.broker.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := listed(t, r.broker, 0); len(got) != 2 {
		t.Fatalf("after web's session ended: %v", got)
	}
	// And a restart.
	r.restart()
	if got := listed(t, r.broker, 0); len(got) != 2 {
		t.Fatalf("after a restart: %v", got)
	}
	// The next web gets it again; withdrawing detaches it there.
	s, _ = r.namedSession(dom+3, "web")
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach to the next domain called web: %v", err)
	}
	if err := r.broker.Deauthorize(ByDomid(dom+3), e1000e, admin); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("withdraw a name's device by domid: %v", err)
	}
	if err := r.broker.Deauthorize(ByName("web"), e1000e, admin); err != nil {
		t.Fatal(err)
	}
	if _, held := r.broker.holder(ByName("web"), e1000e); held {
		t.Fatal("withdrawn device still held by web's session")
	}
	recs := r.recordsOf("deauthorize")
	if len(recs) != 2 || recs[1].Verdict != audit.Allow || !strings.Contains(recs[1].Args, "name=web") || !strings.Contains(recs[1].Args, "detached from session") {
		t.Fatalf("audit: %+v", recs)
	}
}

// TestSessionNames: a name is checked, and two live sessions never share
// one (Xen keeps names unique among running domains; a launcher that
// claims a live domain's name is lying).
func TestSessionNames(t *testing.T) {
	r := authzRig(t)
	for _, bad := range []string{"a b", "123", `a"b`, `a\b`, "sys-net,debug-threads=on", "a=b", strings.Repeat("x", maxDomainName+1), "é"} {
		if _, _, err := r.broker.OpenSession(dom, bad, Peer{}); err == nil {
			t.Fatalf("name %q accepted", bad)
		}
		if err := r.broker.Authorize(ByName(bad), e1000e, admin); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("authorize name %q: %v", bad, err)
		}
	}
	if err := r.broker.Authorize(Domain{ID: dom, Name: "web"}, e1000e, admin); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("authorize by domid and name: %v", err)
	}
	s, f := r.namedSession(dom, "web")
	if _, _, err := r.broker.OpenSession(dom+1, "web", Peer{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second session called web: %v", err)
	}
	if err := r.broker.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.namedSession(dom+1, "web") // free again
	open := r.recordsOf("session_open")
	if len(open) != 2 || !strings.Contains(open[0].Args, "name=web") {
		t.Fatalf("audit: %+v", open)
	}
}

// TestAuthorizationsOfAnotherBoot: domids restart at 1 when the host
// boots, so a domid-keyed authorisation recorded in another boot (or in
// a version 1 file, which cannot say) is dropped at start, audited, and
// gone from the rewritten file; name-keyed ones stay.
func TestAuthorizationsOfAnotherBoot(t *testing.T) {
	r := newRig(t, "")
	r.stop()
	r.bootID, r.requireAuthz = "boot-1", true
	r.start()
	for _, err := range []error{
		r.broker.Authorize(ByDomid(dom), e1000e, admin),
		r.broker.Authorize(ByName("web"), other, admin),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	r.restart() // same boot: both kept
	if got := listed(t, r.broker, 0); len(got) != 2 {
		t.Fatalf("same boot: %v", got)
	}
	r.stop()
	r.bootID = "boot-2"
	r.start()
	if got := listed(t, r.broker, 0); len(got) != 1 || got[0] != other.String() {
		t.Fatalf("after a reboot: %v", got)
	}
	recs := r.recordsOf("deauthorize")
	if len(recs) != 1 || recs[0].Domid != dom || !strings.Contains(recs[0].Args, "another boot") {
		t.Fatalf("audit: %+v", recs)
	}
	data, err := os.ReadFile(filepath.Join(r.dir, "state", AuthorizationsFile))
	if err != nil || strings.Contains(string(data), "boot-1") || !strings.Contains(string(data), `"require_authorization": true`) {
		t.Fatalf("rewritten file: %v\n%s", err, data)
	}
	// A version 1 file: domid-keyed entries undatable, dropped.
	r.stop()
	v1 := `{"v":1,"authorizations":[{"bdf":"0000:00:04.0","domid":7,"since":"2026-11-26T00:00:00Z"}]}`
	if err := os.WriteFile(filepath.Join(r.dir, "state", AuthorizationsFile), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	if got := listed(t, r.broker, 0); len(got) != 0 {
		t.Fatalf("version 1 entries kept: %v", got)
	}
}

// TestEmbeddedTakesDaemonPolicy: an embedded broker (a launcher with no
// daemon to talk to) applies the policy the daemon wrote in its file,
// whatever its own config says, and cannot change the daemon's
// authorisations.
func TestEmbeddedTakesDaemonPolicy(t *testing.T) {
	for _, require := range []bool{true, false} {
		dir := t.TempDir()
		file := filepath.Join(dir, AuthorizationsFile)
		if err := saveAuthz(file, nil, require); err != nil {
			t.Fatal(err)
		}
		be, err := fake.New(captured, "")
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEmbedded(EmbeddedConfig{Backend: be, SysfsRoot: captured, AuditDir: filepath.Join(dir, "audit"),
			StateDir: filepath.Join(dir, "state"), Buffered: true, AllowFake: true, AuthorizationsFile: file})
		if err != nil {
			t.Fatal(err)
		}
		id, f, err := e.Open(dom, "web")
		if err != nil {
			t.Fatal(err)
		}
		err = e.Attach(id, e1000e, AttachOptions{})
		if require && !errors.Is(err, unix.EACCES) || !require && err != nil {
			t.Errorf("daemon policy require=%v: attach: %v", require, err)
		}
		if err := e.Authorize(ByName("web"), other, admin); !errors.Is(err, unix.EPERM) {
			t.Errorf("embedded broker changed the daemon's file: %v", err)
		}
		f.Close()
		e.Shutdown()
	}
}

// TestPolicyChangeAudited: a broker started with another policy than its
// file records (a daemon restarted without --require-authorization)
// writes a policy record before it rewrites the file.
func TestPolicyChangeAudited(t *testing.T) {
	r := authzRig(t)
	r.stop()
	r.requireAuthz = false
	r.start()
	// authzRig itself turned it on after a first start without.
	p := r.recordsOf("policy")
	if len(p) != 2 || p[0].Args != "require_authorization false -> true" || p[1].Args != "require_authorization true -> false" {
		t.Fatalf("policy records: %d", len(p))
	}
	r.restart() // unchanged: no record
	if p := r.recordsOf("policy"); len(p) != 2 {
		t.Fatalf("policy records after an unchanged restart: %d", len(p))
	}
}
