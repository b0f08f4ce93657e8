package integration

import (
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// pciSharedBusScenario: Linux 6.1 computed the edu's reset_method while it
// was still alone on the conventional bus behind the PCIe-to-PCI bridge,
// so it lists "bus" beside the e1000 and refuses it when selected (EINVAL,
// "Unsupported reset method 'bus'"). With both quarantined and idle, `pci
// reset` must not trust that list: it resets the bridge's secondary bus
// itself by config space. Proof that the device model really reset: the
// edu's MSI address (capability at 0x40, outside the 64-byte header that
// dmsandbox restores) is set before and reads 0 after.
//
// The same boot checks the assignability policy on L1's real sysfs and
// /proc: the 9p transports L1's root comes from, and the ICH9 functions
// grouped with the LPC bridge, are refused.
const pciSharedBusScenario = `
STATE=/run/rig/pci-state
EDU=$(find_dev 0x1234:0x11e8); E1000=$(find_dev 0x8086:0x100e)
say "edu=$EDU (reset_method: $(cat /sys/bus/pci/devices/$EDU/reset_method 2>&1)) e1000=$E1000 on $(drv $E1000)"
[ -n "$EDU" ] && [ -n "$E1000" ] && check devices-found PASS || { check devices-found FAIL "edu=$EDU e1000=$E1000"; finish; }

# Both quarantined: the group holds the bridge, the edu and the e1000.
expect group-add "$DMS" pci assignable-add --state-dir $STATE --group --to vfio-pci $EDU
[ "$(drv $EDU)" = vfio-pci ] && [ "$(drv $E1000)" = vfio-pci ] \
	&& check both-on-vfio-pci PASS || check both-on-vfio-pci FAIL "$(drv $EDU) $(drv $E1000)"

CFG=/sys/bus/pci/devices/$EDU/config
msi_addr() { od -An -tx4 -j$((0x44)) -N4 $CFG | tr -d ' '; }
printf '\x00\x00\xe0\xfe' | dd of=$CFG bs=4 seek=$((0x44 / 4)) count=1 conv=notrunc 2>/dev/null
[ "$(msi_addr)" = fee00000 ] && check msi-addr-set PASS || check msi-addr-set FAIL "$(msi_addr)"
BAR0=$(od -An -tx4 -j16 -N4 $CFG | tr -d ' ')
dmesg -C
out=$("$DMS" pci reset --state-dir $STATE $EDU 2>&1); rc=$?
say "reset: exit $rc: $out"
[ $rc = 0 ] && echo "$out" | grep -q "reset by bus (via config)" \
	&& check shared-bus-reset PASS "$out" || check shared-bus-reset FAIL "exit $rc: $out"
dmesg | grep -q "Unsupported reset method" && check no-kernel-bus-attempt FAIL "$(dmesg | tail -3)" || check no-kernel-bus-attempt PASS
[ "$(msi_addr)" = 00000000 ] && check edu-really-reset PASS "MSI address fee00000 -> 0" \
	|| check edu-really-reset FAIL "MSI address $(msi_addr) after the reset"
[ "$(od -An -tx4 -j16 -N4 $CFG | tr -d ' ')" = "$BAR0" ] && check edu-header-restored PASS "BAR0 $BAR0" \
	|| check edu-header-restored FAIL "BAR0 $BAR0 -> $(od -An -tx4 -j16 -N4 $CFG)"
[ "$(drv $E1000)" = vfio-pci ] && check e1000-still-quarantined PASS || check e1000-still-quarantined FAIL "$(drv $E1000)"

# Give both back; the e1000 to its driver.
expect remove-edu "$DMS" pci assignable-remove --state-dir $STATE $EDU
expect remove-e1000 "$DMS" pci assignable-remove --state-dir $STATE $E1000
[ "$(drv $E1000)" = e1000 ] && check e1000-back PASS || check e1000-back FAIL "$(drv $E1000)"

# Assignability on L1's own devices.
ls=$("$DMS" pci ls 2>&1)
for n in 1 2; do
	P9=$(find_dev 0x1af4:0x1009 $n)
	line=$(echo "$ls" | grep "^$P9 ")
	echo "$line" | grep -q "no: its virtio 9p share" && check 9p-$n-refused PASS "$line" || check 9p-$n-refused FAIL "$line"
done
for f in 0000:00:1f.2 0000:00:1f.3; do
	line=$(echo "$ls" | grep "^$f ")
	echo "$line" | grep -q "no: iommu group .* holds 0000:00:1f.0 (ISA/LPC bridge" && check $f-refused PASS "$line" || check $f-refused FAIL "$line"
done
finish
`

// TestPCIResetSharedBusRig: the stale reset_method of a device on a shared
// bus (docs/rigs.md), on real hardware models in the nested rig. Budget:
// one 2-minute attempt plus one retry, and a go build.
func TestPCIResetSharedBusRig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 40 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	bin := buildDmsandbox(t)
	runRig(t, rig.Rig{
		Devices: []string{"pcie-root-port,id=rp2,chassis=2,slot=2", "pcie-pci-bridge,id=br1,bus=rp2",
			"edu,bus=br1,addr=1", "e1000,bus=br1,addr=2"},
		Timeout: 2 * time.Minute,
		Env:     map[string]string{"DMS": bin},
		Script:  pciSharedBusScenario,
	})
}
