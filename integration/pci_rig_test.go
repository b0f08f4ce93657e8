package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// pciRigDevices: edu behind its own root port (alone on a secondary bus:
// the kernel offers a bus reset), edu on the root bus (no reset method at
// all), e1000e (an in-tree driver to give the device back to), and a
// multi-function device whose two functions share one IOMMU group (no ACS
// between functions on the root bus), and a conventional PCI bus (behind a
// PCIe-to-PCI bridge) holding an edu and an e1000: a bus reset of one hits
// the other.
var pciRigDevices = []string{
	"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1",
	"edu",
	"e1000e",
	"virtio-rng-pci,addr=0x6.0,multifunction=on", "virtio-balloon-pci,addr=0x6.1",
	"pcie-root-port,id=rp2,chassis=2,slot=2", "pcie-pci-bridge,id=br1,bus=rp2", "edu,bus=br1,addr=1", "e1000,bus=br1,addr=2",
}

// pciCLIOps are the scenario's operations done by the project's binary, the
// way an administrator would.
const pciCLIOps = `
# Binding records go to a fresh state dir on L1's tmpfs /run: the default
# one, in the overlay root, starts as whatever the host has.
STATE=/run/rig/pci-state
assign()   { "$DMS" pci assignable-add --state-dir $STATE --to vfio-pci "$1"; }
unassign() { "$DMS" pci assignable-remove --state-dir $STATE "$1"; }
reset_dev() { "$DMS" pci reset --state-dir $STATE "$1"; }
`

