package broker

import (
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/backend/vfio"
	"github.com/dmsandbox/dmsandbox/pci/pcifake"
)

// In the rig's capture the edu 03:01.0 and the e1000 03:02.0 share the bus
// behind the PCIe-to-PCI bridge 02:00.0 (and IOMMU group 11): a reset of
// either is a secondary bus reset that hits both.
var (
	sharedEdu    = pci.BDF{Bus: 3, Dev: 1}
	sharedE1000  = pci.BDF{Bus: 3, Dev: 2}
	sharedBridge = pci.BDF{Bus: 2}
)

type ownerRig struct {
	k       *pcifake.Kernel
	sys     *pci.Sysfs
	records pci.State
	broker  *Broker
	audit   *audit.Log
	dir     string
}

// newOwnerRig quarantines both devices on vfio-pci (records in their
// directory) and starts a broker with the vfio backend over a fake kernel;
// withRecords false is a broker that is not told where the records are.
func newOwnerRig(t *testing.T, withRecords bool) *ownerRig {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the vfio backend chowns the group node: needs root")
	}
	dir := t.TempDir()
	root := pcifake.CopyTree(t, "../testdata/sysfs/rig-q35")
	k := pcifake.New(root)
	k.LoadDriver(t, "vfio-pci")
	sys := &pci.Sysfs{Root: root, Kernel: k}
	r := &ownerRig{k: k, sys: sys, records: pci.State{Dir: filepath.Join(dir, "pci")}}
	if _, err := (&pci.Binder{Sysfs: sys, State: r.records}).AddGroup(sharedEdu, pci.StubVFIO); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "dev/vfio/11")
	must(t, os.MkdirAll(filepath.Dir(node), 0o755))
	must(t, os.WriteFile(node, nil, 0o600))
	be, err := vfio.New(vfio.Options{Sysfs: sys, DevRoot: dir, StateDir: r.records.Dir,
		Prlimit: func(int, uint64) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "audit")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Backend: be, Sysfs: sys, Audit: al, StateDir: filepath.Join(dir, "state"), Logger: log.New(io.Discard, "", 0)}
	if withRecords {
		cfg.Records = &r.records
	}
	r.audit, r.dir = al, dir
	if r.broker, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.broker.Close(); al.Close() })
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (r *ownerRig) owner(t *testing.T, b pci.BDF) string {
	t.Helper()
	rec, err := r.records.Load(b)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Owner
}

// audited says whether an audit record's error contains why.
func (r *ownerRig) audited(t *testing.T, why string) bool {
	t.Helper()
	must(t, r.audit.Sync())
	files, err := audit.Files(filepath.Join(r.dir, "audit"))
	must(t, err)
	for _, f := range files {
		recs, err := audit.ReadFile(f)
		must(t, err)
		for _, rec := range recs {
			if strings.Contains(rec.Err, why) {
				return true
			}
		}
	}
	return false
}

func (r *ownerRig) open(t *testing.T, domid uint32, devs ...pci.BDF) (*Session, *Client) {
	t.Helper()
	s, f, err := r.broker.OpenSession(domid, "", Peer{PID: int32(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if err := r.broker.Attach(s.ID, d, AttachOptions{Grant: backend.Grant{UID: 65534, GID: 65534}}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	must(t, c.Do(&Hello{Version: 1}, &HelloReply{}))
	return s, c
}

// sbrs counts the secondary bus resets of the bridge: writes that set
// its Bridge Control bit 6.
func (r *ownerRig) sbrs() int {
	n := 0
	for _, w := range r.k.Writes() {
		if w.Path == "sys/bus/pci/devices/"+sharedBridge.String()+"/config" && w.Off == 0x3e && w.Data[0]&0x40 != 0 {
			n++
		}
	}
	return n
}

// TestResetWithOwnership: a session's reset of the edu is a bus reset
// that also hits the e1000 beside it; the broker allows it when the e1000
// is this domain's or idle in quarantine, because it marks the records of
// the devices a domain holds and passes them to the reset.
func TestResetWithOwnership(t *testing.T) {
	r := newOwnerRig(t, true)
	s, c := r.open(t, 7, sharedEdu, sharedE1000)
	for _, b := range []pci.BDF{sharedEdu, sharedE1000} {
		if o := r.owner(t, b); o != "domid:7" {
			t.Fatalf("%s owner %q after attach", b, o)
		}
	}
	// Both the domain's.
	if err := c.Do(&Reset{BDF: WireBDF(sharedEdu)}, nil); err != nil {
		t.Fatalf("reset beside the domain's own e1000: %v", err)
	}
	if n := r.sbrs(); n != 1 {
		t.Fatalf("%d bus resets:\n%v", n, r.k.Writes())
	}
	// Detach resets the e1000 (a bus reset: the edu is the same
	// domain's) and gives its record back to nobody.
	must(t, r.broker.Detach(s.ID, sharedE1000))
	if o := r.owner(t, sharedE1000); o != "" {
		t.Fatalf("e1000 owner %q after detach", o)
	}
	if n := r.sbrs(); n != 2 {
		t.Fatalf("detach: %d bus resets", n)
	}
	// The e1000 idle in quarantine does not block either.
	if err := c.Do(&Reset{BDF: WireBDF(sharedEdu)}, nil); err != nil {
		t.Fatalf("reset beside an idle quarantined e1000: %v", err)
	}
	// The device model hanging up undoes the edu: reset, released, owner
	// cleared. (The bound only turns a hang into a failure.)
	c.Close()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("session did not end")
	}
	if o := r.owner(t, sharedEdu); o != "" {
		t.Fatalf("edu owner %q after close", o)
	}
	if n := r.sbrs(); n != 4 {
		t.Fatalf("close: %d bus resets", n)
	}
}

// TestResetNeighbourOfAnotherDomain: the e1000 held by domain 8 blocks a
// bus reset asked for by domain 7, and nothing is written.
func TestResetNeighbourOfAnotherDomain(t *testing.T) {
	r := newOwnerRig(t, true)
	_, c := r.open(t, 7, sharedEdu)
	r.open(t, 8, sharedE1000)
	n := len(r.k.Writes())
	err := c.Do(&Reset{BDF: WireBDF(sharedEdu)}, nil)
	if err == nil || !r.audited(t, "would also reset 0000:03:02.0 (assigned to domid:8)") {
		t.Fatalf("err = %v, or the reason is not audited", err)
	}
	if len(r.k.Writes()) != n {
		t.Fatalf("refused reset wrote: %v", r.k.Writes()[n:])
	}
}

// TestResetWithoutRecordsRefused is the control: a broker not told where
// the records are cannot know the quarantined e1000 is idle, and refuses
// the bus reset as it did before it passed ownership.
func TestResetWithoutRecordsRefused(t *testing.T) {
	r := newOwnerRig(t, false)
	_, c := r.open(t, 7, sharedEdu)
	err := c.Do(&Reset{BDF: WireBDF(sharedEdu)}, nil)
	if err == nil || !r.audited(t, "(on vfio-pci without a dmsandbox record: another VMM may use it)") {
		t.Fatalf("err = %v, or the reason is not audited", err)
	}
	if o := r.owner(t, sharedEdu); o != "" {
		t.Fatalf("owner %q written without records configured", o)
	}
}
