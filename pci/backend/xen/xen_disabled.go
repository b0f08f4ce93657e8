//go:build !xen

package xen

import (
	"errors"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
)

// ErrNotBuilt: this binary was built without the xen tag.
var ErrNotBuilt = errors.New("xen backend: not built in (build with -tags xen against libxen-dev)")

// New fails: see ErrNotBuilt.
func New(*pci.Sysfs) (backend.Backend, error) { return nil, ErrNotBuilt }
