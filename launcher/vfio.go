package launcher

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/dmsandbox/dmsandbox/pci"
)

// VFIO passthrough without sysfs. QEMU 7.2's vfio-pci (hw/vfio/pci.c,
// vfio_realize) needs, for host=BDF: stat() of /sys/bus/pci/devices/BDF,
// readlink() of its iommu_group (only the basename, the group number, is
// used), then /dev/vfio/vfio and /dev/vfio/GROUP; everything else goes
// through VFIO ioctls on those fds. So the sandbox gets a synthetic,
// read-only /sys holding exactly those links, never the host's sysfs, and
// the group nodes of exactly those devices.

// hostSysfs is the sysfs root VFIO devices are looked up in; a variable
// for tests against captured trees.
var hostSysfs = "/sys"

// vfioView checks that every device is bound to vfio-pci, builds the
// synthetic sysfs view under dir and returns the group nodes to expose.
func vfioView(dir string, bdfs []string) (nodes []string, err error) {
	seen := map[string]bool{}
	for _, s := range bdfs {
		b, err := pci.ParseBDF(s)
		if err != nil {
			return nil, fmt.Errorf("vfio device %q: %w", s, err)
		}
		name := b.String()
		dev := filepath.Join(hostSysfs, "bus/pci/devices", name)
		link, err := os.Readlink(filepath.Join(dev, "iommu_group"))
		if err != nil {
			return nil, fmt.Errorf("vfio device %s: no IOMMU group: %w", name, err)
		}
		group := filepath.Base(link)
		drv, _ := os.Readlink(filepath.Join(dev, "driver"))
		if filepath.Base(drv) != "vfio-pci" {
			return nil, fmt.Errorf("vfio device %s is bound to %q, not vfio-pci: run 'dmsandbox pci assignable-add %s' first", name, filepath.Base(drv), name)
		}
		view := filepath.Join(dir, "bus/pci/devices", name)
		if err := os.MkdirAll(view, 0o755); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(dir, "kernel/iommu_groups", group), 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink("../../../../kernel/iommu_groups/"+group, filepath.Join(view, "iommu_group")); err != nil {
			return nil, err
		}
		if node := "/dev/vfio/" + group; !seen[node] {
			seen[node] = true
			nodes = append(nodes, node)
		}
	}
	return nodes, nil
}