// pciScenario runs in L1 after the ops are defined: bind and give back
// (edu: to no driver; e1000e: to e1000e), bus reset of the edu behind the
// root port with the config-space restore in dmesg, refusal for the edu on
// the root bus, group viability on a multi-function device, pci ls --json
// checked against L1's raw sysfs, and refusal of a bus reset that would hit
// a neighbour in use.
const pciScenario = `
# pci core's config save/restore messages are pr_debug: make them visible.
echo 'file drivers/pci/pci.c +p' > /sys/kernel/debug/dynamic_debug/control

# Tell the three edus apart by what they sit on: the root bus, a PCIe root
# port (1b36:000c), or the PCIe-to-PCI bridge (1b36:000e).
EDU_RP=; EDU_ROOT=; EDU_BR=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ] || continue
	up=$(dirname "$(readlink -f $d)")
	case $(basename $d):$(cat $up/device 2>/dev/null) in
	0000:00:*) EDU_ROOT=$(basename $d);;
	*:0x000c) EDU_RP=$(basename $d);;
	*:0x000e) EDU_BR=$(basename $d);;
	esac
done
NIC=$(find_dev 0x8086:0x10d3)
say "edu behind root port=$EDU_RP (reset_method=$(cat /sys/bus/pci/devices/$EDU_RP/reset_method 2>/dev/null)) edu on root bus=$EDU_ROOT e1000e=$NIC"
[ -n "$EDU_RP" ] && [ -n "$EDU_ROOT" ] && [ -n "$NIC" ] && check devices-found PASS || { check devices-found FAIL "edu rp=$EDU_RP root=$EDU_ROOT nic=$NIC"; finish; }

# 1. edu: no driver -> vfio-pci -> no driver.
T0=$(cut -d' ' -f1 /proc/uptime)
expect edu-assignable-add assign $EDU_RP
say "assignable-add took $(awk -v a=$T0 '{print $1 - a}' /proc/uptime)s"
G=$(grp $EDU_RP)
[ "$(drv $EDU_RP)" = vfio-pci ] && check edu-on-vfio-pci PASS || check edu-on-vfio-pci FAIL "driver=$(drv $EDU_RP)"
[ -c /dev/vfio/$G ] && check edu-dev-vfio-group PASS "/dev/vfio/$G" || check edu-dev-vfio-group FAIL "no /dev/vfio/$G: $(ls /dev/vfio 2>&1)"
expect edu-assignable-remove unassign $EDU_RP
[ -z "$(drv $EDU_RP)" ] && check edu-back-to-no-driver PASS || check edu-back-to-no-driver FAIL "driver=$(drv $EDU_RP)"
o=$(cat /sys/bus/pci/devices/$EDU_RP/driver_override)
[ -z "$o" ] || [ "$o" = "(null)" ] && check edu-override-cleared PASS || check edu-override-cleared FAIL "driver_override=$o"

# 2. e1000e: e1000e -> vfio-pci -> e1000e.
[ "$(drv $NIC)" = e1000e ] && check nic-starts-on-e1000e PASS || check nic-starts-on-e1000e FAIL "driver=$(drv $NIC)"
expect nic-assignable-add assign $NIC
[ "$(drv $NIC)" = vfio-pci ] && check nic-on-vfio-pci PASS || check nic-on-vfio-pci FAIL "driver=$(drv $NIC)"
[ -c /dev/vfio/$(grp $NIC) ] && check nic-dev-vfio-group PASS || check nic-dev-vfio-group FAIL "$(ls /dev/vfio 2>&1)"
expect nic-assignable-remove unassign $NIC
[ "$(drv $NIC)" = e1000e ] && check nic-back-on-e1000e PASS || check nic-back-on-e1000e FAIL "driver=$(drv $NIC)"

# 3. Bus reset of the edu behind the root port. The kernel saves config
# space, pulses Secondary Bus Reset on the root port, restores it; BAR0
# read back as 0 before the restore proves the device model really reset.
BAR0=$(od -An -tx4 -j16 -N4 /sys/bus/pci/devices/$EDU_RP/config | tr -d ' ')
dmesg -C
expect edu-rp-reset reset_dev $EDU_RP
dmesg | grep -E "$EDU_RP" | grep -iE 'restor|reset' | head -6 | sed 's/^/  dmesg: /'
dmesg | grep "$EDU_RP" | grep -q 'restoring config space at offset 0x10 (was 0x0,' \
	&& check edu-rp-config-space-restored PASS "BAR0 was 0 after the reset, restored" \
	|| check edu-rp-config-space-restored FAIL "no BAR0 restore for $EDU_RP in dmesg: $(dmesg | tail -5 | tr '\n' '|')"
[ "$(od -An -tx4 -j16 -N4 /sys/bus/pci/devices/$EDU_RP/config | tr -d ' ')" = "$BAR0" ] \
	&& check edu-rp-bar0-intact PASS "$BAR0" || check edu-rp-bar0-intact FAIL "BAR0 $BAR0 -> $(od -An -tx4 -j16 -N4 /sys/bus/pci/devices/$EDU_RP/config)"

# 4. The edu on the root bus has no FLR, no PM and no bridge of its own:
# reset must refuse, say why, and touch nothing.
dmesg -C
if out=$(reset_dev $EDU_ROOT 2>&1); then
	check edu-root-reset-refused FAIL "reset succeeded: $out"
else
	rc=$?
	say "refusal (exit $rc): $out"
	# A clear reason names the device and why a bus reset does not apply;
	# exit 4 is "refused, nothing done".
	[ $rc = 4 ] && echo "$out" | grep -q "$EDU_ROOT" && echo "$out" | grep -qi "bus" \
		&& check edu-root-reset-refused PASS "$(echo $out | head -c 200)" \
		|| check edu-root-reset-refused FAIL "exit $rc, unclear reason: $out"
fi
dmesg | grep -q "$EDU_ROOT.*restoring" && check edu-root-untouched FAIL "$(dmesg | grep $EDU_ROOT)" || check edu-root-untouched PASS

# 5. IOMMU group viability on the multi-function device: 06.1 alone is
# refused (06.0 shares its group and is on virtio-pci: VFIO could not open
# the group); --group takes both, all or none; both go back.
F0=0000:00:06.0; F1=0000:00:06.1
if [ "$(grp $F0)" = "$(grp $F1)" ]; then check mf-shared-group PASS "group $(grp $F1)"; else check mf-shared-group FAIL "$(grp $F0) vs $(grp $F1)"; fi
out=$(assign $F1 2>&1); rc=$?
say "06.1 alone: rc=$rc $out"
[ $rc = 4 ] && echo "$out" | grep -q "$F0" && [ "$(drv $F1)" = virtio-pci ] \
	&& check mf-single-function-refused PASS "$(echo $out | head -c 200)" \
	|| check mf-single-function-refused FAIL "rc=$rc driver=$(drv $F1): $out"
expect mf-group-add "$DMS" pci assignable-add --state-dir $STATE --group --to vfio-pci $F1
[ "$(drv $F0)" = vfio-pci ] && [ "$(drv $F1)" = vfio-pci ] && [ -c /dev/vfio/$(grp $F1) ] \
	&& check mf-group-on-vfio-pci PASS "/dev/vfio/$(grp $F1)" || check mf-group-on-vfio-pci FAIL "$(drv $F0) $(drv $F1)"

# 6. With devices on vfio-pci and a whole group assigned, the pci
# engineer's cross-check of "pci ls --json" against the raw sysfs files
# runs on L1's sysfs (IOMMU groups, reset methods) as it does on the host.
# A skip or a renamed test is a failure here: only its PASS line counts.
out=$(cd "$DMS_PKG" && "$DMS_TEST" -test.run '^TestPciLsMatchesHostSysfs$' -test.v 2>&1)
echo "$out" | grep -q -- '--- PASS: TestPciLsMatchesHostSysfs' \
	&& check ls-json-matches-l1-sysfs PASS || check ls-json-matches-l1-sysfs FAIL "$(echo "$out" | tail -15)"

# 7. A bus reset that would hit a neighbour in use is refused: the edu on
# the conventional bus shares it with an e1000 on its host driver.
E1000=$(find_dev 0x8086:0x100e)
if [ -n "$EDU_BR" ] && [ "$(drv $E1000)" = e1000 ]; then
	dmesg -C
	out=$(reset_dev $EDU_BR 2>&1); rc=$?
	say "edu beside a busy e1000: exit $rc: $out"
	[ $rc = 4 ] && echo "$out" | grep -q "$E1000" \
		&& check busy-sibling-reset-refused PASS "$(echo $out | head -c 200)" \
		|| check busy-sibling-reset-refused FAIL "exit $rc: $out"
	[ "$(drv $E1000)" = e1000 ] && ! dmesg | grep -qE "$E1000.*(restoring|reset)" \
		&& check busy-sibling-untouched PASS || check busy-sibling-untouched FAIL "driver=$(drv $E1000) $(dmesg | grep $E1000)"
else
	check busy-sibling-setup FAIL "edu behind the PCI bridge=$EDU_BR, e1000=$E1000 on $(drv $E1000)"
fi

expect mf-remove-f1 unassign $F1
expect mf-remove-f0 unassign $F0
[ "$(drv $F0)" = virtio-pci ] && [ "$(drv $F1)" = virtio-pci ] \
	&& check mf-back-on-virtio-pci PASS || check mf-back-on-virtio-pci FAIL "$(drv $F0) $(drv $F1)"
finish
`

