package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
)

// leftJournal writes, in dir, the journal a killed broker of boot
// bootID leaves for session 5 of domain dom holding e1000e with one
// BAR mapping.
func leftJournal(t *testing.T, dir, bootID string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	j, err := createJournal(dir, 5, dom, bootID)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range []Item{{Kind: KindDevice, BDF: e1000e.String()}, {Kind: KindMem, Guest: 0xe0000, Host: 0xfeb80, Count: 0x20}} {
		if err := j.add(it); err != nil {
			t.Fatal(err)
		}
	}
	j.f.Close()
}

// recoveringBroker starts a broker on stateDir (its New recovers) and
// returns its fake backend and audit directory.
func recoveringBroker(t *testing.T, stateDir, bootID, lockDir string) (*fake.Backend, string) {
	t.Helper()
	_, be, auditDir := ownBroker(t, stateDir, bootID, lockDir)
	return be, auditDir
}

func auditOps(t *testing.T, dir string) string {
	t.Helper()
	files, err := audit.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, p := range files {
		recs, err := audit.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			ops = append(ops, r.Op+" "+r.Verdict+" "+r.Args)
		}
	}
	return strings.Join(ops, "\n")
}

// TestRecoverOtherBoot: a journal left in another boot (an embedded
// broker's, found when its domid comes back after a reboot) names a
// domain and backend state the reboot took away: nothing is undone
// through the backend (the device may be another domain's by now), the
// journal goes, and the audit says why.
func TestRecoverOtherBoot(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	leftJournal(t, state, "boot-1")
	be, al := recoveringBroker(t, state, "boot-2", "")
	if calls := be.Calls(); len(calls) != 0 {
		t.Fatalf("backend called for another boot's journal: %+v", calls)
	}
	if ops := auditOps(t, al); !strings.Contains(ops, "journal of another boot") || strings.Contains(ops, "undo ") {
		t.Fatalf("audit:\n%s", ops)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "session-*.journal")); len(left) != 0 {
		t.Fatalf("journal kept: %v", left)
	}
}

// TestRecoverSkipsDeviceLockedElsewhere: the killed broker's device is
// held by another broker process's live session: its reset and release
// are skipped (audited) and dropped, the other steps are undone; a
// journal of this boot whose device is free is undone entirely.
func TestRecoverSkipsDeviceLockedElsewhere(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "devices")
	holder := lockedBroker(t, locks)
	s, f, err := holder.OpenSession(dom+1, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := holder.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	leftJournal(t, state, "boot-1")
	be, al := recoveringBroker(t, state, "boot-1", locks)
	for _, c := range be.Calls() {
		if c.Op == "reset" || c.Op == "release" {
			t.Fatalf("a device another broker holds was %sed: %+v", c.Op, be.Calls())
		}
	}
	ops := auditOps(t, al)
	if !strings.Contains(ops, "undo_skipped failed device "+e1000e.String()) || !strings.Contains(ops, "undo allow mem") {
		t.Fatalf("audit:\n%s", ops)
	}
	if _, held := holder.holder(ByDomid(dom+1), e1000e); !held {
		t.Fatal("the holder lost its device")
	}
	if left, _ := filepath.Glob(filepath.Join(state, "session-*.journal")); len(left) != 0 {
		t.Fatalf("journal kept: %v", left)
	}

	// The device free: the same journal is undone entirely.
	state2 := filepath.Join(t.TempDir(), "state")
	leftJournal(t, state2, "boot-1")
	if err := holder.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	be2, _ := recoveringBroker(t, state2, "boot-1", locks)
	var reset bool
	for _, c := range be2.Calls() {
		reset = reset || c.Op == "reset"
	}
	if !reset {
		t.Fatalf("free device not reset: %+v", be2.Calls())
	}
}
