package broker

import (
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"golang.org/x/sys/unix"
)

// lockedBroker is a broker of its own (own audit log and state, as an
// embedded broker has) sharing lockDir with others.
func lockedBroker(t *testing.T, lockDir string) *Broker {
	t.Helper()
	b, _, _ := ownBroker(t, filepath.Join(t.TempDir(), "state"), "", lockDir)
	return b
}

// ownBroker starts a broker on stateDir (New recovers what it finds
// there) with a fake backend and a durable audit log of its own, and
// returns it with the backend and the audit directory.
func ownBroker(t *testing.T, stateDir, bootID, lockDir string) (*Broker, *fake.Backend, string) {
	t.Helper()
	be, err := fake.New(captured, "")
	if err != nil {
		t.Fatal(err)
	}
	auditDir := filepath.Join(t.TempDir(), "audit")
	al, err := audit.Open(audit.Options{Dir: auditDir, Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Backend: be, Sysfs: pci.NewSysfs(captured), Audit: al, StateDir: stateDir,
		AllowFake: true, Logger: log.New(io.Discard, "", 0), BootID: bootID, LockDir: lockDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); al.Close(); be.Close() })
	return b, be, auditDir
}

// TestDeviceLockAcrossBrokers: two brokers (the daemon and an embedded
// one, or two embedded ones) sharing the lock directory never give one
// device to two sessions; the device is free again once its session
// detaches it or ends, and the refusal names the holder. flock locks
// are per open file, so two brokers in one test process exclude each
// other as two processes would.
func TestDeviceLockAcrossBrokers(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "devices")
	a, b := lockedBroker(t, locks), lockedBroker(t, locks)
	sa, fa, err := a.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	sb, fb, err := b.OpenSession(dom+1, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	if err := a.Attach(sa.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	err = b.Attach(sb.ID, e1000e, AttachOptions{})
	if !errors.Is(err, ErrConflict) || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "domain 7") {
		t.Fatalf("second broker's attach of a held device: %v", err)
	}
	// Other devices are not affected, and the refused broker holds no
	// stale reservation.
	if err := b.Attach(sb.ID, other, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(sa.ID, e1000e); err != nil {
		t.Fatal(err)
	}
	if err := b.Attach(sb.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach after the holder detached: %v", err)
	}
	if err := a.Attach(sa.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("first broker's attach of the device now held by the second: %v", err)
	}
	// The session's end frees its devices.
	if err := b.CloseSession(sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(sa.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach after the holder's session ended: %v", err)
	}
	if err := a.Attach(sa.ID, other, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(locks)
	if len(ents) != 2 {
		t.Fatalf("lock files: %v", ents)
	}
}

// TestDisownOnlyOwnHold: a Detach that lost the race with its session's
// close (it looked the session up before the close, and goes on after
// another session took the device) must not free the device, nor its
// lock, under the new holder.
func TestDisownOnlyOwnHold(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "devices")
	a, other := lockedBroker(t, locks), lockedBroker(t, locks)
	s1, f1, err := a.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	if err := a.Attach(s1.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseSession(s1.ID); err != nil {
		t.Fatal(err)
	}
	s2, f2, err := a.OpenSession(dom+1, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := a.Attach(s2.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	// What the late Detach of s1 would do last.
	a.mu.Lock()
	a.disown(e1000e, s1.ID)
	a.mu.Unlock()
	if _, held := a.holder(ByDomid(dom+1), e1000e); !held {
		t.Fatal("the new holder lost the device to the old session's late detach")
	}
	so, fo, err := other.OpenSession(dom+2, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer fo.Close()
	if err := other.Attach(so.ID, e1000e, AttachOptions{}); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("the lock was released under the new holder: %v", err)
	}
	// And the closed session's Detach itself says so.
	if err := a.Detach(s1.ID, e1000e); err == nil {
		t.Fatal("detach on a closed session succeeded")
	}
}

// TestNameLockAcrossBrokers: two broker processes never hold live
// sessions of the same name (both would match the name's
// authorisations); the name is free again once its session ends.
func TestNameLockAcrossBrokers(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "devices")
	a, b := lockedBroker(t, locks), lockedBroker(t, locks)
	s, f, err := a.OpenSession(dom, "web", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := b.OpenSession(dom+1, "web", Peer{}); !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), `domain name "web"`) {
		t.Fatalf("second broker's session called web: %v", err)
	}
	// A refused open leaves nothing behind: b can open other names.
	sb, fb, err := b.OpenSession(dom+1, "db", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	if err := b.CloseSession(sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	s2, f2, err := b.OpenSession(dom+2, "web", Peer{})
	if err != nil {
		t.Fatalf("web after its session ended: %v", err)
	}
	defer f2.Close()
	if err := b.CloseSession(s2.ID); err != nil {
		t.Fatal(err)
	}
}
