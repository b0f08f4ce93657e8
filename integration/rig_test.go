package integration

import (
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestRigL1 proves the harness itself: L1 boots with the VT-d IOMMU, its
// root is the switch_root'ed overlay in which a sandbox launcher can work
// (writable, pivot_root, user namespaces, cgroup v1, modprobe), and a device
// binds to vfio-pci by raw sysfs writes with its /dev/vfio group node.
func TestRigL1(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 30 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	runRig(t, rig.Rig{
		Devices: []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		Timeout: 2 * time.Minute,
		Script: `
say "kernel $(uname -r), $(nproc) cpus"
expect root-is-overlay sh -c 'findmnt -n -o FSTYPE / | grep -qx overlay'
expect root-writable sh -c 'echo x > /etc/rig-write-test && rm /etc/rig-write-test'
expect run-is-tmpfs sh -c 'findmnt -n -o FSTYPE /run | grep -qx tmpfs'
expect cgroup-v1-memory test -f /sys/fs/cgroup/memory/memory.limit_in_bytes
expect cgroup-v1-pids test -f /sys/fs/cgroup/pids/cgroup.procs
expect cgroup-v1-systemd test -f /sys/fs/cgroup/systemd/cgroup.procs
expect userns unshare --user --map-root-user id -u
expect pivot-root unshare --mount sh -c 'mount --make-rprivate / && mkdir -p /tmp/pr && mount --bind / /tmp/pr && mkdir -p /tmp/pr/tmp/old && cd /tmp/pr && pivot_root . tmp/old && umount -l /tmp/old && test -x /bin/sh'
expect modprobe-l1-tree modprobe -n -v vfio_pci
expect iommu-on test -n "$(ls /sys/class/iommu/)"

EDU=$(find_dev 0x1234:0x11e8)
[ -n "$EDU" ] && check edu-present PASS "$EDU" || check edu-present FAIL "no 1234:11e8 device"
G=$(grp $EDU)
T0=$(cut -d' ' -f1 /proc/uptime)
echo vfio-pci > /sys/bus/pci/devices/$EDU/driver_override
echo $EDU > /sys/bus/pci/drivers_probe
say "bind took $(awk -v a=$T0 '{print $1 - a}' /proc/uptime)s"
[ "$(drv $EDU)" = vfio-pci ] && check raw-bind-vfio PASS || check raw-bind-vfio FAIL "driver=$(drv $EDU)"
[ -c /dev/vfio/$G ] && check dev-vfio-group PASS "/dev/vfio/$G" || check dev-vfio-group FAIL "$(ls -l /dev/vfio 2>&1)"
echo $EDU > /sys/bus/pci/devices/$EDU/driver/unbind
echo > /sys/bus/pci/devices/$EDU/driver_override
[ -z "$(drv $EDU)" ] && check raw-unbind PASS || check raw-unbind FAIL "driver=$(drv $EDU)"
finish
`,
	})
}

// TestRigL1CgroupV2: the same root with a pure cgroup2 tree instead, for
// launchers tested on the v2 layout; a child group takes memory and pids
// limits.
func TestRigL1CgroupV2(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 10 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	runRig(t, rig.Rig{
		Cgroup:  "v2",
		Timeout: 2 * time.Minute,
		Script: `
expect cgroup2-mounted sh -c 'findmnt -n -o FSTYPE /sys/fs/cgroup | grep -qx cgroup2'
expect cgroup2-controllers sh -c 'grep -w memory /sys/fs/cgroup/cgroup.controllers | grep -w pids'
expect cgroup2-child-limits sh -c 'echo +memory +pids > /sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/t && echo 64M > /sys/fs/cgroup/t/memory.max && echo 10 > /sys/fs/cgroup/t/pids.max && cat /sys/fs/cgroup/t/memory.max /sys/fs/cgroup/t/pids.max'
expect userns unshare --user --map-root-user id -u
finish
`,
	})
}
