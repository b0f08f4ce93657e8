package integration

import (
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestRigInnerQEMUVFIO proves the path a confined device model takes in the
// rig: inside L1, an unprivileged QEMU (uid 65534, no groups) with KVM opens
// the edu's VFIO group and maps its BAR into the guest. It also pins down
// what such a QEMU needs: the group node and /dev/kvm accessible to its uid,
// and RLIMIT_MEMLOCK raised to cover guest RAM — with the default 8 MiB,
// VFIO's DMA mapping of 64 MiB of guest RAM fails.
func TestRigInnerQEMUVFIO(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 25 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	runRig(t, rig.Rig{
		Devices: []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		Timeout: 2 * time.Minute,
		Script: `
EDU=$(find_dev 0x1234:0x11e8)
echo vfio-pci > /sys/bus/pci/devices/$EDU/driver_override
echo $EDU > /sys/bus/pci/drivers_probe
G=$(grp $EDU)
[ -c /dev/kvm ] && check l1-has-kvm PASS || check l1-has-kvm FAIL "no /dev/kvm in L1 (kvm module for $(grep -o -m1 -wE 'svm|vmx' /proc/cpuinfo))"
chown 65534:65534 /dev/vfio/$G
chgrp 65534 /dev/kvm && chmod 0660 /dev/kvm
ASDM="setpriv --reuid=65534 --regid=65534 --clear-groups"
QEMU="qemu-system-x86_64 -accel kvm -machine pc -m 64 -nodefaults -no-user-config -display none -device vfio-pci,host=$EDU,id=hostdev0"

# Negative control: default RLIMIT_MEMLOCK.
# (QEMU fails at once; if it did not, timeout ends it.)
out=$(timeout 15 $ASDM $QEMU -S -monitor none 2>&1)
say "default memlock ($(prlimit --memlock --noheadings -o SOFT)): $out"
echo "$out" | grep -qiE 'vfio_dma_map|memory|failed to setup container' \
	&& check default-memlock-refused PASS "$(echo $out | head -c 200)" \
	|| check default-memlock-refused FAIL "qemu did not fail on DMA mapping: $out"

# The real run: let SeaBIOS assign the BAR (poll "info pci"), then read
# the flat memory tree: the BAR must be an mmap of the host BAR in KVM.
LOG=/tmp/inner-qemu.log
T0=$(cut -d' ' -f1 /proc/uptime)
(
	for i in $(seq 1 60); do
		sleep 1; echo "info pci"
		grep -qE 'BAR0: 32 bit memory at 0x[0-9a-f]{8} ' $LOG 2>/dev/null && break
	done
	echo "info mtree -f"; sleep 2; echo quit
) | prlimit --memlock=268435456:268435456 $ASDM $QEMU -monitor stdio >$LOG 2>&1
rc=$?
say "inner qemu exit $rc after $(awk -v a=$T0 '{print $1 - a}' /proc/uptime)s"
[ $rc = 0 ] && check inner-qemu-nonroot-runs PASS || check inner-qemu-nonroot-runs FAIL "exit $rc: $(tail -5 $LOG)"
grep -qE 'BAR0: 32 bit memory at 0x[0-9a-f]{8} ' $LOG \
	&& check guest-bar-assigned PASS "$(grep -oE 'BAR0: 32 bit memory at 0x[0-9a-f]{8}' $LOG | tail -1)" \
	|| check guest-bar-assigned FAIL "$(grep BAR0 $LOG | tail -1)"
grep -q "$EDU BAR 0 mmaps\[0\]" $LOG \
	&& check bar-mmap-in-guest PASS "$(grep "$EDU BAR 0 mmaps" $LOG | head -1 | tr -s ' ')" \
	|| check bar-mmap-in-guest FAIL "no mmap of $EDU BAR 0 in info mtree -f"
finish
`,
	})
}