// TestPCIRig: the pci subcommand on real VFIO in the nested rig (issue 4):
// assignable-add/remove and reset on QEMU-emulated devices behind an
// emulated VT-d. Budget: 5 minutes with one retry (2 x 2 min + build).
func TestPCIRig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 40 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	bin, testBin := buildDmsandbox(t), buildDmsandboxTest(t)
	runRig(t, rig.Rig{
		Devices: pciRigDevices,
		Timeout: 2 * time.Minute,
		Env:     map[string]string{"DMS": bin, "DMS_TEST": testBin, "DMS_PKG": filepath.Join(moduleRoot(t), "cmd", "dmsandbox")},
		Script:  pciCLIOps + pciScenario,
	})
}

// buildDmsandbox builds the binary under test into a temporary directory;
// L1 sees it at the same path through its 9p view of the host's /.
func buildDmsandbox(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dmsandbox")
	goCmd(t, "build", "-tags", "seccomp", "-o", bin, "./cmd/dmsandbox")
	return bin
}

// buildDmsandboxTest builds cmd/dmsandbox's test binary, to run some of
// its tests inside L1 against L1's sysfs.
func buildDmsandboxTest(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dmsandbox.test")
	goCmd(t, "test", "-c", "-tags", "seccomp", "-o", bin, "./cmd/dmsandbox")
	return bin
}

// goCmd runs the go tool at the module root (cgo on: runc needs it).
func goCmd(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}
