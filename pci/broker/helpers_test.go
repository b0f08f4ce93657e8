package broker

import (
	"errors"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
)

// The captured q35 tree of the pci package. Devices used:
//
//	0000:00:04.0 e1000e: BAR0 feb80000+20000, BAR1 feba0000+20000 (adjacent),
//	             BAR2 I/O c040+20, BAR3 febd0000+4000 (MSI-X table, 5 entries),
//	             ROM feb00000+40000, GSI 10, MSI 1 vector, PM
//	0000:00:05.0 e1000 (also GSI 10), 0000:03:00.0 (GSI 11, MSI-X 2 entries)
const captured = "../testdata/sysfs/q35-vfio-rig"

var (
	e1000e = pci.BDF{Bus: 0, Dev: 4}
	other  = pci.BDF{Bus: 3, Dev: 0}
	pci05  = pci.BDF{Bus: 0, Dev: 5}
)

// copyTree copies the captured tree so a test may edit it.
func copyTree(t testing.TB) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "sysfs")
	if out, err := exec.Command("cp", "-a", captured, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", captured, err, out)
	}
	return dst
}

type rig struct {
	t       testing.TB
	root    string
	dir     string
	fake    *fake.Backend
	audit   *audit.Log
	broker  *Broker
	durable bool
	// requireAuthz starts the broker with Config.RequireAuthorization.
	requireAuthz bool
	// bootID starts the broker with Config.BootID ("": the kernel's).
	bootID string
}

func newRig(t testing.TB, root string) *rig {
	t.Helper()
	if root == "" {
		root = captured
	}
	r := &rig{t: t, root: root, dir: t.TempDir()}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) start() {
	t := r.t
	var err error
	r.fake, err = fake.New(r.root, filepath.Join(r.dir, "fake.calls"))
	if err != nil {
		t.Fatal(err)
	}
	r.audit, err = audit.Open(audit.Options{Dir: filepath.Join(r.dir, "audit"), Durable: r.durable})
	if err != nil {
		t.Fatal(err)
	}
	r.broker, err = New(Config{Backend: r.fake, Sysfs: pci.NewSysfs(r.root), Audit: r.audit,
		StateDir: filepath.Join(r.dir, "state"), AllowFake: true, Logger: log.New(io.Discard, "", 0),
		RequireAuthorization: r.requireAuthz, BootID: r.bootID})
	if err != nil {
		t.Fatal(err)
	}
}

func (r *rig) stop() {
	if r.broker != nil {
		r.broker.Close()
		r.audit.Close()
		r.fake.Close()
		r.broker = nil
	}
}

// session opens a session for domid with devs attached and says hello.
func (r *rig) session(domid uint32, devs ...pci.BDF) (*Session, *Client) {
	r.t.Helper()
	s, f, err := r.broker.OpenSession(domid, "", Peer{PID: int32(os.Getpid())})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, d := range devs {
		if err := r.broker.Attach(s.ID, d, AttachOptions{}); err != nil {
			r.t.Fatal(err)
		}
	}
	c, err := NewClient(f)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := c.Do(&Hello{Version: 1}, &HelloReply{}); err != nil {
		r.t.Fatal(err)
	}
	return s, c
}

// records returns every audit record so far.
func (r *rig) records() []*audit.Record {
	r.t.Helper()
	if err := r.audit.Sync(); err != nil {
		r.t.Fatal(err)
	}
	files, err := audit.Files(filepath.Join(r.dir, "audit"))
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*audit.Record
	for _, f := range files {
		recs, err := audit.ReadFile(f)
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, recs...)
	}
	return out
}

// waitGone waits until session id has been undone and forgotten. Not a
// timing assertion: the bound only turns a hang into a failure.
func (r *rig) waitGone(s *Session) {
	r.t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		r.t.Fatal("session did not end")
	}
	for i := 0; i < 3000; i++ {
		if _, err := r.broker.session(s.ID); errors.Is(err, ErrNoSession) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Fatal("session not forgotten")
}
