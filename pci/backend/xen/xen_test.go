//go:build xen

package xen

import (
	"errors"
	"os"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
)

// Without a hypervisor, opening libxenctrl fails with an error, not a
// crash. The calls themselves run for real in the nested Xen rig.
func TestNewWithoutHypervisor(t *testing.T) {
	if _, err := os.Stat("/dev/xen/privcmd"); err == nil {
		t.Skip("running on Xen: covered by the nested Xen rig tests")
	}
	b, err := New(pci.NewSysfs("/"))
	if err == nil {
		b.Close()
		t.Fatal("xc_interface_open succeeded without /dev/xen/privcmd")
	}
	if errors.Is(err, ErrNotBuilt) {
		t.Fatal("xen build reports not built")
	}
}
