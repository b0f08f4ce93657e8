package fake

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"golang.org/x/sys/unix"
)

func TestPersistedStateReloadsAndInjectedFailuresDoNotCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls")
	b, err := New(t.TempDir(), path)
	if err != nil {
		t.Fatal(err)
	}
	dev := &pci.Device{BDF: pci.BDF{Bus: 3}}
	b.Assign(7, dev, backend.Grant{})
	b.MemoryMapping(7, 1, 2, 3, true)
	p, _ := b.MapPirq(7, 10, -1)
	b.FailNext("unmap_pirq", unix.EINVAL)
	if err := b.UnmapPirq(7, p); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("injected failure: %v", err)
	}
	b.Close()
	// A torn last line, as a SIGKILL mid-write leaves.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"memory_mapping","dom":7,"a":1,"b":2,"c":3`)
	f.Close()

	b2, err := New(t.TempDir(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	st := b2.State()
	if len(st.Assigned) != 1 || len(st.Mem) != 1 || len(st.Pirqs) != 1 {
		t.Fatalf("reloaded state %v", st.Summary())
	}
	if p2, _ := b2.MapPirq(7, 11, -1); p2 == p {
		t.Fatalf("pirq %d handed out twice across reload", p2)
	}
	b2.UnmapPirq(7, p)
	b2.MemoryMapping(7, 1, 2, 3, false)
	b2.Release(7, dev)
	if st := Replay(mustRead(t, path)); len(st.Summary()) != 1 {
		t.Fatalf("after undo: %v", st.Summary())
	}
}

func mustRead(t *testing.T, path string) []Call {
	c, err := ReadCalls(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
